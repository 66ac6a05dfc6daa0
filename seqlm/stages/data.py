"""Data stages: ingestion, per-shard type dictionaries and count tables, the vocabulary, merged
count tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import polars as pl

from seqlm import corpus
from seqlm.config import CorpusConfig, VocabConfig
from seqlm.ngram import count_ngrams, merge_tables, read_tables, write_tables
from seqlm.ngram.counts import VOCAB_FILE as TABLES_VOCAB_FILE
from seqlm.ngram.counts import id_dtype, word_columns
from seqlm.store import Artifact, Plan, Store, file_digest
from seqlm.vocab import EOS_ID, Vocabulary, build_vocabulary, merge_vocabularies

VOCAB_FILE = "vocab.parquet"
TABLES = "tables"  # a count-table folder: order<n>.parquet and the vocabulary naming the ids


def plan_ingest(source: corpus.Source, config: CorpusConfig) -> Plan:
    settings = {"tokenizer": config.tokenizer, "text_field": config.text_field}
    if source.split is None:
        settings["fractions"] = config.fractions
    return Plan("ingest", 2, settings, {"file": file_digest(source.path), "split": source.split})


def ingest(store: Store, source: corpus.Source, config: CorpusConfig) -> Artifact:
    """One source file → Parquet token shards per split."""
    return store.build(
        plan_ingest(source, config),
        lambda out: corpus.ingest(
            source, out, config.tokenizer, config.text_field, config.fractions
        ),
        note={"source": str(source.path)},
    )


def plan_shard_types(shard: Artifact) -> Plan:
    return Plan("types", 1, {}, {"shard": shard.key})


def shard_types(store: Store, shard: Artifact) -> Artifact:
    """The type dictionary of one shard's train split (token, id, count): all the vocabulary
    needs, so that counting other n-gram orders never re-keys the vocabulary."""

    def produce(out: Path) -> dict[str, int]:
        types = build_vocabulary(corpus.load_split([shard.path], "train"))
        types.save(out / VOCAB_FILE)
        return {"types": types.size}

    return store.build(plan_shard_types(shard), produce, note=shard.manifest["note"])


def plan_shard_counts(shard: Artifact, order: int) -> Plan:
    # The shard's type ids are its types artifact's, whose key follows from the shard's.
    return Plan("counts", 2, {"order": order}, {"shard": shard.key})


def shard_counts(store: Store, shard: Artifact, order: int) -> Artifact:
    """N-gram count tables of one shard's train split, orders 1..``order``, over the ids of the
    shard's type dictionary (independent of every other shard, so a new shard is counted alone)."""

    def produce(out: Path) -> dict[str, int]:
        types = Vocabulary.load(shard_types(store, shard).path / VOCAB_FILE)
        train = corpus.load_split([shard.path], "train")
        tables = count_ngrams(types.stream(train), order, types.size)
        write_tables(tables, out / TABLES, types)
        return {"types": types.size} | {f"order{n}": t.height for n, t in enumerate(tables, 1)}

    return store.build(plan_shard_counts(shard, order), produce, note=shard.manifest["note"])


def plan_vocabulary(types: Sequence[Artifact], config: VocabConfig) -> Plan:
    return Plan("vocab", 3, asdict(config), {"types": [t.key for t in types]})


def vocabulary(store: Store, types: Sequence[Artifact], config: VocabConfig) -> Artifact:
    """The vocabulary of the train split, from the shards' type dictionaries (``shard_types``)."""

    def produce(out: Path) -> dict[str, int]:
        merged = [Vocabulary.load(t.path / VOCAB_FILE) for t in types]
        vocab = merge_vocabularies(merged, config.min_count, config.max_size)
        vocab.save(out / VOCAB_FILE)
        return {"types": vocab.size, "train_lines": int(vocab.counts[EOS_ID])}

    return store.build(plan_vocabulary(types, config), produce)


def load_vocabulary(vocab: Artifact) -> Vocabulary:
    return Vocabulary.load(vocab.path / VOCAB_FILE)


def plan_count_tables(counts: Sequence[Artifact], vocab: Artifact) -> Plan:
    return Plan("tables", 1, {}, {"counts": [c.key for c in counts], "vocab": vocab.key})


def count_tables(store: Store, counts: Sequence[Artifact], vocab: Artifact) -> Artifact:
    """The shards' count tables merged over the vocabulary's ids (cut-off types become
    ``<unk>``, and their n-grams are summed with it)."""

    def produce(out: Path) -> dict[str, int]:
        v = load_vocabulary(vocab)
        dtype = id_dtype(v.size)
        remapped = []
        for c in counts:
            mapping = v.id_map(Vocabulary.load(c.path / TABLES / TABLES_VOCAB_FILE))
            remapped.append(
                [
                    t.with_columns(
                        pl.Series(w, mapping[t[w].to_numpy()], dtype=dtype) for w in word_columns(n)
                    )
                    for n, t in enumerate(read_tables(c.path / TABLES), start=1)
                ]
            )
        tables = merge_tables(remapped)
        write_tables(tables, out / TABLES, v)
        return {f"order{n}": t.height for n, t in enumerate(tables, start=1)}

    sources = [c.manifest["note"].get("source", "") for c in counts]
    return store.build(plan_count_tables(counts, vocab), produce, note={"sources": sources})


def list_count_tables(store: Store) -> pl.DataFrame:
    """Every count table in the store: per shard (over the shard's own type ids) and merged
    (over a vocabulary's ids), one row per order."""
    rows = []
    for kind, stage in (("shard", "counts"), ("merged", "tables")):
        for folder in sorted((store.root / stage).glob("*/")):
            artifact = store.get(stage, folder.name)
            if artifact is None:
                continue
            note = artifact.manifest.get("note", {})
            corpus_name = note.get("source") or ", ".join(note.get("sources", []))
            for path in sorted((folder / TABLES).glob("order*.parquet"), key=_order_of):
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
