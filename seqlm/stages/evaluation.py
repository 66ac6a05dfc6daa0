"""Evaluation stages: every model scored on the same targets, and models combined."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqlm import corpus
from seqlm.combine import interpolate, tune_weight
from seqlm.compare import per_token_frame
from seqlm.errors import SeqlmError
from seqlm.evaluate import perplexity
from seqlm.plots import perplexity_bars
from seqlm.stages.data import load_vocabulary
from seqlm.stages.models import LOADERS
from seqlm.store import Artifact, Plan, Store

METRICS_FILE = "metrics.json"
TOKENS_FILE = "tokens.parquet"
CHART_FILE = "perplexity.png"
EVAL_SPLITS = ("valid", "test")


def plan_evaluation(
    model: Artifact, vocab: Artifact, shards: Sequence[Artifact], line_reset: bool = False
) -> Plan:
    inputs = {"model": f"{model.stage}/{model.key}", "vocab": vocab.key}
    config = {"line_reset": True} if line_reset else {}
    return Plan("evaluate", 2, config, inputs | {"shards": [s.key for s in shards]})


def evaluation(
    store: Store,
    model: Artifact,
    vocab: Artifact,
    shards: Sequence[Artifact],
    line_reset: bool = False,
) -> Artifact:
    """Per-target log-probabilities (``<split>.parquet``) and perplexities of a model on valid
    and test. ``line_reset``: a recurrent model's state restarts at every line, as an n-gram
    model's context does (the like-for-like figure)."""

    def produce(out: Path) -> dict[str, int]:
        v = load_vocabulary(vocab)
        lm = LOADERS[model.stage](model.path)
        if line_reset:
            lm = replace(lm, reset_each_line=True)
        scores = {}
        for split in EVAL_SPLITS:
            targets = v.stream(corpus.load_split([s.path for s in shards], split))
            start = time.perf_counter()
            logprobs = lm.score_stream(targets)
            scores[split] = (targets, logprobs, time.perf_counter() - start)
        return _write_scores(out, scores, {"num_parameters": model.manifest["rows"]["parameters"]})

    return store.build(plan_evaluation(model, vocab, shards, line_reset), produce)


def plan_interpolation(a: Artifact, b: Artifact) -> Plan:
    return Plan("interpolate", 1, {}, {"a": a.key, "b": b.key})


def interpolation(store: Store, a: Artifact, b: Artifact) -> Artifact:
    """Two evaluated models mixed per target, p = λ·p_a + (1−λ)·p_b, λ tuned on valid: an
    evaluation in its own right (``weight`` is λ)."""

    def produce(out: Path) -> dict[str, int]:
        start = time.perf_counter()
        valid = per_token_frame({"a": a.path, "b": b.path}, "valid")
        weight = tune_weight(valid["a"].to_numpy(), valid["b"].to_numpy())
        tune_seconds = time.perf_counter() - start
        scores = {}
        for split in EVAL_SPLITS:
            frame = per_token_frame({"a": a.path, "b": b.path}, split)
            start = time.perf_counter()
            mixed = interpolate(frame["a"].to_numpy(), frame["b"].to_numpy(), weight)
            scores[split] = (frame["target"].to_numpy(), mixed, time.perf_counter() - start)
        parameters = load_metrics(a)["num_parameters"] + load_metrics(b)["num_parameters"]
        extra = {"num_parameters": parameters, "weight": weight, "tune_seconds": tune_seconds}
        return _write_scores(out, scores, extra) | {"parameters": parameters}

    return store.build(plan_interpolation(a, b), produce)


def plan_comparison(evaluations: Mapping[str, Artifact]) -> Plan:
    inputs = {name: f"{e.stage}/{e.key}" for name, e in evaluations.items()}
    return Plan("compare", 1, {}, inputs)


def comparison(store: Store, evaluations: Mapping[str, Artifact]) -> Artifact:
    """Checks that every model was scored on the same targets, then writes the per-token table
    of the test split (``tokens.parquet``) and a bar chart of test perplexity
    (``perplexity.png``)."""

    vocabularies = {name: _vocab_key(store, e) for name, e in evaluations.items()}
    if len(set(vocabularies.values())) > 1:
        listed = ", ".join(f"{name}: {key}" for name, key in vocabularies.items())
        raise SeqlmError(f"models scored with different vocabularies cannot be compared ({listed})")

    def produce(out: Path) -> dict[str, int]:
        folders = {name: e.path for name, e in evaluations.items()}
        per_token_frame(folders, "valid")
        tokens = per_token_frame(folders, "test")
        tokens.write_parquet(out / TOKENS_FILE, compression="zstd")
        test_ppl = [load_metrics(e)["test"]["ppl"] for e in evaluations.values()]
        perplexity_bars(list(evaluations), test_ppl, out / CHART_FILE)
        return {"targets": tokens.height, "models": len(evaluations)}

    return store.build(plan_comparison(evaluations), produce)


def _vocab_key(store: Store, evaluation: Artifact) -> str:
    """The vocabulary an evaluation (or an interpolation of two) was scored with."""
    inputs = evaluation.manifest["inputs"]
    if evaluation.stage == "interpolate":
        part = store.get("evaluate", inputs["a"]) or store.get("interpolate", inputs["a"])
        if part is None:
            raise SeqlmError(f"{evaluation.path}: its part {inputs['a']} is not in the store")
        return _vocab_key(store, part)
    return inputs["vocab"]


def load_metrics(evaluation: Artifact) -> dict[str, Any]:
    return json.loads((evaluation.path / METRICS_FILE).read_text())


def _write_scores(
    out: Path,
    scores: Mapping[str, tuple[np.ndarray, np.ndarray, float]],
    extra: Mapping[str, Any],
) -> dict[str, int]:
    """Per-split ``target, logprob`` Parquet files and ``metrics.json``; rows per split."""
    metrics = dict(extra)
    for split, (targets, logprobs, seconds) in scores.items():
        pl.DataFrame({"target": targets, "logprob": logprobs}).write_parquet(
            out / f"{split}.parquet", compression="zstd"
        )
        metrics[split] = perplexity(logprobs, targets).as_dict() | {
            "tokens_per_second": len(targets) / max(seconds, 1e-9)
        }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return {split: metrics[split]["targets"] for split in scores}
