"""Counting a corpus larger than memory: chunks counted in memory, sorted runs spilled to disk,
runs merged by summation, all within a memory budget (as ``lmplz -S`` counts).

N-grams never cross a line, so the counts of a corpus are the sums of the counts of its chunks of
whole lines. Chunks are read and tokenised in one thread and made id streams in another, ahead of
the counting (Polars and NumPy both release the GIL: two cores work), and each stream is padded
into lines as it arrives. A text that fits one segment (two shares of the budget) is counted at
once, each order written while the next is counted. A larger one is
counted in pieces of ``PIECE_TOKENS`` at most, each spilled at once to the scratch folder as a
sorted run (a ``.npy`` file per column and order): many small sorts are faster per token than a
few large ones, and summing pieces in memory before spilling them cost as much as counting them.

Runs are merged by a k-way merge in blocks: each step reads the next block of rows of every run
and keeps the rows up to the least last key among the blocks that do not end their run (a later
row of another run could still equal a key past it); those rows are summed and written as one
row group. A step holds the blocks and no more, whatever the keys: a partition by ranges of ``w1``
is not bounded so (DNA has four letters, ``<s>`` starts every line), and a heap merge would loop
per row in Python. ``sum_tables``'s in-memory sums use the same merge, as a Polars group-by over
all the pending rows took about 6x their size (1.0 GB at a 1G budget on a 10M-token text, against
0.5 GB then). A step sorts the n-grams packed into one or two u64 keys rather than by n columns (5M
random 5-grams: 1.5 s against 2.2 s for a Polars group-by and sort; the 10M-token text at 1G:
15 s against 43 s with the group-by, on a loaded machine). Blocks are read with positioned reads,
not memory-mapped: mapped pages count as the process's memory. The orders run one after another:
the sorts already keep both cores partly busy (100-110% CPU) and two orders at once would double
a step's memory.

The final tables equal ``count_ngrams`` of the whole stream row for row (same rows, same order).
The pipeline's merged tables and those cut to a vocabulary are summed the same way from their
input tables read in batches (``sum_tables``).

Ids come from an append-only dictionary (the specials, then each type by first appearance:
``lmplz``'s numbering), so they are fixed before counting ends.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from seqlm.errors import SeqlmError
from seqlm.files import atomic_dir
from seqlm.ngram.counts import (
    COUNT,
    PARQUET,
    count_padded,
    id_dtype,
    ranked_tables,
    sum_rows,
    table_file,
    word_columns,
    write_table,
)
from seqlm.ngram.lines import check_order, pad_lines
from seqlm.overlap import ahead
from seqlm.vocab import (
    SPECIALS,
    VOCAB_FILE,
    GrowingDictionary,
    Vocabulary,
)

# Working bytes per token of a chunk read: its text and tokens as strings and their ids (about 100
# at the peak on the 20M-token sample; long tokens take more).
BYTES_PER_TOKEN = 400
# Bytes per row a merge step holds: the blocks read, their packed keys, the sort's order and the
# summed frame (about 330 measured, with the allocator's slack).
BYTES_PER_ROW = 400
# Counting gives the whole text's segment two thirds of the working memory and the chunk read ahead
# one; ``sum_tables`` gives its pending tables, a step summing them and the next input a third each.
# The final merge's steps get all of it. (A 20M-token corpus's 5-grams at 4G: one segment in 15.3
# s and 1.55 GB; pieces spilled as runs, 18.2 s.)
SHARE = 3
MIN_WORKING = 16 << 20  # the least working memory that counts a chunk of any use
SCRATCH_PREFIX = "seqlm-counts-"
# Tokens counted per piece of a text too large for one segment. Counting sorts, whose time per
# token grows with their size: 100M tokens' 5-grams at 4G took 158 s in pieces of a share (20M
# tokens) summed in memory before spilling, 104 s in pieces of 17M spilled at once, 95 s in 8.4M,
# 74-87 s in 2.6M (counting 44-60 s; the final merge and writing 25-27 s, each step summed while
# the one before is written).
PIECE_TOKENS = 1 << 22


class Counted(NamedTuple):
    vocab: Vocabulary
    sizes: list[int]  # n-grams per order
    runs: int  # sorted runs spilled to disk


def first_seen_ids(vocab_size: int) -> np.ndarray:
    """``seqlm.ngram.estimate.first_seen`` for a type dictionary's ids: their own order."""
    return np.arange(vocab_size, dtype=np.float64) - len(SPECIALS)


def counting_bytes(order: int) -> int:
    """Peak working bytes per token of ``count_orders`` up to ``order``, its counts included
    (measured on 20M tokens: 46, 70 and 74 at orders 3, 5 and 8)."""
    return 30 + 8 * order


def chunk_bytes(memory: int) -> int:
    """Text to read per chunk so that tokenising it fits a share of ``memory`` working bytes."""
    return max(1 << 16, memory // SHARE // BYTES_PER_TOKEN * 4)  # ~4 bytes of text per token


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
    dictionary = GrowingDictionary()
    runs = _Runs(scratch, range(1, order + 1), memory)
    # Read and padded (pad_lines, here while the next chunk is read), not yet counted: the whole
    # text while it fits.
    streams: list[np.ndarray] = []
    whole = max(1, memory // SHARE * 2 // counting_bytes(order))  # two shares: see SHARE
    piece = min(PIECE_TOKENS, memory // SHARE // counting_bytes(order))
    try:
        # Chunks are read while others are counted, up to about half a whole-text segment ahead
        # (their id streams take 4 bytes a token).
        depth = max(1, BYTES_PER_TOKEN // counting_bytes(order))
        # Two threads read: one splits a chunk into tokens while the other maps the one before
        # to ids (reading the 20M-token sample: 2.1 s against 2.4 s in one thread).
        tokens = min(PIECE_TOKENS, memory // SHARE // BYTES_PER_TOKEN)
        for size, stream in ahead(_streams(ahead(iter(chunks)), tokens, dictionary), depth):
            streams.append(pad_lines(stream))
            del stream
            if runs.paths or sum(len(s) for s in streams) > whole:  # beyond one segment
                streams = _spill_pieces(streams, piece, order, size, runs)
        if runs.paths:
            if streams:
                _spill_counts(streams, order, size, runs)
            return runs.write(out, dictionary.vocabulary())
        if not streams:
            raise SeqlmError("no training text to count: the corpus has no line")
        # One segment: each order is spelled out and written while the next is counted (in a
        # thread); the share of the chunks read ahead is free for the table now.
        unigrams, orders = count_padded(streams, order, dictionary.size)
        tables = ranked_tables(unigrams, ahead(orders), dictionary.size)
        return runs.write(out, dictionary.vocabulary(), tables)
    finally:
        shutil.rmtree(runs.folder, ignore_errors=True)


def _spill_pieces(
    streams: list[np.ndarray],
    piece: int,
    order: int,
    vocab_size: int,
    runs: _Runs,
) -> list[np.ndarray]:
    """Count consecutive padded ``streams`` in pieces of up to ``piece`` positions (a longer
    stream alone), each spilled as a sorted run, but for the last piece, which more may join:
    its streams are returned."""
    group: list[np.ndarray] = []
    for stream in streams:
        if group and sum(len(s) for s in group) + len(stream) > piece:
            _spill_counts(group, order, vocab_size, runs)
            group = []
        group.append(stream)
    return group


def _spill_counts(streams: list[np.ndarray], order: int, vocab_size: int, runs: _Runs) -> None:
    """Spill the counts of padded ``streams`` as one sorted run, each order spelled out as it
    comes."""
    runs.spill(ranked_tables(*count_padded(streams, order, vocab_size), vocab_size))


def _streams(
    chunks: Iterable[pl.DataFrame], max_tokens: int, dictionary: GrowingDictionary
) -> Iterator[tuple[int, np.ndarray]]:
    """The chunks' lines as id streams of about ``max_tokens`` targets at most, numbered by
    ``dictionary`` as it grows (new types get the next ids), each with its size then."""
    for chunk in chunks:
        for lines in _parts(chunk, max(1, max_tokens)):
            stream = dictionary.stream(lines)
            yield dictionary.size, stream


def _parts(lines: pl.DataFrame, max_tokens: int) -> Iterator[pl.DataFrame]:
    """``lines`` in consecutive slices of whole lines of about ``max_tokens`` targets each."""
    sizes = (lines["tokens"].list.len() + 1).to_numpy()
    part = (np.cumsum(sizes) - 1) // max_tokens
    starts = np.flatnonzero(np.diff(part, prepend=-1))
    for start, end in zip(starts, [*starts[1:], len(sizes)], strict=True):
        yield lines.slice(int(start), int(end - start))


class _Runs:
    """Tables summed in memory within a share of the budget, spilled as sorted runs: one list of
    pending tables per order of ``orders``, tables of several orders arriving together."""

    def __init__(self, scratch: Path, orders: Sequence[int], memory: int) -> None:
        self.scratch = scratch
        self.folder = scratch / "runs"
        self.orders = list(orders)
        self.memory = memory
        self.pending: list[list[pl.DataFrame]] = [[] for _ in self.orders]
        self.paths: list[Path] = []  # the spilled runs, each a folder of order<n>/<column>.npy

    @property
    def pending_bytes(self) -> int:
        return sum(t.estimated_size() for tables in self.pending for t in tables)

    def add(self, tables: list[pl.DataFrame]) -> None:
        for pending, table in zip(self.pending, tables, strict=True):
            pending.append(table)
        limit = self.memory // SHARE
        if self.pending_bytes > limit:
            self._compact()
            if self.pending_bytes > limit // 2:
                self._spill()

    def _compact(self) -> None:
        """Sum the pending tables of each order into one, in merge steps of a share of the
        budget (a Polars group-by over all of them at once takes several times their size)."""
        step_rows = max(1, self.memory // SHARE // BYTES_PER_ROW)
        for n, tables in zip(self.orders, self.pending, strict=True):
            if len(tables) > 1:
                steps = _merged([_TableRun(t) for t in tables], n, step_rows)
                # The steps as the chunks of one table, not copied into one: a copy would hold
                # the sums twice while the inputs are still held.
                tables[:] = [pl.concat(list(steps), how="vertical_relaxed", rechunk=False)]

    def spill(self, tables: Iterable[pl.DataFrame]) -> None:
        """Spill ``tables`` (one per order, each summed, arriving order by order) as a run."""
        run = self.folder / f"run{len(self.paths)}"
        try:
            for n, table in zip(self.orders, tables, strict=True):
                (run / f"order{n}").mkdir(parents=True)
                for name in table.columns:
                    _save(run / f"order{n}" / f"{name}.npy", table[name])
        except OSError as e:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise SeqlmError(
                f"{self.scratch}: cannot spill the counts there ({e.strerror})"
            ) from None
        self.paths.append(run)

    def _spill(self) -> None:
        self.spill(table for (table,) in self.pending)
        self.pending = [[] for _ in self.pending]

    def finish(self) -> None:
        """No table more: the pending ones summed, and spilled if any run was."""
        self._compact()
        if self.paths and self.pending[0]:
            self._spill()  # all runs on disk: each merge step has the whole budget

    def summed(self, i: int) -> Iterator[pl.DataFrame]:
        """Order ``orders[i]``'s rows summed, ascending, in parts (after ``finish``)."""
        n = self.orders[i]
        if not self.paths:
            return iter(self.pending[i])
        runs = [_SpilledRun(path / f"order{n}", n) for path in self.paths]
        # Each step is summed while the one before is used (written): two steps of half the
        # budget each are held.
        return ahead(_merged(runs, n, max(1, self.memory // 2 // BYTES_PER_ROW)))

    def write(
        self, out: Path, dictionary: Vocabulary, whole: Iterable[pl.DataFrame] | None = None
    ) -> Counted:
        """The summed tables into ``out`` (with the vocabulary), order by order; ``whole``: each
        order's table given whole instead, when no run was spilled (Polars writes a whole table
        in parallel: 16M 5-grams in 0.6 s, against 1.1 s for Arrow's writer)."""
        dtype = id_dtype(dictionary.size)
        sizes = []
        with atomic_dir(Path(out)) as tmp:
            if whole is None:
                self.finish()
                for i, n in enumerate(self.orders):
                    sizes.append(write_table(table_file(tmp, n), n, dtype, self.summed(i)))
            else:
                for n, table in zip(self.orders, whole, strict=True):
                    table.write_parquet(table_file(tmp, n), **PARQUET)
                    sizes.append(table.height)
            dictionary.save(tmp / VOCAB_FILE)
        return Counted(dictionary, sizes, len(self.paths))


def sum_tables(
    parts: Iterable[pl.DataFrame], n: int, memory: int, scratch: Path
) -> Iterator[pl.DataFrame]:
    """Rows of order ``n`` arriving in frames, in any order and an n-gram in several, summed by
    n-gram and ascending, in parts: within about ``memory`` working bytes, as counting sums its
    chunks' tables (spilled runs in ``scratch``, removed once the last part is read)."""
    runs = _Runs(scratch, [n], memory)
    try:
        for part in parts:  # each run is sorted, no n-gram twice
            words = [part[w].to_numpy() for w in word_columns(n)]
            runs.add([sum_rows(words, part[COUNT].to_numpy())])
        runs.finish()
        yield from runs.summed(0)
    finally:
        shutil.rmtree(runs.folder, ignore_errors=True)


class _TableRun:
    """A sorted table in memory, read as a run: a range of rows copied only where it spans the
    table's chunks."""

    def __init__(self, table: pl.DataFrame) -> None:
        self.columns = table.get_columns()
        self.rows = table.height

    def read(self, column: int, start: int, stop: int) -> np.ndarray:
        return self.columns[column].slice(start, stop - start).to_numpy()


class _SpilledRun:
    """One order of a spilled run, read a range of rows at a time: memory-mapped pages would
    count as the process's memory until the kernel takes them back."""

    def __init__(self, folder: Path, n: int) -> None:
        self.files = [folder / f"{c}.npy" for c in [*word_columns(n), COUNT]]
        self.layout = [_npy_layout(path) for path in self.files]
        self.rows = self.layout[0][0]

    def read(self, column: int, start: int, stop: int) -> np.ndarray:
        _, dtype, offset = self.layout[column]
        offset += start * dtype.itemsize
        return np.fromfile(self.files[column], dtype, stop - start, offset=offset)


def _save(path: Path, column: pl.Series) -> None:
    """``column`` as a ``.npy`` file, chunk by chunk (no copy of the whole), written by Python's
    file object: ``np.save`` writes a real file with C's fwrite, whose failure (a full disk) comes
    back as an OSError with no errno."""
    chunks = column.get_chunks()
    header = np.lib.format.header_data_from_array_1_0(chunks[0].to_numpy())
    header["shape"] = (len(column),)
    with path.open("wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        for chunk in chunks:
            file.write(np.ascontiguousarray(chunk.to_numpy()).data)


def _npy_layout(path: Path) -> tuple[int, np.dtype, int]:
    """A ``.npy`` file's rows, type, and where its data starts."""
    with path.open("rb") as file:
        np.lib.format.read_magic(file)
        shape, _, dtype = np.lib.format.read_array_header_1_0(file)
        return shape[0], dtype, file.tell()


def _merged(runs: list[_TableRun | _SpilledRun], n: int, step_rows: int) -> Iterator[pl.DataFrame]:
    """The rows of sorted runs of n-grams (no n-gram twice in one run) summed by n-gram,
    ascending, in frames from about ``step_rows`` rows each."""
    pos = [0] * len(runs)
    while live := [i for i, run in enumerate(runs) if pos[i] < run.rows]:
        block = max(1, step_rows // len(live))
        stop = {i: min(pos[i] + block, runs[i].rows) for i in live}
        keys = {i: [runs[i].read(c, pos[i], stop[i]) for c in range(n)] for i in live}
        open_ends = [i for i in live if stop[i] < runs[i].rows]
        if open_ends:  # rows past the least last key may meet an equal key in a later block
            frontier = min(tuple(int(col[-1]) for col in keys[i]) for i in open_ends)
            for i in live:
                cut = rows_upto(keys[i], frontier)
                keys[i] = [col[:cut] for col in keys[i]]
                stop[i] = pos[i] + cut
        words = [np.concatenate([keys[i][c] for i in live]) for c in range(n)]
        counts = np.concatenate([runs[i].read(n, pos[i], stop[i]) for i in live])
        for i in live:
            pos[i] = stop[i]
        yield sum_rows(words, counts)


def rows_upto(columns: list[np.ndarray], key: tuple[int, ...]) -> int:
    """How many leading rows of lexicographically sorted ``columns`` are ≤ ``key``."""
    lo, hi = 0, len(columns[0])
    for col, value in zip(columns, key, strict=True):
        first = lo + int(np.searchsorted(col[lo:hi], value, side="left"))
        last = lo + int(np.searchsorted(col[lo:hi], value, side="right"))
        if first == last:
            return first
        lo, hi = first, last
    return hi
