"""The ``corpus-to-model`` flow: ingest → vocabulary → models → evaluation → comparison.

Every stage is a task over the artifact store, so a re-run on an unchanged corpus only re-reads
what exists. MLflow gets one parent run per pipeline run and one child run per model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, unmapped
from prefect.runtime import flow_run
from pydantic import Field

from flows.cli import error_line
from flows.guard import guard_deployment_run
from flows.params import PipelineSettings, override
from seqlm.config import PipelineConfig
from seqlm.corpus import DEFAULT_CORPUS, discover
from seqlm.errors import SeqlmError
from seqlm.report import Fitted, ModelResult
from seqlm.stages import LOADERS, VOCAB_FILE, load_metrics
from seqlm.store import Artifact, stage_key
from tasks.registry import register_champion
from tasks.report import (
    ModelRuns,
    log_samples,
    model_result,
    publish_comparison,
    sample_model,
    track_model,
)
from tasks.stages import (
    build_vocabulary,
    compare_models,
    count_shard,
    evaluate_model,
    fit_ngram,
    fit_unigram,
    ingest_source,
    interpolate_models,
    merge_counts,
    shard_types,
    train_rnn,
)
from tasks.tracking import Tracker, pipeline_run_name

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


class PresentationFailed(SeqlmError):
    """The models are compared and the comparison is logged, but a step that shows them (child
    runs, registry, samples) failed. ``result`` holds what the flow would have returned."""

    result: dict[str, Any]


def fit_models(
    store: Path,
    cfg: PipelineConfig,
    vocab: Artifact,
    counts: list[Artifact],
    shards: list[Artifact],
    runs: ModelRuns,
) -> list[Fitted]:
    """Every configured model, cheapest first: the unigram, one n-gram per order, then each
    recurrent model (whose MLflow run in ``runs`` starts before it trains)."""
    fitted = [
        Fitted(
            "unigram",
            "unigram",
            "1-gram",
            fit_unigram(store, vocab, cfg.unigram),
            asdict(cfg.unigram),
        )
    ]
    if cfg.ngram.orders:
        tables = merge_counts(store, counts, vocab)
        # The count tables stay in the store: the runs reference them by key and path.
        params = asdict(cfg.ngram) | {"tables_key": tables.key, "tables_path": tables.path}
        for order in cfg.ngram.orders:
            fitted.append(
                Fitted(
                    f"{cfg.ngram.smoothing}{order}",
                    "ngram",
                    f"{order}-gram",
                    fit_ngram(store, tables, order, cfg.ngram),
                    params | {"order": order},
                )
            )
    rnn_params = {k: v for k, v in asdict(cfg.rnn).items() if k != "models"}
    for model in cfg.rnn.models:
        size = f"{cfg.rnn.nlayers}x{cfg.rnn.nhid}"
        params = rnn_params | {"model": model}
        on_epoch = runs.start(model, "rnn", params)
        trained = train_rnn(store, vocab, shards, model, cfg.rnn, on_epoch=on_epoch)
        fitted.append(Fitted(model, "rnn", size, trained, params))
    return fitted


def best_mixture(
    store: Path, fitted: list[Fitted], evaluations: dict[str, Artifact]
) -> Fitted | None:
    """The best recurrent model interpolated with the best n-gram model (best on valid)."""
    best = {}
    for family in ("rnn", "ngram"):
        members = [f.name for f in fitted if f.family == family]
        if not members:
            return None
        best[family] = min(members, key=lambda m: load_metrics(evaluations[m])["valid"]["ppl"])
    mixed = interpolate_models(store, evaluations[best["rnn"]], evaluations[best["ngram"]])
    weight = load_metrics(mixed)["weight"]
    return Fitted(
        f"{best['rnn']}+{best['ngram']}",
        "interpolated",
        f"λ={weight:.3f}",
        mixed,
        {"rnn": best["rnn"], "ngram": best["ngram"], "weight": weight},
    )


def present(steps: list[tuple[str, Callable[[], Any]]]) -> tuple[dict[str, Any], list[str]]:
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


def champion(
    experiment: str,
    parent: str,
    corpus: str,
    cfg: PipelineConfig,
    vocab: Artifact,
    fitted: list[Fitted],
    results: list[ModelResult],
    keys: dict[str, str],
) -> str | None:
    """Offer the best model on valid to the registry (interpolations with their two parts)."""
    best = min(results, key=lambda r: r.valid_ppl)
    by_name = {f.name: f for f in fitted}
    candidate = by_name[best.model]
    if candidate.family == "interpolated":
        parts = [by_name[candidate.params["rnn"]], by_name[candidate.params["ngram"]]]
    else:
        parts = [candidate]
    vocab_file = vocab.path / VOCAB_FILE
    return register_champion(
        experiment, parent, corpus, cfg.corpus.tokenizer, vocab_file, candidate, parts, best, keys
    )


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
    settings = config.model_dump()
    guard_deployment_run(corpus, settings)  # a deployment's run: corpus roots, run.* unchanged
    # Prefect attaches its run-log handler to the seqlm loggers (PREFECT_LOGGING_EXTRA_LOGGERS)
    # but leaves their level unset: WARNING in a served run. The seqlm command sets its own.
    if logging.getLogger("seqlm").level == logging.NOTSET:
        logging.getLogger("seqlm").setLevel(logging.INFO)
    overrides = {
        "ngram.orders": orders,
        "rnn.models": recurrent_models,
        "rnn.max_minutes": max_minutes,
    }
    cfg = PipelineConfig.from_dict(settings).with_values(
        {key: value for key, value in overrides.items() if value is not None}
    )
    sources = discover(corpus)
    store = cfg.run.check_store()  # fails here, before any work, if it cannot be written
    experiment = cfg.run.experiment
    tracker = Tracker(experiment)  # fails here, before any work, if MLflow cannot be written
    tracker.end_abandoned_runs()  # runs of killed processes, left RUNNING

    shards: list[Artifact] = ingest_source.map(store, sources, unmapped(cfg.corpus)).result()
    train_shards = [s for s in shards if "train" in s.manifest["rows"]]
    # The vocabulary needs only the shards' types: n-gram orders never re-key it.
    types: list[Artifact] = shard_types.map(store, train_shards).result()
    vocab = build_vocabulary(store, types, cfg.vocab)
    counts: list[Artifact] = []
    if cfg.ngram.orders:
        max_order = max(cfg.ngram.orders)
        counts = count_shard.map(store, train_shards, unmapped(max_order)).result()
    keys = {"corpus_key": stage_key("corpus", 1, {}, {"shards": [s.key for s in shards]})}
    keys["vocab_key"] = vocab.key
    parent = tracker.start_run(
        pipeline_run_name(corpus, cfg),
        {
            "corpus": corpus,
            "shard_keys": ",".join(s.key for s in shards),
            **keys,
            "vocab_size": vocab.manifest["rows"]["types"],
            **cfg.flat(),
        },
        tags=keys,
    )
    tracker.log_corpus(parent, corpus, keys["corpus_key"])
    runs = ModelRuns(experiment, parent, keys)
    try:
        fitted = fit_models(store, cfg, vocab, counts, shards, runs)
        evaluations = {f.name: evaluate_model(store, f.model, vocab, shards) for f in fitted}
        # The like-for-like figure: recurrent state restarted at every line, as n-gram context is.
        line_reset = {
            f.name: evaluate_model(store, f.model, vocab, shards, line_reset=True)
            for f in fitted
            if f.family == "rnn"
        }
        mixture = best_mixture(store, fitted, evaluations)
        if mixture is not None:
            fitted.append(mixture)
            evaluations[mixture.name] = mixture.model
        compared = compare_models(store, evaluations)  # refuses models scored on other targets
        results = [model_result(f, evaluations[f.name], line_reset.get(f.name)) for f in fitted]
        # The comparison is logged before anything that only shows it, which may then fail alone.
        rows = publish_comparison(experiment, parent, results, compared)
        done, failed = present(
            [(f"track {f.name}",
              partial(track_model, experiment, parent, f, r, keys, runs.started.get(f.name)))
             for f, r in zip(fitted, results, strict=True)]
            + [(f"register {min(results, key=lambda r: r.valid_ppl).model}",
                partial(champion, experiment, parent, corpus, cfg, vocab, fitted, results, keys))]
            + [(f"sample {f.name}", partial(sample_model, f, vocab))
               for f in fitted if f.model.stage in LOADERS]
        )  # fmt: skip
        samples = {name.removeprefix("sample "): lines for name, lines in done.items()
                   if name.startswith("sample ")}  # fmt: skip
        failed += present([("log samples", partial(log_samples, experiment, parent, samples))])[1]
        result = {"comparison": rows, "samples": samples, "mlflow_run": parent}
        if failed:
            error = PresentationFailed(
                f"MLflow run {parent}: the comparison is logged, but {', '.join(failed)} failed"
            )
            error.result = result
            raise error
    except BaseException:
        runs.abandon()
        tracker.finish(parent, failed=True)
        raise
    tracker.finish(parent)
    log.info("compared %d models; MLflow run %s", len(rows), parent)
    return result
