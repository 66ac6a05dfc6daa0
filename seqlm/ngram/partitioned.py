"""Merging count tables and estimating modified Kneser–Ney in parts, for a cluster: no call holds
every n-gram of an order, and the model equals the single-machine one (the same arrays in its
saved folder, the same ARPA bytes) whatever the number of parts.

Every heavy step is a round of calls of a module-level function through a ``Mapper`` (in this
process, other processes, Dask workers): arguments and results are small (paths, ints, small
arrays), data passes through Parquet files. The coordinator reduces the small global pieces —
the counts-of-counts and discounts, the unigrams' one context — and streams the finished ranges
into the model's files, taking their log10s (the one operation whose rounding may differ between
CPUs; the workers' arithmetic is IEEE's, the same everywhere).

1. ``partition_shard``: one shard's tables over the vocabulary's ids, split by a hash of each
   n-gram into parts; ``merge_part``: part p of every shard summed and sorted.
2. ``estimate_partitioned``: continuation counts (by suffix), adjusted counts and their
   counts-of-counts, then order by order the probabilities (:mod:`seqlm.ngram.partitioned_kn`),
   and last each range of first-word ids laid out in the model's row order.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from seqlm.errors import SeqlmError
from seqlm.files import atomic_dir, atomic_path
from seqlm.ngram import partitioned_kn as kn
from seqlm.ngram.arpa import write_arpa
from seqlm.ngram.counts import COUNT, ID_TYPES, NUMPY_ID_TYPES, id_dtype, table_file, word_columns
from seqlm.ngram.kneser_ney import discounts
from seqlm.ngram.levels import Spilled, numpy_view, order_of
from seqlm.ngram.lines import check_order
from seqlm.ngram.model import NgramModel
from seqlm.vocab import BOS_ID, EOS_ID, VOCAB_FILE, Vocabulary

T = TypeVar("T")
Mapper = Callable[[Callable[..., T], Sequence[tuple[Any, ...]]], list[T]]
READ_BATCH = 1 << 20  # rows of a shard's table remapped at a time
MODEL_COLUMNS = ("key", "context", "word", "log10_prob", "log10_backoff")
MODEL_DTYPES = (np.int64, np.int64, np.int64, np.float64, np.float64)


def local_map(fn: Callable[..., T], calls: Sequence[tuple[Any, ...]]) -> list[T]:
    """Each call in this process, in order."""
    return [fn(*args) for args in calls]


# ---- merging: shards' tables → hash parts over the vocabulary's ids → summed parts ----


def partition_shard(tables: Path, vocab: Path, parts: int, out: Path) -> dict[str, int]:
    """One shard's count tables (over its own type ids, named by the dictionary beside them)
    over ``vocab``'s ids (cut-off types → ``<unk>``), split into ``parts`` by a hash of each
    n-gram: ``out/order<n>/part<p>.parquet``, read and written in batches. Returns the rows per
    order."""
    tables, v = Path(tables), _vocabulary(vocab)
    _check_parts(parts)
    if not table_file(tables, 1).is_file() or not (tables / VOCAB_FILE).is_file():
        raise SeqlmError(f"{tables}: no count tables (order1.parquet ... and {VOCAB_FILE})")
    mapping = v.id_map(Vocabulary.load(tables / VOCAB_FILE))
    mapping = mapping.astype(NUMPY_ID_TYPES[ID_TYPES.index(id_dtype(v.size))])
    with atomic_dir(Path(out)) as tmp:
        return {
            f"order{n}": _partition_order(tables, n, mapping, parts, tmp)
            for n in range(1, order_of(tables) + 1)
        }


def _partition_order(tables: Path, n: int, mapping: np.ndarray, parts: int, out: Path) -> int:
    """Order ``n`` of a shard's tables over the vocabulary's ids (``mapping`` of the shard's
    ids), batch by batch into its parts; returns its rows."""
    cols = word_columns(n)
    dtype = ID_TYPES[NUMPY_ID_TYPES.index(mapping.dtype.type)]
    schema = pl.DataFrame(schema={**dict.fromkeys(cols, dtype), COUNT: pl.UInt64}).to_arrow()
    (out / f"order{n}").mkdir()
    source = pq.ParquetFile(table_file(tables, n))
    with ExitStack() as stack:
        writers = [
            stack.enter_context(
                pq.ParquetWriter(kn.table_part(out, n, p), schema.schema, compression="zstd")
            )
            for p in range(parts)
        ]
        for batch in source.iter_batches(READ_BATCH, columns=[*cols, COUNT]):
            words = [numpy_view(batch.column(c)) for c in cols]
            if max(int(w.max(initial=0)) for w in words) >= len(mapping):
                raise SeqlmError(
                    f"{table_file(tables, n)}: ids beyond the {len(mapping)} types of the "
                    f"dictionary beside it"
                )
            ids = {c: mapping[w] for c, w in zip(cols, words, strict=True)}
            frame = pl.DataFrame(ids | {COUNT: numpy_view(batch.column(COUNT))})
            pieces = kn.split(frame, kn.hash_parts(frame, cols, parts), parts)
            for writer, piece in zip(writers, pieces, strict=True):
                writer.write_table(piece.to_arrow())
    return source.metadata.num_rows


def merge_part(shards: Sequence[Path], part: int, out: Path) -> dict[str, int]:
    """Part ``part`` of every shard's :func:`partition_shard` output summed (n-grams that the
    cut-off made equal too) and sorted by words: ``out/order<n>/part<part>.parquet``. Returns
    the rows per order."""
    if not shards:
        raise SeqlmError("no count tables to merge")
    orders = {_orders(Path(s)) for s in shards}
    if len(orders) != 1:
        raise SeqlmError(f"count tables of different orders cannot be merged: {sorted(orders)}")
    rows = {}
    for n in range(1, orders.pop() + 1):
        cols = word_columns(n)
        merged = (
            pl.scan_parquet([kn.table_part(s, n, part) for s in shards])
            .group_by(cols)
            .agg(pl.col(COUNT).sum())
            .sort(cols)
            .collect()
        )
        path = kn.table_part(out, n, part)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            merged.write_parquet(tmp, compression="zstd")
        rows[f"order{n}"] = merged.height
    return rows


def merge_partitioned(
    shards: Sequence[Path], vocab: Path, parts: int, out: Path, mapper: Mapper = local_map
) -> dict[str, int]:
    """The shards' partitioned tables merged part by part through ``mapper`` into ``out``, with
    the vocabulary that names the ids (as :func:`seqlm.ngram.counts.write_tables`). Returns the
    rows per order."""
    _check_parts(parts)
    v = _vocabulary(vocab)
    shards = [Path(s).resolve() for s in shards]  # absolute: a worker's folder may differ
    for shard in shards:
        if _parts(shard) != parts:
            raise SeqlmError(f"{shard}: partitioned into {_parts(shard)} parts, not {parts}")
    with atomic_dir(Path(out).resolve()) as tmp:
        done = mapper(merge_part, [(shards, p, tmp) for p in range(parts)])
        v.save(tmp / VOCAB_FILE)
    return {name: sum(r[name] for r in done) for name in done[0]}


# ---- estimating: the coordinator ----


def estimate_partitioned(
    tables: Path,
    order: int,
    out: Path,
    mapper: Mapper = local_map,
    *,
    discount_fallback: bool = True,
    arpa: Path | None = None,
    scratch: Path | None = None,
) -> dict[str, Any]:
    """Modified interpolated Kneser–Ney of ``order`` from merged parts (``merge_partitioned``'s
    folder), every heavy step a round of ``mapper`` calls, shuffles in a folder in ``scratch``
    (``out``'s parent by default) removed at the end. Saves the model to ``out`` as
    :meth:`NgramModel.save` does the single-machine estimate (and its ARPA to ``arpa``); returns
    the model's info (discounts, counts-of-counts, sizes)."""
    tables, out = Path(tables).resolve(), Path(out).resolve()  # as a worker elsewhere sees them
    check_order(order)
    if not (tables / VOCAB_FILE).is_file():
        raise SeqlmError(f"{tables}: no merged count tables (no {VOCAB_FILE})")
    if order > _orders(tables):
        raise SeqlmError(f"{tables}: counted up to order {_orders(tables)}, not {order}")
    vocab = Vocabulary.load(tables / VOCAB_FILE)
    where = Path(scratch).resolve() if scratch is not None else out.parent
    where.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="seqlm-partitioned-", dir=where) as tmp:
        model = _estimate(
            tables, order, vocab, _parts(tables), Path(tmp), mapper, discount_fallback
        )
        model.save(out)
        if arpa is not None:
            write_arpa(model, arpa)
    return model.info


def _estimate(
    tables: Path,
    order: int,
    vocab: Vocabulary,
    parts: int,
    work: Path,
    mapper: Mapper,
    fallback: bool,
) -> NgramModel:
    each = range(parts)
    mapper(
        kn.continuation, [(tables, m, p, parts, work) for m in range(2, order + 1) for p in each]
    )
    adjusted = mapper(
        kn.adjust, [(tables, n, order, p, parts, work) for n in range(1, order + 1) for p in each]
    )
    coc = np.array(
        [sum(r["coc"] for r in adjusted[n * parts : (n + 1) * parts]) for n in range(order)]
    )
    d = discounts(coc, fallback)  # refused here if it must be, before any estimate
    unigram = adjusted[:parts]
    uniform = vocab.size - 1 + int(sum(r["unk"] for r in unigram) > 0)
    uni = kn.Unigrams.of(
        d[0], sum(r["total"] for r in unigram), sum(r["by_k"] for r in unigram), uniform
    )
    bounds = _ranges(vocab, parts)
    mapper(kn.unigrams, [(work, order, p, parts, uni, bounds) for p in each])
    rows = [np.diff(bounds)]  # per order, rows per range
    for n in range(2, order + 1):
        mapper(kn.lower, [(work, n, p, parts) for p in each])
        done = mapper(kn.interpolate, [(work, n, order, p, parts, d[n - 1], bounds) for p in each])
        rows.append(sum(r["ranges"] for r in done))
    offsets = np.array([np.cumsum(r) - r for r in rows])  # [order, range]: rows before it
    (work / "layout").mkdir()
    mapper(kn.layout, [(work, order, i, bounds, offsets[:, i].tolist(), uni) for i in each])
    info = {
        "smoothing": "kn",
        "discounts": d[:, 1:].tolist(),
        "counts_of_counts": coc[:, 1:].tolist(),
        "sizes": [int(r.sum()) for r in rows],
    }
    return _assemble(work, vocab, order, bounds, info)


def _assemble(
    work: Path, vocab: Vocabulary, order: int, bounds: np.ndarray, info: dict
) -> NgramModel:
    """The model over files that the ranges' arrays are appended to in turn (never all rows of an
    order in one process's memory), mapped."""
    (work / "model").mkdir()
    columns: dict[str, list[np.ndarray]] = {name: [] for name in MODEL_COLUMNS}
    for n in range(1, order + 1):
        files = [
            Spilled(work / "model" / f"{name}{n}", np.dtype(dtype))
            for name, dtype in zip(MODEL_COLUMNS, MODEL_DTYPES, strict=True)
        ]
        for i in range(len(bounds) - 1):
            layout = {c: np.load(work / "layout" / f"{c}{n}-{i}.npy") for c in kn.LAYOUT_COLUMNS}
            bos = BOS_ID - int(bounds[i]) if n == 1 and bounds[i] <= BOS_ID < bounds[i + 1] else -1
            log_p, backoff = _log10s(layout["prob"], layout["gamma"], bos)
            values = (layout["key"], layout["context"], layout["word"], log_p, backoff)
            for spilled, column in zip(files, values, strict=True):
                spilled.append(column)
        for name, spilled in zip(MODEL_COLUMNS, files, strict=True):
            columns[name].append(spilled.mapped())
    return NgramModel(
        vocab=vocab,
        context=columns["context"],
        word=columns["word"],
        log10_prob=columns["log10_prob"],
        log10_backoff=columns["log10_backoff"],
        info=info,
        stored_keys=columns["key"],
    )


def _log10s(prob: np.ndarray, gamma: np.ndarray, bos: int) -> tuple[np.ndarray, np.ndarray]:
    """log10 p and log10 back-off (0 where γ is NaN: no context) of rows of a range, taken here,
    in one process, as the single-machine estimate takes them: NumPy's log10 may round otherwise
    on a worker with other SIMD instructions. Row ``bos`` (if ≥ 0) is the unigram ``<s>``,
    never predicted: log10 p 0, as lmplz writes it."""
    present = ~np.isnan(gamma)
    backoff = np.zeros(len(gamma))
    with np.errstate(divide="ignore"):
        log_p = np.log10(prob)
        backoff[present] = np.log10(gamma[present])
    if bos >= 0:
        log_p[bos] = 0.0
    return log_p, backoff


def _ranges(vocab: Vocabulary, parts: int) -> np.ndarray:
    """Bounds of ``parts`` ranges of first-word ids that start about as many n-grams each: a word
    starts about as many as it occurs, ``<s>`` one a line (where the bounds fall changes where
    the work happens, not the model)."""
    weight = vocab.counts.astype(np.float64) + 1
    weight[BOS_ID] += vocab.counts[EOS_ID]
    total = np.cumsum(weight)
    cuts = np.searchsorted(total, total[-1] * np.arange(1, parts) / parts)
    return np.concatenate(([0], cuts, [vocab.size])).astype(np.int64)


def _vocabulary(path: Path) -> Vocabulary:
    path = Path(path)
    path = path / VOCAB_FILE if path.is_dir() else path
    if not path.is_file():
        raise SeqlmError(f"{path}: no vocabulary")
    return Vocabulary.load(path)


def _check_parts(parts: int) -> None:
    if parts < 1:
        raise SeqlmError(f"parts must be at least 1, not {parts}")


def _orders(folder: Path) -> int:
    n = 0
    while (folder / f"order{n + 1}").is_dir():
        n += 1
    return n


def _parts(folder: Path) -> int:
    p = 0
    while kn.table_part(folder, 1, p).is_file():
        p += 1
    return p
