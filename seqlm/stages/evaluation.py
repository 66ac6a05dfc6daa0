"""Evaluation stages: every model scored on the same targets, and models combined."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from seqlm import corpus
from seqlm.evaluate import perplexity
from seqlm.stages.data import load_vocabulary
from seqlm.stages.models import LOADERS
from seqlm.store import Artifact, Plan, Store

METRICS_FILE = "metrics.json"
EVAL_SPLITS = ("valid", "test")


def plan_evaluation(model: Artifact, vocab: Artifact, shards: Sequence[Artifact]) -> Plan:
    inputs = {"model": f"{model.stage}/{model.key}", "vocab": vocab.key}
    return Plan("evaluate", 1, {}, inputs | {"shards": [s.key for s in shards]})


def evaluation(
    store: Store, model: Artifact, vocab: Artifact, shards: Sequence[Artifact]
) -> Artifact:
    """Per-target log-probabilities (``<split>.parquet``) and perplexities of a model on valid
    and test."""

    def produce(out: Path) -> dict[str, int]:
        v = load_vocabulary(vocab)
        lm = LOADERS[model.stage](model.path)
        metrics: dict[str, Any] = {"num_parameters": model.manifest["rows"]["parameters"]}
        for split in EVAL_SPLITS:
            targets = v.stream(corpus.load_split([s.path for s in shards], split))
            start = time.perf_counter()
            logprobs = lm.score_stream(targets)
            seconds = time.perf_counter() - start
            pl.DataFrame({"target": targets, "logprob": logprobs}).write_parquet(
                out / f"{split}.parquet", compression="zstd"
            )
            metrics[split] = perplexity(logprobs, targets).as_dict() | {
                "tokens_per_second": len(targets) / max(seconds, 1e-9)
            }
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        return {split: metrics[split]["targets"] for split in EVAL_SPLITS}

    return store.build(plan_evaluation(model, vocab, shards), produce)


def load_metrics(evaluation: Artifact) -> dict[str, Any]:
    return json.loads((evaluation.path / METRICS_FILE).read_text())
