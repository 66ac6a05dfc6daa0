"""Data stages: ingestion, per-shard type dictionaries and count tables, the vocabulary, merged
count tables.

Contract: ``ingest`` reads one source file and writes its token shards per split; ``types`` and
``counts`` read one shard's train split (over the shard's own type ids, so that a new shard is
counted alone); ``vocab`` merges the type dictionaries; ``tables`` sums the count tables over the
vocabulary's ids (cut-off types become ``<unk>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import polars as pl

from seqlm import corpus
from seqlm.config import CorpusConfig, VocabConfig
from seqlm.ngram import count_ngrams, merge_tables, read_tables, write_tables
from seqlm.ngram.counts import id_dtype, word_columns
from seqlm.stages.stage import Stage, inputs, ref
from seqlm.store import Artifact, Plan, Store, file_digest
from seqlm.vocab import EOS_ID, VOCAB_FILE, Vocabulary, build_vocabulary, merge_vocabularies

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


def plan_types(shard: Artifact) -> Plan:
    return TYPES.plan_of({}, {"shard": ref(shard)})


def types(store: Store, shard: Artifact) -> Artifact:
    """The type dictionary of one shard's train split (token, id, count): all the vocabulary
    needs, so that counting other n-gram orders never re-keys the vocabulary."""

    def produce(out: Path) -> dict[str, int]:
        found = build_vocabulary(corpus.load_split([shard.path], "train"))
        found.save(out / VOCAB_FILE)
        return {"types": found.size}

    return store.build(plan_types(shard), produce, note=shard.manifest["note"])


def plan_counts(shard: Artifact, order: int) -> Plan:
    # The shard's type ids are its types artifact's, whose key follows from the shard's.
    return COUNTS.plan_of({"order": order}, {"shard": ref(shard)})


def counts(store: Store, shard: Artifact, order: int) -> Artifact:
    """N-gram count tables of one shard's train split, orders 1..``order``, over the ids of the
    shard's type dictionary."""

    def produce(out: Path) -> dict[str, int]:
        shard_types = Vocabulary.load(types(store, shard).path / VOCAB_FILE)
        train = corpus.load_split([shard.path], "train")
        counted = count_ngrams(shard_types.stream(train), order, shard_types.size)
        write_tables(counted, out / TABLES_DIR, shard_types)
        return {"types": shard_types.size} | {
            f"order{n}": t.height for n, t in enumerate(counted, 1)
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


def vocab_tokenizer(vocabulary: Artifact) -> str:
    """How the text of the vocabulary's shards was split into tokens: each model records it,
    since scoring a text must split it the same way."""
    return shards_tokenizer([s for t in inputs(vocabulary, "types") for s in inputs(t, "shard")])


def shards_tokenizer(shards: Sequence[Artifact]) -> str:
    (tokenizer,) = {s.manifest["config"]["tokenizer"] for s in shards}
    return tokenizer


def plan_tables(shard_counts: Sequence[Artifact], vocabulary: Artifact) -> Plan:
    return TABLES.plan_of({}, {"counts": [ref(c) for c in shard_counts], "vocab": ref(vocabulary)})


def tables(store: Store, shard_counts: Sequence[Artifact], vocabulary: Artifact) -> Artifact:
    """The shards' count tables merged over the vocabulary's ids (cut-off types become
    ``<unk>``, and their n-grams are summed with it)."""

    def produce(out: Path) -> dict[str, int]:
        v = load_vocabulary(vocabulary)
        dtype = id_dtype(v.size)
        remapped = []
        for c in shard_counts:
            mapping = v.id_map(Vocabulary.load(c.path / TABLES_DIR / VOCAB_FILE))
            remapped.append(
                [
                    t.with_columns(
                        pl.Series(w, mapping[t[w].to_numpy()], dtype=dtype) for w in word_columns(n)
                    )
                    for n, t in enumerate(read_tables(c.path / TABLES_DIR), start=1)
                ]
            )
        merged = merge_tables(remapped)
        write_tables(merged, out / TABLES_DIR, v)
        return {f"order{n}": t.height for n, t in enumerate(merged, start=1)}

    sources = [c.manifest["note"].get("source", "") for c in shard_counts]
    return store.build(plan_tables(shard_counts, vocabulary), produce, note={"sources": sources})


def _shard_name(arguments: dict) -> str:
    return Path(arguments["shard"].manifest["note"]["source"]).name


INGEST = Stage("ingest", 3, plan_ingest, ingest, lambda a: f"ingest {a['source'].path.name}")
TYPES = Stage("types", 1, plan_types, types, lambda a: f"types {_shard_name(a)}")
COUNTS = Stage("counts", 2, plan_counts, counts, lambda a: f"count {_shard_name(a)}")
VOCAB = Stage("vocab", 3, plan_vocab, vocab, lambda a: "vocabulary")
TABLES = Stage("tables", 1, plan_tables, tables, lambda a: "merge counts")


def list_count_tables(store: Store) -> pl.DataFrame:
    """Every count table in the store: per shard (over the shard's own type ids) and merged
    (over a vocabulary's ids), one row per order."""
    rows = []
    for kind, stage in (("shard", COUNTS.name), ("merged", TABLES.name)):
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
