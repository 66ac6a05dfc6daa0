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

import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl

from seqlm import corpus
from seqlm import subwords as bpe
from seqlm.config import CorpusConfig, VocabConfig
from seqlm.ngram import merge_tables, read_tables, write_tables
from seqlm.ngram.budget import DEFAULT_MEMORY, parse_memory, working_set
from seqlm.ngram.counts import COUNT, ID_TYPES, NUMPY_ID_TYPES, id_dtype, word_columns
from seqlm.ngram.spill import MIN_WORKING, count_chunks, scratch_folder
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
        budget = working_set(parse_memory(memory, "ngram.memory"), "ngram.memory", MIN_WORKING)
        with scratch_folder(out) as scratch:
            counted = count_chunks(
                corpus.iter_split(shard.path, "train"), order, budget, scratch, out / TABLES_DIR
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


def plan_tables(shard_counts: Sequence[Artifact]) -> Plan:
    return TABLES.plan_of({}, {"counts": [ref(c) for c in shard_counts]})


def tables(store: Store, shard_counts: Sequence[Artifact]) -> Artifact:
    """The shards' count tables summed over their type dictionary's ids (the dictionary of the
    shards in order, saved beside them). When the store holds the merged tables of the first
    shards, only the others are added to them, row by row in one pass."""
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
        merged = _summed(
            [
                _remap(read_tables(c.path / TABLES_DIR), dictionary.id_map(part), dtype)
                for c, part in zip(added, parts, strict=True)
            ],
            one_to_one=True,  # the dictionary keeps every type of every shard
        )
        if earlier is not None:
            log.info("merge counts: %d shard(s) added to %s", len(added), ref(earlier))
            old = read_tables(earlier.path / TABLES_DIR)
            merged = [_add_sorted(o, m, dtype) for o, m in zip(old, merged, strict=True)]
        write_tables(merged, out / TABLES_DIR, dictionary)
        return {"types": dictionary.size} | {
            f"order{n}": t.height for n, t in enumerate(merged, start=1)
        }

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


def _remap(
    tables: Sequence[pl.DataFrame], mapping: np.ndarray, dtype: pl.DataType
) -> list[pl.DataFrame]:
    """Count tables with every id ``i`` replaced by ``mapping[i]`` (rows no longer sorted)."""
    mapping = mapping.astype(NUMPY_ID_TYPES[ID_TYPES.index(dtype)])  # gathers ids of ``dtype``
    return [
        t.with_columns(pl.Series(w, mapping[t[w].to_numpy()]) for w in word_columns(n))
        for n, t in enumerate(tables, start=1)
    ]


def _summed(shards: Sequence[Sequence[pl.DataFrame]], one_to_one: bool) -> list[pl.DataFrame]:
    """Shards' remapped tables summed into one sorted table per order. One shard's tables whose
    ids were mapped ``one_to_one`` (no two types made one) need only a sort: their n-grams stay
    distinct."""
    if len(shards) > 1 or not one_to_one:
        return merge_tables(shards)
    return [t.sort(word_columns(n)) for n, t in enumerate(shards[0], start=1)]


def _row_keys(words: Sequence[np.ndarray]) -> np.ndarray:
    """Each row's ids as one big-endian byte string: compared as bytes, they order as the rows."""
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
    old_keys, new_keys = _row_keys(old_words), _row_keys(new_words)
    at = np.searchsorted(old_keys, new_keys)
    both = at < len(old_keys)
    both[both] = old_keys[at[both]] == new_keys[both]
    alone = np.flatnonzero(~both)
    # Where each row lands: an old row moves down by the rows of ``new`` inserted before it.
    is_new = np.zeros(old.height + len(alone), dtype=bool)
    to_new = at[alone] + np.arange(len(alone))
    is_new[to_new] = True
    to_old = np.flatnonzero(~is_new)
    new_counts = new[COUNT].to_numpy()
    columns = []
    for old_column, new_column in zip(
        [*old_words, old[COUNT].to_numpy()], [*new_words, new_counts], strict=True
    ):
        column = np.empty(len(is_new), dtype=old_column.dtype)
        column[to_old] = old_column
        column[to_new] = new_column[alone]
        columns.append(column)
    columns[-1][to_old[at[both]]] += new_counts[both]
    schema = {**dict.fromkeys(old.columns[:-1], dtype), COUNT: pl.UInt64}
    return pl.DataFrame(dict(zip(schema, columns, strict=True)), schema=schema)


def plan_cutoff(merged: Artifact, vocabulary: Artifact) -> Plan:
    return CUTOFF.plan_of({}, {"tables": ref(merged), "vocab": ref(vocabulary)})


def cutoff(store: Store, merged: Artifact, vocabulary: Artifact) -> Artifact:
    """The merged count tables over the vocabulary's ids: cut-off types become ``<unk>``, and
    their n-grams are summed with it. What an n-gram model is estimated from."""

    def produce(out: Path) -> dict[str, int]:
        v = load_vocabulary(vocabulary)
        mapping = v.id_map(table_ids(merged))
        remapped = _remap(read_tables(merged.path / TABLES_DIR), mapping, id_dtype(v.size))
        cut = _summed([remapped], one_to_one=len(np.unique(mapping)) == len(mapping))
        write_tables(cut, out / TABLES_DIR, v)
        return {f"order{n}": t.height for n, t in enumerate(cut, start=1)}

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
TABLES = Stage("tables", 2, plan_tables, tables, lambda a: "merge counts")
CUTOFF = Stage("cutoff", 1, plan_cutoff, cutoff, lambda a: "cut counts to the vocabulary")


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
