"""Time incremental runs of the store-backed stages on Penn Treebank split into shard files.

The train text is cut into ``--shards`` files plus ``--nights`` more of the same size (the corpus,
then a tenth more text arriving each night as a new shard). (a) A cold run of every stage before
training (ingest, per-shard counts, vocabulary, merged tables, the tables cut to the vocabulary,
unigram and Kneser–Ney models, evaluation) on the corpus and its first new shard, against a re-run
on the unchanged corpus, where every stage is found in the store. (b) The corpus before its new
shards, then one more each night: the new shard counted alone and added to the stored merge (as a
layer of its own, or summed with the layers into one table once they would grow too many or too
large), against every shard counted and merged from scratch. Each night the
merged tables are checked equal to the full merge's, and the cut tables too; after the first, to
a full recount (all train text counted at once over the type dictionary, and over the vocabulary).

    .venv/bin/python bench/incremental.py [--train ../shared/data/ptb/ptb.train.txt] [--shards 10]
        [--nights 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from seqlm import corpus, stages
from seqlm.config import PipelineConfig, load_config
from seqlm.ngram import count_ngrams, read_tables
from seqlm.ngram.counts import table_file, write_table
from seqlm.ngram.layers import layer_folders
from seqlm.stages.data import TABLE_SETTINGS
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


@dataclass(frozen=True)
class Tables:
    merged: Artifact  # over the type dictionary's ids
    vocab: Artifact
    cut: Artifact  # over the vocabulary's ids


def every_stage(
    store: Store, sources: list[corpus.Source], cfg: PipelineConfig
) -> tuple[dict[str, float], Artifact]:
    """Every stage before training, timed by stage; returns the times and the cut tables."""
    t: dict[str, float] = {}
    with timed(t, "ingest"):
        shards = [stages.ingest(store, s, cfg.corpus) for s in sources]
    train = [s for s in shards if "train" in s.manifest["rows"]]
    times, tables = count_and_merge(store, train, cfg)
    t |= times
    with timed(t, "models"):
        models = [stages.unigram(store, tables.vocab, cfg.unigram)]
        models += [stages.ngram(store, tables.cut, order, cfg.ngram) for order in cfg.ngram.orders]
    with timed(t, "evaluation"):
        data = stages.Prepared(tuple(shards), tables.vocab, tables.cut)
        for model in models:
            stages.evaluate(store, model, data)
    return t, tables.cut


def count_and_merge(
    store: Store, shards: list[Artifact], cfg: PipelineConfig
) -> tuple[dict[str, float], Tables]:
    """Per-shard counts (found or made), the merged tables, the vocabulary and the cut tables."""
    t: dict[str, float] = {}
    with timed(t, "counts"):
        counts = [stages.counts(store, s, max(cfg.ngram.orders)) for s in shards]
    with timed(t, "merge"):
        merged = stages.tables(store, counts)
    with timed(t, "vocabulary"):
        vocab = stages.vocab(store, [stages.types(store, s) for s in shards], cfg.vocab)
    with timed(t, "cut-offs"):
        cut = stages.cutoff(store, merged, vocab)
    return t, Tables(merged, vocab, cut)


def folders(store: Store) -> set[Path]:
    return set(store.root.glob("*/*"))


def tables_equal(a: Artifact, b: Artifact) -> bool:
    return stages.table_ids(a).table.equals(stages.table_ids(b).table) and all(
        x.equals(y)
        for x, y in zip(*(read_tables(t.path / stages.TABLES_DIR) for t in (a, b)), strict=True)
    )


def check_recount(tables: Tables) -> float:
    """Assert the merged tables equal all train text counted at once over the type dictionary,
    and the cut tables the same over the vocabulary; returns the time of the first count."""
    inputs = stages.inputs
    shards = [s.path for c in inputs(tables.merged, "counts") for s in inputs(c, "shard")]
    seconds = []
    for artifact in (tables.merged, tables.cut):
        ids, got = stages.table_ids(artifact), read_tables(artifact.path / stages.TABLES_DIR)
        start = time.perf_counter()
        want = count_ngrams(ids.stream(corpus.load_split(shards, "train")), len(got), ids.size)
        seconds.append(time.perf_counter() - start)
        assert all(x.equals(y) for x, y in zip(got, want, strict=True)), f"{artifact.stage} differs"
    return seconds[0]


def one_round(
    sources: list[corpus.Source], first: int, cfg: PipelineConfig, work: Path
) -> dict[str, float]:
    figures: dict[str, float] = {}
    # (a) cold run, then a re-run on the unchanged corpus.
    cold_store = Store(work / "cold")
    cold, tables = every_stage(cold_store, sources[: first + 1], cfg)
    built = folders(cold_store)
    rerun, again = every_stage(cold_store, sources[: first + 1], cfg)
    assert folders(cold_store) == built and again == tables, "the re-run built something"
    figures["cold"] = sum(cold.values())
    figures["rerun"] = sum(rerun.values())
    figures |= {f"cold {k}": v for k, v in cold.items()}
    figures |= {f"rerun {k}": v for k, v in rerun.items()}

    # (b) the corpus before its new shards, then one more shard each night, counted alone and
    # added to the stored merge (as a layer, or summed with the layers past their limits); against
    # every shard counted and merged from scratch, each night in a store of its own. Every store
    # starts from the cold run's ingested shards.
    shards = [stages.ingest(cold_store, s, cfg.corpus) for s in sources]  # found, in order
    grown = store_of(cold_store, work / "grown")
    count_and_merge(grown, shards[:first], cfg)  # the corpus before its new shards arrived
    for night in range(1, len(shards) - first + 1):
        incremental, grown_tables = count_and_merge(grown, shards[: first + night], cfg)
        scratch = store_of(cold_store, work / f"scratch{night}")
        full, scratch_tables = count_and_merge(scratch, shards[: first + night], cfg)
        assert "extends" in grown_tables.merged.manifest["note"], "the merge was not incremental"
        assert grown_tables.merged.key == scratch_tables.merged.key
        assert grown_tables.cut.key == scratch_tables.cut.key
        assert tables_equal(grown_tables.merged, scratch_tables.merged)
        assert tables_equal(grown_tables.cut, scratch_tables.cut)
        new, whole = night_names(night)
        figures |= {f"{new} {k}": v for k, v in incremental.items()}
        figures |= {f"{whole} {k}": v for k, v in full.items()}
        figures[f"{new} layers"] = len(layer_folders(grown_tables.merged.path / stages.TABLES_DIR))
        if night == 1:
            assert grown_tables.cut.key == tables.key
            figures["new shard"] = sum(incremental.values())
            figures["all shards"] = sum(full.values())
            figures["merged tables read + written"] = read_and_write(
                grown_tables.merged, work / "io"
            )
            figures["merged tables MB"] = table_bytes(grown_tables.merged) / 1e6
            figures["full recount in memory"] = check_recount(grown_tables)
        shutil.rmtree(scratch.root)
    return figures


def night_names(night: int) -> tuple[str, str]:
    """How the figures of a night's incremental run and of its run from scratch are named."""
    return ("new shard", "all shards") if night == 1 else (f"night {night}", f"scratch {night}")


def store_of(cold: Store, root: Path) -> Store:
    """A store holding the cold run's ingested shards and nothing else."""
    shutil.copytree(cold.root / "ingest", root / "ingest")
    return Store(root)


def read_and_write(tables: Artifact, folder: Path) -> float:
    """The time to read merged tables and write them again as the stage writes them: what any
    merge that rewrites them costs before it adds a single count."""
    folder.mkdir()
    start = time.perf_counter()
    for n, table in enumerate(read_tables(tables.path / stages.TABLES_DIR), 1):
        write_table(table_file(folder, n), n, table.schema["w1"], [table], TABLE_SETTINGS)
    return time.perf_counter() - start


def table_bytes(tables: Artifact) -> int:
    return sum(f.stat().st_size for f in (tables.path / stages.TABLES_DIR).rglob("order*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=Path("../shared/data/ptb/ptb.train.txt"))
    parser.add_argument("--shards", type=int, default=10, help="shards before the new ones")
    parser.add_argument("--nights", type=int, default=8, help="new shards, one a night")
    parser.add_argument("--orders", default="2,3,5", help="Kneser–Ney orders (default: 2,3,5)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, each from an empty store")
    args = parser.parse_args()
    orders = [int(o) for o in args.orders.split(",")]
    cfg = load_config(None, ["tokenizer=whitespace", f"orders={orders}"])
    work = Path(tempfile.mkdtemp(prefix="seqlm-bench-incremental-"))
    try:
        sources = write_shards(args.train, work / "corpus", args.shards + args.nights)
        rounds = []
        for i in range(args.repeats):
            rounds.append(one_round(sources, args.shards, cfg, work / f"round{i}"))
            shutil.rmtree(work / f"round{i}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{args.train}: {args.shards} + {args.nights} shard files, orders {orders}, "
        f"{args.repeats} rounds"
    )
    print("merged and cut tables equal the full merge's and a full recount: yes (every round)\n")
    report(rounds, args.nights)


def report(rounds: list[dict[str, float]], nights: int) -> None:
    print("| figure | median s (MB, layers) | rounds |")
    print("|---|---:|---:|")
    for name in rounds[0]:
        each = " / ".join(f"{r[name]:.3f}" for r in rounds)
        print(f"| {name} | {statistics.median(r[name] for r in rounds):.3f} | {each} |")
    names = [night_names(night) for night in range(1, nights + 1)]
    for r in rounds:  # every night's merge against merging all its shards, over the nights
        r["nightly merges"] = sum(r[f"{new} merge"] for new, _ in names)
        r["merges from scratch"] = sum(r[f"{whole} merge"] for _, whole in names)
    print("\n| ratio (same round) | median | rounds | target |")
    print("|---|---:|---:|---:|")
    for label, part, whole, target in (
        ("re-run / cold run", "rerun", "cold", "≤ 0.15"),
        ("count the new shard / count all", "new shard counts", "all shards counts", "≤ 0.20"),
        ("merge the new shard / merge all", "new shard merge", "all shards merge", "≤ 0.20"),
        *(
            (f"merge night {night} / merge all", f"{new} merge", f"{whole} merge", "")
            for night, (new, whole) in enumerate(names[1:], 2)
        ),
        (f"merges of {nights} nights / from scratch", "nightly merges", "merges from scratch", ""),
        ("read + write merged / merge all", "merged tables read + written", "all shards merge", ""),
        ("new shard, every stage / all shards", "new shard", "all shards", ""),
    ):
        ratios = [r[part] / r[whole] for r in rounds]
        each = " / ".join(f"{x:.3f}" for x in ratios)
        print(f"| {label} | {statistics.median(ratios):.3f} | {each} | {target} |")


if __name__ == "__main__":
    main()
