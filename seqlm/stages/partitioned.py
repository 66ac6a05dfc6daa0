"""The n-gram stages of a run on a cluster: the shards' counts merged and Kneser-Ney models
estimated in hash parts (``seqlm.ngram.partitioned``), so that no worker holds every n-gram of
an order, and the models equal those of the single-task stages.

Contract: ``partition`` maps one shard's count tables (a ``counts`` artifact) to the
vocabulary's ids (cut-off types become ``<unk>``) and splits each order into ``parts`` hash
parts, a mapped task per shard as counting is; ``parts_merged`` sums part p of every shard, one
call per part; ``ngram_parts`` estimates a model of one order from those parts, every heavy step
a round of calls, into the store's ``ngram/`` folder as the ``ngram`` stage's model (evaluated,
tracked and registered as one). The last two coordinate: they run in the flow's process and hand
their calls to ``mapper`` (``fn(*args)`` for each call, anywhere: a Dask worker; the results in
order). The part count changes where the work happens, never a model: the models' keys leave it
out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqlm.config import NgramConfig
from seqlm.ngram import NgramModel
from seqlm.ngram.model import META_FILE
from seqlm.ngram.partitioned import Mapper, estimate_partitioned, merge_partitioned, partition_shard
from seqlm.report import Identity
from seqlm.stages.data import TABLES_DIR, keep_subwords, vocab_shards, vocab_tokenizer
from seqlm.stages.models import MODEL, NGRAM
from seqlm.stages.stage import Stage, inputs, ref
from seqlm.store import Artifact, Plan, Store
from seqlm.vocab import VOCAB_FILE

PARTS_DIR = "parts"  # order<n>/part<p>.parquet, and the vocabulary naming the ids


def plan_partition(counted: Artifact, vocabulary: Artifact, parts: int) -> Plan:
    return PARTITION.plan_of({"parts": parts}, {"counts": ref(counted), "vocab": ref(vocabulary)})


def partition(store: Store, counted: Artifact, vocabulary: Artifact, parts: int) -> Artifact:
    """One shard's count tables over the vocabulary's ids, each order in ``parts`` hash parts."""
    return store.build(
        plan_partition(counted, vocabulary, parts),
        lambda out: partition_shard(
            counted.path / TABLES_DIR, vocabulary.path / VOCAB_FILE, parts, out / PARTS_DIR
        ),
        note=counted.manifest["note"],
    )


def plan_parts_merged(partitions: Sequence[Artifact], vocabulary: Artifact) -> Plan:
    return PARTS_MERGED.plan_of(
        {}, {"partitions": [ref(p) for p in partitions], "vocab": ref(vocabulary)}
    )


def parts_merged(
    store: Store, partitions: Sequence[Artifact], vocabulary: Artifact, mapper: Mapper
) -> Artifact:
    """The shards' partitioned tables summed part by part, one call of ``mapper`` per part:
    together, the ``cutoff`` stage's tables."""
    (parts,) = {p.manifest["config"]["parts"] for p in partitions}

    def produce(out: Path) -> dict[str, int]:
        folders = [p.path / PARTS_DIR for p in partitions]
        return merge_partitioned(
            folders, vocabulary.path / VOCAB_FILE, parts, out / PARTS_DIR, mapper
        )

    note = {"sources": [p.manifest["note"].get("source", "") for p in partitions]}
    return store.build(plan_parts_merged(partitions, vocabulary), produce, note=note)


def plan_ngram_parts(merged: Artifact, order: int, config: NgramConfig) -> Plan:
    # Keyed by the shards' counts and the vocabulary, not by the parts: the ngram stage's model.
    settings = {"order": order, "smoothing": "kn", "arpa": config.arpa}
    settings["discount_fallback"] = config.discount_fallback
    counted = [ref(c) for p in inputs(merged, "partitions") for c in inputs(p, "counts")]
    (vocabulary,) = inputs(merged, "vocab")
    return NGRAM.plan_of(settings, {"counts": counted, "vocab": ref(vocabulary)})


def ngram_parts(
    store: Store, merged: Artifact, order: int, config: NgramConfig, mapper: Mapper
) -> Artifact:
    """A Kneser-Ney model of one order from the partitioned tables, saved as the ``ngram``
    stage saves its model (and its ARPA file if asked)."""

    def produce(out: Path) -> dict[str, Any]:
        estimate_partitioned(
            merged.path / PARTS_DIR,
            order,
            out / MODEL,
            mapper,
            discount_fallback=config.discount_fallback,
            arpa=out / "model.arpa" if config.arpa else None,
        )
        (vocabulary,) = inputs(merged, "vocab")
        tokenizer = vocab_tokenizer(vocabulary)
        _add_info(out / MODEL, {"tokenizer": tokenizer})  # as the ngram stage records it
        subwords = keep_subwords(vocab_shards(vocabulary), out / MODEL)
        sizes = NgramModel.load(out / MODEL).sizes  # mapped: only the headers are read
        name = Identity(f"kn{order}", "ngram", f"{order}-gram")
        # A probability per n-gram, and a back-off weight per n-gram below the top order.
        record = {"model": name.as_dict(), "parameters": 2 * sum(sizes) - sizes[-1]}
        orders = {f"order{n}": k for n, k in enumerate(sizes, 1)}
        return record | {"tokenizer": tokenizer} | subwords | orders

    return store.build(
        plan_ngram_parts(merged, order, config), produce, note={"tables": ref(merged)}
    )


def _add_info(model: Path, info: dict[str, Any]) -> None:
    """A saved model's information (its ``model.json``) extended, the format's fields last."""
    meta = json.loads((model / META_FILE).read_text())
    fixed = {k: meta.pop(k) for k in ("order", "format")}
    (model / META_FILE).write_text(json.dumps(meta | info | fixed, indent=1))


def _source_name(arguments: dict[str, Any]) -> str:
    return Path(arguments["counted"].manifest["note"]["source"]).name


PARTITION = Stage(
    "partition", 1, plan_partition, partition, lambda a: f"partition {_source_name(a)}"
)
PARTS_MERGED = Stage(
    "parts_merged", 1, plan_parts_merged, parts_merged, lambda a: "merge counts in parts"
)
# Its models are the ngram stage's (their plans are NGRAM's): a new version of either is both's.
NGRAM_PARTS = Stage(
    "ngram_parts",
    NGRAM.version,
    plan_ngram_parts,
    ngram_parts,
    lambda a: f"fit kn{a['order']} in parts",
)
