"""The store-backed stages as Prefect tasks: they pass paths and artifact keys, never frames.

The artifact store is the cache (a stage whose key exists is found, not rebuilt), so Prefect
neither caches nor persists these tasks' results: nothing a run reads back is a pickle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from seqlm import stages
from seqlm.config import CorpusConfig, NgramConfig, RnnConfig, UnigramConfig, VocabConfig
from seqlm.corpus import Source
from seqlm.store import Artifact, Store


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_source(store: Path, source: Source, config: CorpusConfig) -> Artifact:
    return stages.ingest(Store(store), source, config)


@task(name="count", cache_policy=NO_CACHE)
def count_shard(store: Path, shard: Artifact, order: int) -> Artifact:
    return stages.shard_counts(Store(store), shard, order)


@task(name="vocabulary", cache_policy=NO_CACHE)
def build_vocabulary(store: Path, counts: Sequence[Artifact], config: VocabConfig) -> Artifact:
    return stages.vocabulary(Store(store), counts, config)


@task(name="merge-counts", cache_policy=NO_CACHE)
def merge_counts(store: Path, counts: Sequence[Artifact], vocab: Artifact) -> Artifact:
    return stages.count_tables(Store(store), counts, vocab)


@task(name="ngram", cache_policy=NO_CACHE)
def fit_ngram(store: Path, tables: Artifact, order: int, config: NgramConfig) -> Artifact:
    return stages.ngram(Store(store), tables, order, config)


@task(name="unigram", cache_policy=NO_CACHE)
def fit_unigram(store: Path, vocab: Artifact, config: UnigramConfig) -> Artifact:
    return stages.unigram(Store(store), vocab, config)


@task(name="rnn", cache_policy=NO_CACHE)
def train_rnn(
    store: Path,
    vocab: Artifact,
    shards: Sequence[Artifact],
    model: str,
    config: RnnConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> Artifact:
    """Training logs its progress through the ``seqlm`` loggers (Prefect's run log), throttled;
    ``on_epoch`` gets each epoch's figures as it ends (MLflow's per-epoch metrics)."""
    return stages.rnn(Store(store), vocab, shards, model, config, on_epoch=on_epoch)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_model(
    store: Path,
    model: Artifact,
    vocab: Artifact,
    shards: Sequence[Artifact],
    line_reset: bool = False,
) -> Artifact:
    return stages.evaluation(Store(store), model, vocab, shards, line_reset)


@task(name="interpolate", cache_policy=NO_CACHE)
def interpolate_models(store: Path, a: Artifact, b: Artifact) -> Artifact:
    return stages.interpolation(Store(store), a, b)


@task(name="compare", cache_policy=NO_CACHE)
def compare_models(store: Path, evaluations: Mapping[str, Artifact]) -> Artifact:
    return stages.comparison(Store(store), evaluations)
