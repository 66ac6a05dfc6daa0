"""Count tables in layers: a table folder's own ``order<n>.parquet`` files, then the tables of
shards added since, each layer a subfolder ``added<k>/`` over the same ids (the folder's
dictionary names them all). Every layer is sorted by its words and distinct; summed, the layers
are the whole table. A merge that adds a shard writes a layer rather than rewriting the tables,
and the layers are summed into one when they grow too many or too large (``seqlm.stages``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from seqlm.errors import SeqlmError
from seqlm.ngram.counts import COUNT, merge_tables, table_file, table_orders, word_columns

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
    tables = [[_read(f, n) for n in range(1, orders + 1)] for f in layers]
    return tables[0] if len(layers) == 1 else merge_tables(tables)


def _read(folder: Path, n: int) -> pl.DataFrame:
    path = table_file(folder, n)
    try:
        table = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise SeqlmError(f"{path}: not a Parquet file ({str(e).splitlines()[0]})") from None
    if table.columns != [*word_columns(n), COUNT]:
        raise SeqlmError(f"{path}: expected columns {[*word_columns(n), COUNT]}")
    return table
