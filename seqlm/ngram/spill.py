"""Counting a corpus larger than memory: chunks counted in memory, sorted runs spilled to disk,
runs merged by summation, all within a memory budget (as ``lmplz -S`` counts).

N-grams never cross a line, so the counts of a corpus are the sums of the counts of its chunks of
whole lines. Each chunk is counted by ``count_ngrams``; its tables pile up in memory and, once they
pass a share of the budget, are summed into one table per order (``merge_tables``): repeated
n-grams collapse, so the pile often shrinks enough to go on. When the summed tables still take
more than half that share they are spilled to the scratch folder as one sorted run: a ``.npy``
file per column and order, which the merge memory-maps.

The runs are merged by a k-way merge in blocks: each step takes the next block of rows of every
run and keeps only the rows up to the smallest last key among the blocks that do not end their
run (a later row of another run could still equal a key past it); those rows are summed and
written as one row group. A step holds at most the blocks, whatever the keys: a partition by
ranges of ``w1`` is not bounded so (DNA has four letters, ``<s>`` starts every line), and a
merge of a Python heap would loop per row. The final tables equal ``count_ngrams`` of the whole
stream row for row (same rows, same order).

Ids come from an append-only dictionary (the specials, then each type by first appearance:
``lmplz``'s numbering), so they are fixed before counting ends.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from seqlm.errors import SeqlmError
from seqlm.files import atomic_dir
from seqlm.ngram.counts import (
    COUNT,
    count_ngrams,
    id_dtype,
    merge_tables,
    table_file,
    word_columns,
    write_table,
)
from seqlm.ngram.lines import check_order
from seqlm.vocab import BOS_ID, SPECIALS, VOCAB_FILE, Vocabulary

# Working bytes per token of a chunk being counted: its tokens as strings, their ids, the
# packed keys count_ngrams sorts and the chunk's tables (measured on Penn Treebank, 5-grams).
BYTES_PER_TOKEN = 400
# Bytes per row a merge step holds: the rows gathered, the summed frame and Polars' hash tables.
BYTES_PER_ROW = 200
MIN_WORKING = 16 << 20  # the least working memory that counts a chunk of any use
SCRATCH_PREFIX = "seqlm-counts-"


class Counted(NamedTuple):
    vocab: Vocabulary
    sizes: list[int]  # n-grams per order
    runs: int  # sorted runs spilled to disk


class TypeDictionary:
    """Ids that never change once given: ``<unk>``, ``<s>``, ``</s>``, then each type by first
    appearance. A literal ``<unk>``, ``<s>`` or ``</s>`` in the text reads as ``<unk>``."""

    def __init__(self) -> None:
        self.words = pl.Series("token", [], dtype=pl.String)  # the types after the specials

    @property
    def size(self) -> int:
        return len(SPECIALS) + len(self.words)

    def stream(self, lines: pl.DataFrame) -> np.ndarray:
        """The id stream of ``lines`` (a ``tokens`` list column), new types appended first."""
        tokens = lines["tokens"].explode(empty_as_null=False)
        new = tokens.filter(~tokens.is_in(self.words.implode()) & ~tokens.is_in(SPECIALS))
        new = new.unique(maintain_order=True).rename("token")
        self.words = pl.concat([self.words, new], rechunk=True)
        return self.vocabulary(np.zeros(self.size, dtype=np.uint64)).stream(lines)

    def vocabulary(self, counts: np.ndarray) -> Vocabulary:
        """The dictionary as a vocabulary with these unigram counts (``<s>`` gets 0: it is never
        a target)."""
        counts = np.asarray(counts, dtype=np.uint64).copy()
        counts[BOS_ID] = 0
        table = pl.DataFrame(
            {
                "token": pl.concat([pl.Series(SPECIALS, dtype=pl.String), self.words]),
                "id": np.arange(self.size, dtype=np.uint32),
                "count": counts,
            }
        )
        return Vocabulary(table)


def first_seen_ids(vocab_size: int) -> np.ndarray:
    """``seqlm.ngram.estimate.first_seen`` for ids a ``TypeDictionary`` gave: their own order."""
    return np.arange(vocab_size, dtype=np.float64) - len(SPECIALS)


def chunk_bytes(memory: int) -> int:
    """Text to read per chunk so that counting it fits a share of ``memory`` working bytes."""
    return max(1 << 16, memory // 5 // BYTES_PER_TOKEN * 4)  # ~4 bytes of text per token


@contextmanager
def scratch_folder(prefix: str | Path | None = None) -> Iterator[Path]:
    """A fresh folder for spilled runs, removed with all it holds on exit, error or not.
    ``prefix`` as ``lmplz -T``: a folder to make it in, or a path whose name starts its name;
    None: the system's temporary folder."""
    where, start = None, SCRATCH_PREFIX
    if prefix is not None:
        prefix = Path(prefix)
        where, start = (prefix, start) if prefix.is_dir() else (prefix.parent, prefix.name)
    try:
        folder = Path(tempfile.mkdtemp(prefix=start, dir=where))
    except OSError as e:
        where = prefix or tempfile.gettempdir()
        raise SeqlmError(f"{where}: cannot make a scratch folder there ({e.strerror})") from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def count_chunks(
    chunks: Iterable[pl.DataFrame], order: int, memory: int, scratch: Path, out: Path
) -> Counted:
    """Count tables of orders 1..``order`` of tokenised lines arriving in chunks (frames with a
    ``tokens`` list column), in about ``memory`` working bytes, spilling to ``scratch`` (its runs
    are removed at the end); writes the tables and the dictionary's vocabulary to ``out`` as
    ``write_tables`` does."""
    check_order(order)
    dictionary = TypeDictionary()
    runs = _Runs(scratch, memory)
    try:
        for chunk in chunks:
            for lines in _parts(chunk, max(1, memory // 5 // BYTES_PER_TOKEN)):
                stream = dictionary.stream(lines)
                runs.add(count_ngrams(stream, order, dictionary.size))
        if not runs.pending and not runs.paths:
            raise SeqlmError("no training text to count: the corpus has no line")
        return runs.write(out, order, dictionary)
    finally:
        shutil.rmtree(runs.folder, ignore_errors=True)


def _parts(lines: pl.DataFrame, max_tokens: int) -> Iterator[pl.DataFrame]:
    """``lines`` in consecutive slices of whole lines of about ``max_tokens`` targets each."""
    sizes = (lines["tokens"].list.len() + 1).to_numpy()
    part = (np.cumsum(sizes) - 1) // max_tokens
    starts = np.flatnonzero(np.diff(part, prepend=-1))
    for start, end in zip(starts, [*starts[1:], len(sizes)], strict=True):
        yield lines.slice(int(start), int(end - start))


class _Runs:
    """Chunk tables summed in memory within a share of the budget, spilled as sorted runs."""

    def __init__(self, scratch: Path, memory: int) -> None:
        self.scratch = scratch
        self.folder = scratch / "runs"
        self.memory = memory
        self.pending: list[list[pl.DataFrame]] = []  # each chunk's tables, orders 1..N
        self.pending_bytes = 0
        self.paths: list[Path] = []  # the spilled runs, each a folder of order<n>/<column>.npy

    def add(self, tables: list[pl.DataFrame]) -> None:
        self.pending.append(tables)
        self.pending_bytes += sum(t.estimated_size() for t in tables)
        limit = self.memory // 5
        if self.pending_bytes > limit:
            self._compact()
            if self.pending_bytes > limit // 2:
                self._spill()

    def _compact(self) -> None:
        if len(self.pending) > 1:
            self.pending = [merge_tables(self.pending)]
            self.pending_bytes = sum(t.estimated_size() for t in self.pending[0])

    def _spill(self) -> None:
        run = self.folder / f"run{len(self.paths)}"
        try:
            for n, table in enumerate(self.pending[0], start=1):
                (run / f"order{n}").mkdir(parents=True)
                for name in table.columns:
                    _save(run / f"order{n}" / f"{name}.npy", table[name].to_numpy())
        except OSError as e:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise SeqlmError(
                f"{self.scratch}: cannot spill the counts there ({e.strerror})"
            ) from None
        self.paths.append(run)
        self.pending, self.pending_bytes = [], 0

    def write(self, out: Path, order: int, dictionary: TypeDictionary) -> Counted:
        """The summed tables into ``out`` (with the vocabulary), order by order."""
        self._compact()
        if self.paths and self.pending:
            self._spill()  # all runs on disk: each merge step has the whole budget
        dtype = id_dtype(dictionary.size)
        sizes = []
        with atomic_dir(Path(out)) as tmp:
            for n in range(1, order + 1):
                if self.paths:
                    steps = _merged(self._columns(n), n, max(1, self.memory // BYTES_PER_ROW))
                else:
                    steps = iter([self.pending[0][n - 1]])
                sizes.append(write_table(table_file(tmp, n), n, dtype, steps))
                if n == 1:
                    unigrams = pl.read_parquet(table_file(tmp, 1))
            counts = np.zeros(dictionary.size, dtype=np.uint64)
            counts[unigrams["w1"].to_numpy()] = unigrams[COUNT].to_numpy()
            vocab = dictionary.vocabulary(counts)
            vocab.save(tmp / VOCAB_FILE)
        return Counted(vocab, sizes, len(self.paths))

    def _columns(self, n: int) -> list[list[np.ndarray]]:
        """Each run's columns of order ``n`` (``w1..wn``, ``count``), memory-mapped (as plain
        arrays: slicing an ``np.memmap`` costs far more)."""
        names = [*word_columns(n), COUNT]
        return [
            [np.load(run / f"order{n}" / f"{c}.npy", mmap_mode="r").view(np.ndarray) for c in names]
            for run in self.paths
        ]


def _save(path: Path, array: np.ndarray) -> None:
    """``array`` as a ``.npy`` file, written by Python's file object: ``np.save`` writes a real
    file with C's fwrite, whose failure (a full disk) comes back as an OSError with no errno."""
    with path.open("wb") as file:
        np.lib.format.write_array_header_1_0(file, np.lib.format.header_data_from_array_1_0(array))
        file.write(np.ascontiguousarray(array).data)


def _merged(runs: list[list[np.ndarray]], n: int, step_rows: int) -> Iterator[pl.DataFrame]:
    """The rows of sorted runs of n-grams (columns ``w1..wn``, ``count``; no n-gram twice in
    one run) summed by n-gram, ascending, in frames from about ``step_rows`` rows each."""
    cols = word_columns(n)
    pos = [0] * len(runs)
    ends = [len(run[0]) for run in runs]
    while live := [i for i in range(len(runs)) if pos[i] < ends[i]]:
        block = max(1, step_rows // len(live))
        stop = {i: min(pos[i] + block, ends[i]) for i in live}
        open_ends = [i for i in live if stop[i] < ends[i]]
        if open_ends:  # rows past the least last key may meet an equal key in a later block
            frontier = min(tuple(int(col[stop[i] - 1]) for col in runs[i][:n]) for i in open_ends)
            for i in live:
                window = [col[pos[i] : stop[i]] for col in runs[i][:n]]
                stop[i] = pos[i] + _rows_upto(window, frontier)
        part = pl.DataFrame(
            {
                name: np.concatenate([runs[i][c][pos[i] : stop[i]] for i in live])
                for c, name in enumerate([*cols, COUNT])
            }
        )
        for i in live:
            pos[i] = stop[i]
        yield part.group_by(cols).agg(pl.col(COUNT).sum()).sort(cols)


def _rows_upto(columns: list[np.ndarray], key: tuple[int, ...]) -> int:
    """How many leading rows of lexicographically sorted ``columns`` are ≤ ``key``."""
    lo, hi = 0, len(columns[0])
    for col, value in zip(columns, key, strict=True):
        first = lo + int(np.searchsorted(col[lo:hi], value, side="left"))
        last = lo + int(np.searchsorted(col[lo:hi], value, side="right"))
        if first == last:
            return first
        lo, hi = first, last
    return hi
