"""Small corpora and a brute-force modified Kneser–Ney (dicts and loops, fine at test sizes)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl

from seqlm.vocab import BOS_ID, EOS_ID, UNK_ID, Vocabulary, build_vocabulary


def random_lines(
    n_lines: int, n_words: int, seed: int, unk: bool = True, empty: float = 0.0
) -> pl.DataFrame:
    """Zipf-ish random sentences over ``w0..w{n_words-1}`` (and a literal ``<unk>`` if ``unk``);
    ``empty``: the share of lines that are empty (sentences with no word)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_words + 2) ** 1.5
    words = np.array(["<unk>" if unk else "w", *[f"w{i}" for i in range(n_words)]])
    lines = [
        list(rng.choice(words, size=rng.integers(1, 9), p=weights / weights.sum()))
        for _ in range(n_lines)
    ]
    if empty:
        blank = rng.random(n_lines) < empty
        lines = [[] if b else line for line, b in zip(lines, blank, strict=True)]
    return pl.DataFrame({"tokens": lines}, schema={"tokens": pl.List(pl.String)})


def corpus(
    n_lines: int = 400, n_words: int = 150, seed: int = 0, unk: bool = True, empty: float = 0.0
) -> tuple[Vocabulary, np.ndarray]:
    lines = random_lines(n_lines, n_words, seed, unk, empty)
    vocab = build_vocabulary(lines)
    return vocab, vocab.stream(lines)


def split_lines(stream: np.ndarray) -> list[list[int]]:
    ends = np.flatnonzero(stream == EOS_ID)
    return [list(map(int, part[:-1])) for part in np.split(stream, ends + 1)[:-1]]


def brute_counts(stream: np.ndarray, order: int) -> list[Counter]:
    counts = [Counter() for _ in range(order)]
    for line in split_lines(stream):
        padded = (BOS_ID, *line, EOS_ID)
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                counts[n - 1][padded[i : i + n]] += 1
    return counts


class BruteKneserNey:
    """Interpolated modified Kneser–Ney straight from the definitions, one probability at a time."""

    def __init__(self, stream: np.ndarray, order: int, vocab_size: int) -> None:
        raw = brute_counts(stream, order)
        self.order = order
        self.adjusted = []
        for n in range(1, order + 1):
            if n == order:
                self.adjusted.append(dict(raw[n - 1]))
                continue
            left = Counter(g[1:] for g in raw[n])
            a = {g: (c if g[0] == BOS_ID else left[g]) for g, c in raw[n - 1].items()}
            if n == 1:
                a[(BOS_ID,)] = 0
            self.adjusted.append(a)
        self.discounts = []
        for a in self.adjusted:
            coc = Counter(c for c in a.values() if c > 0)
            y = coc[1] / (coc[1] + 2 * coc[2])
            ds = [k - (k + 1) * y * coc[k + 1] / coc[k] for k in (1, 2, 3)]
            self.discounts.append([0.0, *ds])
        self.uniform = vocab_size - 1 + (raw[0][(UNK_ID,)] > 0)

    def prob(self, word: int, history: tuple[int, ...]) -> float:
        n = len(history) + 1
        a, d = self.adjusted[n - 1], self.discounts[n - 1]
        ext = {g: c for g, c in a.items() if g[:-1] == history and c > 0}
        lower = 1.0 / self.uniform if n == 1 else self.prob(word, history[1:])
        if not ext:
            return lower
        total = sum(ext.values())
        gamma = sum(d[min(c, 3)] for c in ext.values()) / total
        c = ext.get((*history, word), 0)
        return (c - d[min(c, 3)]) / total + gamma * lower

    def log10_probs(self, stream: np.ndarray) -> np.ndarray:
        out = []
        for line in split_lines(stream):
            padded = (BOS_ID, *line, EOS_ID)
            for t in range(1, len(padded)):
                history = padded[max(0, t - self.order + 1) : t]
                out.append(np.log10(self.prob(padded[t], history)))
        return np.array(out)
