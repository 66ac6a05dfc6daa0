"""Kneser–Ney estimation in a memory budget: batch by batch it gives the very model that one batch
gives, refuses a budget it cannot work in, and refuses a corpus without discounts before it
estimates anything."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seqlm.corpus import read_lines, tokenize
from seqlm.errors import SeqlmError
from seqlm.ngram import count_ngrams, write_arpa, write_tables
from seqlm.ngram.budget import BASELINE, parse_memory, tree_resident, whole_tree, working_set
from seqlm.ngram.estimate import first_seen, fit
from seqlm.ngram.kneser_ney import adjust, discounts, estimate_orders
from seqlm.ngram.levels import index_orders
from seqlm.vocab import build_vocabulary
from tests.helpers import PTB

COLUMNS = ("context", "word", "log10_prob", "log10_backoff")

# Lines as real text has them: blank lines, a line of one word, repeats, a long line.
LINES = [
    "the cat sat on the mat",
    "",
    "the dog sat on the log",
    "a",
    "the cat and the dog sat",
    "",
    "",
    " ".join(["on the mat the cat sat"] * 8),
    "the log",
    "a cat a dog a mat",
]


def _stream(lines: list[str]):
    train = tokenize(pl.Series("text", lines), "whitespace")
    vocab = build_vocabulary(train)
    return vocab, vocab.stream(train)


def _same_models(a, b) -> None:
    for name in COLUMNS:
        for x, y in zip(getattr(a, name), getattr(b, name), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a.info == b.info


@pytest.mark.parametrize("batch", [1, 2, 3, 7])
def test_small_batches_give_the_one_batch_model(tmp_path: Path, batch: int):
    vocab, stream = _stream(LINES)
    tables = count_ngrams(stream, 4, vocab.size)
    fs = first_seen(stream, vocab.size)
    results = []
    for rows in (batch, 1 << 20):
        scratch = tmp_path / f"b{rows}"
        scratch.mkdir()
        levels, open_rows = index_orders(tables, 4, vocab.size, scratch, rows, fs)
        adjusted, coc = adjust(levels, open_rows, scratch)
        d = discounts(coc, fallback=True)
        est = estimate_orders(levels, adjusted, d, vocab.size, (0, 0, 1, 1), scratch, rows)
        results.append(([p.load() for p in est.log10_prob], [b.load() for b in est.log10_backoff]))
        results[-1] += ([c.load() for c in est.context], coc)
    (p1, b1, s1, c1), (p2, b2, s2, c2) = results
    for x, y in zip(p1 + b1 + s1, p2 + b2 + s2, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(c1, c2)


@pytest.mark.skipif(not PTB.exists(), reason="PTB data not present")
def test_ptb_in_a_tight_budget_equals_a_loose_one(tmp_path: Path):
    """A budget that leaves room for batches of ~140k rows (five or more per order of PTB's
    5-grams, read back from Parquet) gives the model and the ARPA file of a 4G budget."""
    train = tokenize(read_lines(PTB / "ptb.train.txt"), "whitespace")
    vocab = build_vocabulary(train)
    stream = vocab.stream(train)
    tables = count_ngrams(stream, 5, vocab.size)
    write_tables(tables, tmp_path / "tables", vocab)
    models = []
    for name, memory in (("loose", "4G"), ("tight", "345M")):
        model = fit(
            tmp_path / "tables", vocab, memory=memory, first_seen=first_seen(stream, vocab.size)
        )
        write_arpa(model, tmp_path / f"{name}.arpa")
        models.append(model)
    _same_models(*models)
    assert (tmp_path / "tight.arpa").read_bytes() == (tmp_path / "loose.arpa").read_bytes()


def test_a_budget_too_small_names_the_smallest_that_works(tmp_path: Path):
    vocab, stream = _stream(LINES)
    tables = count_ngrams(stream, 3, vocab.size)
    with pytest.raises(SeqlmError, match=r"--memory: a budget of 100M is too small .* smallest"):
        fit(tables, vocab, memory="100M", discount_fallback=True, setting="--memory")


def test_a_corpus_without_discounts_is_refused_before_estimation(tmp_path: Path):
    vocab, stream = _stream(LINES)
    tables = count_ngrams(stream, 3, vocab.size)
    with pytest.raises(SeqlmError, match="discount-fallback"):
        fit(tables, vocab, scratch=tmp_path)
    assert not list(tmp_path.iterdir())  # refused, and the scratch folder removed


def _holding(megabytes: int) -> subprocess.Popen:
    """A child process holding ``megabytes`` of written memory until its input closes."""
    code = f"import sys; held = b'x' * ({megabytes} << 20); print(flush=True); sys.stdin.read()"
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    child.stdout.readline()
    return child


def test_the_tree_holds_what_its_children_hold():
    """The tree's RSS is psutil's sum over the process and its descendants."""
    psutil = pytest.importorskip("psutil")
    child = _holding(200)
    try:
        me = psutil.Process()
        expected = sum(p.memory_info().rss for p in (me, *me.children(recursive=True)))
        assert abs(tree_resident() - expected) < 16 << 20
        assert tree_resident() > me.memory_info().rss + (200 << 20)
    finally:
        child.stdin.close()
        child.wait()


def test_within_the_tree_a_stage_spends_what_the_tree_leaves():
    """Outside ``whole_tree`` a budget leaves out the baseline; within it, what the process and
    its children hold when the stage asks (a child's 200M less), and a budget below that is
    refused, naming the smallest that works."""
    budget = 8 << 30
    assert working_set(budget, "ngram.memory", 0) == budget - BASELINE
    child = _holding(200)
    try:
        with whole_tree():
            held = tree_resident()
            assert abs(working_set(budget, "ngram.memory", 0) - (budget - held)) < 16 << 20
            with pytest.raises(SeqlmError, match=r"ngram\.memory: a budget of .* too small") as e:
                working_set(held - (64 << 20), "ngram.memory", 16 << 20)
        smallest = parse_memory(str(e.value).rsplit(" ", 1)[1], "")
        # the line rounds up to a tenth of its unit: up to 10 % over (1.33G is spelt 1.4G)
        assert held <= smallest <= (held + (48 << 20)) * 1.1
    finally:
        child.stdin.close()
        child.wait()
