"""The store-backed stages as Prefect tasks: they pass paths and artifact keys, never frames.

The artifact store is the cache (a stage whose key exists is found, not rebuilt), so Prefect
neither caches nor persists these tasks' results: nothing a run reads back is a pickle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from seqlm import stages
from seqlm.config import CorpusConfig, NgramConfig, RnnConfig, UnigramConfig, VocabConfig
from seqlm.corpus import Source
from seqlm.progress import ProgressBar
from seqlm.store import Artifact, Store

log = logging.getLogger("seqlm.stages")


def reported(artifact: Artifact) -> Artifact:
    """The stage's artifact, after one line on the terminal and in the run's log that says how
    the stage went: ``train lstm    built    31.20 s`` (the task run's name)."""
    done = "found" if artifact.seconds is None else f"built {artifact.seconds:8.2f} s"
    log.info("%-28s %s", task_run.name, done)
    return artifact


def _source(shard: Artifact) -> str:
    """The file a shard was ingested from, by name."""
    return Path(shard.manifest["note"]["source"]).name


def model_name(artifact: Artifact) -> str:
    """A model's name as the comparison spells it (``kn5``, ``lstm``), from a model's artifact
    or from an evaluation's (which names its model's folder, ``<stage>/<key>``)."""
    manifest = artifact.manifest
    if artifact.stage == "evaluate":
        folder = manifest["inputs"]["model"]
        stage, key = folder.split("/")
        return model_name(Artifact(stage, key, artifact.path.parents[1] / folder))
    config = manifest["config"]
    if artifact.stage == "ngram":
        return f"{config['smoothing']}{config['order']}"
    return config.get("model", artifact.stage)


def _evaluation_name(parameters: dict[str, Any]) -> str:
    line_reset = " (line reset)" if parameters.get("line_reset") else ""
    return f"evaluate {model_name(parameters['model'])}{line_reset}"


@task(
    name="ingest",
    task_run_name=lambda parameters: f"ingest {parameters['source'].path.name}",
    cache_policy=NO_CACHE,
)
def ingest_source(store: Path, source: Source, config: CorpusConfig) -> Artifact:
    return reported(stages.ingest(Store(store), source, config))


@task(
    name="types",
    task_run_name=lambda parameters: f"types {_source(parameters['shard'])}",
    cache_policy=NO_CACHE,
)
def shard_types(store: Path, shard: Artifact) -> Artifact:
    return reported(stages.shard_types(Store(store), shard))


@task(
    name="count",
    task_run_name=lambda parameters: f"count {_source(parameters['shard'])}",
    cache_policy=NO_CACHE,
)
def count_shard(store: Path, shard: Artifact, order: int) -> Artifact:
    return reported(stages.shard_counts(Store(store), shard, order))


@task(name="vocabulary", task_run_name="vocabulary", cache_policy=NO_CACHE)
def build_vocabulary(store: Path, types: Sequence[Artifact], config: VocabConfig) -> Artifact:
    return reported(stages.vocabulary(Store(store), types, config))


@task(name="merge-counts", task_run_name="merge counts", cache_policy=NO_CACHE)
def merge_counts(store: Path, counts: Sequence[Artifact], vocab: Artifact) -> Artifact:
    return reported(stages.count_tables(Store(store), counts, vocab))


@task(
    name="ngram",
    task_run_name=lambda parameters: f"fit {parameters['config'].smoothing}{parameters['order']}",
    cache_policy=NO_CACHE,
)
def fit_ngram(store: Path, tables: Artifact, order: int, config: NgramConfig) -> Artifact:
    return reported(stages.ngram(Store(store), tables, order, config))


@task(name="unigram", task_run_name="fit unigram", cache_policy=NO_CACHE)
def fit_unigram(store: Path, vocab: Artifact, config: UnigramConfig) -> Artifact:
    return reported(stages.unigram(Store(store), vocab, config))


@task(name="rnn", task_run_name="train {model}", cache_policy=NO_CACHE)
def train_rnn(
    store: Path,
    vocab: Artifact,
    shards: Sequence[Artifact],
    model: str,
    config: RnnConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> Artifact:
    """Training logs its progress through the ``seqlm`` loggers (Prefect's run log), throttled,
    and draws a progress bar on a terminal; ``on_epoch`` gets each epoch's figures as it ends
    (MLflow's per-epoch metrics)."""
    bar = ProgressBar(model)
    on_progress = bar if bar.enabled else None
    return reported(
        stages.rnn(
            Store(store), vocab, shards, model, config, on_epoch=on_epoch, on_progress=on_progress
        )
    )


@task(name="evaluate", task_run_name=_evaluation_name, cache_policy=NO_CACHE)
def evaluate_model(
    store: Path,
    model: Artifact,
    vocab: Artifact,
    shards: Sequence[Artifact],
    line_reset: bool = False,
) -> Artifact:
    return reported(stages.evaluation(Store(store), model, vocab, shards, line_reset))


@task(
    name="interpolate",
    task_run_name=lambda parameters: (
        f"interpolate {model_name(parameters['a'])}+{model_name(parameters['b'])}"
    ),
    cache_policy=NO_CACHE,
)
def interpolate_models(store: Path, a: Artifact, b: Artifact) -> Artifact:
    return reported(stages.interpolation(Store(store), a, b))


@task(
    name="compare",
    task_run_name=lambda parameters: f"compare {len(parameters['evaluations'])} models",
    cache_policy=NO_CACHE,
)
def compare_models(store: Path, evaluations: Mapping[str, Artifact]) -> Artifact:
    return reported(stages.comparison(Store(store), evaluations))
