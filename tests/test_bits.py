"""Bits per character: one figure that compares models of any tokenization of one text."""

from __future__ import annotations

import math
from collections import Counter

import polars as pl
import pytest

from seqlm import pipeline, stages
from seqlm.config import load_config
from seqlm.report import identity
from seqlm.store import Store
from tests.helpers import prepare, write_lines

TRAIN = ["the cat sat", "", "a cat ran", "the dog sat down", "a dog"]
VALID = ["the cat", "a dog sat"]
TEST = ["the dog ran", "", "a cat  sat down"]  # an empty line and a double space
# The test text's characters as read, plus one per line end: 11 + 0 + 15 characters, 3 lines.
CHARACTERS = 11 + 0 + 15 + 3


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    for split, lines in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        write_lines(folder / f"{split}.txt", lines)
    return folder


def unigram_bits(train: list[list[str]], test: list[list[str]], add_k: float) -> float:
    """−Σ log₂ p of the test targets (its symbols and one </s> per line) under an add-k unigram
    model of the train symbols, from the counts, by hand: every train type is kept (min_count 1),
    <unk> and <s> are in the vocabulary with count 0, and ``<s>`` is never a target."""
    counts = Counter(s for line in train for s in line) + Counter({"</s>": len(train)})
    types = len(counts) + 2  # <unk>, <s>
    total = sum(counts.values())
    # <s> is context only: add-k spreads over the V − 1 types that can be predicted.
    p = {s: (c + add_k) / (total + add_k * (types - 1)) for s, c in counts.items()}
    targets = [s for line in test for s in [*line, "</s>"]]
    return -sum(math.log2(p[s]) for s in targets)


@pytest.mark.parametrize(
    ("tokenizer", "split"),
    [("whitespace", str.split), ("char", lambda line: [c if c != " " else "▁" for c in line])],
)
def test_bits_per_character_is_exact(tmp_path, corpus, tokenizer, split):
    config = load_config(None, [f"tokenizer={tokenizer}", "min_count=1", "orders=[]"])
    store = Store(tmp_path / "store")
    data = prepare(store, corpus, config)
    model = stages.unigram(store, data.vocab, config.unigram)
    test = stages.load_metrics(stages.evaluate(store, model, data))["test"]
    assert test["characters"] == CHARACTERS
    bits = unigram_bits([split(x) for x in TRAIN], [split(x) for x in TEST], config.unigram.add_k)
    assert test["bits_per_char"] == pytest.approx(bits / CHARACTERS, rel=1e-12)
    if tokenizer == "char":  # every character and line end is a target
        assert test["targets"] == CHARACTERS


def test_tokenizations_side_by_side_share_the_characters(tmp_path, corpus):
    overrides = ['tokenizer=["whitespace", "char", "bpe"]', "min_count=1", "orders=[2]"]
    config = load_config(None, [*overrides, "rnn.models=[]", "bpe_vocab_size=30"])
    runner = pipeline.Local(Store(tmp_path / "store"))
    scored = []
    for one in config.tokenizations():
        data = prepare(runner.store, corpus, one)
        scored += pipeline.evaluate(runner, data, pipeline.fit(runner, data, config))
    characters = {
        identity(s.model).name + "/" + s.model.manifest["rows"]["tokenizer"]: stages.load_metrics(
            s.evaluation
        )["test"]["characters"]
        for s in scored
    }
    assert set(characters.values()) == {CHARACTERS}, characters
    table = stages.load_comparison(pipeline.compare(runner, scored))
    assert table["model"].to_list() == [
        f"{t}/{m}" for t in ("whitespace", "char", "bpe") for m in ("unigram", "kn2")
    ]
    assert table["tokenizer"].to_list() == [t for t in ("whitespace", "char", "bpe") for _ in "ab"]
    # Each row's bits per character: its per-target scores, summed, over the same characters.
    for row, s in zip(table.iter_rows(named=True), scored, strict=True):
        logprob = pl.read_parquet(s.evaluation.path / "test.parquet")["logprob"].sum()
        assert row["test_bpc"] == pytest.approx(-logprob / math.log(2) / CHARACTERS, rel=1e-12)


def test_a_word_tokenizer_on_a_sequence_file_is_refused_before_any_work(tmp_path):
    from seqlm.errors import SeqlmError

    fasta = write_lines(tmp_path / "g.fna", [">chr1", "ACGTACGTNN" * 30])
    store = tmp_path / "store"
    with pytest.raises(SeqlmError, match=r"g\.fna: a FASTA/FASTQ file has no words"):
        pipeline.run(fasta, store=str(store), tokenizer=["char", "punct"], models=[])
    assert not store.exists()
