"""Data stages: ingestion, learned subwords, per-shard type dictionaries and count tables, the
vocabulary, merged count tables, and those tables over the vocabulary's ids.

Contract: ``ingest`` reads one source file and writes its token shards per split (for the
``bpe`` tokenizer, the lines' text: ``subwords`` learns the tokenizer from the train split of
every shard and ``encode`` writes each shard's splits again as tokens, the shards later stages
read); ``types`` and ``counts`` read one shard's train split (over the shard's own type
dictionary, so that a new shard is counted alone); ``vocab`` merges the type dictionaries' counts
and applies the cut-offs; ``tables`` sums the shards' count tables over the type dictionary of
all shards in order (append-only, so the tables of the shards but the last plus the last one's
are those of all: a stored earlier merge is extended by a layer, not redone); ``cutoff`` maps
those tables, their layers summed, to a vocabulary's ids (cut-off types become ``<unk>``), what
an n-gram model is estimated from.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
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
    ID_TYPES,
    NUMPY_ID_TYPES,
    id_dtype,
    table_batches,
    table_file,
    table_orders,
    write_table,
)
from seqlm.ngram.layers import ADDED, layer_folders, layer_rows
from seqlm.ngram.spill import (
    BYTES_PER_ROW,
    MIN_WORKING,
    SHARE,
    count_chunks,
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
# Merged tables keep shards added to them as layers, at most LAYERS, holding at most LAYER_SHARE of
# the first layer's rows: the cut-offs read at most 1.5x the rows of one summed table.
LAYERS = 8
LAYER_SHARE = 0.5
# Merged and cut tables are written by merges and cut-offs and read by every model: their ids and
# counts delta-packed, uncompressed, write in 0.6 of zstd's time (its dictionary encoding is most
# of the cost), read in 1.3x and take 1.2x the bytes (PTB's merged tables: 10.3 MB against 8.6 MB).
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
    first shards, only the others are summed, as a layer of their own beside the earlier layers
    (linked, not copied); once the layers would grow too many or too large, they are all summed
    into one table (``seqlm.ngram.layers``)."""
    plan = plan_tables(shard_counts)
    found = store.get(plan.stage, plan.key)
    if found is not None:
        return found
    earlier = _merged_prefix(store, shard_counts)
    added = shard_counts[len(inputs(earlier, "counts")) :] if earlier else shard_counts

    def produce(out: Path) -> dict[str, int]:
        parts = [table_ids(c) for c in added]
        before = [table_ids(earlier)] if earlier else []
        dictionary = merge_dictionaries([*before, *parts])
        dtype = id_dtype(dictionary.size)
        width = NUMPY_ID_TYPES[ID_TYPES.index(dtype)]
        mappings = [dictionary.id_map(part).astype(width) for part in parts]
        folders = [c.path / TABLES_DIR for c in added]
        layers = layer_folders(earlier.path / TABLES_DIR) if earlier else []
        orders = {table_orders(f) for f in folders + layers}
        if len(orders) != 1:
            raise SeqlmError(f"count tables of different orders cannot be merged: {sorted(orders)}")
        order, budget = orders.pop(), _working(memory)
        layered = bool(layers) and not _compacts(layers, folders)
        if earlier is not None:
            how = f"as layer {len(layers)}" if layered else f"summed with {len(layers)} layer(s)"
            log.info("merge counts: %d shard(s) added to %s %s", len(added), ref(earlier), how)
        if not layered:  # summed with the layers, whose ids stay (widened)
            kept = [np.arange(before[0].size, dtype=width)] if before else []
            folders, mappings = [*layers, *folders], kept * len(layers) + mappings

        def summed(n: int) -> Iterator[pl.DataFrame]:
            return _summed(folders, mappings, n, budget, scratch)

        with scratch_folder(out) as scratch, atomic_dir(out / TABLES_DIR) as tmp:
            rows = _link_layers(earlier, layers, tmp) if layered else {}
            into = tmp / f"{ADDED}{len(layers)}" if layered else tmp
            into.mkdir(exist_ok=True)
            sizes = _write(into, dtype, order, summed)
            prefix = f"{into.name}/" if layered else ""
            rows |= {f"{prefix}order{n}": k for n, k in enumerate(sizes, 1)}
            dictionary.save(tmp / VOCAB_FILE)
        return {"types": dictionary.size} | rows

    note = {"sources": [c.manifest["note"].get("source", "") for c in shard_counts]}
    if earlier is not None:
        note["extends"] = ref(earlier)
    return store.build(plan, produce, note=note)


def _compacts(layers: Sequence[Path], added: Sequence[Path]) -> bool:
    """Whether tables added to merged tables in ``layers`` are summed with them into one table
    rather than kept as a layer: when the added layers would be more than ``LAYERS``, or hold
    more rows (at most those of the added tables) than ``LAYER_SHARE`` of the first layer's."""
    if len(layers) > LAYERS:
        return True
    rows = sum(layer_rows(f) for f in [*layers[1:], *added])
    return rows > LAYER_SHARE * layer_rows(layers[0])


def _link_layers(earlier: Artifact, layers: Sequence[Path], folder: Path) -> dict[str, int]:
    """The earlier merge's layers in ``folder`` under the same names, hard-linked (copied where
    the file system cannot link); returns their rows as the earlier manifest gives them."""
    for layer in layers:
        into = folder / layer.relative_to(layers[0])
        into.mkdir(exist_ok=True)
        for n in range(1, table_orders(layer) + 1):
            try:
                os.link(table_file(layer, n), table_file(into, n))
            except OSError:
                shutil.copyfile(table_file(layer, n), table_file(into, n))
    return {k: v for k, v in earlier.manifest["rows"].items() if k != "types"}


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
    distinct: it is read through. Small tables are summed a batch of them at a time (one sort
    rather than one each and a merge)."""
    rows = _batch_rows(memory)
    remapped = (
        _remap(batch, mapping)
        for folder, mapping in zip(folders, mappings, strict=True)
        for batch in table_batches(folder, n, rows)
    )
    if len(folders) == 1 and bool(np.all(np.diff(mappings[0].astype(np.int64)) > 0)):
        return remapped
    return sum_tables(_regrouped(remapped, rows), n, memory, scratch)


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
        # The merged layers are summed with the n-grams that the cut-offs make one.
        layers, budget = layer_folders(merged.path / TABLES_DIR), _working(memory)
        mappings = [mapping] * len(layers)
        with scratch_folder(out) as scratch, atomic_dir(out / TABLES_DIR) as tmp:
            sizes = _write(
                tmp,
                dtype,
                table_orders(layers[0]),
                lambda n: _summed(layers, mappings, n, budget, scratch),
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
TABLES = Stage("tables", 4, plan_tables, tables, lambda a: "merge counts")
CUTOFF = Stage("cutoff", 2, plan_cutoff, cutoff, lambda a: "cut counts to the vocabulary")


def list_count_tables(store: Store) -> pl.DataFrame:
    """Every count table in the store, one row per order and layer: per shard (over the shard's
    own type ids), merged (over the type dictionary's ids) and cut (over a vocabulary's ids)."""
    rows = []
    for kind, stage in (("shard", COUNTS.name), ("merged", TABLES.name), ("cut", CUTOFF.name)):
        for folder in sorted((store.root / stage).glob("*/")):
            artifact = store.get(stage, folder.name)
            if artifact is not None:
                rows += _listed(artifact, kind)
    return pl.DataFrame(rows, schema=TABLE_LISTING)


def _listed(artifact: Artifact, kind: str) -> list[dict]:
    """The listing's rows of one count-table artifact: each layer's files, order by order."""
    note = artifact.manifest.get("note", {})
    corpus_name = note.get("source") or ", ".join(note.get("sources", []))
    folder = artifact.path / TABLES_DIR
    return [
        {
            "key": artifact.key,
            "kind": kind,
            "corpus": corpus_name,
            "order": _order_of(path),
            "layer": layer,
            "rows": artifact.manifest["rows"].get(
                path.relative_to(folder).with_suffix("").as_posix(), 0
            ),
            "bytes": path.stat().st_size,
            "path": str(path),
        }
        for layer, tables in enumerate(layer_folders(folder))
        for path in sorted(tables.glob("order*.parquet"), key=_order_of)
    ]


TABLE_LISTING = {
    "key": pl.String,
    "kind": pl.String,
    "corpus": pl.String,
    "order": pl.Int64,
    "layer": pl.Int64,
    "rows": pl.Int64,
    "bytes": pl.Int64,
    "path": pl.String,
}


def _order_of(path: Path) -> int:
    return int(path.stem.removeprefix("order"))
