"""Tracking tasks: a child MLflow run per model; the comparison on the parent run and in Prefect."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from seqlm.report import ModelResult, comparison_frame, to_markdown
from seqlm.stages import load_metrics
from seqlm.store import Artifact
from tasks.tracking import Tracker


@task(name="track-model", cache_policy=NO_CACHE)
def track_model(
    experiment: str,
    parent_run: str,
    name: str,
    family: str,
    model: Artifact,
    evaluation: Artifact,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
) -> ModelResult:
    """A child run with the model's params, its metrics and its small model files."""
    result = ModelResult.from_metrics(
        name, family, load_metrics(evaluation), train_seconds=model.manifest["seconds"]
    )
    tracker = Tracker(experiment)
    run = tracker.start_run(
        name,
        {**params, "model_key": model.key, "evaluation_key": evaluation.key},
        tags={"family": family, **tags},
        parent=parent_run,
    )
    tracker.log_metrics(run, result.metrics())
    tracker.log_metrics(run, {"num_parameters": result.parameters, "oov": result.oov})
    for path in sorted(model.path.iterdir()):
        tracker.log_path(run, path, "model")
    tracker.finish(run)
    return result


@task(name="publish-comparison", cache_policy=NO_CACHE)
def publish_comparison(
    experiment: str, parent_run: str, results: Sequence[ModelResult]
) -> list[dict[str, Any]]:
    """The comparison table as Parquet and Markdown on the parent run, and as a Prefect table."""
    frame = comparison_frame(results)
    markdown = to_markdown(frame)
    tracker = Tracker(experiment)
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd")
    tracker.log_files(
        parent_run, {"comparison.parquet": buffer.getvalue(), "comparison.md": markdown}
    )
    best = min(results, key=lambda r: r.test_ppl)
    tracker.log_metrics(parent_run, {"best_test_ppl": best.test_ppl})
    rows = frame.to_dicts()
    create_table_artifact(
        key="comparison", table=rows, description="Perplexity of every model on the test split."
    )
    return rows
