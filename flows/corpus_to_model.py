"""The ``corpus-to-model`` flow: prepare → fit → evaluate → mix → compare → publish.

Every stage is a task over the artifact store (``seqlm.pipeline`` is the stage sequence; this
flow runs it with Prefect tasks), so a re-run on an unchanged corpus only re-reads what exists.
MLflow gets one parent run per pipeline run and one child run per model.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import deployment, flow_run
from pydantic import Field

from flows.cli import error_line
from flows.executor import partitions, task_runner
from flows.guard import guard_deployment_run
from flows.params import PipelineSettings, override
from flows.serve import SERVICE_RUN_ENV
from seqlm.config import PipelineConfig
from seqlm.corpus import DEFAULT_CORPUS, Source
from seqlm.errors import SeqlmError
from seqlm.pipeline import compare, corpus_sources, evaluate, fit, mix, prepare
from seqlm.report import ModelResult
from seqlm.stages import LOADERS, Scored
from seqlm.store import Store
from tasks.registry import register_champion
from tasks.report import log_samples, publish_comparison, sample_model, track_model
from tasks.stages import PrefectRunner
from tasks.tracking import PipelineRun, Tracker, pipeline_run

log = logging.getLogger("seqlm.flow")
# The parameters' defaults as pydantic fields: Prefect shows their descriptions in the form.
CORPUS = Field(
    DEFAULT_CORPUS,
    description="A file (text, JSONL or Parquet), a folder of such files, or a folder of train, "
    "valid and test files; a deployment run's corpus lies under the service's corpus roots.",
)
CONFIG = Field(
    PipelineSettings(),
    description="The settings, section by section, as in a seqlm TOML config; anything left out "
    "keeps its default. A deployment run cannot change the run section.",
)
ORDERS = override("ngram", "orders")
RECURRENT_MODELS = override("rnn", "models")
MAX_MINUTES = override("rnn", "max_minutes")


def run_name() -> str:
    """A flow run is named by its corpus (``input.txt``, ``ptb``)."""
    return Path(flow_run.parameters.get("corpus", DEFAULT_CORPUS)).name


@flow(name="corpus-to-model", flow_run_name=run_name)
def corpus_to_model(
    corpus: str = CORPUS,
    orders: list[int] | None = ORDERS,
    recurrent_models: list[str] | None = RECURRENT_MODELS,
    max_minutes: float | None = MAX_MINUTES,
    config: PipelineSettings = CONFIG,
) -> dict[str, Any]:
    """Train every model of the ladder on a corpus and compare their perplexities.

    Returns the comparison (one row per model), a few sampled lines per model and the MLflow
    parent run's id. The parameters' types and descriptions come from ``seqlm.config``
    (``flows.params``): Prefect shows them as a form and checks them before a run starts.
    """
    cfg = checked_config(corpus, config, orders, recurrent_models, max_minutes)
    sources = corpus_sources(corpus, cfg)
    store = Store(cfg.run.check_store())  # fails before any work if unwritable
    tracker = Tracker(cfg.run.experiment)  # likewise for MLflow
    tracker.end_abandoned_runs()  # runs of killed processes, left RUNNING
    # run.executor: the tasks on a Dask cluster (whose scheduler must answer) or in threads.
    with task_runner(cfg.run) as dask:
        runner = PrefectRunner(store, dask, partitions(dask))
        return ladder(runner, tracker, corpus, sources, cfg)


def ladder(
    runner: PrefectRunner,
    tracker: Tracker,
    corpus: str,
    sources: Sequence[Source],
    cfg: PipelineConfig,
) -> dict[str, Any]:
    """Every stage of the pipeline through ``runner``, tracked in MLflow: the flow's result."""
    # Prepare, per tokenization: each file's shards; the train split's vocabulary and counts.
    datasets = [prepare(runner, sources, one) for one in cfg.tokenizations()]
    with pipeline_run(tracker, corpus, cfg, datasets) as parent:  # FAILED if the block raises
        scored = []
        for data in datasets:
            # Fit the ladder; each recurrent model's child run logs its epochs as they end.
            models = fit(runner, data, cfg, callbacks=parent.training(data, cfg.rnn))
            # Evaluate every model on the same targets; mix the best recurrent and n-gram.
            scored += mix(runner, evaluate(runner, data, models))
        # Compare: the table, the per-token tables and the chart, written in the store.
        compared = compare(runner, scored)
        # Publish the comparison first: the steps that only show it may then fail alone.
        rows = publish_comparison(parent, compared)
        result = present(parent, corpus, scored, rows)
    log.info("compared %d models; MLflow run %s", len(rows), parent.run_id)
    return result


def checked_config(
    corpus: str,
    settings: PipelineSettings,
    orders: list[int] | None,
    recurrent_models: list[str] | None,
    max_minutes: float | None,
) -> PipelineConfig:
    """The run's config: the settings and the flat overrides, checked before any work (and a
    deployment's run kept to its corpus roots, its run section unchanged)."""
    values = settings.model_dump()
    guard_deployment_run(corpus, values)
    if deployment.id and SERVICE_RUN_ENV in os.environ:  # the serving command's run section
        values["run"] = json.loads(os.environ[SERVICE_RUN_ENV])
    # Prefect attaches its run-log handler to the seqlm loggers (PREFECT_LOGGING_EXTRA_LOGGERS)
    # but leaves their level unset: WARNING in a served run. The seqlm command sets its own.
    if logging.getLogger("seqlm").level == logging.NOTSET:
        logging.getLogger("seqlm").setLevel(logging.INFO)
    overrides = {
        "ngram.orders": orders,
        "rnn.models": recurrent_models,
        "rnn.max_minutes": max_minutes,
    }
    given = {key: value for key, value in overrides.items() if value is not None}
    return PipelineConfig.from_dict(values).with_values(given)


class PresentationFailed(SeqlmError):
    """The models are compared and the comparison is logged, but a step that shows them (child
    runs, registry, samples) failed. ``result`` holds what the flow would have returned."""

    result: dict[str, Any]


def present(
    parent: PipelineRun, corpus: str, scored: Sequence[Scored], rows: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Every model's child run, the best model on valid offered to the registry, a few sampled
    lines per model: each step independent of the others. The flow's result; PresentationFailed
    (holding it) when a step failed."""
    results = [ModelResult(**row) for row in rows]
    models = [s.model for s in scored]
    # Bits per character rank models of any tokenization; within one, as perplexity does.
    best, champion = min(zip(results, models, strict=True), key=lambda rm: rm[0].valid_bpc)
    steps = [
        (f"track {r.model}", partial(track_model, parent, m, r))
        for r, m in zip(results, models, strict=True)
    ]
    steps.append(
        (f"register {best.model}", partial(register_champion, parent, corpus, champion, best))
    )
    steps += [
        (f"sample {r.model}", partial(sample_model, m))
        for r, m in zip(results, models, strict=True)
        if m.stage in LOADERS
    ]
    done, failed = _run_each(steps)
    samples = {
        name.removeprefix("sample "): lines
        for name, lines in done.items()
        if name.startswith("sample ")
    }
    failed += _run_each([("log samples", partial(log_samples, parent, samples))])[1]
    result = {"comparison": list(rows), "samples": samples, "mlflow_run": parent.run_id}
    if failed:
        error = PresentationFailed(
            f"MLflow run {parent.run_id}: the comparison is logged, but {', '.join(failed)} failed"
        )
        error.result = result
        raise error
    return result


def _run_each(steps: list[tuple[str, Callable[[], Any]]]) -> tuple[dict[str, Any], list[str]]:
    """Run every step, each independent of the others: what each returned by its name, and the
    names of those that failed, each logged as one line (``sample lstm: <error>``)."""
    done, failed = {}, []
    for name, step in steps:
        try:
            done[name] = step()
        except Exception as e:  # the work is done: one failed presentation must not hide the rest
            log.error("%s: %s", name, error_line(e) or f"{type(e).__name__}: {e}")
            failed.append(name)
    return done, failed
