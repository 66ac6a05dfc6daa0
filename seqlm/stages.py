"""The pipeline's stages over the artifact store, callable by hand without Prefect or MLflow.

Each stage has a ``plan_*`` function (what its key is made of: no work done) and a function that
builds the artifact, or finds it when its key already exists.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from seqlm import corpus
from seqlm.config import CorpusConfig, UnigramConfig, VocabConfig
from seqlm.evaluate import perplexity
from seqlm.store import Artifact, Plan, Store, file_digest
from seqlm.unigram import UnigramModel
from seqlm.vocab import Vocabulary, build_vocabulary

VOCAB_FILE = "vocab.parquet"
METRICS_FILE = "metrics.json"
EVAL_SPLITS = ("valid", "test")


class LanguageModel(Protocol):
    num_parameters: int

    def score_stream(self, stream: np.ndarray) -> np.ndarray: ...


def plan_ingest(source: corpus.Source, config: CorpusConfig) -> Plan:
    settings = {"tokenizer": config.tokenizer, "text_field": config.text_field}
    if source.split is None:
        settings["fractions"] = config.fractions
    return Plan("ingest", 1, settings, {"file": file_digest(source.path), "split": source.split})


def ingest(store: Store, source: corpus.Source, config: CorpusConfig) -> Artifact:
    """One source file → Parquet token shards per split."""
    return store.build(
        plan_ingest(source, config),
        lambda out: corpus.ingest(
            source, out, config.tokenizer, config.text_field, config.fractions
        ),
    )


def plan_vocabulary(shards: Sequence[Artifact], config: VocabConfig) -> Plan:
    return Plan("vocab", 1, asdict(config), {"shards": [s.key for s in shards]})


def vocabulary(store: Store, shards: Sequence[Artifact], config: VocabConfig) -> Artifact:
    """The vocabulary of the shards' train split."""

    def produce(out: Path) -> dict[str, int]:
        train = corpus.load_split([s.path for s in shards], "train")
        vocab = build_vocabulary(train, config.min_count, config.max_size)
        vocab.save(out / VOCAB_FILE)
        return {"types": vocab.size, "train_lines": train.height}

    return store.build(plan_vocabulary(shards, config), produce)


def load_vocabulary(vocab: Artifact) -> Vocabulary:
    return Vocabulary.load(vocab.path / VOCAB_FILE)


def plan_unigram(vocab: Artifact, config: UnigramConfig) -> Plan:
    return Plan("unigram", 1, asdict(config), {"vocab": vocab.key})


def unigram(store: Store, vocab: Artifact, config: UnigramConfig) -> Artifact:
    """The add-k unigram model of the vocabulary's training counts."""

    def produce(out: Path) -> dict[str, int]:
        v = load_vocabulary(vocab)
        UnigramModel.fit(v, config.add_k).save(out, v)
        return {"types": v.size}

    return store.build(plan_unigram(vocab, config), produce)


# How to load each model stage's artifact for scoring.
LOADERS: dict[str, Callable[[Path], LanguageModel]] = {"unigram": UnigramModel.load}


def plan_evaluation(model: Artifact, vocab: Artifact, shards: Sequence[Artifact]) -> Plan:
    inputs = {"model": f"{model.stage}/{model.key}", "vocab": vocab.key}
    return Plan("evaluate", 1, {}, inputs | {"shards": [s.key for s in shards]})


def evaluation(
    store: Store, model: Artifact, vocab: Artifact, shards: Sequence[Artifact]
) -> Artifact:
    """Per-target log-probabilities (``<split>.parquet``) and perplexities of a model on valid
    and test."""

    def produce(out: Path) -> dict[str, int]:
        v = load_vocabulary(vocab)
        lm = LOADERS[model.stage](model.path)
        metrics: dict[str, Any] = {"num_parameters": lm.num_parameters}
        for split in EVAL_SPLITS:
            targets = v.stream(corpus.load_split([s.path for s in shards], split))
            start = time.perf_counter()
            logprobs = lm.score_stream(targets)
            seconds = time.perf_counter() - start
            pl.DataFrame({"target": targets, "logprob": logprobs}).write_parquet(
                out / f"{split}.parquet", compression="zstd"
            )
            metrics[split] = perplexity(logprobs, targets).as_dict() | {
                "tokens_per_second": len(targets) / max(seconds, 1e-9)
            }
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        return {split: metrics[split]["targets"] for split in EVAL_SPLITS}

    return store.build(plan_evaluation(model, vocab, shards), produce)


def load_metrics(evaluation: Artifact) -> dict[str, Any]:
    return json.loads((evaluation.path / METRICS_FILE).read_text())
