"""Count tables in layers: a table folder's own ``order<n>.parquet`` files, then the tables of
shards added since, each layer a subfolder ``added<k>/`` over the same ids (the folder's
dictionary names them all). Every layer is sorted by its words and distinct; summed, the layers
are the whole table. A merge that adds a shard writes a layer rather than rewriting the tables,
and the layers are summed into one when they grow too many or too large (``seqlm.stages``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from seqlm.errors import SeqlmError
from seqlm.ngram.counts import (
    COUNT,
    ID_TYPES,
    NUMPY_ID_TYPES,
    table_batches,
    table_file,
    table_orders,
    word_columns,
)
from seqlm.ngram.spill import rows_upto

ADDED = "added"  # added<k>/: the k-th layer added to a table folder


def layer_folders(folder: Path) -> list[Path]:
    """``folder`` and the layers added to it, oldest first."""
    folder = Path(folder)
    added = {
        int(p.name[len(ADDED) :]): p
        for p in folder.glob(f"{ADDED}*")
        if p.is_dir() and p.name[len(ADDED) :].isdigit()
    }
    if sorted(added) != list(range(1, len(added) + 1)):
        raise SeqlmError(f"{folder}: layers {sorted(added)} are not added1 .. added{len(added)}")
    return [folder, *(added[k] for k in sorted(added))]


def layer_rows(folder: Path) -> int:
    """Every order's rows of one layer, from its files' footers."""
    rows = 0
    for n in range(1, table_orders(folder) + 1):
        path = table_file(folder, n)
        try:
            rows += pq.ParquetFile(path).metadata.num_rows
        except (pa.ArrowException, OSError) as e:
            raise SeqlmError(f"{path}: not a Parquet file ({str(e).splitlines()[0]})") from None
    return rows


def read_tables(folder: Path) -> list[pl.DataFrame]:
    """A folder's count tables, every order whole in memory; its layers, if any, summed."""
    layers = layer_folders(folder)
    orders = table_orders(folder)
    for layer in layers[1:]:
        if table_orders(layer) != orders:
            raise SeqlmError(f"{layer}: {table_orders(layer)} orders, the tables {orders}")
    return [
        functools.reduce(lambda a, b: add_sorted(a, b, _wider(a, b)), (_read(f, n) for f in layers))
        for n in range(1, orders + 1)
    ]


def _read(folder: Path, n: int) -> pl.DataFrame:
    path = table_file(folder, n)
    try:
        table = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise SeqlmError(f"{path}: not a Parquet file ({str(e).splitlines()[0]})") from None
    if table.columns != [*word_columns(n), COUNT]:
        raise SeqlmError(f"{path}: expected columns {[*word_columns(n), COUNT]}")
    return table


def _wider(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataType:
    return max(a.schema["w1"], b.schema["w1"], key=ID_TYPES.index)


def summed_layers(
    folders: Sequence[Path], n: int, rows: int, dtype: pl.DataType
) -> Iterator[pl.DataFrame]:
    """Order ``n`` of the layers in ``folders`` as one table, ids of ``dtype``: sorted and
    distinct, in parts. Each layer is read ``rows`` at a time, and each sum of two holds about
    two parts of either, so about ``4 * rows * len(folders)`` rows are held at once."""
    streams = [
        (t.with_columns(pl.exclude(COUNT).cast(dtype)) for t in table_batches(f, n, rows))
        for f in folders
    ]
    return functools.reduce(lambda a, b: add_streams(a, b, dtype), streams)


def _row_keys(words: Sequence[np.ndarray], bits: int) -> np.ndarray:
    """Each row's ids as one key that orders as the rows: packed ``bits`` apiece into a u64
    where they fit (a search compares integers), else as a big-endian byte string."""
    if bits * len(words) <= 64:
        keys = np.zeros(len(words[0]), dtype=np.uint64)
        for column in words:
            keys <<= np.uint64(bits)
            keys |= column
        return keys
    packed = np.empty((len(words[0]), len(words)), dtype=words[0].dtype.newbyteorder(">"))
    for i, column in enumerate(words):
        packed[:, i] = column
    return packed.view(f"S{packed.itemsize * len(words)}").ravel()


def add_sorted(old: pl.DataFrame, new: pl.DataFrame, dtype: pl.DataType) -> pl.DataFrame:
    """Two count tables of one order, each sorted by its words, summed in one pass: an n-gram of
    both adds ``new``'s count to ``old``'s, one of ``new`` alone is inserted in its place."""
    width = NUMPY_ID_TYPES[ID_TYPES.index(dtype)]
    old_words, new_words = (
        [t[w].to_numpy().astype(width, copy=False) for w in t.columns[:-1]] for t in (old, new)
    )
    bits = max((int(w.max()) for w in [*old_words, *new_words] if len(w)), default=0).bit_length()
    old_keys, new_keys = _row_keys(old_words, bits), _row_keys(new_words, bits)
    at = np.searchsorted(old_keys, new_keys)
    both = at < len(old_keys)
    both[both] = old_keys[at[both]] == new_keys[both]
    alone = np.flatnonzero(~both)
    # Where the rows of ``new`` alone land: after the old rows before them and each other.
    to_new = at[alone] + np.arange(len(alone))
    is_old = np.ones(old.height + len(alone), dtype=bool)
    is_old[to_new] = False
    new_counts = new[COUNT].to_numpy()
    columns = []
    for old_column, new_column in zip(
        [*old_words, old[COUNT].to_numpy()], [*new_words, new_counts], strict=True
    ):
        column = np.empty(len(is_old), dtype=old_column.dtype)
        column[is_old] = old_column  # a mask's copy, cheaper than scattering by index
        column[to_new] = new_column[alone]
        columns.append(column)
    # An old row that ``new`` has too moved down by the rows of ``new`` alone inserted before it.
    matched = at[both]
    columns[-1][matched + np.searchsorted(at[alone], matched, side="right")] += new_counts[both]
    schema = {**dict.fromkeys(old.columns[:-1], dtype), COUNT: pl.UInt64}
    return pl.DataFrame(dict(zip(schema, columns, strict=True)), schema=schema)


def add_streams(
    old: Iterator[pl.DataFrame], new: Iterator[pl.DataFrame], dtype: pl.DataType
) -> Iterator[pl.DataFrame]:
    """Two tables of one order, each in sorted parts, summed by ``add_sorted`` a step at a time:
    a step takes the rows of both up to the lesser last key held of a table with parts ahead (a
    later row of it could equal a key past that), so it holds about two parts of each; tables
    that come in one part each are summed in one step."""
    streams = [(p for p in parts if not p.is_empty()) for parts in (old, new)]
    ahead = [next(stream, None) for stream in streams]  # each table's next part; None: its end
    held: list[pl.DataFrame | None] = [None, None]
    while True:
        for i, stream in enumerate(streams):
            if held[i] is None and ahead[i] is not None:
                held[i], ahead[i] = ahead[i], next(stream, None)
        if held[0] is None and held[1] is None:
            return
        ends = [h[:, :-1].row(-1) for h, a in zip(held, ahead, strict=True) if a is not None]
        frontier = min(ends, default=None)
        steps = []
        for i, h in enumerate(held):
            cut = 0 if h is None else h.height if frontier is None else _rows_at_most(h, frontier)
            steps.append(h[:cut] if cut else None)
            held[i] = h[cut:] if h is not None and cut < h.height else None
        a, b = steps
        if a is not None and b is not None:
            yield add_sorted(a, b, dtype)
        elif a is not None or b is not None:
            yield a if a is not None else b


def _rows_at_most(table: pl.DataFrame, key: tuple[int, ...]) -> int:
    return rows_upto([table[w].to_numpy() for w in table.columns[:-1]], key)
