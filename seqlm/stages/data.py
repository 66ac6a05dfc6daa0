"""Data stages: ingestion, learned subwords, per-shard type dictionaries and count tables, the
vocabulary, merged count tables, and those tables over the vocabulary's ids.

Contract: ``ingest`` reads one source file and writes its token shards per split (for the
``bpe`` tokenizer, the lines' text: ``subwords`` learns the tokenizer from the train split of
every shard and ``encode`` writes each shard's splits again as tokens, the shards later stages
read); ``types`` and ``counts`` read one shard's train split (over the shard's own type
dictionary, so that a new shard is counted alone); ``vocab`` merges the type dictionaries' counts
and applies the cut-offs; ``tables`` sums the shards' count tables over the type dictionary of
all shards in order (append-only, so the tables of the shards but the last plus the last one's
are those of all: a stored earlier merge is extended, not redone); ``cutoff`` maps those tables
to a vocabulary's ids (cut-off types become ``<unk>``), what an n-gram model is estimated from.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl

from seqlm import corpus
from seqlm import subwords as bpe
from seqlm.config import CorpusConfig, VocabConfig
from seqlm.errors import SeqlmError
from seqlm.files import atomic_dir
from seqlm.ngram.budget import DEFAULT_MEMORY, give_back_freed, parse_memory, working_set
from seqlm.ngram.counts import (
    COUNT,
    ID_TYPES,
    NUMPY_ID_TYPES,
    id_dtype,
    table_batches,
    table_file,
    table_orders,
    write_table,
)
from seqlm.ngram.spill import (
    BYTES_PER_ROW,
    MIN_WORKING,
    SHARE,
    count_chunks,
    rows_upto,
    scratch_folder,
    sum_tables,
)
from seqlm.stages.stage import Stage, inputs, ref, resolve, shards_tokenizer
from seqlm.store import Artifact, Plan, Store, file_digest
from seqlm.vocab import (
    EOS_ID,
    VOCAB_FILE,
    Vocabulary,
    build_dictionary,
    merge_dictionaries,
    merge_vocabularies,
)

log = logging.getLogger("seqlm.stages")

ROW_GROUP = 1 << 20  # rows per row group of a merged or cut table
# Merged and cut tables are rewritten whole by every merge that extends them and read by every
# model: their ids and counts delta-packed, uncompressed, write in 0.6 of zstd's time (its
# dictionary encoding is most of the cost), read in 1.3x and take 1.2x the bytes (PTB's merged
# tables: 10.3 MB against 8.6 MB).
TABLE_SETTINGS = {
    "compression": "none",
    "use_dictionary": False,
    "column_encoding": "DELTA_BINARY_PACKED",
}
_END = object()  # the end of one run of items made ahead (``_made_ahead``)
TABLES_DIR = "tables"  # a count-table folder: order<n>.parquet and the vocabulary naming the ids


def plan_ingest(source: corpus.Source, config: CorpusConfig) -> Plan:
    settings = {"tokenizer": config.tokenizer, "text_field": config.text_field}
    if source.split is None:
        settings["fractions"] = config.fractions
    if corpus.is_sequence_file(source.path):
        settings["window"] = config.window
    return INGEST.plan_of(settings, {"file": file_digest(source.path), "split": source.split})


def ingest(store: Store, source: corpus.Source, config: CorpusConfig) -> Artifact:
    """One source file → Parquet token shards per split."""
    return store.build(
        plan_ingest(source, config),
        lambda out: corpus.ingest(
            source, out, config.tokenizer, config.text_field, config.fractions, config.window
        ),
        note={"source": str(source.path)},
    )


def plan_subwords(shards: Sequence[Artifact], config: CorpusConfig) -> Plan:
    return SUBWORDS.plan_of(
        {"vocab_size": config.bpe_vocab_size}, {"shards": [ref(s) for s in shards]}
    )


def subwords(store: Store, shards: Sequence[Artifact], config: CorpusConfig) -> Artifact:
    """A BPE tokenizer (``tokenizer.json``) learnt from the train split's text of the shards."""

    def produce(out: Path) -> dict[str, int]:
        text = corpus.load_split([s.path for s in shards], "train")["text"]
        tokenizer = bpe.train(text, config.bpe_vocab_size)
        bpe.save(tokenizer, out / bpe.TOKENIZER_FILE)
        return {"types": tokenizer.get_vocab_size()}

    return store.build(plan_subwords(shards, config), produce)


def plan_encode(shard: Artifact, tokenizer: Artifact) -> Plan:
    return ENCODE.plan_of({"tokenizer": bpe.BPE}, {"shard": ref(shard), "subwords": ref(tokenizer)})


def encode(store: Store, shard: Artifact, tokenizer: Artifact) -> Artifact:
    """One shard's splits as subwords (a ``tokens`` column): what every later stage reads. Its
    rows are the ingested shard's (lines and characters per split)."""

    def produce(out: Path) -> dict[str, int]:
        learnt = bpe.load(tokenizer.path / bpe.TOKENIZER_FILE)
        for split in corpus.SPLITS:
            if (shard.path / f"{split}.parquet").is_file():
                text = pl.read_parquet(shard.path / f"{split}.parquet")["text"]
                tokens = bpe.encode(learnt, text)
                tokens.write_parquet(out / f"{split}.parquet", compression="zstd")
        return dict(shard.manifest["rows"])

    return store.build(plan_encode(shard, tokenizer), produce, note=shard.manifest["note"])


def shards_subwords(shards: Sequence[Artifact]) -> Artifact | None:
    """The subword tokenizer the shards were encoded with (None for a named tokenizer)."""
    (reference,) = {s.manifest["inputs"].get("subwords") for s in shards}
    return None if reference is None else resolve(shards[0], reference)


def keep_subwords(shards: Sequence[Artifact], folder: Path) -> dict[str, str]:
    """A copy of the shards' subword tokenizer in a model's ``folder``, so that scoring re-applies
    the very tokenizer the model was trained with, and the record of which (nothing for a named
    tokenizer)."""
    learnt = shards_subwords(shards)
    if learnt is None:
        return {}
    shutil.copyfile(learnt.path / bpe.TOKENIZER_FILE, folder / bpe.TOKENIZER_FILE)
    return {"subwords": ref(learnt)}


def plan_types(shard: Artifact) -> Plan:
    return TYPES.plan_of({}, {"shard": ref(shard)})


def types(store: Store, shard: Artifact) -> Artifact:
    """The type dictionary of one shard's train split (token, id by first appearance, count):
    all the vocabulary needs, so that counting other n-gram orders never re-keys the vocabulary."""

    def produce(out: Path) -> dict[str, int]:
        found = None
        for lines in corpus.iter_split(shard.path, "train"):  # in batches: a shard can be large
            part = build_dictionary(lines)
            found = merge_dictionaries([found, part]) if found else part
        found.save(out / VOCAB_FILE)
        return {"types": found.size}

    return store.build(plan_types(shard), produce, note=shard.manifest["note"])


def plan_counts(shard: Artifact, order: int, memory: str = DEFAULT_MEMORY) -> Plan:
    # The shard's type ids are its types artifact's, whose key follows from the shard's.
    return COUNTS.plan_of({"order": order}, {"shard": ref(shard)})


def counts(store: Store, shard: Artifact, order: int, memory: str = DEFAULT_MEMORY) -> Artifact:
    """N-gram count tables of one shard's train split, orders 1..``order``, over the ids of the
    shard's type dictionary (first appearance: the ``types`` stage's), counted in batches of its
    lines within ``memory`` (``ngram.memory``; it changes where the work happens, not the key)."""

    def produce(out: Path) -> dict[str, int]:
        with scratch_folder(out) as scratch:
            counted = count_chunks(
                corpus.iter_split(shard.path, "train"),
                order,
                _working(memory),
                scratch,
                out / TABLES_DIR,
            )
        return {"types": counted.vocab.size} | {
            f"order{n}": size for n, size in enumerate(counted.sizes, 1)
        }

    return store.build(plan_counts(shard, order), produce, note=shard.manifest["note"])


def plan_vocab(shard_types: Sequence[Artifact], config: VocabConfig) -> Plan:
    return VOCAB.plan_of(asdict(config), {"types": [ref(t) for t in shard_types]})


def vocab(store: Store, shard_types: Sequence[Artifact], config: VocabConfig) -> Artifact:
    """The vocabulary of the train split, from the shards' type dictionaries."""

    def produce(out: Path) -> dict[str, int]:
        merged = [Vocabulary.load(t.path / VOCAB_FILE) for t in shard_types]
        vocabulary = merge_vocabularies(merged, config.min_count, config.max_size)
        vocabulary.save(out / VOCAB_FILE)
        return {"types": vocabulary.size, "train_lines": int(vocabulary.counts[EOS_ID])}

    return store.build(plan_vocab(shard_types, config), produce)


def load_vocabulary(vocabulary: Artifact) -> Vocabulary:
    return Vocabulary.load(vocabulary.path / VOCAB_FILE)


def vocab_shards(vocabulary: Artifact) -> list[Artifact]:
    """The shards whose train split the vocabulary counts."""
    return [s for t in inputs(vocabulary, "types") for s in inputs(t, "shard")]


def vocab_tokenizer(vocabulary: Artifact) -> str:
    """How the text of the vocabulary's shards was split into tokens: each model records it,
    since scoring a text must split it the same way."""
    return shards_tokenizer(vocab_shards(vocabulary))


def plan_tables(shard_counts: Sequence[Artifact], memory: str = DEFAULT_MEMORY) -> Plan:
    return TABLES.plan_of({}, {"counts": [ref(c) for c in shard_counts]})


def tables(
    store: Store, shard_counts: Sequence[Artifact], memory: str = DEFAULT_MEMORY
) -> Artifact:
    """The shards' count tables summed over their type dictionary's ids (the dictionary of the
    shards in order, saved beside them), order by order within ``memory`` (``ngram.memory``; it
    changes where the work happens, not the key). When the store holds the merged tables of the
    first shards, only the others are added to them, row by row in one pass."""
    plan = plan_tables(shard_counts)
    found = store.get(plan.stage, plan.key)
    if found is not None:
        return found
    earlier = _merged_prefix(store, shard_counts)
    added = shard_counts[len(inputs(earlier, "counts")) :] if earlier else shard_counts

    def produce(out: Path) -> dict[str, int]:
        parts = [table_ids(c) for c in added]
        dictionary = merge_dictionaries([table_ids(earlier), *parts] if earlier else parts)
        dtype = id_dtype(dictionary.size)
        width = NUMPY_ID_TYPES[ID_TYPES.index(dtype)]
        mappings = [dictionary.id_map(part).astype(width) for part in parts]
        folders = [c.path / TABLES_DIR for c in added]
        every = folders + ([earlier.path / TABLES_DIR] if earlier else [])
        orders = {table_orders(f) for f in every}
        if len(orders) != 1:
            raise SeqlmError(f"count tables of different orders cannot be merged: {sorted(orders)}")
        budget = _working(memory)
        if earlier is not None:
            log.info("merge counts: %d shard(s) added to %s", len(added), ref(earlier))

        order = orders.pop()
        # The earlier merge's tables, read a batch ahead of the merge (the next order's too).
        old = earlier.path / TABLES_DIR if earlier else None
        rows = _batch_rows(budget)
        batches = (_ended(table_batches(old, n, rows)) for n in range(1, order + 1)) if old else ()

        def merged(
            n: int, scratch: Path, old_batches: Iterator[pl.DataFrame]
        ) -> Iterator[pl.DataFrame]:
            new = _summed(folders, mappings, n, budget, scratch)
            if old is None:
                return new
            widened = (t.with_columns(pl.exclude(COUNT).cast(dtype)) for t in old_batches)
            return _add_streams(widened, new, dtype)

        with (
            scratch_folder(out) as scratch,
            atomic_dir(out / TABLES_DIR) as tmp,
            _made_ahead(itertools.chain.from_iterable(batches)) as old_run,
        ):
            sizes = _write(tmp, dtype, order, lambda n: merged(n, scratch, old_run()))
            dictionary.save(tmp / VOCAB_FILE)
        return {"types": dictionary.size} | {f"order{n}": k for n, k in enumerate(sizes, 1)}

    note = {"sources": [c.manifest["note"].get("source", "") for c in shard_counts]}
    if earlier is not None:
        note["extends"] = ref(earlier)
    return store.build(plan, produce, note=note)


def table_ids(tables: Artifact) -> Vocabulary:
    """The vocabulary or dictionary naming the ids of a count-table artifact."""
    return Vocabulary.load(tables.path / TABLES_DIR / VOCAB_FILE)


def _merged_prefix(store: Store, shard_counts: Sequence[Artifact]) -> Artifact | None:
    """The stored merged tables of the most shards but not all, from the first on."""
    for end in range(len(shard_counts) - 1, 0, -1):
        plan = plan_tables(shard_counts[:end])
        found = store.get(plan.stage, plan.key)
        if found is not None:
            return found
    return None


def _working(memory: str) -> int:
    """The working bytes of a stage given ``ngram.memory``."""
    return working_set(parse_memory(memory, "ngram.memory"), "ngram.memory", MIN_WORKING)


def _batch_rows(memory: int) -> int:
    """Rows of a table to read at a time: a step's share of ``memory``."""
    return max(1, memory // SHARE // BYTES_PER_ROW)


def _remap(table: pl.DataFrame, mapping: np.ndarray) -> pl.DataFrame:
    """A count table with every id ``i`` replaced by ``mapping[i]`` (rows no longer sorted)."""
    return table.with_columns(
        pl.Series(w, mapping[table[w].to_numpy()]) for w in table.columns[:-1]
    )


def _summed(
    folders: Sequence[Path], mappings: Sequence[np.ndarray], n: int, memory: int, scratch: Path
) -> Iterator[pl.DataFrame]:
    """Order ``n``'s tables in ``folders``, the ids of each mapped by its mapping, summed by
    n-gram and ascending, in parts: read in batches and summed within ``memory`` (spilling to
    ``scratch``). One table whose mapping keeps the ids' order (no two made one) stays sorted and
    distinct: it is read through."""
    rows = _batch_rows(memory)
    remapped = (
        _remap(batch, mapping)
        for folder, mapping in zip(folders, mappings, strict=True)
        for batch in table_batches(folder, n, rows)
    )
    if len(folders) == 1 and bool(np.all(np.diff(mappings[0].astype(np.int64)) > 0)):
        return remapped
    return sum_tables(remapped, n, memory, scratch)


def _write(
    folder: Path, dtype: pl.DataType, orders: int, parts: Callable[[int], Iterator[pl.DataFrame]]
) -> list[int]:
    """Orders 1..``orders`` of count tables written into ``folder`` from ``parts(n)``, in row
    groups of ``ROW_GROUP`` rows however the parts came, so that the files' bytes follow from the
    tables alone, never from ``ngram.memory`` (a model's key is their digest); returns each
    order's rows. The row groups are made a group ahead of the writer (the next order's first
    too), and after each order the freed heap goes back to the system."""
    groups = (_ended(_regrouped(parts(n), ROW_GROUP)) for n in range(1, orders + 1))
    with _made_ahead(itertools.chain.from_iterable(groups)) as run:
        sizes = []
        for n in range(1, orders + 1):
            sizes.append(write_table(table_file(folder, n), n, dtype, run(), TABLE_SETTINGS))
            give_back_freed()
        return sizes


def _ended(items: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame | object]:
    """``items``, then ``_END``: one run of ``_made_ahead``'s."""
    yield from items
    yield _END


@contextlib.contextmanager
def _made_ahead(items: Iterator[object]) -> Iterator[Callable[[], Iterator]]:
    """``items`` made in a background thread one ahead of their use (NumPy, Polars and Arrow let
    go of the GIL: making the next overlaps using the last), taken in runs that ``_END`` ends:
    the context is a function that returns the next run. An error in making an item is raised
    where it would have been taken; leaving the context stops the thread."""
    handoff: queue.Queue = queue.Queue(1)
    stop = threading.Event()

    def make() -> None:
        try:
            for item in items:
                handoff.put(item)
                if stop.is_set():
                    return
        except Exception as error:  # raised again where the items are taken
            handoff.put(error)

    def run() -> Iterator:
        while (item := handoff.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item

    maker = threading.Thread(target=make, name="seqlm-tables", daemon=True)
    maker.start()
    try:
        yield run
    finally:
        stop.set()
        while maker.is_alive():  # the maker may wait to hand an item over
            with contextlib.suppress(queue.Empty):
                handoff.get(timeout=0.01)


def _regrouped(parts: Iterator[pl.DataFrame], size: int) -> Iterator[pl.DataFrame]:
    """The parts' rows, in order, as frames of ``size`` rows (the last one shorter)."""
    held: list[pl.DataFrame] = []
    count = 0
    for part in parts:
        held.append(part)
        count += part.height
        if count >= size:
            whole = pl.concat(held, rechunk=False)
            cut = count - count % size
            yield from whole[:cut].iter_slices(size)
            held, count = [whole[cut:]], count % size
    if count:
        yield pl.concat(held)


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


def _add_sorted(old: pl.DataFrame, new: pl.DataFrame, dtype: pl.DataType) -> pl.DataFrame:
    """Two count tables of one order, each sorted by its words, summed in one pass: an n-gram of
    both adds ``new``'s count to ``old``'s, one of ``new`` alone is inserted in its place."""
    width = NUMPY_ID_TYPES[ID_TYPES.index(dtype)]
    old_words, new_words = (
        [t[w].to_numpy().astype(width, copy=False) for w in t.columns[:-1]] for t in (old, new)
    )
    bits = max(int(w.max()) for w in [*old_words, *new_words] if len(w)).bit_length()
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


def _add_streams(
    old: Iterator[pl.DataFrame], new: Iterator[pl.DataFrame], dtype: pl.DataType
) -> Iterator[pl.DataFrame]:
    """Two tables of one order, each in sorted parts, summed by ``_add_sorted`` a step at a time:
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
            yield _add_sorted(a, b, dtype)
        elif a is not None or b is not None:
            yield a if a is not None else b


def _rows_at_most(table: pl.DataFrame, key: tuple[int, ...]) -> int:
    return rows_upto([table[w].to_numpy() for w in table.columns[:-1]], key)


def plan_cutoff(merged: Artifact, vocabulary: Artifact, memory: str = DEFAULT_MEMORY) -> Plan:
    return CUTOFF.plan_of({}, {"tables": ref(merged), "vocab": ref(vocabulary)})


def cutoff(
    store: Store, merged: Artifact, vocabulary: Artifact, memory: str = DEFAULT_MEMORY
) -> Artifact:
    """The merged count tables over the vocabulary's ids: cut-off types become ``<unk>``, and
    their n-grams are summed with it, order by order within ``memory`` (``ngram.memory``; not in
    the key). What an n-gram model is estimated from."""

    def produce(out: Path) -> dict[str, int]:
        v = load_vocabulary(vocabulary)
        dtype = id_dtype(v.size)
        mapping = v.id_map(table_ids(merged)).astype(NUMPY_ID_TYPES[ID_TYPES.index(dtype)])
        folder, budget = merged.path / TABLES_DIR, _working(memory)
        with scratch_folder(out) as scratch, atomic_dir(out / TABLES_DIR) as tmp:
            sizes = _write(
                tmp,
                dtype,
                table_orders(folder),
                lambda n: _summed([folder], [mapping], n, budget, scratch),
            )
            v.save(tmp / VOCAB_FILE)
        return {f"order{n}": k for n, k in enumerate(sizes, start=1)}

    note = {"sources": merged.manifest["note"]["sources"]}
    return store.build(plan_cutoff(merged, vocabulary), produce, note=note)


def _shard_name(arguments: dict) -> str:
    return Path(arguments["shard"].manifest["note"]["source"]).name


INGEST = Stage("ingest", 3, plan_ingest, ingest, lambda a: f"ingest {a['source'].path.name}")
SUBWORDS = Stage(
    "subwords",
    1,
    plan_subwords,
    subwords,
    lambda a: f"subwords bpe{a['config'].bpe_vocab_size}",
)
ENCODE = Stage("encode", 1, plan_encode, encode, lambda a: f"encode {_shard_name(a)}")
TYPES = Stage("types", 2, plan_types, types, lambda a: f"types {_shard_name(a)}")
COUNTS = Stage("counts", 3, plan_counts, counts, lambda a: f"count {_shard_name(a)}")
VOCAB = Stage("vocab", 3, plan_vocab, vocab, lambda a: "vocabulary")
TABLES = Stage("tables", 3, plan_tables, tables, lambda a: "merge counts")
CUTOFF = Stage("cutoff", 2, plan_cutoff, cutoff, lambda a: "cut counts to the vocabulary")


def list_count_tables(store: Store) -> pl.DataFrame:
    """Every count table in the store, one row per order: per shard (over the shard's own type
    ids), merged (over the type dictionary's ids) and cut (over a vocabulary's ids)."""
    rows = []
    for kind, stage in (("shard", COUNTS.name), ("merged", TABLES.name), ("cut", CUTOFF.name)):
        for folder in sorted((store.root / stage).glob("*/")):
            artifact = store.get(stage, folder.name)
            if artifact is None:
                continue
            note = artifact.manifest.get("note", {})
            corpus_name = note.get("source") or ", ".join(note.get("sources", []))
            for path in sorted((folder / TABLES_DIR).glob("order*.parquet"), key=_order_of):
                rows.append(
                    {
                        "key": folder.name,
                        "kind": kind,
                        "corpus": corpus_name,
                        "order": _order_of(path),
                        "rows": artifact.manifest["rows"].get(path.stem, 0),
                        "bytes": path.stat().st_size,
                        "path": str(path),
                    }
                )
    return pl.DataFrame(rows, schema=TABLE_LISTING)


TABLE_LISTING = {
    "key": pl.String,
    "kind": pl.String,
    "corpus": pl.String,
    "order": pl.Int64,
    "rows": pl.Int64,
    "bytes": pl.Int64,
    "path": pl.String,
}


def _order_of(path: Path) -> int:
    return int(path.stem.removeprefix("order"))
