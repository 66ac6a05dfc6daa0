"""Dense row ids over count tables, so that estimation is bincount and gather passes, not joins.

Order 1 is dense over the vocabulary (row = word id, count 0 for absent words). For order n ≥ 2,
rows follow the table sorted by ``w1..wn``; ``context[n]`` is the row of ``w1..w(n−1)`` in order n−1
and ``suffix[n]`` the row of ``w2..wn``. ``key = context · V + word`` is strictly increasing, so a
sorted search finds any n-gram from its context row and last word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from seqlm.errors import SeqlmError
from seqlm.ngram.counts import COUNT, word_columns
from seqlm.vocab import EOS_ID

SORTED_SEARCH = 1 << 16  # queries from which sorting them first pays


def lookup(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Row of each query in the sorted ``keys``, −1 where absent.

    Many queries are sorted first, packed with their positions into one integer as counting does
    (one plain sort): a search for sorted queries walks the keys once, where random ones miss the
    cache at every step (10× faster for millions of queries into millions of keys)."""
    queries = np.asarray(queries)
    if len(keys) == 0:
        return np.full(len(queries), -1, dtype=np.int64)
    pos_bits = max(len(queries) - 1, 1).bit_length()
    packable = len(queries) >= SORTED_SEARCH and int(queries.min()) >= 0
    if not packable or int(queries.max()).bit_length() + pos_bits > 63:
        rows = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
        return np.where(keys[rows] == queries, rows, -1)
    packed = queries.astype(np.int64) << pos_bits
    packed |= np.arange(len(queries), dtype=np.int64)
    packed.sort()
    where = packed & ((1 << pos_bits) - 1)
    packed >>= pos_bits  # the queries, sorted
    rows = np.minimum(np.searchsorted(keys, packed), len(keys) - 1)
    out = np.empty(len(queries), dtype=np.int64)
    out[where] = np.where(keys[rows] == packed, rows, -1)
    return out


def _columns(table: pl.DataFrame, cols: list[str]) -> list[np.ndarray]:
    """The word columns as NumPy arrays: the last as int64 (it goes into keys), the rest narrow."""
    return [table[c].to_numpy() for c in cols[:-1]] + [table[cols[-1]].to_numpy().astype(np.int64)]


@dataclass(frozen=True)
class NgramIndex:
    vocab_size: int
    words: list[list[np.ndarray]]  # per order, the columns w1..wn (wn int64, the rest as stored)
    counts: list[np.ndarray]  # per order, raw counts (int64)
    context: list[np.ndarray]  # per order, row of the prefix in the order below (0 for order 1)
    suffix: list[np.ndarray]  # per order, row of the suffix in the order below (0 for order 1)

    @property
    def order(self) -> int:
        return len(self.counts)

    def keys(self, n: int) -> np.ndarray:
        return self.context[n - 1] * self.vocab_size + self.words[n - 1][-1]

    @classmethod
    def build(cls, tables: Sequence[pl.DataFrame], vocab_size: int) -> NgramIndex:
        if not tables or tables[0].height == 0:
            raise SeqlmError("no n-gram counts: the training split is empty")
        unigrams = tables[0]
        ids = unigrams["w1"].to_numpy().astype(np.int64)
        if len(ids) and int(ids.max()) >= vocab_size:
            raise SeqlmError(f"count tables hold ids beyond the vocabulary of {vocab_size} entries")
        dense = np.zeros(vocab_size, dtype=np.int64)
        np.add.at(dense, ids, unigrams[COUNT].to_numpy().astype(np.int64))
        zeros = np.zeros(vocab_size, dtype=np.int64)
        index = cls(vocab_size, [[np.arange(vocab_size)]], [dense], [zeros], [zeros])
        for n, table in enumerate(tables[1:], start=2):
            index._add_order(n, table)
        return index

    def _add_order(self, n: int, table: pl.DataFrame) -> None:
        cols = word_columns(n)
        words = _columns(table, cols)
        counts = table[COUNT].to_numpy().astype(np.int64)
        context = self._prefix_rows(n, words)
        if context is None:  # not sorted as written: sort once and retry
            table = table.sort(cols)
            words = _columns(table, cols)
            counts = table[COUNT].to_numpy().astype(np.int64)
            context = self._prefix_rows(n, words)
        if context is None:
            raise SeqlmError(f"inconsistent count tables: {n}-grams whose prefix is not counted")
        below_suffix = self.suffix[n - 2][context]
        suffix = lookup(self.keys(n - 1), below_suffix * self.vocab_size + words[-1])
        if np.any(suffix < 0):
            raise SeqlmError(f"inconsistent count tables: {n}-grams whose suffix is not counted")
        self.words.append(words)
        self.counts.append(counts)
        self.context.append(context)
        self.suffix.append(suffix)

    def _prefix_rows(self, n: int, words: list[np.ndarray]) -> np.ndarray | None:
        """Rows of the prefixes ``w1..w(n−1)`` in order n−1, or None when ``words`` are not sorted.

        In tables counted from whole lines, the prefixes of order n are exactly the (n−1)-grams
        that occur and do not end in ``</s>``; with both orders sorted, the k-th distinct prefix
        is the k-th such row, which one gather then verifies.
        """
        if len(words[0]) == 0:
            return np.zeros(0, dtype=np.int64)
        below_words, below_counts = self.words[n - 2], self.counts[n - 2]
        candidates = np.flatnonzero((below_counts > 0) & (below_words[-1] != EOS_ID))
        new_prefix = np.zeros(len(words[0]), dtype=bool)
        new_prefix[:1] = True
        for col in words[:-1]:
            new_prefix[1:] |= col[1:] != col[:-1]
        rank = np.cumsum(new_prefix) - 1
        if rank[-1] + 1 != len(candidates):
            return None
        context = candidates[rank]
        prefix_cols = zip(below_words, words[:-1], strict=True)
        if not all(np.array_equal(below[context], col) for below, col in prefix_cols):
            return None
        keys = context * self.vocab_size + words[-1]
        if np.any(keys[1:] <= keys[:-1]):
            return None
        return context
