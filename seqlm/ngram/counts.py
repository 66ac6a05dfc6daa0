"""N-gram count tables: for orders 1..N, how often each n-gram occurs in padded training lines.

A table of order n has columns ``w1..wn`` (vocabulary ids, the narrowest unsigned type that holds
them) and ``count`` (u64), sorted by ``w1..wn``. Tables of several shards merge by summation, so
adding a shard counts only that shard.

Counting sorts packed integers rather than hashing tuples: the n-gram ending at position t is the
pair (rank of the (n−1)-gram ending at t−1, word at t), packed into one u64 together with t, so one
plain sort per order yields the distinct n-grams in lexicographic order and their counts, and, in
that order, where each occurrence ends and its n-gram's rank: the next order's keys are read there
(the rank, the word after), so they arrive sorted by their prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from seqlm.errors import SeqlmError
from seqlm.files import atomic_dir
from seqlm.ngram.lines import check_key_space, check_order, pad_lines
from seqlm.ngram.sorting import sorted_copy
from seqlm.overlap import in_slices
from seqlm.vocab import BOS_ID, VOCAB_FILE, Vocabulary

COUNT = "count"
ID_TYPES = (pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
NUMPY_ID_TYPES = (np.uint8, np.uint16, np.uint32, np.uint64)
BLOCK = 1 << 18  # elements of a step worked a block at a time (2 MiB of u64)
# How count tables are written: zstd's fastest level, within 2% of the default's size (16M 5-grams:
# 79 MiB against 78) in four fifths of its time (0.50 s against 0.65).
PARQUET = {"compression": "zstd", "compression_level": 1}


def word_columns(order: int) -> list[str]:
    return [f"w{i}" for i in range(1, order + 1)]


def id_dtype(vocab_size: int) -> pl.DataType:
    """The narrowest unsigned integer type that holds ids ``0..vocab_size-1``."""
    return next(
        t for t, bits in zip(ID_TYPES, (8, 16, 32, 64), strict=True) if vocab_size <= 1 << bits
    )


def _key_changes(packed: np.ndarray, pos_bits: int, out: np.ndarray) -> None:
    """``out[i]``: whether sorted ``packed[i + 1]`` holds another key than ``packed[i]`` (they
    differ above the position's ``pos_bits``), a block at a time: the difference of a block
    stays in the cache, where one of the whole array is as large as the keys (fresh pages)."""
    block = np.empty(min(BLOCK, len(out)), dtype=np.uint64)
    least = np.uint64(1 << pos_bits)
    for start in range(0, len(out), BLOCK):
        stop = min(start + BLOCK, len(out))
        part = block[: stop - start]
        np.bitwise_xor(packed[start + 1 : stop + 1], packed[start:stop], out=part)
        np.greater_equal(part, least, out=out[start:stop])


# One order's rows before their word columns are spelled out: its distinct n-grams ascending as
# (prefixes: the row of the (n−1)-gram in order n−1's rows, for n = 2 its id; words: the last id)
# with their counts.
Rows = tuple[np.ndarray, np.ndarray, np.ndarray]


def count_ngrams(stream: np.ndarray, order: int, vocab_size: int) -> list[pl.DataFrame]:
    """Count tables for orders 1..``order`` of a vocabulary stream (each line padded with one
    ``<s>`` in front; ``</s>`` is already in the stream)."""
    return list(count_tables(stream, order, vocab_size))


def count_tables(stream: np.ndarray, order: int, vocab_size: int) -> Iterator[pl.DataFrame]:
    """``count_ngrams``'s tables one by one, each order counted as the one before is taken."""
    unigrams, orders = count_orders(stream, order, vocab_size)
    return ranked_tables(unigrams, orders, vocab_size)


def count_orders(
    stream: np.ndarray, order: int, vocab_size: int
) -> tuple[np.ndarray, Iterator[Rows]]:
    """The unigram counts by id and the rows of orders 2..``order`` one by one, each counted as
    the one before is taken (``count_ngrams``'s counts as ``Rows``)."""
    check_order(order)
    stream = np.asarray(stream)
    if len(stream) == 0:
        raise SeqlmError("no training text to count: the id stream is empty")
    if int(stream.max()) >= vocab_size or int(stream.min()) < 0:
        raise SeqlmError(f"the id stream holds ids outside the vocabulary of {vocab_size} entries")
    return count_padded([pad_lines(stream)], order, vocab_size)


def count_padded(
    parts: list[np.ndarray], order: int, vocab_size: int
) -> tuple[np.ndarray, Iterator[Rows]]:
    """``count_orders`` of a stream padded in parts (``pad_lines`` of consecutive runs of whole
    lines, with ids below ``vocab_size``), which are consumed: a reader pads each chunk while
    it reads the next."""
    check_order(order)
    # In the narrowest type of the ids (a random gather of u16 is faster than of i32), with one
    # <s> more at the end: what follows the last </s>, as one follows every other.
    width = NUMPY_ID_TYPES[ID_TYPES.index(id_dtype(vocab_size))]
    padded = np.empty(sum(len(part) for part in parts) + 1, dtype=width)
    np.concatenate(parts, out=padded[:-1], casting="unsafe")
    padded[-1] = BOS_ID
    parts.clear()
    unigrams = np.bincount(padded[:-1], minlength=vocab_size)
    return unigrams, _orders(padded, order, vocab_size)


class _Buffers:
    """The arrays the orders are counted in, each made once at the text's length and reused by
    every order: fresh pages cost more than the passes that fill them (zeroed by the kernel; on a
    virtual machine that hands freed memory back to its host, faulted in from the host again)."""

    def __init__(self, padded: np.ndarray) -> None:
        positions = len(padded)
        self.pos_bits = max(positions.bit_length(), 1)
        self.keys = np.empty(positions, dtype=np.uint64)
        # Positions and ranks index arrays: NumPy's own index type, which gathers and counts take
        # without a converted copy.
        self.where = np.arange(positions, dtype=np.intp)  # order 2's n-grams end anywhere
        self.rank = np.empty(positions, dtype=np.intp)
        self.word = np.empty(positions, dtype=padded.dtype)
        self.flag = np.empty(positions, dtype=bool)


NONE = np.uint64(2**64 - 1)  # the key of a position that ends no n-gram: past every real key


def _orders(padded: np.ndarray, order: int, vocab_size: int) -> Iterator[Rows]:
    """Orders 2..``order``'s rows of ``padded`` (with one ``<s>`` more at its end), each counted
    in the sorted order of the order below: an n-gram's key is (the rank of the (n−1)-gram it
    extends, the word after that), read where the sorted (n−1)-grams end, so the keys arrive
    sorted by their prefix (much of the sort's work done) and no array indexed by position is
    scattered into. Where the word after is a line's ``<s>``, no n-gram ends."""
    bits = _word_bits(vocab_size)
    work = _Buffers(padded[:-1])
    total = len(padded) - 1  # order 2: every position ends a bigram but a line's <s>
    _pack(padded[: total - 1], padded[1:total], bits, work.keys[1:total])
    np.copyto(work.word[:total], padded[:total])
    bound = vocab_size
    for n in range(2, order + 1):
        check_key_space(bound, 1 << bits, n)
        distinct, counts = _group(work, total, bound << bits)
        bound = len(counts)
        yield _rows(distinct, counts, vocab_size)
        total = int(counts.sum())
        if n < order:
            _extend(work, padded, total, bits)


def _extend(work: _Buffers, padded: np.ndarray, total: int, bits: int) -> None:
    """The next order's keys in ``work``: each of the ``total`` n-grams (sorted) as the prefix
    of the word after it."""
    keys, word, where = work.keys[:total], work.word[:total], work.where[:total]
    where += 1
    in_slices(lambda s: np.take(padded, where[s], out=word[s], mode="clip"), total)
    _pack(work.rank[:total], word, bits, keys)


def _pack(prefix: np.ndarray, word: np.ndarray, bits: int, out: np.ndarray) -> None:
    """``prefix << bits | word`` into ``out`` (u64; the word in ``bits``, the prefix ≥ 0)."""

    def pack(s: slice) -> None:
        np.copyto(out[s], prefix[s], casting="unsafe")
        out[s] <<= np.uint64(bits)
        np.bitwise_or(out[s], word[s], out=out[s], dtype=np.uint64, casting="unsafe")

    in_slices(pack, len(out))


def _group(work: _Buffers, total: int, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``total`` of ``work.keys`` (each below ``n_keys``) sorted, but those whose
    ``work.word`` is ``<s>`` (no n-gram): the distinct keys ascending and their counts. Then
    ``work.where`` and ``work.rank`` hold each n-gram's end and its key's dense rank, in the
    sorted order."""
    keys, where, gone = work.keys[:total], work.where[:total], work.flag[:total]
    np.equal(work.word[:total], BOS_ID, out=gone)
    m = total - int(np.count_nonzero(gone))
    if (n_keys - 1).bit_length() + work.pos_bits <= 63:  # with its end in one u64, sorted last
        pos_bits, low = np.uint64(work.pos_bits), np.uint64((1 << work.pos_bits) - 1)

        def pack(s: slice) -> None:
            keys[s] <<= pos_bits
            np.bitwise_or(keys[s], where[s], out=keys[s], dtype=np.uint64, casting="unsafe")
            np.putmask(keys[s], gone[s], NONE)

        in_slices(pack, total)
        packed = sorted_copy(keys)[:m]
        in_slices(lambda s: np.bitwise_and(packed[s], low, out=where[s], casting="unsafe"), m)
        first = work.flag[:m]
        first[:1] = True
        ends = first[1:]
        changes = partial(_key_changes, pos_bits=work.pos_bits)
        in_slices(lambda s: changes(packed[s.start : s.stop + 1], out=ends[s]), max(m - 1, 0))
        distinct = packed[first]
        distinct >>= np.uint64(work.pos_bits)
        del packed
    else:  # too wide to pack with its end: sorted indirectly
        np.putmask(keys, gone, NONE)
        by_key = np.argsort(keys, kind="stable")[:m]
        ranked = keys[by_key]
        where[:m] = where[by_key]
        del by_key
        first = work.flag[:m]
        first[:1] = True
        np.not_equal(ranked[1:], ranked[:-1], out=first[1:])
        distinct = ranked[first]
        del ranked
    rank = work.rank[:m]
    np.copyto(rank, first)  # cast into the buffer: a cumulative sum of booleans casts a copy
    np.cumsum(rank, out=rank)
    rank -= 1
    return distinct.view(np.int64), np.bincount(rank, minlength=len(distinct))


def _word_bits(vocab_size: int) -> int:
    """The bits of a key below its prefix row, which hold the word: shifts and masks split a key
    several times faster than division by the vocabulary's size."""
    return max(vocab_size - 1, 1).bit_length()


def _rows(keys: np.ndarray, counts: np.ndarray, vocab_size: int) -> Rows:
    """An order's distinct keys (prefix row, then the word in ``_word_bits``; consumed) and
    counts as rows: the words in the narrowest type that holds them, the prefixes in the keys'
    place (index arrays: each spells the next order's columns by a gather), the counts as the
    table's u64 (no copy)."""
    bits = _word_bits(vocab_size)
    word_type = NUMPY_ID_TYPES[ID_TYPES.index(id_dtype(vocab_size))]
    words = (keys & ((1 << bits) - 1)).astype(word_type)
    keys >>= bits  # the prefixes, in place: index arrays as they are
    return keys, words, counts.view(np.uint64)


def ranked_tables(
    unigrams: np.ndarray, orders: Iterable[Rows], vocab_size: int
) -> Iterator[pl.DataFrame]:
    """The count tables (ids of the narrowest type for ``vocab_size``) of ``Rows``, order
    by order as ``orders`` gives them (only the last one's word columns are held to spell the
    next)."""
    dtype = id_dtype(vocab_size)
    np_dtype = NUMPY_ID_TYPES[ID_TYPES.index(dtype)]

    def table(n: int, cols: list[np.ndarray], counts: np.ndarray) -> pl.DataFrame:
        return pl.DataFrame(
            [
                pl.Series(name, col, dtype=dtype)
                for name, col in zip(word_columns(n), cols, strict=True)
            ]
            + [pl.Series(COUNT, counts, dtype=pl.UInt64)]
        )

    present = np.flatnonzero(unigrams)
    yield table(1, [present], unigrams[present])
    words = None  # order 2's prefixes are ids
    for prefix, word, counts in orders:
        below = [prefix] if words is None else [col[prefix] for col in words]
        words = [col.astype(np_dtype, copy=False) for col in [*below, word]]
        yield table(len(words), words, counts)


def table_file(folder: Path, n: int) -> Path:
    return Path(folder) / f"order{n}.parquet"


def write_tables(
    tables: Sequence[pl.DataFrame], folder: Path, vocab: Vocabulary | None = None
) -> None:
    """Write one Parquet file per order (and the vocabulary that names the ids, if given) into
    ``folder``, replacing it whole once all are written."""
    with atomic_dir(Path(folder)) as tmp:
        for n, table in enumerate(tables, start=1):
            table.write_parquet(table_file(tmp, n), **PARQUET)
        if vocab is not None:
            vocab.save(tmp / VOCAB_FILE)


def write_table(
    path: Path,
    n: int,
    dtype: pl.DataType,
    parts: Iterable[pl.DataFrame],
    settings: Mapping[str, Any] | None = None,
) -> int:
    """Write one order's table from consecutive sorted parts, one row group each, with ids of
    ``dtype``, so that the table is never whole in memory; returns its rows. ``settings``: the
    Parquet writer's (``PARQUET`` if None)."""
    schema = {**dict.fromkeys(word_columns(n), dtype), COUNT: pl.UInt64}
    rows = 0
    with pq.ParquetWriter(
        path, pl.DataFrame(schema=schema).to_arrow().schema, **(settings or PARQUET)
    ) as out:
        for part in parts:
            out.write_table(part.cast(schema).to_arrow())
            rows += part.height
    return rows


def table_batches(folder: Path, n: int, rows: int) -> Iterator[pl.DataFrame]:
    """Order ``n``'s table in ``folder`` read ``rows`` at a time."""
    path = table_file(folder, n)
    try:
        file = pq.ParquetFile(path)
        if file.schema_arrow.names != [*word_columns(n), COUNT]:
            raise SeqlmError(f"{path}: expected columns {[*word_columns(n), COUNT]}")
        if file.metadata.num_rows <= rows:  # one batch: Polars reads it whole ~3x as fast
            yield pl.read_parquet(path)
            return
        for batch in file.iter_batches(rows):
            yield pl.from_arrow(batch)
    except (pa.ArrowException, pl.exceptions.PolarsError, OSError) as e:
        raise SeqlmError(f"{path}: not a Parquet file ({str(e).splitlines()[0]})") from None


def table_orders(folder: Path) -> int:
    """How many orders of count tables ``folder`` holds (order1.parquet, order2.parquet, ...)."""
    n = 0
    while table_file(folder, n + 1).exists():
        n += 1
    if n == 0:
        raise SeqlmError(f"{folder}: no count tables (order1.parquet ...)")
    return n


def merge_tables(shards: Sequence[Sequence[pl.DataFrame]]) -> list[pl.DataFrame]:
    """Sum the count tables of several shards, order by order (all shards must have one order),
    in memory (``seqlm.ngram.spill`` sums them within a budget)."""
    if not shards:
        raise SeqlmError("no count tables to merge")
    orders = {len(tables) for tables in shards}
    if len(orders) != 1:
        raise SeqlmError(f"count tables of different orders cannot be merged: {sorted(orders)}")
    merged = []
    for n, parts in enumerate(zip(*shards, strict=True), start=1):
        dtype = max((part.schema["w1"] for part in parts), key=ID_TYPES.index)
        width = NUMPY_ID_TYPES[ID_TYPES.index(dtype)]
        words = [
            np.concatenate([p[w].to_numpy().astype(width) for p in parts]) for w in word_columns(n)
        ]
        counts = np.concatenate([p[COUNT].to_numpy() for p in parts]).astype(np.uint64)
        merged.append(sum_rows(words, counts))
    return merged


def sum_rows(words: list[np.ndarray], counts: np.ndarray) -> pl.DataFrame:
    """The rows summed by n-gram, sorted by ``w1..wn``. The ids are packed side by side into as
    few u64 keys as hold them, so that the sort compares one or two integers per row rather
    than n columns: 12M rows of 5-grams, 1.7 s against 11.8 s for a Polars group-by and sort
    over the columns (Polars 2.1, two loaded cores)."""
    if len(counts) == 0:
        return pl.DataFrame(
            dict(zip([*word_columns(len(words)), COUNT], [*words, counts], strict=True))
        )
    bits = max(max(int(w.max()) for w in words).bit_length(), 1)
    per_key = 64 // bits
    keys = {}
    for k in range(0, len(words), per_key):
        key = np.zeros(len(counts), dtype=np.uint64)
        for w in words[k : k + per_key]:
            key <<= np.uint64(bits)
            key |= w
        keys[f"k{k}"] = key
    order = pl.DataFrame(keys).select(pl.arg_sort_by(list(keys))).to_series().to_numpy()
    first = np.zeros(len(order), dtype=bool)
    first[:1] = True
    for key in keys.values():
        ranked = key[order]
        first[1:] |= ranked[1:] != ranked[:-1]
    del keys, ranked
    starts = np.flatnonzero(first)
    columns = {c: w[order[starts]] for c, w in zip(word_columns(len(words)), words, strict=True)}
    columns[COUNT] = np.add.reduceat(counts[order], starts)
    return pl.DataFrame(columns)
