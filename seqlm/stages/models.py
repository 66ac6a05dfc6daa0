"""Model stages: each fits one model from the data stages' artifacts and saves it to the store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import numpy as np

from seqlm.config import NgramConfig, UnigramConfig
from seqlm.errors import SeqlmError
from seqlm.ngram import NgramModel, fit, read_tables, write_arpa
from seqlm.ngram.counts import VOCAB_FILE as TABLES_VOCAB_FILE
from seqlm.stages.data import TABLES, load_vocabulary
from seqlm.store import Artifact, Plan, Store
from seqlm.unigram import UnigramModel
from seqlm.vocab import Vocabulary

MODEL = "model"


class LanguageModel(Protocol):
    def score_stream(self, stream: np.ndarray) -> np.ndarray: ...


def plan_unigram(vocab: Artifact, config: UnigramConfig) -> Plan:
    return Plan("unigram", 1, asdict(config), {"vocab": vocab.key})


def unigram(store: Store, vocab: Artifact, config: UnigramConfig) -> Artifact:
    """The add-k unigram model of the vocabulary's training counts."""

    def produce(out: Path) -> dict[str, int]:
        v = load_vocabulary(vocab)
        UnigramModel.fit(v, config.add_k).save(out, v)
        return {"parameters": v.size - 1}

    return store.build(plan_unigram(vocab, config), produce)


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
