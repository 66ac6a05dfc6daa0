"""An order-by-order index of sorted count tables, built in row batches: each n-gram's context
row and suffix row in the order below, its last word, raw count and distinct left extensions.

Order 1 is dense over the vocabulary (row = word id, count 0 for absent words). For order n ≥ 2,
rows follow the table sorted by ``w1..wn``, which puts every context's extensions next to each
other: the k-th distinct prefix is the k-th row of the order below that does not end in ``</s>``
(in tables counted from whole lines every other (n−1)-gram is some n-gram's prefix), and the key
``context row × V + word`` is strictly increasing, so a sorted search finds each suffix.

Only the order below is held whole while an order streams through (``ROW_BYTES`` a row); every
finished array is written to a scratch folder (plain file writes, which the page cache holds, not
the process) and read back in batches or mapped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from seqlm.errors import SeqlmError
from seqlm.ngram.budget import working_set
from seqlm.ngram.counts import (
    COUNT,
    ID_TYPES,
    NUMPY_ID_TYPES,
    id_dtype,
    table_file,
    word_columns,
)
from seqlm.ngram.index import suffix_rows
from seqlm.overlap import ahead
from seqlm.vocab import BOS_ID, EOS_ID

ROW_BYTES = 40  # held per row of the order below: key, suffix, candidate, word, extensions
BATCH_BYTES = 120  # per row of a batch: its columns and the temporaries of one step
# Rows past which a batch is no faster, only larger (on a 20M-token corpus's 5-grams: batches of
# 1M rows estimate in 12.9 s and 0.95 GB, whole orders in 18.9 s and 3.6 GB).
MAX_BATCH = 1 << 20


# ---- where the count tables come from: memory or a folder of Parquet files ----


Tables = Sequence[pl.DataFrame] | Path


def batch_rows(tables: Tables, order: int, vocab_size: int, memory: int, setting: str) -> int:
    """Rows a batch may hold within ``memory`` once the largest order below the top is held
    whole; refuses a budget that leaves no room for a useful batch."""
    sizes = [vocab_size] + [rows_of(tables, n) for n in range(2, order + 1)]
    held = ROW_BYTES * max(sizes[:-1] or sizes)
    smallest = min(max(sizes), 1 << 16)
    spare = working_set(memory, setting, held + BATCH_BYTES * smallest) - held
    return min(spare // BATCH_BYTES, MAX_BATCH)


def numpy_view(column: pa.Array) -> np.ndarray:
    """A null-free Arrow array of numbers as a NumPy view of its buffer (``Array.to_numpy``
    imports pandas, half a second of a command's start-up)."""
    name = str(column.type)  # uint16, int64, …: NumPy's names, but for Arrow's float and double
    dtype = np.dtype({"float": "float32", "double": "float64"}.get(name, name))
    data = column.buffers()[1]
    return np.frombuffer(
        data, dtype=dtype, count=len(column), offset=column.offset * dtype.itemsize
    )


def order_of(tables: Tables) -> int:
    if isinstance(tables, Path):
        n = 0
        while table_file(tables, n + 1).exists():
            n += 1
        return n
    return len(tables)


def rows_of(tables: Tables, n: int) -> int:
    if isinstance(tables, Path):
        return pq.ParquetFile(table_file(tables, n)).metadata.num_rows
    return tables[n - 1].height


def batches(tables: Tables, n: int, size: int) -> Iterator[tuple[list[np.ndarray], np.ndarray]]:
    """Order ``n``'s rows in batches of ``size``: the word columns and the counts."""
    cols = word_columns(n)
    if isinstance(tables, Path):
        for batch in pq.ParquetFile(table_file(tables, n)).iter_batches(
            size, columns=[*cols, COUNT]
        ):
            arrays = [numpy_view(batch.column(i)) for i in range(n + 1)]
            yield arrays[:-1], arrays[-1].astype(np.int64)
        return
    table = tables[n - 1]
    for start in range(0, table.height, size):
        part = table.slice(start, size)
        yield [part[c].to_numpy() for c in cols], part[COUNT].to_numpy().astype(np.int64)


# ---- finished arrays on disk ----


@dataclass
class Spilled:
    """One array written in pieces to a file in ``scratch``, read back whole or mapped."""

    path: Path
    dtype: np.dtype

    def __post_init__(self) -> None:
        self.path.write_bytes(b"")

    def append(self, values: np.ndarray) -> None:
        with self.path.open("ab") as out:
            np.ascontiguousarray(values, dtype=self.dtype).tofile(out)  # no copy into bytes

    def load(self) -> np.ndarray:
        return np.fromfile(self.path, dtype=self.dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        size = np.dtype(self.dtype).itemsize
        return np.fromfile(self.path, dtype=self.dtype, count=stop - start, offset=start * size)

    def mapped(self) -> np.ndarray:
        if self.path.stat().st_size == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r")


def row_type(rows: int) -> np.dtype:
    return np.dtype(np.int32 if rows < 1 << 31 else np.int64)


# ---- pass 1: context and suffix rows, adjusted counts, counts-of-counts ----


@dataclass
class Level:
    """One order's rows: the context row in the order below, the last word, the suffix row in the
    order below, the raw count, and how many distinct words precede the n-gram in the order above
    (its left extensions; none at the top order); rows ``bos`` start with ``<s>``."""

    rows: int
    context: Spilled
    word: Spilled
    suffix: Spilled
    count: Spilled
    extensions: Spilled
    bos: tuple[int, int] = (0, 0)


@dataclass
class Below:
    """The order below the one being indexed, held whole: the sorted keys that find a suffix,
    and the rows a prefix can name."""

    keys: np.ndarray  # context row × V + word, strictly increasing
    suffix: np.ndarray
    word: np.ndarray
    candidates: np.ndarray  # rows that are some n-gram's prefix: counted, not ending in </s>
    extensions: np.ndarray  # distinct left extensions, summed over the order being indexed


class OpenRows:
    """lmplz's adjust pass still holds open, when its suffix-sorted stream ends, the suffixes of
    the last top-order n-gram, and records their raw counts, not adjusted ones. lmplz numbers the
    specials first, then words by first appearance (``first_seen``'s ranks), and sorts by the last
    word first: the last n-gram ends with the word seen last, preceded by the latest-seen word
    that precedes it, and so on. Followed order by order as pass 1 meets them."""

    def __init__(self, first_seen: np.ndarray | None, unigram_counts: np.ndarray) -> None:
        self.rank = None if first_seen is None else np.asarray(first_seen, dtype=np.float64)
        self.rows: dict[int, tuple[int, int]] = {}  # order → (row, raw count)
        self.following = self.rank is not None
        if self.rank is not None:
            present = unigram_counts > 0
            present[BOS_ID] = False
            row = int(np.flatnonzero(present)[np.argmax(self.rank[present])])
            self.rows[1] = (row, int(unigram_counts[row]))
        self._best: tuple[float, int, int, int] | None = None  # rank, row, count, first word

    def see(self, n: int, first: int, w1: np.ndarray, suffix: np.ndarray, counts: np.ndarray):
        """Rows ``first..`` of order ``n``: keep the extension of the open (n−1)-gram whose first
        word was seen last."""
        if not self.following:
            return
        extends = np.flatnonzero(suffix == self.rows[n - 1][0])
        if len(extends) == 0:
            return
        pick = extends[np.argmax(self.rank[w1[extends]])]
        found = (float(self.rank[w1[pick]]), first + int(pick), int(counts[pick]), int(w1[pick]))
        if self._best is None or found[0] > self._best[0]:
            self._best = found

    def close(self, n: int) -> None:
        """Order ``n`` is indexed: its open row, unless the chain ended (nothing extends the open
        row, or it starts with ``<s>``, which nothing precedes)."""
        best, self._best = self._best, None
        if not self.following:
            return
        if best is None:
            self.following = False
            return
        self.rows[n] = (best[1], best[2])
        self.following = best[3] != BOS_ID


def _inconsistent(n: int, what: str) -> SeqlmError:
    return SeqlmError(f"inconsistent count tables: {n}-grams {what}")


def _unigrams(tables: Tables, vocab_size: int) -> np.ndarray:
    """Order 1's raw counts, dense over the vocabulary (0 for absent words)."""
    parts = list(batches(tables, 1, max(rows_of(tables, 1), 1)))
    ids = np.concatenate([words[0] for words, _ in parts]).astype(np.int64)
    counts = np.concatenate([c for _, c in parts])
    if len(ids) == 0:
        raise SeqlmError("no n-gram counts: the training split is empty")
    if int(ids.max()) >= vocab_size:
        raise SeqlmError(f"count tables hold ids beyond the vocabulary of {vocab_size} entries")
    dense = np.zeros(vocab_size, dtype=np.int64)
    np.add.at(dense, ids, counts)
    return dense


def index_orders(
    tables: Tables,
    order: int,
    vocab_size: int,
    scratch: Path,
    batch: int,
    first_seen: np.ndarray | None = None,
) -> tuple[list[Level], dict[int, tuple[int, int]]]:
    """Every order's rows up to ``order``, and (given lmplz's word numbering ``first_seen``) the
    rows lmplz leaves open, by order: ``(row, raw count)``."""
    raw = _unigrams(tables, vocab_size)
    open_rows = OpenRows(first_seen, raw)
    ids = np.arange(vocab_size)
    zeros = np.zeros(vocab_size, dtype=row_type(vocab_size))
    unigrams = _level(scratch, 1, vocab_size, vocab_size, vocab_size)
    for spilled, values in ((unigrams.context, zeros), (unigrams.word, ids), (unigrams.count, raw)):
        spilled.append(values)
    unigrams.suffix.append(zeros)
    unigrams.bos = (BOS_ID, BOS_ID + 1)
    levels = [unigrams]
    below = Below(ids, zeros, ids, ids[(raw > 0) & (ids != EOS_ID)], np.zeros(0, np.int64))
    for n in range(2, order + 1):
        below.extensions = np.zeros(len(below.keys), dtype=np.int64)
        level = _index_order(tables, n, n == order, vocab_size, below, scratch, batch, open_rows)
        levels[n - 2].extensions.append(below.extensions)
        levels.append(level)
        if n < order:
            word = level.word.load()
            keys = level.context.load().astype(np.int64) * vocab_size + word
            below = Below(keys, level.suffix.load(), word, np.flatnonzero(word != EOS_ID), None)
    return levels, open_rows.rows


def _level(scratch: Path, n: int, rows: int, rows_below: int, vocab_size: int) -> Level:
    return Level(
        rows,
        Spilled(scratch / f"context{n}", row_type(rows_below)),
        Spilled(
            scratch / f"word{n}", np.dtype(NUMPY_ID_TYPES[ID_TYPES.index(id_dtype(vocab_size))])
        ),
        Spilled(scratch / f"suffix{n}", row_type(rows_below)),
        Spilled(scratch / f"count{n}", np.dtype(np.int64)),
        Spilled(scratch / f"extensions{n}", np.dtype(np.int64)),
    )


def _prefix_ranks(prefix: list[np.ndarray], last: list[int] | None, seen: int) -> np.ndarray:
    """Each row's prefix's rank among the order's distinct prefixes, ``seen`` of them in earlier
    batches (the last of which was ``last``)."""
    new = np.zeros(len(prefix[0]), dtype=bool)
    new[0] = last is None or any(int(col[0]) != p for col, p in zip(prefix, last, strict=True))
    for col in prefix:
        new[1:] |= col[1:] != col[:-1]
    return np.cumsum(new) + (seen - 1)


def _index_order(
    tables: Tables,
    n: int,
    top: bool,
    vocab_size: int,
    below: Below,
    scratch: Path,
    batch: int,
    open_rows: OpenRows,
) -> Level:
    """One order's rows, batch by batch; the order below's left extensions gather in ``below``."""
    level = _level(scratch, n, rows_of(tables, n), len(below.keys), vocab_size)
    seen, first, last_key = 0, 0, -1
    last_prefix: list[int] | None = None
    bos_first = bos_stop = -1
    for words, counts in ahead(batches(tables, n, batch)):
        size = len(counts)
        rank = _prefix_ranks(words[:-1], last_prefix, seen)
        seen = int(rank[-1]) + 1
        if seen > len(below.candidates):
            raise _inconsistent(n, "whose prefix is not counted")
        context = below.candidates[rank]
        if not np.array_equal(below.word[context], words[-2]):
            raise _inconsistent(n, "whose prefix is not counted")
        last = words[-1].astype(np.int64)
        keys = context * vocab_size + last
        if keys[0] <= last_key or np.any(keys[1:] <= keys[:-1]):
            raise _inconsistent(n, f"not sorted by {', '.join(word_columns(n))}")
        suffix = suffix_rows(below.keys, below.suffix, context, last, vocab_size)
        if np.any(suffix < 0):
            raise _inconsistent(n, "whose suffix is not counted")
        np.add.at(below.extensions, suffix, 1)  # a batch's rows, not all the order below's
        for spilled, values in zip(
            (level.context, level.word, level.suffix, level.count),
            (context, last, suffix, counts),
            strict=True,
        ):
            spilled.append(values)
        at_bos = np.flatnonzero(words[0] == BOS_ID)  # contiguous: rows are sorted by w1
        if len(at_bos):
            bos_first = first + int(at_bos[0]) if bos_first < 0 else bos_first
            bos_stop = first + int(at_bos[-1]) + 1
        if not top:
            open_rows.see(n, first, words[0], suffix, counts)
        last_prefix = [int(col[-1]) for col in words[:-1]]
        last_key = int(keys[-1])
        first += size
    if seen != len(below.candidates):
        raise _inconsistent(n - 1, "that no n-gram of the order above extends")
    if not top:
        open_rows.close(n)
    level.bos = (max(bos_first, 0), max(bos_stop, 0))
    return level
