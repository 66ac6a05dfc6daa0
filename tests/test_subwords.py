"""The bpe tokenizer: learnt from the train split only, stored with the vocabulary and every
model, and re-applied exactly when a model scores text (``seqlm.load``, ``seqlm ngram score``,
``seqlm rnn score``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import kenlm
import polars as pl
import pytest

import seqlm
from flows.cli import main
from seqlm import subwords
from seqlm.errors import SeqlmError
from seqlm.store import Store
from tests.helpers import BUNDLED, write_lines

LINES = BUNDLED.read_text().splitlines()
ONLY_IN_TEST = "zyzzyva"  # a word, and "ζ" a character, that only the test split holds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Split files of the bundled corpus, the test split with a word the train split lacks."""
    folder = tmp_path_factory.mktemp("bpe") / "corpus"
    write_lines(folder / "train.txt", LINES[:2000])
    write_lines(folder / "valid.txt", LINES[2000:2200])
    write_lines(folder / "test.txt", [*LINES[2200:2400], f"{ONLY_IN_TEST} ζ " * 20])
    return folder


@pytest.fixture(scope="module")
def store(corpus: Path) -> Store:
    return Store(corpus.parent / "store")


@pytest.fixture(scope="module")
def table(corpus: Path, store: Store) -> pl.DataFrame:
    """The ladder on bpe subwords: the unigram and the 2- and 3-gram models."""
    return seqlm.run(
        corpus,
        tokenizer="bpe",
        bpe_vocab_size=600,
        models=[],
        orders=[2, 3],
        store=str(store.root),
    )


def test_subwords_give_each_line_back_and_training_is_deterministic():
    lines = pl.Series(LINES[:500])
    learnt = subwords.train(lines, 300)
    assert learnt.get_vocab_size() == 300
    assert learnt.to_str() == subwords.train(lines, 300).to_str()
    encoded = subwords.encode(learnt, lines)["tokens"].to_list()
    assert [subwords.decode(tokens) for tokens in encoded] == [
        " ".join(x.split()) for x in LINES[:500]
    ]
    first = next(tokens for tokens in encoded if tokens)
    assert first[0].startswith(subwords.WORD_MARK)  # a word's first subword carries the mark
    assert subwords.encode(learnt, pl.Series(["", "   "]))["tokens"].to_list() == [[], []]


def test_the_vocabulary_size_the_text_cannot_give_is_refused():
    lines = pl.Series(["a b", "ab ba"])
    with pytest.raises(SeqlmError, match=r"^corpus\.bpe_vocab_size: at most \d+ for this corpus"):
        subwords.train(lines, 1000)
    with pytest.raises(SeqlmError, match=r"^--size: at least \d+ for this corpus, not 2$"):
        subwords.train(lines, 2, "--size")


def test_subwords_are_learnt_from_the_train_split_only(table: pl.DataFrame, store: Store):
    (folder,) = (store.root / "subwords").glob("*/")
    learnt = subwords.load(folder / subwords.TOKENIZER_FILE)
    vocabulary = learnt.get_vocab()
    assert not any(ONLY_IN_TEST[:4] in token for token in vocabulary)
    assert "ζ" not in vocabulary
    tokens = subwords.encode(learnt, pl.Series([f"{ONLY_IN_TEST} ζ"]))["tokens"][0].to_list()
    assert len(tokens) > 2 and "<unk>" in tokens  # pieces, and an unseen character is <unk>


def test_every_model_rescores_the_test_text_with_its_stored_tokenizer(
    table: pl.DataFrame, corpus: Path, store: Store
):
    test = (corpus / "test.txt").read_text().splitlines()
    folders = [*store.root.glob("unigram/*/"), *store.root.glob("ngram/*/")]
    assert len(folders) == 3
    for folder in folders:
        model = store.get(folder.parent.name, folder.name)
        assert model.manifest["rows"]["tokenizer"] == "bpe"
        assert model.manifest["rows"]["subwords"].startswith("subwords/")
        assert len(list(folder.rglob(subwords.TOKENIZER_FILE))) == 1
        scored = seqlm.load(folder).score(test)
        name = model.manifest["rows"]["model"]["name"]
        row = table.row(by_predicate=pl.col("model") == name, named=True)
        assert scored.ppl == pytest.approx(row["test_ppl"], rel=1e-9)
        assert scored.targets == row["targets"]


def test_estimate_with_bpe_saves_the_tokenizer_and_score_reapplies_it(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    saved, arpa = tmp_path / "model", tmp_path / "m.arpa"
    argv = ["ngram", "estimate", str(corpus / "train.txt"), "-o", "3", "--arpa", str(arpa)]
    assert main([*argv, "--tokenizer", "bpe", "--bpe-vocab-size", "500", "--save", str(saved)]) == 0
    text = corpus / "valid.txt"
    capsys.readouterr()
    assert main(["ngram", "score", str(saved), str(text), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # KenLM, reading the ARPA file, scores the same subwords the saved tokenizer gives.
    learnt = subwords.load(saved / subwords.TOKENIZER_FILE)
    lines = subwords.encode(learnt, pl.Series(text.read_text().splitlines()))["tokens"]
    reference = kenlm.Model(str(arpa))
    log10 = sum(reference.score(" ".join(tokens)) for tokens in lines.to_list())
    targets = int(lines.list.len().sum()) + len(lines)
    assert report["targets"] == targets
    assert report["perplexity"] == pytest.approx(10 ** (-log10 / targets), rel=1e-4)
    assert math.isfinite(report["perplexity"])


def test_scoring_with_another_tokenizer_is_refused_naming_both(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    saved = tmp_path / "model"
    argv = [
        "ngram",
        "estimate",
        str(corpus / "train.txt"),
        "-o",
        "2",
        "--arpa",
        str(tmp_path / "m"),
    ]
    assert main([*argv, "--tokenizer", "bpe", "--bpe-vocab-size", "400", "--save", str(saved)]) == 0
    capsys.readouterr()
    assert (
        main(["ngram", "score", str(saved), str(corpus / "valid.txt"), "--tokenizer", "punct"]) == 1
    )
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"seqlm: error: {saved}: ")
    assert "bpe tokenizer" in error and "--tokenizer punct" in error


def test_rnn_train_with_bpe_saves_the_tokenizer_and_score_reapplies_it(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "rnn"
    tiny = ["--emsize", "8", "--nhid", "8", "--epochs", "1", "--bptt", "8", "--batch-size", "8"]
    argv = ["rnn", "train", str(corpus), "--out", str(out), "--model", "rnn_tanh", *tiny]
    assert main([*argv, "--tokenizer", "bpe", "--bpe-vocab-size", "400", "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert (out / subwords.TOKENIZER_FILE).is_file()
    assert main(["rnn", "score", str(out), str(corpus / "test.txt"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["perplexity"] == pytest.approx(trained["test_ppl"], rel=1e-6)
