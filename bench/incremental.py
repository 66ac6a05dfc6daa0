"""Time incremental runs of the store-backed stages on Penn Treebank split into shard files.

(a) A cold run of every stage before training (ingest, per-shard counts, vocabulary, merged
tables, unigram and Kneser–Ney models, evaluation) against a re-run on the unchanged corpus, where
every stage is found in the store. (b) Counting one new shard after the others were counted against
counting every shard from scratch, each followed by the vocabulary and the merge. The merged tables
are checked equal to a full recount (all train text counted at once over the merged vocabulary).

    .venv/bin/python bench/incremental.py [--train ../shared/data/ptb/ptb.train.txt] [--shards 10]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from seqlm import corpus, stages
from seqlm.config import PipelineConfig, load_config
from seqlm.ngram import count_ngrams, read_tables
from seqlm.ngram.counts import word_columns
from seqlm.store import Artifact, Store


@contextmanager
def timed(times: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    times[name] = times.get(name, 0.0) + time.perf_counter() - start


def write_shards(train: Path, folder: Path, shards: int) -> list[corpus.Source]:
    """``shards`` files of contiguous blocks of lines, named so that the pipeline splits each."""
    lines = train.read_text().splitlines(keepends=True)
    folder.mkdir(parents=True)
    bounds = [len(lines) * i // shards for i in range(shards + 1)]
    for i in range(shards):
        (folder / f"shard{i:02d}.txt").write_text("".join(lines[bounds[i] : bounds[i + 1]]))
    sources = corpus.discover(folder)
    assert all(s.split is None for s in sources), "shard files must not look like split files"
    return sources


def every_stage(
    store: Store, sources: list[corpus.Source], cfg: PipelineConfig
) -> tuple[dict[str, float], Artifact]:
    """Every stage before training, timed by stage; returns the times and the merged tables."""
    t: dict[str, float] = {}
    with timed(t, "ingest"):
        shards = [stages.ingest(store, s, cfg.corpus) for s in sources]
    train = [s for s in shards if "train" in s.manifest["rows"]]
    with timed(t, "counts"):
        counts = [stages.counts(store, s, max(cfg.ngram.orders)) for s in train]
    with timed(t, "vocabulary"):
        vocab = stages.vocab(store, [stages.types(store, s) for s in train], cfg.vocab)
    with timed(t, "tables"):
        tables = stages.tables(store, counts, vocab)
    with timed(t, "models"):
        models = [stages.unigram(store, vocab, cfg.unigram)]
        models += [stages.ngram(store, tables, order, cfg.ngram) for order in cfg.ngram.orders]
    with timed(t, "evaluation"):
        data = stages.Prepared(tuple(shards), vocab, tables)
        for model in models:
            stages.evaluate(store, model, data)
    return t, tables


def count_and_merge(
    store: Store, shards: list[Artifact], cfg: PipelineConfig
) -> tuple[dict[str, float], Artifact]:
    """Per-shard counts (found or made), then the vocabulary and the merged tables."""
    t: dict[str, float] = {}
    with timed(t, "counts"):
        counts = [stages.counts(store, s, max(cfg.ngram.orders)) for s in shards]
    with timed(t, "merge"):
        vocab = stages.vocab(store, [stages.types(store, s) for s in shards], cfg.vocab)
        tables = stages.tables(store, counts, vocab)
    return t, tables


def folders(store: Store) -> set[Path]:
    return set(store.root.glob("*/*"))


def check_recount(store: Store, tables: Artifact) -> float:
    """Assert the merged tables equal all train text counted at once; returns that count's time."""
    vocab = stages.load_vocabulary(*stages.inputs(tables, "vocab"))
    shards = [s.path for c in stages.inputs(tables, "counts") for s in stages.inputs(c, "shard")]
    merged = read_tables(tables.path / stages.TABLES_DIR)
    start = time.perf_counter()
    train = corpus.load_split(shards, "train")
    recount = count_ngrams(vocab.stream(train), len(merged), vocab.size)
    seconds = time.perf_counter() - start
    for n, (got, want) in enumerate(zip(merged, recount, strict=True), start=1):
        columns = word_columns(n)
        assert got.sort(columns).equals(want.sort(columns)), f"order {n} differs from a recount"
    return seconds


def one_round(sources: list[corpus.Source], cfg: PipelineConfig, work: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    # (a) cold run, then a re-run on the unchanged corpus.
    cold_store = Store(work / "cold")
    cold, tables = every_stage(cold_store, sources, cfg)
    built = folders(cold_store)
    rerun, again = every_stage(cold_store, sources, cfg)
    assert folders(cold_store) == built and again == tables, "the re-run built something"
    figures["cold"] = sum(cold.values())
    figures["rerun"] = sum(rerun.values())
    figures |= {f"cold {k}": v for k, v in cold.items()}
    figures |= {f"rerun {k}": v for k, v in rerun.items()}

    # (b) the last shard counted alone after the others, and every shard from scratch; both
    # stores start from the cold run's ingested shards.
    shards = [stages.ingest(cold_store, s, cfg.corpus) for s in sources]  # found, in order
    grown, scratch = Store(work / "grown"), Store(work / "scratch")
    for store in (grown, scratch):
        shutil.copytree(cold_store.root / "ingest", store.root / "ingest")
    count_and_merge(grown, shards[:-1], cfg)  # the corpus before its last shard arrived
    incremental, grown_tables = count_and_merge(grown, shards, cfg)
    full, scratch_tables = count_and_merge(scratch, shards, cfg)
    assert grown_tables.key == scratch_tables.key == tables.key
    figures["count new shard"] = incremental["counts"]
    figures["count all shards"] = full["counts"]
    figures["count new shard + merge"] = incremental["counts"] + incremental["merge"]
    figures["count all shards + merge"] = full["counts"] + full["merge"]
    figures["full recount in memory"] = check_recount(grown, grown_tables)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=Path("../shared/data/ptb/ptb.train.txt"))
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--orders", default="2,3,5", help="Kneser–Ney orders (default: 2,3,5)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, each from an empty store")
    args = parser.parse_args()
    orders = [int(o) for o in args.orders.split(",")]
    cfg = load_config(None, ["tokenizer=whitespace", f"orders={orders}"])
    work = Path(tempfile.mkdtemp(prefix="seqlm-bench-incremental-"))
    try:
        sources = write_shards(args.train, work / "corpus", args.shards)
        rounds = []
        for i in range(args.repeats):
            rounds.append(one_round(sources, cfg, work / f"round{i}"))
            shutil.rmtree(work / f"round{i}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(name: str) -> float:
        return statistics.median(r[name] for r in rounds)

    print(f"{args.train}: {args.shards} shard files, orders {orders}, {args.repeats} rounds")
    print("merged tables equal a full recount: yes (checked every round, every order)\n")
    print("| figure | median s | rounds s |")
    print("|---|---:|---:|")
    for name in rounds[0]:
        each = " / ".join(f"{r[name]:.3f}" for r in rounds)
        print(f"| {name} | {median(name):.3f} | {each} |")
    print("\n| ratio (same round) | median | rounds | target |")
    print("|---|---:|---:|---:|")
    for label, part, whole, target in (
        ("re-run / cold run", "rerun", "cold", "≤ 0.15"),
        ("count new shard / count all shards", "count new shard", "count all shards", "≤ 0.20"),
        (
            "count new shard + merge / count all + merge",
            "count new shard + merge",
            "count all shards + merge",
            "",
        ),
    ):
        ratios = [r[part] / r[whole] for r in rounds]
        each = " / ".join(f"{x:.3f}" for x in ratios)
        print(f"| {label} | {statistics.median(ratios):.3f} | {each} | {target} |")


if __name__ == "__main__":
    main()
