"""The MLflow Model Registry: the best model of a corpus as a pyfunc, and its ``champion`` alias.

The pyfunc scores text (a ``text`` column, one line a row) with the model's own tokenizer and
vocabulary and returns each target's natural-log probability, so reloading the champion from the
registry reproduces its test perplexity. An interpolated model is registered with both parts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import polars as pl
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel, PythonModelContext
from prefect import task
from prefect.cache_policies import NO_CACHE

import seqlm
from seqlm.combine import interpolate
from seqlm.corpus import tokenize
from seqlm.report import Fitted, ModelResult
from seqlm.stages import LOADERS
from seqlm.vocab import Vocabulary
from tasks.tracking import Tracker

log = logging.getLogger("seqlm.registry")

CHAMPION = "champion"
_REQUIREMENTS = ["numpy", "polars", "pyarrow", "pandas", "torch==2.13.0"]


class SeqlmPyfunc(PythonModel):
    """Per-target log-probabilities of text under one model or a two-model interpolation."""

    def load_context(self, context: PythonModelContext) -> None:
        config = context.model_config
        self.tokenizer = config["tokenizer"]
        self.vocab = Vocabulary.load(Path(context.artifacts["vocab"]))
        self.parts = [
            LOADERS[stage](Path(context.artifacts[f"part{i}"]))
            for i, stage in enumerate(config["stages"])
        ]
        self.weight = config.get("weight")

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: Any = None
    ) -> pd.DataFrame:
        lines = tokenize(pl.Series(model_input["text"].astype(str)), self.tokenizer)
        stream = self.vocab.stream(lines)
        scores = [part.score_stream(stream) for part in self.parts]
        logprob = scores[0] if len(scores) == 1 else interpolate(*scores, self.weight)
        return pd.DataFrame({"target": self.vocab.decode(stream), "logprob": logprob})


def registered_name(corpus: str) -> str:
    """One registered model per corpus, named after its folder (``seqlm-ptb``)."""
    path = Path(corpus).resolve()
    return f"seqlm-{(path.parent if path.is_file() else path).name}"


@task(name="register-champion", cache_policy=NO_CACHE)
def register_champion(
    experiment: str,
    parent_run: str,
    corpus: str,
    tokenizer: str,
    vocab_path: Path,
    candidate: Fitted,
    parts: list[Fitted],
    result: ModelResult,
    tags: dict[str, str],
) -> str | None:
    """Register ``candidate`` and move the alias to it when it beats the champion on the same
    test targets (same corpus and vocabulary keys), or when there is none for those targets.
    Returns the new version, or None when the champion stays."""
    tracker = Tracker(experiment)
    name = registered_name(corpus)
    client = tracker.client
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    if champion is not None and all(champion.tags.get(k) == v for k, v in tags.items()):
        best = float(champion.tags["test_ppl"])
        if result.test_ppl >= best:
            log.info(
                "%s v%s stays champion (%.3f ≤ %.3f)", name, champion.version, best, result.test_ppl
            )
            return None
    elif champion is not None:
        log.info("the champion of %s was scored on other test targets: replaced", name)
    run = tracker.start_run(
        f"register {candidate.name}",
        {"model": candidate.name},
        tags={"family": "registry", **tags},
        parent=parent_run,
    )
    artifacts = {"vocab": str(vocab_path)} | {
        f"part{i}": str(part.model.path) for i, part in enumerate(parts)
    }
    config = {
        "tokenizer": tokenizer,
        "stages": [part.model.stage for part in parts],
        "weight": candidate.params.get("weight"),
    }
    with mlflow.start_run(run_id=run):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=SeqlmPyfunc(),
            artifacts=artifacts,
            model_config=config,
            code_paths=[str(Path(seqlm.__file__).parent), str(Path(__file__).parent)],
            pip_requirements=_REQUIREMENTS,
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    for key, value in {**tags, "test_ppl": str(result.test_ppl), "model": candidate.name}.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHAMPION, version)
    tracker.finish(run)
    log.info("%s version %s is the champion (test perplexity %.3f)", name, version, result.test_ppl)
    return version
