"""Tracking tasks: a child MLflow run per model; the comparison on the parent run and in Prefect."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
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
from tasks.tracking import Tracker, pipeline_metrics

# A model folder bigger than this (a large n-gram model) is never copied into MLflow: the runs
# reference it in the store by key and path.
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


@dataclass
class ModelRuns:
    """The child runs of a pipeline run that start before their model is fitted: a recurrent
    model's, so that its epochs are logged as they happen."""

    experiment: str
    parent_run: str
    tags: Mapping[str, str]
    started: dict[str, str] = field(default_factory=dict)

    def start(
        self, name: str, family: str, params: Mapping[str, Any]
    ) -> Callable[[dict[str, float]], None]:
        """Start the model's run; returns what logs an epoch to it (training's ``on_epoch``)."""
        tracker = Tracker(self.experiment)
        run = start_model_run(tracker, self.parent_run, name, family, params, self.tags)
        self.started[name] = run
        return partial(tracker.log_epoch, run)

    def abandon(self) -> None:
        """Mark FAILED the runs still RUNNING (the pipeline failed before tracking them)."""
        tracker = Tracker(self.experiment)
        for run in self.started.values():
            if tracker.client.get_run(run).info.status == "RUNNING":
                tracker.finish(run, failed=True)


def start_model_run(
    tracker: Tracker,
    parent_run: str,
    name: str,
    family: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
) -> str:
    """A model's child run, named by the model."""
    return tracker.start_run(name, params, tags={"family": family, **tags}, parent=parent_run)


@task(name="track-model", cache_policy=NO_CACHE)
def track_model(
    experiment: str,
    parent_run: str,
    fitted: Fitted,
    result: ModelResult,
    tags: Mapping[str, str],
    run: str | None = None,
) -> None:
    """The model's child run (``run``, started before training, or a new one): its params, its
    metrics (per epoch too, for a recurrent model) and its model folder, copied by the first run
    that logs it and referenced by the others."""
    tracker = Tracker(experiment)
    run = run or start_model_run(
        tracker, parent_run, fitted.name, fitted.family, fitted.params, tags
    )
    try:
        _log_model(tracker, run, fitted, result)
    except BaseException:
        tracker.finish(run, failed=True)
        raise
    tracker.finish(run)


def _log_model(tracker: Tracker, run: str, fitted: Fitted, result: ModelResult) -> None:
    model = fitted.model
    rows = model.manifest["rows"]
    tracker.client.log_param(run, "size", fitted.size)
    for key in TRAINED_FACTS:
        if key in rows:
            tracker.client.set_tag(run, f"trained.{key}", str(rows[key]))
    # The epochs not logged as they happened (a model found in the store, a resumed training),
    # then the final figures at the last step: MLflow shows the latest.
    history = model.path / HISTORY_FILE
    epochs = json.loads(history.read_text()) if history.exists() else []
    logged = {m.step for m in tracker.client.get_metric_history(run, "train_ppl")}
    for epoch in epochs:
        if int(epoch["epoch"]) not in logged:
            tracker.log_epoch(run, epoch)
    final = result.metrics() | {"num_parameters": result.parameters, "oov": result.oov}
    if result.test_ppl_line_reset is not None:
        final["test_ppl_line_reset"] = result.test_ppl_line_reset
    tracker.log_metrics(run, final, step=int(epochs[-1]["epoch"]) if epochs else 0)
    tracker.log_once(run, model, "model", max_bytes=MAX_LOGGED_BYTES)


@task(name="publish-comparison", cache_policy=NO_CACHE)
def publish_comparison(
    experiment: str, parent_run: str, results: Sequence[ModelResult], compared: Artifact
) -> list[dict[str, Any]]:
    """The comparison on the parent run: each model's figures as ``<figure>/<model>`` metrics,
    the table as Parquet and Markdown, the chart and the per-token table; and as Prefect table
    and Markdown artifacts."""
    frame = comparison_frame(results)
    markdown = to_markdown(frame)
    tracker = Tracker(experiment)
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd")
    tracker.log_files(
        parent_run, {"comparison.parquet": buffer.getvalue(), "comparison.md": markdown}
    )
    tracker.log_path(parent_run, compared.path / CHART_FILE)
    # The per-token table grows with the test text: one copy per comparison key.
    tracker.log_once(parent_run, compared, "comparison", files=[TOKENS_FILE])
    best = min(results, key=lambda r: r.test_ppl)
    tracker.log_metrics(parent_run, {"best_test_ppl": best.test_ppl} | pipeline_metrics(results))
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
