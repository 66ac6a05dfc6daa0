"""The store-backed stages as Prefect tasks: they pass paths and artifact keys, never frames."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from prefect import task

from seqlm import stages
from seqlm.config import CorpusConfig, NgramConfig, RnnConfig, UnigramConfig, VocabConfig
from seqlm.corpus import Source
from seqlm.store import Artifact, Store
from tasks.cache import store_cache_key


@task(name="ingest", cache_key_fn=store_cache_key(stages.plan_ingest), persist_result=True)
def ingest_source(store: Path, source: Source, config: CorpusConfig) -> Artifact:
    return stages.ingest(Store(store), source, config)


@task(name="count", cache_key_fn=store_cache_key(stages.plan_shard_counts), persist_result=True)
def count_shard(store: Path, shard: Artifact, order: int) -> Artifact:
    return stages.shard_counts(Store(store), shard, order)


@task(name="vocabulary", cache_key_fn=store_cache_key(stages.plan_vocabulary), persist_result=True)
def build_vocabulary(store: Path, counts: Sequence[Artifact], config: VocabConfig) -> Artifact:
    return stages.vocabulary(Store(store), counts, config)


@task(
    name="merge-counts", cache_key_fn=store_cache_key(stages.plan_count_tables), persist_result=True
)
def merge_counts(store: Path, counts: Sequence[Artifact], vocab: Artifact) -> Artifact:
    return stages.count_tables(Store(store), counts, vocab)


@task(name="ngram", cache_key_fn=store_cache_key(stages.plan_ngram), persist_result=True)
def fit_ngram(store: Path, tables: Artifact, order: int, config: NgramConfig) -> Artifact:
    return stages.ngram(Store(store), tables, order, config)


@task(name="unigram", cache_key_fn=store_cache_key(stages.plan_unigram), persist_result=True)
def fit_unigram(store: Path, vocab: Artifact, config: UnigramConfig) -> Artifact:
    return stages.unigram(Store(store), vocab, config)


@task(name="rnn", cache_key_fn=store_cache_key(stages.plan_rnn), persist_result=True)
def train_rnn(
    store: Path, vocab: Artifact, shards: Sequence[Artifact], model: str, config: RnnConfig
) -> Artifact:
    """Training logs its progress through the ``seqlm`` loggers (Prefect's run log), throttled."""
    return stages.rnn(Store(store), vocab, shards, model, config)


@task(name="evaluate", cache_key_fn=store_cache_key(stages.plan_evaluation), persist_result=True)
def evaluate_model(
    store: Path,
    model: Artifact,
    vocab: Artifact,
    shards: Sequence[Artifact],
    line_reset: bool = False,
) -> Artifact:
    return stages.evaluation(Store(store), model, vocab, shards, line_reset)


@task(
    name="interpolate", cache_key_fn=store_cache_key(stages.plan_interpolation), persist_result=True
)
def interpolate_models(store: Path, a: Artifact, b: Artifact) -> Artifact:
    return stages.interpolation(Store(store), a, b)


@task(name="compare", cache_key_fn=store_cache_key(stages.plan_comparison), persist_result=True)
def compare_models(store: Path, evaluations: Mapping[str, Artifact]) -> Artifact:
    return stages.comparison(Store(store), evaluations)
