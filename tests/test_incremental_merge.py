"""The append-only type dictionary and the merged count tables it keys: a new shard keeps every
earlier id, and the tables of the shards so far plus the new shard's are a full recount."""

from __future__ import annotations

import itertools
import logging
import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from seqlm import corpus, stages
from seqlm.config import load_config
from seqlm.errors import SeqlmError
from seqlm.ngram import read_tables
from seqlm.ngram.layers import layer_folders
from seqlm.store import Artifact, Store
from seqlm.vocab import BOS, EOS, SPECIALS, UNK
from tests.helpers import kenlm_tool, prepare, write_lines

LMPLZ = kenlm_tool("lmplz")
ORDER = 3


def lines(n: int, words: int, seed: int, prefix: str = "w") -> list[str]:
    """Sentences over ``words`` types (some lines empty, some with a literal ``<unk>``)."""
    return [
        " ".join(
            [f"{prefix}{(i * 7 + j * seed) % words}" for j in range(i % 6)]
            + (["<unk>"] if i % 11 == 3 else [])
        )
        for i in range(n)
    ]


@pytest.fixture
def shards(tmp_path) -> Path:
    """A corpus of four shard files: 60 types, then a few more, then 400 more (past the 256
    ids of one byte), then none new."""
    folder = tmp_path / "corpus"
    write_lines(folder / "a.txt", lines(200, 60, 3))
    write_lines(folder / "b.txt", lines(200, 70, 5))
    write_lines(folder / "c.txt", lines(900, 400, 1, prefix="v"))
    write_lines(folder / "d.txt", lines(100, 50, 2))
    return folder


def counted(store: Store, folder: Path, order: int = ORDER) -> list[Artifact]:
    """Each shard file of ``folder`` ingested and counted: the shards' count artifacts."""
    config = load_config(None, ["tokenizer=whitespace"])
    shards = [stages.ingest(store, s, config.corpus) for s in corpus.discover(folder)]
    return [stages.counts(store, s, order) for s in shards if "train" in s.manifest["rows"]]


def train_lines(tables: Artifact) -> list[list[str]]:
    """The train split of every shard the merged tables were counted from, as token lists."""
    shards = [s.path for c in stages.inputs(tables, "counts") for s in stages.inputs(c, "shard")]
    return corpus.load_split(shards, "train")["tokens"].to_list()


def brute_counts(train: list[list[str]], known: set[str] | None, order: int) -> list[Counter]:
    """N-gram counts of padded lines by token, straight from the text (dicts and loops): the
    tokens outside ``known`` (if given) and the spelled specials count as ``<unk>``."""
    counts = [Counter() for _ in range(order)]
    for line in train:
        words = [
            UNK if w in SPECIALS or (known is not None and w not in known) else w for w in line
        ]
        padded = (BOS, *words, EOS)
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                counts[n - 1][padded[i : i + n]] += 1
    return counts


def by_token(tables: Artifact) -> list[Counter]:
    """A count-table artifact's tables with their ids spelled as tokens."""
    tokens = stages.table_ids(tables).tokens
    spelled = []
    for t in read_tables(tables.path / stages.TABLES_DIR):
        words = zip(*(tokens.gather(t[w]).to_list() for w in t.columns[:-1]), strict=True)
        spelled.append(Counter(dict(zip(words, t["count"].to_list(), strict=True))))
    return spelled


def assert_same_tables(a: Artifact, b: Artifact) -> None:
    assert stages.table_ids(a).table.equals(stages.table_ids(b).table)
    for x, y in zip(*(read_tables(t.path / stages.TABLES_DIR) for t in (a, b)), strict=True):
        assert x.equals(y)


@pytest.mark.skipif(LMPLZ is None, reason="KenLM's lmplz is not built ($KENLM_BIN)")
def test_a_new_shard_keeps_every_earlier_id_and_numbers_types_as_lmplz(shards, tmp_path):
    store = Store(tmp_path / "store")
    counts = counted(store, shards)
    dictionaries = [stages.table_ids(stages.tables(store, counts[:k])) for k in (1, 2, 3, 4)]
    for before, after in itertools.pairwise(dictionaries):
        assert after.tokens.head(before.size).equals(before.tokens)
    sizes = [d.size for d in dictionaries]
    assert sizes[0] < sizes[1] <= 256 < sizes[2] == sizes[3]
    # lmplz numbers the types of the same train text alike: its ARPA lists them in id order.
    text = tmp_path / "train.txt"
    text.write_text(
        "".join(" ".join(line) + "\n" for line in train_lines(stages.tables(store, counts)))
    )
    options = f"-o 2 --discount_fallback --skip_symbols -S 100M -T {tmp_path}".split()
    arpa = subprocess.run(
        [LMPLZ, *options],
        stdin=text.open(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    unigrams = arpa.split("\\1-grams:\n")[1].split("\n\n")[0].splitlines()
    assert [u.split("\t")[1] for u in unigrams] == dictionaries[-1].tokens.to_list()


def test_the_incremental_merge_equals_the_full_merge_and_a_recount(shards, tmp_path, caplog):
    store = Store(tmp_path / "store")
    counts = counted(store, shards)
    first = stages.tables(store, counts[:1])
    two = stages.tables(store, counts[:2])  # one shard added
    with caplog.at_level(logging.INFO, logger="seqlm.stages"):
        grown = stages.tables(store, counts)  # two more: ids widen from one byte to two
    assert two.manifest["note"]["extends"] == stages.ref(first)
    assert grown.manifest["note"]["extends"] == stages.ref(two)
    assert f"merge counts: 2 shard(s) added to {stages.ref(two)}" in caplog.text
    assert read_tables(first.path / stages.TABLES_DIR)[1].schema["w1"] == pl.UInt8
    assert read_tables(grown.path / stages.TABLES_DIR)[1].schema["w1"] == pl.UInt16

    scratch = Store(tmp_path / "scratch")
    full = stages.tables(scratch, counted(scratch, shards))
    assert "extends" not in full.manifest["note"] and full.key == grown.key
    assert_same_tables(grown, full)
    assert by_token(grown) == brute_counts(train_lines(grown), None, ORDER)


def makers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "seqlm-tables"]


def test_a_merge_that_fails_midway_leaves_the_stored_merge_and_nothing_else(shards, tmp_path):
    store = Store(tmp_path / "store")
    counts = counted(store, shards)
    two = stages.tables(store, counts[:2])
    # Order 2 of the added shard cannot be read, though its footer can: order 1 is written by
    # then, in the background.
    broken = counts[2].path / stages.TABLES_DIR / "order2.parquet"
    saved = broken.read_bytes()
    broken.write_bytes(saved[:4] + bytes(len(saved) // 2) + saved[4 + len(saved) // 2 :])
    with pytest.raises(SeqlmError, match=r"order2\.parquet: not a Parquet file"):
        stages.tables(store, counts[:3])
    assert not makers()
    assert [p.name for p in (store.root / "tables").iterdir()] == [two.key]  # no .tmp-* left
    broken.write_bytes(saved)
    grown = stages.tables(store, counts[:3])
    assert grown.manifest["note"]["extends"] == stages.ref(two)
    scratch = Store(tmp_path / "scratch")
    assert_same_tables(grown, stages.tables(scratch, counted(scratch, shards)[:3]))


def test_a_failed_write_stops_the_row_groups_made_ahead(tmp_path):
    def endless(n: int):
        while True:  # row groups of a column no table has: the writer fails on the first
            yield pl.DataFrame({"x": pl.zeros(stages.data.ROW_GROUP, eager=True)})

    with pytest.raises(pl.exceptions.PolarsError):
        stages.data._write(tmp_path, pl.UInt8, 3, endless)
    assert not makers()


def test_cut_offs_apply_to_the_merged_tables(shards, tmp_path):
    store = Store(tmp_path / "store")
    config = load_config(None, ["tokenizer=whitespace", "max_size=100", f"orders=[{ORDER}]"])
    data = prepare(store, shards, config)
    vocab = stages.load_vocabulary(data.vocab)
    (merged,) = stages.inputs(data.tables, "tables")
    assert stages.inputs(data.tables, "vocab") == [data.vocab]
    assert 3 < vocab.size < stages.table_ids(merged).size  # types were cut
    assert stages.table_ids(data.tables).table.equals(vocab.table)
    known = set(vocab.tokens.to_list())
    assert by_token(data.tables) == brute_counts(train_lines(merged), known, ORDER)


def test_the_pipeline_run_again_with_a_new_shard_extends_the_stored_merge(shards, tmp_path):
    store = Store(tmp_path / "store")
    folder = tmp_path / "growing"
    folder.mkdir()
    config = load_config(None, ["tokenizer=whitespace", f"orders=[{ORDER}]"])
    for name in ("a.txt", "b.txt"):
        shutil.copy(shards / name, folder)
    before = prepare(store, folder, config)
    shutil.copy(shards / "c.txt", folder)
    counted_before = set(store.root.glob("counts/*"))
    after = prepare(store, folder, config)
    assert len(set(store.root.glob("counts/*")) - counted_before) == 1
    (old,) = stages.inputs(before.tables, "tables")
    (new,) = stages.inputs(after.tables, "tables")
    assert new.manifest["note"]["extends"] == stages.ref(old)
    assert len(stages.inputs(new, "counts")) == 3
    # What a store that never saw the smaller corpus makes of the grown one is the same.
    fresh = prepare(Store(tmp_path / "fresh"), folder, config)
    assert fresh.tables.key == after.tables.key
    assert_same_tables(fresh.tables, after.tables)
    assert_same_tables(stages.inputs(fresh.tables, "tables")[0], new)


@pytest.fixture
def growing(tmp_path) -> Path:
    """A corpus of a large first shard, then three small ones: the second brings no new type,
    the third enough to pass the 256 ids of one byte, the fourth a few."""
    folder = tmp_path / "growing"
    write_lines(folder / "a.txt", lines(3000, 200, 3))
    write_lines(folder / "b.txt", lines(150, 70, 5))
    write_lines(folder / "c.txt", lines(100, 80, 1, prefix="v"))
    write_lines(folder / "d.txt", lines(60, 30, 2, prefix="u"))
    return folder


def layers(tables: Artifact) -> list[Path]:
    return layer_folders(tables.path / stages.TABLES_DIR)


def test_small_shards_are_added_as_layers_that_read_as_the_full_merge(growing, tmp_path, caplog):
    store = Store(tmp_path / "store")
    counts = counted(store, growing)
    first = stages.tables(store, counts[:1])
    with caplog.at_level(logging.INFO, logger="seqlm.stages"):
        merges = [first] + [stages.tables(store, counts[:k]) for k in (2, 3, 4)]
    assert [len(layers(m)) for m in merges] == [1, 2, 3, 4]
    assert f"merge counts: 1 shard(s) added to {stages.ref(merges[2])} as layer 3" in caplog.text
    # The earlier layers are linked, not copied; the layer a shard makes holds its n-grams alone.
    base = [(f / "order3.parquet").stat() for f in (first.path / "tables", layers(merges[3])[0])]
    assert base[0].st_ino == base[1].st_ino
    rows = merges[3].manifest["rows"]
    assert rows["added3/order1"] < rows["order1"] and set(merges[2].manifest["rows"]) < set(rows)
    grown = read_tables(merges[3].path / stages.TABLES_DIR)
    assert read_tables(first.path / stages.TABLES_DIR)[0].schema["w1"] == pl.UInt8
    assert all(t.schema["w1"] == pl.UInt16 for t in grown)

    scratch = Store(tmp_path / "scratch")
    full = stages.tables(scratch, counted(scratch, growing))
    assert len(layers(full)) == 1 and full.key == merges[3].key
    assert_same_tables(merges[3], full)
    assert by_token(merges[3]) == brute_counts(train_lines(full), None, ORDER)
    listing = stages.list_count_tables(store).filter(pl.col("key") == merges[3].key)
    assert listing["layer"].to_list() == [k for k in range(4) for _ in range(ORDER)]
    for row in listing.iter_rows(named=True):  # each layer's rows as the manifest gives them
        assert pl.read_parquet(row["path"]).height == row["rows"] > 0


def test_cut_offs_of_layered_tables_equal_those_of_one_table(growing, tmp_path):
    config = load_config(None, ["tokenizer=whitespace", "max_size=150", f"orders=[{ORDER}]"])
    store = Store(tmp_path / "store")
    counts = counted(store, growing)
    for k in range(1, len(counts)):
        stages.tables(store, counts[:k])
    layered = prepare(store, growing, config)
    (merged,) = stages.inputs(layered.tables, "tables")
    assert len(layers(merged)) == 4
    fresh = prepare(Store(tmp_path / "fresh"), growing, config)
    assert len(layers(stages.inputs(fresh.tables, "tables")[0])) == 1
    assert layered.tables.key == fresh.tables.key
    assert layered.tables.manifest["files"] == fresh.tables.manifest["files"]  # byte for byte
    known = set(stages.load_vocabulary(layered.vocab).tokens.to_list())
    assert by_token(layered.tables) == brute_counts(train_lines(merged), known, ORDER)


def test_layers_are_summed_into_one_when_too_many(growing, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(stages.data, "LAYERS", 2)
    store = Store(tmp_path / "store")
    counts = counted(store, growing)
    merges = [stages.tables(store, counts[:k]) for k in (1, 2, 3)]
    with caplog.at_level(logging.INFO, logger="seqlm.stages"):
        merges.append(stages.tables(store, counts))
    assert [len(layers(m)) for m in merges] == [1, 2, 3, 1]
    assert f"added to {stages.ref(merges[2])} summed with 3 layer(s)" in caplog.text
    scratch = Store(tmp_path / "scratch")
    assert_same_tables(merges[3], stages.tables(scratch, counted(scratch, growing)))


def test_a_large_shard_is_summed_with_the_merged_tables(shards, tmp_path):
    store = Store(tmp_path / "store")
    counts = counted(store, shards)
    two = stages.tables(store, counts[:2])
    three = stages.tables(store, counts[:3])  # more new rows than half the first layer's
    assert three.manifest["note"]["extends"] == stages.ref(two)
    assert len(layers(three)) == 1


def test_layers_out_of_sequence_are_refused(growing, tmp_path):
    store = Store(tmp_path / "store")
    counts = counted(store, growing)
    folder = tmp_path / "copy"
    merges = [stages.tables(store, counts[:k]) for k in (1, 2, 3)]
    shutil.copytree(merges[2].path / stages.TABLES_DIR, folder)
    (folder / "added2").rename(folder / "added3")
    with pytest.raises(SeqlmError, match=r"copy: layers \[1, 3\] are not added1 \.\. added2"):
        read_tables(folder)


def test_layers_are_copied_where_they_cannot_be_linked(growing, tmp_path, monkeypatch):
    def cannot(source, target):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(stages.data.os, "link", cannot)
    store = Store(tmp_path / "store")
    counts = counted(store, growing)
    first, grown = stages.tables(store, counts[:1]), stages.tables(store, counts[:2])
    assert len(layers(grown)) == 2
    base = [(f.path / "tables" / "order3.parquet").stat() for f in (first, grown)]
    assert base[0].st_ino != base[1].st_ino
    scratch = Store(tmp_path / "scratch")
    assert_same_tables(grown, stages.tables(scratch, counted(scratch, growing)[:2]))
