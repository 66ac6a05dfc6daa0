"""Evaluation stages: every model scored on the same targets, models combined, and compared.

Contract: ``evaluate`` writes one model's per-target log-probabilities on valid and test;
``interpolate`` mixes two evaluations (and is a model and an evaluation of its own); ``compare``
refuses models scored on other targets and writes the comparison table the command line prints.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqlm import corpus
from seqlm.combine import interpolate as mix_logprobs
from seqlm.combine import tune_weight
from seqlm.compare import per_token_frame
from seqlm.errors import SeqlmError
from seqlm.evaluate import perplexity
from seqlm.report import Identity, ModelResult, comparison_frame, identity, row_name
from seqlm.stages.data import load_vocabulary
from seqlm.stages.models import LOADERS
from seqlm.stages.stage import Prepared, Scored, Stage, inputs, ref
from seqlm.store import Artifact, Plan, Store

METRICS_FILE = "metrics.json"
TOKENS_FILE = "tokens.parquet"
CHART_FILE = "perplexity.png"
COMPARISON_FILE = "comparison.parquet"
EVAL_SPLITS = ("valid", "test")


def plan_evaluate(model: Artifact, data: Prepared, line_reset: bool = False) -> Plan:
    inputs = {
        "model": ref(model),
        "vocab": ref(data.vocab),
        "shards": [ref(s) for s in data.shards],
    }
    return EVALUATE.plan_of({"line_reset": True} if line_reset else {}, inputs)


def evaluate(store: Store, model: Artifact, data: Prepared, line_reset: bool = False) -> Artifact:
    """Per-target log-probabilities (``<split>.parquet``) and perplexities of a model on valid
    and test. ``line_reset``: a recurrent model's state restarts at every line, as an n-gram
    model's context does (the like-for-like figure)."""

    def produce(out: Path) -> dict[str, int]:
        v = load_vocabulary(data.vocab)
        lm = LOADERS[model.stage](model.path)
        if line_reset:
            lm = replace(lm, line_reset=True)
        scores = {}
        for split in EVAL_SPLITS:
            targets = v.stream(corpus.load_split([s.path for s in data.shards], split))
            start = time.perf_counter()
            logprobs = lm.score_stream(targets)
            scores[split] = (targets, logprobs, time.perf_counter() - start)
        extra = {"num_parameters": model.manifest["rows"]["parameters"]}
        return _write_scores(out, scores, {s: data.characters(s) for s in EVAL_SPLITS}, extra)

    return store.build(plan_evaluate(model, data, line_reset), produce)


def plan_interpolate(a: Artifact, b: Artifact) -> Plan:
    return INTERPOLATE.plan_of({}, {"a": ref(a), "b": ref(b)})


def interpolate(store: Store, a: Artifact, b: Artifact) -> Artifact:
    """Two evaluated models mixed per target, p = λ·p_a + (1−λ)·p_b, λ tuned on valid: an
    evaluation in its own right (``weight`` is λ), and a model named ``<a>+<b>``."""

    def produce(out: Path) -> dict[str, Any]:
        start = time.perf_counter()
        valid = per_token_frame({"a": a.path, "b": b.path}, "valid")
        weight = tune_weight(valid["a"].to_numpy(), valid["b"].to_numpy())
        tune_seconds = time.perf_counter() - start
        scores = {}
        for split in EVAL_SPLITS:
            frame = per_token_frame({"a": a.path, "b": b.path}, split)
            start = time.perf_counter()
            mixed = mix_logprobs(frame["a"].to_numpy(), frame["b"].to_numpy(), weight)
            scores[split] = (frame["target"].to_numpy(), mixed, time.perf_counter() - start)
        parameters = load_metrics(a)["num_parameters"] + load_metrics(b)["num_parameters"]
        extra = {"num_parameters": parameters, "weight": weight, "tune_seconds": tune_seconds}
        models = [evaluated_model(e) for e in (a, b)]
        parts = [identity(m).name for m in models]
        name = Identity("+".join(parts), "interpolated", f"λ={weight:.3f}")
        characters = {s: load_metrics(a)[s]["characters"] for s in EVAL_SPLITS}
        rows = _write_scores(out, scores, characters, extra)
        tokenizer = models[0].manifest["rows"]["tokenizer"]
        return rows | {
            "model": name.as_dict(),
            "parameters": parameters,
            "parts": parts,
            "tokenizer": tokenizer,
        }

    return store.build(plan_interpolate(a, b), produce)


def evaluated_model(evaluation: Artifact) -> Artifact:
    """The model an evaluation scored (an interpolation is its own model)."""
    if evaluation.stage == INTERPOLATE.name:
        return evaluation
    (model,) = inputs(evaluation, "model")
    return model


def interpolated_parts(mixed: Artifact) -> list[Artifact]:
    """The two models an interpolation mixes."""
    return [evaluated_model(*inputs(mixed, part)) for part in "ab"]


def plan_compare(scored: Sequence[Scored]) -> Plan:
    evaluations = [[ref(s.evaluation), s.line_reset and ref(s.line_reset)] for s in scored]
    return COMPARE.plan_of({}, {"evaluations": evaluations})


def compare(store: Store, scored: Sequence[Scored]) -> Artifact:
    """Checks that the models of each tokenization were scored on the same targets and every
    model on the same text, then writes the comparison (one row per model:
    ``comparison.parquet``), the per-token table of the test split per tokenization
    (``tokens.parquet``, or ``tokens-<tokenizer>.parquet`` for several) and a bar chart
    (``perplexity.png``: test perplexity, or bits per character across tokenizations)."""
    names = row_names(scored)
    if len(set(names)) < len(names):
        raise SeqlmError(f"two models of one name cannot be compared side by side ({names})")
    groups = tokenizations(scored, names)
    _check_same_text(scored, names, len(groups) > 1)

    def produce(out: Path) -> dict[str, int]:
        from seqlm.plots import comparison_bars  # matplotlib: only where a chart is drawn

        results = [model_result(s, name) for s, name in zip(scored, names, strict=True)]
        for tokenizer, members in groups.items():
            folders = {name: s.evaluation.path for name, s in members}
            per_token_frame(folders, "valid")  # refuses models scored on other targets
            tokens = per_token_frame(folders, "test")
            file = TOKENS_FILE if len(groups) == 1 else f"tokens-{tokenizer}.parquet"
            tokens.write_parquet(out / file, compression="zstd")
        comparison_frame(results).write_parquet(out / COMPARISON_FILE, compression="zstd")
        comparison_bars(results, bits=len(groups) > 1, path=out / CHART_FILE)
        return {"targets": sum(r.targets for r in results), "models": len(results)}

    return store.build(plan_compare(scored), produce)


def row_names(scored: Sequence[Scored]) -> list[str]:
    """Each model's name in the table: its own (``kn5``), prefixed by its tokenizer when the
    table holds several tokenizations (``char/kn5``)."""
    tokenizers = [s.model.manifest["rows"]["tokenizer"] for s in scored]
    several = len(set(tokenizers)) > 1
    return [
        row_name(identity(s.model).name, t, several)
        for s, t in zip(scored, tokenizers, strict=True)
    ]


def tokenizations(
    scored: Sequence[Scored], names: Sequence[str]
) -> dict[str, list[tuple[str, Scored]]]:
    """The models by tokenization; within one, every model must share the vocabulary (the same
    targets, so that their perplexities and per-token scores line up)."""
    groups: dict[str, list[tuple[str, Scored]]] = {}
    for name, s in zip(names, scored, strict=True):
        groups.setdefault(s.model.manifest["rows"]["tokenizer"], []).append((name, s))
    for members in groups.values():
        vocabularies = [(name, _vocabulary(s.evaluation)) for name, s in members]
        if len({key for _, key in vocabularies}) > 1:
            listed = ", ".join(f"{name}: {key}" for name, key in vocabularies)
            raise SeqlmError(
                f"models scored with different vocabularies cannot be compared ({listed})"
            )
    return groups


def _check_same_text(scored: Sequence[Scored], names: Sequence[str], several: bool) -> None:
    """Across tokenizations only bits per character compare, and only over the same text."""
    if not several:
        return
    characters = {
        name: load_metrics(s.evaluation)["test"]["characters"]
        for name, s in zip(names, scored, strict=True)
    }
    if len(set(characters.values())) > 1:
        listed = ", ".join(f"{name}: {n:,}" for name, n in characters.items())
        raise SeqlmError(f"models scored on other test texts cannot be compared ({listed})")


def model_result(scored: Scored, name: str | None = None) -> ModelResult:
    """A model's row of the comparison (named ``name``, else by its own name), from its
    evaluations and its artifact's manifest."""
    manifest = scored.model.manifest
    reset = load_metrics(scored.line_reset) if scored.line_reset else None
    model = Identity(**manifest["rows"]["model"])
    return ModelResult.from_metrics(
        replace(model, name=name or model.name),
        load_metrics(scored.evaluation),
        trained=manifest["rows"],
        train_seconds=manifest["seconds"],
        line_reset=reset,
    )


def load_comparison(compared: Artifact) -> pl.DataFrame:
    return pl.read_parquet(compared.path / COMPARISON_FILE)


def _vocabulary(evaluation: Artifact) -> str:
    """The vocabulary an evaluation (or an interpolation of two) was scored with."""
    if evaluation.stage == INTERPOLATE.name:
        return _vocabulary(*inputs(evaluation, "a"))
    return evaluation.manifest["inputs"]["vocab"]


def load_metrics(evaluation: Artifact) -> dict[str, Any]:
    return json.loads((evaluation.path / METRICS_FILE).read_text())


def _write_scores(
    out: Path,
    scores: Mapping[str, tuple[np.ndarray, np.ndarray, float]],
    characters: Mapping[str, int],
    extra: Mapping[str, Any],
) -> dict[str, int]:
    """Per-split ``target, logprob`` Parquet files and ``metrics.json``; rows per split. Bits per
    character: −Σ log₂ p over the split's targets, divided by its characters and line ends."""
    metrics = dict(extra)
    for split, (targets, logprobs, seconds) in scores.items():
        pl.DataFrame({"target": targets, "logprob": logprobs}).write_parquet(
            out / f"{split}.parquet", compression="zstd"
        )
        scored = perplexity(logprobs, targets)
        metrics[split] = scored.as_dict() | {
            "characters": characters[split],
            "bits_per_char": -scored.logprob / math.log(2) / characters[split],
            "tokens_per_second": len(targets) / max(seconds, 1e-9),
        }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return {split: metrics[split]["targets"] for split in scores}


def _evaluate_label(arguments: Mapping[str, Any]) -> str:
    line_reset = " (line reset)" if arguments.get("line_reset") else ""
    return f"evaluate {identity(arguments['model']).name}{line_reset}"


def _interpolate_label(arguments: Mapping[str, Any]) -> str:
    parts = (identity(evaluated_model(arguments[p])).name for p in "ab")
    return "interpolate " + "+".join(parts)


EVALUATE = Stage("evaluate", 3, plan_evaluate, evaluate, _evaluate_label)
INTERPOLATE = Stage("interpolate", 3, plan_interpolate, interpolate, _interpolate_label)
COMPARE = Stage("compare", 3, plan_compare, compare, lambda a: f"compare {len(a['scored'])} models")
