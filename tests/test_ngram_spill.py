"""Counting in a memory budget: spilled sorted runs merge into the tables of the whole stream."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seqlm.corpus import read_lines, tokenize, train_chunks
from seqlm.errors import SeqlmError
from seqlm.evaluate import perplexity
from seqlm.ngram import count_ngrams, fit, merge_tables, read_tables, write_arpa
from seqlm.ngram.counts import COUNT, word_columns
from seqlm.ngram.estimate import first_seen
from seqlm.ngram.spill import count_chunks, first_seen_ids, sum_tables
from seqlm.vocab import EOS_ID, Vocabulary, build_dictionary
from tests.helpers import PTB, SEQLM
from tests.ngram_reference import brute_counts, random_lines

ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def whole_counts(lines: pl.DataFrame, order: int) -> tuple[Vocabulary, np.ndarray, list]:
    """The reference: one dictionary over all lines, their whole stream counted in memory."""
    dictionary = build_dictionary(lines)
    stream = dictionary.stream(lines)
    return dictionary, stream, count_ngrams(stream, order, dictionary.size)


def assert_tables_equal(got: list[pl.DataFrame], want: list[pl.DataFrame]) -> None:
    assert len(got) == len(want)
    for n, (a, b) in enumerate(zip(got, want, strict=True), start=1):
        assert a.equals(b), f"order {n}"


@pytest.mark.skipif(not PTB.exists(), reason="PTB data not present")
def test_ptb_spilled_runs_equal_the_whole_stream_and_its_model(tmp_path):
    train = PTB / "ptb.train.txt"
    counted = count_chunks(
        train_chunks(train, "whitespace", chunk_bytes=256 << 10),
        5,
        8 << 20,
        tmp_path,
        tmp_path / "c",
    )
    assert counted.runs >= 3
    assert not (tmp_path / "runs").exists()  # the runs are removed once merged
    tables = read_tables(tmp_path / "c")
    dictionary, stream, want = whole_counts(tokenize(read_lines(train), "whitespace"), 5)
    assert_tables_equal(tables, want)
    vocab = Vocabulary.load(tmp_path / "c" / "vocab.parquet")
    assert vocab.tokens.to_list() == counted.vocab.tokens.to_list()
    assert vocab.table.equals(dictionary.table)
    assert np.all(np.diff(first_seen(stream, vocab.size)) > 0)  # ids are lmplz's numbering

    spilled = fit(tables, vocab, "kn", first_seen=first_seen_ids(vocab.size))
    whole = fit(want, vocab, "kn", first_seen=first_seen(stream, vocab.size))
    write_arpa(spilled, tmp_path / "spilled.arpa")
    write_arpa(whole, tmp_path / "whole.arpa")
    assert (tmp_path / "spilled.arpa").read_bytes() == (tmp_path / "whole.arpa").read_bytes()
    # KenLM's recorded perplexity (/work/shared/reference/kenlm-ptb.md), with lmplz's numbering
    test = vocab.stream(tokenize(read_lines(PTB / "ptb.test.txt"), "whitespace"))
    assert perplexity(spilled.score_stream(test), test).ppl == pytest.approx(141.1862071, rel=1e-7)


def test_skewed_keys_merge_in_many_small_steps(tmp_path):
    """Four letters, order 8: every key range is crowded, and a tiny budget makes many runs
    and merge steps of a few rows; the sums equal a brute-force count."""
    rng = np.random.default_rng(0)
    text = ["".join(rng.choice(list("ACGT"), size=rng.integers(0, 30))) for _ in range(600)]
    lines = tokenize(pl.Series(text), "char")
    chunks = [lines.slice(i, 40) for i in range(0, lines.height, 40)]
    counted = count_chunks(chunks, 8, 200_000, tmp_path, tmp_path / "c")
    assert counted.runs >= 3
    _, stream, want = whole_counts(lines, 8)
    tables = read_tables(tmp_path / "c")
    assert_tables_equal(tables, want)
    brute = brute_counts(stream, 8)
    for n, table in enumerate(tables, start=1):
        rows = table.rows()
        assert {row[:-1]: row[-1] for row in rows} == dict(brute[n - 1])


@pytest.mark.parametrize("memory", [200_000, 1 << 30])
def test_chunks_and_a_growing_dictionary_count_as_one_stream(tmp_path, memory):
    """Types first seen in later chunks (ids outgrow a narrower type) and empty lines, each chunk
    padded on its own: spilled in pieces, or joined into one segment."""
    lines = random_lines(3000, 400, seed=3, empty=0.1)
    chunks = [lines.slice(i, 100) for i in range(0, lines.height, 100)]
    counted = count_chunks(chunks, 4, memory, tmp_path, tmp_path / "c")
    assert counted.runs >= 3 if memory < 1 << 20 else counted.runs == 0
    _, _, want = whole_counts(lines, 4)
    assert_tables_equal(read_tables(tmp_path / "c"), want)
    assert counted.sizes == [t.height for t in want]


def test_a_literal_special_reads_as_unk(tmp_path):
    lines = pl.DataFrame({"tokens": [["a", "<s>", "b"], ["</s>", "<unk>", "a"]]})
    counted = count_chunks([lines], 2, 1 << 20, tmp_path, tmp_path / "c")
    assert counted.vocab.tokens.to_list() == ["<unk>", "<s>", "</s>", "a", "b"]
    assert counted.vocab.counts.tolist() == [3, 0, 2, 2, 1]


def test_no_line_is_refused(tmp_path):
    with pytest.raises(SeqlmError, match="no line"):
        count_chunks([], 3, 1 << 20, tmp_path, tmp_path / "c")


# ---- the command line: standard input, the budget, the scratch folder -----------------------


def seqlm(argv: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SEQLM), *argv], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300, **kwargs
    )


def test_count_reads_standard_input(tmp_path):
    text = "the cat sat\n\nthe dog sat\r\non the mat"
    (tmp_path / "t.txt").write_text(text)
    assert seqlm(["ngram", "count", "t.txt", "-o", "3", "--out", "f"], tmp_path).returncode == 0
    for argv in (["-"], []):
        done = seqlm(["ngram", "count", *argv, "-o", "3", "--out", "s"], tmp_path, input=text)
        assert done.returncode == 0, done.stderr
        assert_tables_equal(read_tables(tmp_path / "s"), read_tables(tmp_path / "f"))
        vocab = pl.read_parquet(tmp_path / "s" / "vocab.parquet")
        assert vocab.equals(pl.read_parquet(tmp_path / "f" / "vocab.parquet"))


def test_a_budget_too_small_names_the_smallest_that_works(tmp_path):
    (tmp_path / "t.txt").write_text("a b c\n")
    done = seqlm(["ngram", "count", "t.txt", "-o", "2", "--out", "c", "-S", "100M"], tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "seqlm: error: --memory: a budget of 100M is too small to make progress; "
        "the smallest that works here is 316M"
    ]


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))


@pytest.mark.skipif(not PTB.exists(), reason="PTB data not present")
def test_a_scratch_folder_that_fills_is_one_line_and_left_empty(tmp_path):
    """Spilling fails (here: files past RLIMIT_FSIZE, as on a full disk): one line naming the
    scratch folder, the spilled files removed, no output."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    argv = ["ngram", "count", str(PTB / "ptb.train.txt"), "-o", "3", "--out", "c"]
    done = seqlm([*argv, "-S", "320M", "-T", str(scratch)], tmp_path, preexec_fn=_limit_file_size)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1
    assert lines[0].startswith(f"seqlm: error: {scratch}/seqlm-counts-")
    assert lines[0].endswith("cannot spill the counts there (File too large)")
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "c").exists()


def test_tables_summed_in_parts_spill_and_equal_a_brute_force_sum(tmp_path):
    """Rows in any order, an n-gram in several parts: summed within a tiny budget (runs spilled
    while the merge is read) as a Counter sums them."""
    rng = np.random.default_rng(3)
    rows, n = 60_000, 3
    words = [rng.zipf(1.5, rows).clip(max=300).astype(np.uint16) for _ in range(n)]
    counts = rng.integers(1, 5, rows).astype(np.uint64)
    frame = pl.DataFrame({**dict(zip(word_columns(n), words, strict=True)), COUNT: counts})
    parts = (frame.slice(start, 5_000) for start in range(0, rows, 5_000))
    summed = sum_tables(parts, n, 256 << 10, tmp_path)
    first = next(summed)
    assert len(list((tmp_path / "runs").iterdir())) > 3  # spilled runs, merged as read
    got = pl.concat([first, *summed])
    assert not (tmp_path / "runs").exists()
    want = Counter()
    keys = zip(*(w.tolist() for w in words), strict=True)
    for key, count in zip(keys, counts.tolist(), strict=True):
        want[key] += count
    assert got.rows() == sorted((*key, count) for key, count in want.items())


def test_merge_tables_sums_shards_as_a_counter(tmp_path):
    lines = random_lines(400, 30, seed=5)
    dictionary, stream, _ = whole_counts(lines, 3)
    halves = np.split(stream, [int(np.flatnonzero(stream == EOS_ID)[199]) + 1])
    merged = merge_tables([count_ngrams(h, 3, dictionary.size) for h in halves])
    for n, (table, want) in enumerate(zip(merged, brute_counts(stream, 3), strict=True), 1):
        assert table.rows() == sorted((*key, count) for key, count in want.items()), n
