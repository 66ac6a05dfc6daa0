"""Partitioned merging and Kneser–Ney against the single-machine path: the tables counted from
the whole corpus over the vocabulary's ids, and ``fit`` + ``NgramModel.save`` + ``write_arpa``."""

from __future__ import annotations

import logging
import multiprocessing
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seqlm.corpus import read_lines, tokenize
from seqlm.errors import SeqlmError
from seqlm.ngram import NgramModel, count_ngrams, fit, read_tables, write_arpa, write_tables
from seqlm.ngram.counts import word_columns
from seqlm.ngram.partitioned import (
    estimate_partitioned,
    local_map,
    merge_partitioned,
    partition_shard,
)
from seqlm.vocab import VOCAB_FILE, Vocabulary, build_dictionary, merge_vocabularies
from tests.helpers import PTB
from tests.ngram_reference import random_lines


def lines_of(*text: str) -> pl.DataFrame:
    return pl.DataFrame(
        {"tokens": [t.split() for t in text]}, schema={"tokens": pl.List(pl.String)}
    )


def shard_tables(lines: pl.DataFrame, shards: int, order: int, root: Path, **cut) -> list[Path]:
    """The lines split into shards, each counted over its own type dictionary (as the ``types``
    and ``counts`` stages do), and the vocabulary of them all, cut as ``cut`` says."""
    folders, dictionaries = [], []
    for s, rows in enumerate(np.array_split(np.arange(lines.height), shards)):
        part = lines[rows]
        dictionary = build_dictionary(part)
        folders.append(root / f"shard{s}")
        write_tables(
            count_ngrams(dictionary.stream(part), order, dictionary.size), folders[-1], dictionary
        )
        dictionaries.append(dictionary)
    merge_vocabularies(dictionaries, **cut).save(root / VOCAB_FILE)
    return folders


def merged(folders: list[Path], parts: int, root: Path, mapper=local_map) -> Path:
    vocab = root / VOCAB_FILE
    for f in folders:
        rows = partition_shard(f, vocab, parts, root / f"{f.name}-{parts}")
        assert rows == {f"order{n}": t.height for n, t in enumerate(read_tables(f), start=1)}
    out = root / f"merged{parts}"
    rows = merge_partitioned(
        [root / f"{f.name}-{parts}" for f in folders], vocab, parts, out, mapper
    )
    for name, height in rows.items():
        assert height == sum(pl.read_parquet(f).height for f in (out / name).iterdir())
    return out


def single_machine(
    lines: pl.DataFrame, order: int, root: Path, fallback: bool
) -> tuple[list, Path]:
    """The whole corpus counted over the vocabulary's ids, its model saved and written as ARPA."""
    vocab = Vocabulary.load(root / VOCAB_FILE)
    tables = count_ngrams(vocab.stream(lines), order, vocab.size)
    model = fit(tables, vocab, "kn", discount_fallback=fallback)
    model.save(root / "single")
    write_arpa(model, root / "single.arpa")
    return tables, root / "single"


def assert_same_tables(folder: Path, tables: list[pl.DataFrame]) -> None:
    for n, table in enumerate(tables, start=1):
        union = pl.concat([pl.read_parquet(f) for f in sorted((folder / f"order{n}").glob("*"))])
        assert union.sort(word_columns(n)).equals(table), f"order {n}"


def assert_same_model(got: Path, expected: Path) -> None:
    a, b = NgramModel.load(got), NgramModel.load(expected)
    assert a.info == b.info
    assert a.vocab.table.equals(b.vocab.table)
    for name in ("keys", "log10_prob", "log10_backoff"):
        for n, (x, y) in enumerate(zip(getattr(a, name), getattr(b, name), strict=True), 1):
            assert np.array_equal(x, y), f"order {n} {name}"
    files = sorted(f.name for f in expected.iterdir())
    assert sorted(f.name for f in got.iterdir()) == files
    for name in files:  # model.json, order<n>.<column>.npy, vocab.parquet: byte for byte
        assert (got / name).read_bytes() == (expected / name).read_bytes(), name
    assert got.with_suffix(".arpa").read_bytes() == expected.with_suffix(".arpa").read_bytes()


def check(lines: pl.DataFrame, order: int, tmp_path: Path, parts=(1, 2, 7), shards=3, **cut):
    folders = shard_tables(lines, shards, order, tmp_path, **cut)
    tables, single = single_machine(lines, order, tmp_path, fallback=True)
    for p in parts:
        folder = merged(folders, p, tmp_path)
        assert_same_tables(folder, tables)
        out = tmp_path / f"model{p}"
        info = estimate_partitioned(folder, order, out, arpa=out.with_suffix(".arpa"))
        assert info == NgramModel.load(single).info
        assert_same_model(out, single)


# ---- small corpora, fast ----


def test_random_corpus_with_cutoff(tmp_path):
    check(random_lines(600, 120, seed=3, empty=0.05), 4, tmp_path, min_count=2)


def test_blank_and_repeated_lines(tmp_path):
    lines = lines_of(*["a b c", "", "a b c", "a b c", "d e", "", "", "a b d e c", "e e e e"] * 5)
    check(lines, 3, tmp_path, parts=(2, 7))


def test_one_word_vocabulary(tmp_path):
    check(lines_of("a a a", "a", "b a", "", "a a c"), 3, tmp_path, parts=(2, 7), max_size=4)


def test_tiny_corpus_with_fallback_discounts(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        check(lines_of("a b", "b c a"), 2, tmp_path, parts=(2, 7), shards=2)
    assert "substituting fallback discounts" in caplog.text


def test_refusal_without_fallback_is_single_machines(tmp_path):
    lines = lines_of("a b", "b c a")
    folder = merged(shard_tables(lines, 2, 2, tmp_path), 2, tmp_path)
    with pytest.raises(SeqlmError) as single:
        single_machine(lines, 2, tmp_path, fallback=False)
    with pytest.raises(SeqlmError) as partitioned:
        estimate_partitioned(folder, 2, tmp_path / "model", discount_fallback=False)
    assert str(partitioned.value) == str(single.value)
    assert not (tmp_path / "model").exists()
    assert [p.name for p in tmp_path.iterdir() if "partitioned" in p.name] == []


def test_lower_order_than_counted_and_refusals(tmp_path):
    lines = random_lines(300, 60, seed=5)
    folders = shard_tables(lines, 2, 3, tmp_path)
    folder = merged(folders, 3, tmp_path)
    out = tmp_path / "model"
    for order in (1, 2):  # order 1: the top order's raw counts, <s>'s included
        single_machine(lines, order, tmp_path, fallback=True)
        estimate_partitioned(folder, order, out, arpa=out.with_suffix(".arpa"))
        assert_same_model(out, tmp_path / "single")
    with pytest.raises(SeqlmError, match="counted up to order 3, not 4"):
        estimate_partitioned(folder, 4, out)
    with pytest.raises(SeqlmError, match="partitioned into 3 parts, not 2"):
        merge_partitioned([tmp_path / "shard0-3"], tmp_path / VOCAB_FILE, 2, tmp_path / "m")
    cut = Vocabulary(Vocabulary.load(folders[0] / VOCAB_FILE).table.head(5))
    cut.save(folders[0] / VOCAB_FILE)
    with pytest.raises(SeqlmError, match=r"order1\.parquet: ids beyond the 5 types of the dic"):
        partition_shard(folders[0], tmp_path / VOCAB_FILE, 2, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_other_processes_give_the_same_model(tmp_path):
    """Each call in another (spawned) process: nothing may pass through this one's memory."""
    lines = random_lines(400, 80, seed=7, empty=0.1)
    folders = shard_tables(lines, 3, 3, tmp_path, min_count=2)
    single_machine(lines, 3, tmp_path, fallback=True)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:

        def process_map(fn, calls):
            return list(pool.map(fn, *zip(*calls, strict=True)))

        folder = merged(folders, 3, tmp_path, process_map)
        out = tmp_path / "model"
        estimate_partitioned(folder, 3, out, process_map, arpa=out.with_suffix(".arpa"))
    assert_same_model(out, tmp_path / "single")


def test_each_call_reads_only_its_part(tmp_path):
    """Every mapped call reports the rows it read per order: with 4 parts, in every round no
    call reads all of an order (the largest call's rows are below the round's sum)."""
    lines = random_lines(2000, 300, seed=11)
    folder = merged(shard_tables(lines, 3, 4, tmp_path), 4, tmp_path)
    rounds: list[tuple[str, dict[int, list[int]]]] = []

    def recording(fn, calls):
        done = local_map(fn, calls)
        read = defaultdict(list)
        for result in done:
            for n, rows in result["read"].items():
                read[n].append(rows)
        rounds.append((fn.__name__, read))
        return done

    estimate_partitioned(folder, 4, tmp_path / "model", recording)
    names = ["continuation", "adjust", "unigrams", *["lower", "interpolate"] * 3, "layout"]
    assert [name for name, _ in rounds] == names
    for name, read in rounds:
        for n, rows in read.items():
            assert len(rows) == 4 and max(rows) < sum(rows), (name, n, rows)


# ---- Penn Treebank ----


@pytest.mark.slow
@pytest.mark.skipif(not PTB.exists(), reason="PTB data not present")
def test_ptb_five_gram_in_ten_shards(tmp_path):
    lines = tokenize(read_lines(PTB / "ptb.train.txt"), "whitespace")
    check(lines, 5, tmp_path, shards=10, min_count=2)
