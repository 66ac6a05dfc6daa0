"""The first rung: p(x) = Π p(x_t), each token drawn independently of its history.

Add-k smoothing over the V−1 predictable types (every vocabulary entry but ``<s>``):
p(w) = (c(w) + k) / (N + k·(V−1)), with c the training target counts (``</s>`` included).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from seqlm.vocab import BOS_ID, Vocabulary

MODEL_FILE = "unigram.parquet"


@dataclass(frozen=True)
class UnigramModel:
    logprob: np.ndarray  # natural log p(w) by vocabulary id; −inf for <s>, never predicted

    @classmethod
    def fit(cls, vocab: Vocabulary, add_k: float = 1.0) -> UnigramModel:
        counts = vocab.counts.astype(np.float64) + add_k
        counts[BOS_ID] = 0.0
        with np.errstate(divide="ignore"):
            return cls(np.log(counts) - np.log(counts.sum()))

    def score_stream(self, stream: np.ndarray) -> np.ndarray:
        """Natural-log probability of each target."""
        return self.logprob[stream]

    def sample(self, n_words: int, seed: int = 0) -> np.ndarray:
        """``n_words`` ids drawn independently: no context, so nothing stops "the the the"."""
        p = np.exp(self.logprob)
        return np.random.default_rng(seed).choice(len(p), size=n_words, p=p / p.sum())

    def save(self, folder: Path, vocab: Vocabulary) -> None:
        vocab.table.select("token", "id").with_columns(logprob=self.logprob).write_parquet(
            folder / MODEL_FILE, compression="zstd"
        )

    @classmethod
    def load(cls, folder: Path) -> UnigramModel:
        return cls(pl.read_parquet(folder / MODEL_FILE).sort("id")["logprob"].to_numpy())
