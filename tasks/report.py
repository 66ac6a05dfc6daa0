"""Tracking tasks: what the store already holds, logged to MLflow and shown in Prefect.

The comparison is published on the parent run first; the steps that only show the models (a
child run per model, the registry, sampled lines) come after it and may each fail alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from seqlm.report import LIKE_FOR_LIKE, ModelResult, to_markdown
from seqlm.samples import sample_lines
from seqlm.stages import (
    CHART_FILE,
    COMPARISON_FILE,
    HISTORY_FILE,
    LOADERS,
    NGRAM,
    load_comparison,
    load_metrics,
    load_vocabulary,
)
from seqlm.stages.models import model_vocabulary
from seqlm.stages.stage import resolve
from seqlm.store import Artifact
from tasks.tracking import PipelineRun, pipeline_metrics

log = logging.getLogger("seqlm.flow")

# A model folder bigger than this (a large n-gram model) is never copied into MLflow: the runs
# reference it in the store by key and path.
MAX_LOGGED_BYTES = 50 << 20
# What a training run resolved or ended on (its config may say "auto"), tagged as trained.<key>.
TRAINED_FACTS = ("device", "precision", "epochs", "stopped")


def model_params(model: Artifact) -> dict[str, Any]:
    """A model's settings as its stage keyed them, and where its inputs lie in the store."""
    manifest = model.manifest
    params = dict(manifest["config"])
    if model.stage == NGRAM.name:  # the count tables stay in the store, referenced
        tables = resolve(model, manifest["note"]["tables"])
        params |= {"tables_key": tables.key, "tables_path": str(tables.path)}
    if "parts" in manifest["rows"]:
        params |= {
            "parts": "+".join(manifest["rows"]["parts"]),
            "weight": load_metrics(model)["weight"],
        }
    return params


@task(name="publish-comparison", cache_policy=NO_CACHE)
def publish_comparison(parent: PipelineRun, compared: Artifact) -> list[dict[str, Any]]:
    """The comparison on the parent run: each model's figures as ``<figure>/<model>`` metrics,
    the table as Parquet and Markdown, the chart and the per-token table; and as Prefect table
    and Markdown artifacts."""
    frame = load_comparison(compared)
    results = [ModelResult(**row) for row in frame.to_dicts()]
    markdown = to_markdown(frame)
    tracker = parent.tracker
    tracker.log_path(parent.run_id, compared.path / COMPARISON_FILE)
    tracker.log_files(parent.run_id, {"comparison.md": markdown})
    tracker.log_path(parent.run_id, compared.path / CHART_FILE)
    # The per-token tables grow with the test text: one copy per comparison key.
    tokens = sorted(p.name for p in compared.path.glob("tokens*.parquet"))
    tracker.log_once(parent.run_id, compared, "comparison", files=tokens)
    best = min(results, key=lambda r: r.test_ppl)
    metrics = {"best_test_ppl": best.test_ppl} | pipeline_metrics(results)
    tracker.log_metrics(parent.run_id, metrics)
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


@task(name="track-model", cache_policy=NO_CACHE)
def track_model(parent: PipelineRun, model: Artifact, result: ModelResult) -> None:
    """The model's child run (started before training, or a new one): its params, its metrics
    (per epoch too, for a recurrent model) and its model folder, copied by the first run that
    logs it and referenced by the others."""
    run = parent.started.get(result.model) or parent.start_model_run(
        result.model, result.family, model_params(model)
    )
    tracker = parent.tracker
    try:
        _log_model(parent, run, model, result)
    except BaseException:
        tracker.finish(run, failed=True)
        raise
    tracker.finish(run)


def _log_model(parent: PipelineRun, run: str, model: Artifact, result: ModelResult) -> None:
    tracker = parent.tracker
    rows = model.manifest["rows"]
    tracker.client.log_param(run, "size", result.size)
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


@task(name="sample", cache_policy=NO_CACHE)
def sample_model(model: Artifact, seed: int = 0) -> list[str]:
    """A few lines written by the model, rendered as its tokenizer joins its symbols."""
    vocabulary = load_vocabulary(model_vocabulary(model))
    lm = LOADERS[model.stage](model.path)
    return sample_lines(lm, vocabulary, seed=seed, tokenizer=model.manifest["rows"]["tokenizer"])


@task(name="log-samples", cache_policy=NO_CACHE)
def log_samples(parent: PipelineRun, samples: Mapping[str, list[str]]) -> None:
    """The sampled lines as ``samples.md`` on the parent run."""
    text = "".join(
        f"## {name}\n\n" + "".join(f"- {line}\n" for line in lines) + "\n"
        for name, lines in samples.items()
    )
    parent.tracker.log_files(parent.run_id, {"samples.md": text})
