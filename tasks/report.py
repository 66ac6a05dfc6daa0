"""Tracking tasks: a child MLflow run per model; the comparison on the parent run and in Prefect."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from seqlm.report import LIKE_FOR_LIKE, Fitted, ModelResult, comparison_frame, to_markdown
from seqlm.samples import sample_lines
from seqlm.stages import (
    CHART_FILE,
    HISTORY_FILE,
    LOADERS,
    TOKENS_FILE,
    load_metrics,
    load_vocabulary,
)
from seqlm.store import Artifact
from tasks.tracking import Tracker

# A model folder bigger than this (a large n-gram model) stays in the store, referenced by its
# key and path, rather than copied into MLflow on every run.
MAX_LOGGED_BYTES = 50 << 20
# What a training run resolved or ended on (its config may say "auto"), tagged as trained.<key>.
TRAINED_FACTS = ("device", "precision", "epochs", "stopped")


def model_result(fitted: Fitted, evaluation: Artifact, line_reset: Artifact | None) -> ModelResult:
    """A model's row of the comparison, from its evaluations (and its like-for-like one)."""
    return ModelResult.from_metrics(
        fitted,
        load_metrics(evaluation),
        train_seconds=fitted.model.manifest["seconds"],
        line_reset=load_metrics(line_reset) if line_reset else None,
    )


@task(name="track-model", cache_policy=NO_CACHE)
def track_model(
    experiment: str,
    parent_run: str,
    fitted: Fitted,
    result: ModelResult,
    tags: Mapping[str, str],
) -> None:
    """A child run with the model's params, its metrics (per epoch too, for a recurrent model)
    and its model folder (a big one stays in the store, referenced by key and path)."""
    model = fitted.model
    rows = model.manifest["rows"]
    trained = {f"trained.{k}": str(rows[k]) for k in TRAINED_FACTS if k in rows}
    tracker = Tracker(experiment)
    run = tracker.start_run(
        fitted.name,
        {**fitted.params, "size": fitted.size, "model_key": model.key, "model_path": model.path},
        tags={"family": fitted.family, **tags, **trained},
        parent=parent_run,
    )
    try:
        _log_model(tracker, run, model, result)
    except BaseException:
        tracker.finish(run, failed=True)
        raise
    tracker.finish(run)


def _log_model(tracker: Tracker, run: str, model: Artifact, result: ModelResult) -> None:
    # Per-epoch curves first, then the final figures at the last step: MLflow shows the latest.
    history = model.path / HISTORY_FILE
    epochs = json.loads(history.read_text()) if history.exists() else []
    for epoch in epochs:
        metrics = {k: epoch[k] for k in ("train_ppl", "valid_ppl", "tokens_per_second", "lr")}
        tracker.log_metrics(run, metrics, step=int(epoch["epoch"]))
    final = result.metrics() | {"num_parameters": result.parameters, "oov": result.oov}
    if result.test_ppl_line_reset is not None:
        final["test_ppl_line_reset"] = result.test_ppl_line_reset
    tracker.log_metrics(run, final, step=int(epochs[-1]["epoch"]) if epochs else 0)
    if sum(p.stat().st_size for p in model.path.rglob("*") if p.is_file()) <= MAX_LOGGED_BYTES:
        tracker.log_folder(run, model.path, "model")


@task(name="publish-comparison", cache_policy=NO_CACHE)
def publish_comparison(
    experiment: str, parent_run: str, results: Sequence[ModelResult], compared: Artifact
) -> list[dict[str, Any]]:
    """The comparison table as Parquet and Markdown on the parent run with the per-token table
    and the chart, and as Prefect table and Markdown artifacts."""
    frame = comparison_frame(results)
    markdown = to_markdown(frame)
    tracker = Tracker(experiment)
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd")
    tracker.log_files(
        parent_run, {"comparison.parquet": buffer.getvalue(), "comparison.md": markdown}
    )
    for name in (TOKENS_FILE, CHART_FILE):
        tracker.log_path(parent_run, compared.path / name)
    best = min(results, key=lambda r: r.test_ppl)
    tracker.log_metrics(parent_run, {"best_test_ppl": best.test_ppl})
    rows = frame.to_dicts()
    create_table_artifact(
        key="comparison", table=rows, description="Perplexity of every model on the test split."
    )
    create_markdown_artifact(
        key="comparison-report",
        markdown=f"# Perplexity on the test split\n\n{markdown}\n{LIKE_FOR_LIKE}\n",
        description="The models side by side, as logged to MLflow.",
    )
    return rows


@task(name="sample", cache_policy=NO_CACHE)
def sample_model(fitted: Fitted, vocab: Artifact, seed: int = 0) -> list[str]:
    """A few lines written by the model."""
    model = LOADERS[fitted.model.stage](fitted.model.path)
    return sample_lines(model, load_vocabulary(vocab), seed=seed)


@task(name="log-samples", cache_policy=NO_CACHE)
def log_samples(experiment: str, parent_run: str, samples: Mapping[str, list[str]]) -> None:
    """The sampled lines as ``samples.md`` on the parent run."""
    text = "".join(
        f"## {name}\n\n" + "".join(f"- {line}\n" for line in lines) + "\n"
        for name, lines in samples.items()
    )
    Tracker(experiment).log_files(parent_run, {"samples.md": text})
