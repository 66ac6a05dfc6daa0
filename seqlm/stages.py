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
from seqlm.config import CorpusConfig, NgramConfig, UnigramConfig, VocabConfig
from seqlm.errors import SeqlmError
from seqlm.evaluate import perplexity
from seqlm.ngram import (
    NgramModel,
    count_ngrams,
    fit,
    merge_tables,
    read_tables,
    write_arpa,
    write_tables,
)
from seqlm.ngram.counts import VOCAB_FILE as TABLES_VOCAB_FILE
from seqlm.ngram.counts import id_dtype, word_columns
from seqlm.store import Artifact, Plan, Store, file_digest
from seqlm.unigram import UnigramModel
from seqlm.vocab import Vocabulary, build_vocabulary, merge_vocabularies

VOCAB_FILE = "vocab.parquet"
METRICS_FILE = "metrics.json"
TABLES = "tables"  # a count-table folder: order<n>.parquet and the vocabulary naming the ids
MODEL = "model"
EVAL_SPLITS = ("valid", "test")
STAGES = ("ingest", "counts", "vocab", "tables", "unigram", "ngram", "evaluate")


class LanguageModel(Protocol):
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


def plan_shard_counts(shard: Artifact, order: int) -> Plan:
    return Plan("counts", 1, {"order": order}, {"shard": shard.key})


def shard_counts(store: Store, shard: Artifact, order: int) -> Artifact:
    """N-gram count tables of one shard's train split, orders 1..``order``, over the shard's own
    type table (ids independent of every other shard, so a new shard is counted alone)."""

    def produce(out: Path) -> dict[str, int]:
        train = corpus.load_split([shard.path], "train")
        types = build_vocabulary(train)
        tables = count_ngrams(types.stream(train), order, types.size)
        write_tables(tables, out / TABLES, types)
        return {"types": types.size} | {f"order{n}": t.height for n, t in enumerate(tables, 1)}

    return store.build(plan_shard_counts(shard, order), produce)


def plan_vocabulary(counts: Sequence[Artifact], config: VocabConfig) -> Plan:
    return Plan("vocab", 2, asdict(config), {"counts": [c.key for c in counts]})


def vocabulary(store: Store, counts: Sequence[Artifact], config: VocabConfig) -> Artifact:
    """The vocabulary of the train split, from the shards' merged unigram counts."""

    def produce(out: Path) -> dict[str, int]:
        types = [Vocabulary.load(c.path / TABLES / TABLES_VOCAB_FILE) for c in counts]
        vocab = merge_vocabularies(types, config.min_count, config.max_size)
        vocab.save(out / VOCAB_FILE)
        return {"types": vocab.size, "train_lines": int(vocab.counts[2])}

    return store.build(plan_vocabulary(counts, config), produce)


def load_vocabulary(vocab: Artifact) -> Vocabulary:
    return Vocabulary.load(vocab.path / VOCAB_FILE)


def plan_unigram(vocab: Artifact, config: UnigramConfig) -> Plan:
    return Plan("unigram", 1, asdict(config), {"vocab": vocab.key})


def unigram(store: Store, vocab: Artifact, config: UnigramConfig) -> Artifact:
    """The add-k unigram model of the vocabulary's training counts."""

    def produce(out: Path) -> dict[str, int]:
        v = load_vocabulary(vocab)
        UnigramModel.fit(v, config.add_k).save(out, v)
        return {"parameters": v.size - 1}

    return store.build(plan_unigram(vocab, config), produce)


def plan_count_tables(counts: Sequence[Artifact], vocab: Artifact) -> Plan:
    return Plan("tables", 1, {}, {"counts": [c.key for c in counts], "vocab": vocab.key})


def count_tables(store: Store, counts: Sequence[Artifact], vocab: Artifact) -> Artifact:
    """The shards' count tables merged over the vocabulary's ids (cut-off types become
    ``<unk>``, and their n-grams are summed with it)."""

    def produce(out: Path) -> dict[str, int]:
        v = load_vocabulary(vocab)
        dtype = id_dtype(v.size)
        remapped = []
        for c in counts:
            mapping = v.id_map(Vocabulary.load(c.path / TABLES / TABLES_VOCAB_FILE))
            remapped.append(
                [
                    t.with_columns(
                        pl.Series(w, mapping[t[w].to_numpy()], dtype=dtype) for w in word_columns(n)
                    )
                    for n, t in enumerate(read_tables(c.path / TABLES), start=1)
                ]
            )
        tables = merge_tables(remapped)
        write_tables(tables, out / TABLES, v)
        return {f"order{n}": t.height for n, t in enumerate(tables, start=1)}

    return store.build(plan_count_tables(counts, vocab), produce)


def plan_ngram(tables: Artifact, order: int, config: NgramConfig) -> Plan:
    settings = {"order": order, "smoothing": config.smoothing, "arpa": config.arpa}
    if config.smoothing == "addk":
        settings["add_k"] = config.add_k
    if config.smoothing == "kn":
        settings["discount_fallback"] = config.discount_fallback
    return Plan("ngram", 1, settings, {"tables": tables.key})


def ngram(store: Store, tables: Artifact, order: int, config: NgramConfig) -> Artifact:
    """An n-gram model of one order from the merged count tables (and its ARPA file if asked)."""

    def produce(out: Path) -> dict[str, int]:
        counted = read_tables(tables.path / TABLES)
        if order > len(counted):
            raise SeqlmError(f"{tables.path}: counted up to order {len(counted)}, not {order}")
        v = Vocabulary.load(tables.path / TABLES / TABLES_VOCAB_FILE)
        model = fit(
            counted[:order],
            v,
            config.smoothing,
            add_k=config.add_k,
            discount_fallback=config.discount_fallback,
        )
        model.save(out / MODEL)
        if config.arpa:
            write_arpa(model, out / "model.arpa")
        # A probability per n-gram, and a back-off weight per n-gram below the top order.
        parameters = 2 * sum(model.sizes) - model.sizes[-1]
        return {"parameters": parameters} | {f"order{n}": k for n, k in enumerate(model.sizes, 1)}

    return store.build(plan_ngram(tables, order, config), produce)


# How to load each model stage's artifact for scoring.
LOADERS: dict[str, Callable[[Path], LanguageModel]] = {
    "unigram": UnigramModel.load,
    "ngram": lambda path: NgramModel.load(path / MODEL),
}


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
        metrics: dict[str, Any] = {"num_parameters": model.manifest["rows"]["parameters"]}
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
