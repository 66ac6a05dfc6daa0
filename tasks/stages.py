"""The store-backed stages as Prefect tasks: they pass paths and artifact keys, never frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefect import task

from seqlm import stages
from seqlm.config import CorpusConfig, UnigramConfig, VocabConfig
from seqlm.corpus import Source
from seqlm.store import Artifact, Store
from tasks.cache import store_cache_key


@task(name="ingest", cache_key_fn=store_cache_key(stages.plan_ingest), persist_result=True)
def ingest_source(store: Path, source: Source, config: CorpusConfig) -> Artifact:
    return stages.ingest(Store(store), source, config)


@task(name="vocabulary", cache_key_fn=store_cache_key(stages.plan_vocabulary), persist_result=True)
def build_vocabulary(store: Path, shards: Sequence[Artifact], config: VocabConfig) -> Artifact:
    return stages.vocabulary(Store(store), shards, config)


@task(name="unigram", cache_key_fn=store_cache_key(stages.plan_unigram), persist_result=True)
def fit_unigram(store: Path, vocab: Artifact, config: UnigramConfig) -> Artifact:
    return stages.unigram(Store(store), vocab, config)


@task(name="evaluate", cache_key_fn=store_cache_key(stages.plan_evaluation), persist_result=True)
def evaluate_model(
    store: Path, model: Artifact, vocab: Artifact, shards: Sequence[Artifact]
) -> Artifact:
    return stages.evaluation(Store(store), model, vocab, shards)
