"""The registered model's definition, logged to MLflow as code ("models from code").

MLflow runs this file by its path to load a registered seqlm model, so loading unpickles no
Python object and needs neither Prefect nor the rest of the ``tasks`` package (whose
``__init__`` it never runs): only this file and the ``seqlm`` package, which is logged beside it.
Nothing imports it: ``tasks.registry`` names it by path.

The model scores text (a ``text`` column, one line a row) with the model's own tokenizer and
vocabulary and returns each target's natural-log probability, so reloading the champion from the
registry reproduces its test perplexity. An interpolated model carries both parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import polars as pl
from mlflow.pyfunc import PythonModel, PythonModelContext

from seqlm.combine import interpolate
from seqlm.scoring import splitter
from seqlm.stages import LOADERS
from seqlm.stages.models import tokenizer_folder
from seqlm.store import Artifact
from seqlm.vocab import Vocabulary


class SeqlmPyfunc(PythonModel):
    """Per-target log-probabilities of text under one model or a two-model interpolation."""

    def load_context(self, context: PythonModelContext) -> None:
        config = context.model_config
        # A subword tokenizer is the one saved in the model's folder, as it was trained.
        first = Artifact(config["stages"][0], "", Path(context.artifacts["part0"]))
        self.split = splitter(config["tokenizer"], tokenizer_folder(first))
        self.vocab = Vocabulary.load(Path(context.artifacts["vocab"]))
        self.parts = [
            LOADERS[stage](Path(context.artifacts[f"part{i}"]))
            for i, stage in enumerate(config["stages"])
        ]
        self.weight = config.get("weight")

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: Any = None
    ) -> pd.DataFrame:
        lines = self.split(pl.Series(model_input["text"].astype(str)))
        stream = self.vocab.stream(lines)
        scores = [part.score_stream(stream) for part in self.parts]
        logprob = scores[0] if len(scores) == 1 else interpolate(*scores, self.weight)
        return pd.DataFrame({"target": self.vocab.decode(stream), "logprob": logprob})


mlflow.models.set_model(SeqlmPyfunc())
