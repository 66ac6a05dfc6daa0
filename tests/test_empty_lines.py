"""Every line is a sentence, empty lines included, on the command line and in the pipeline, as
KenLM counts them: an empty, whitespace-only line is one ``</s>`` target; CRLF endings and a BOM
are not text. KenLM (the ``kenlm`` package) scores seqlm's ARPA files as the independent peer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flows.cli import main
from seqlm import stages
from seqlm.config import load_config
from seqlm.rnn.config import ModelConfig
from seqlm.rnn.model import RNNLM
from seqlm.rnn.score import score_stream
from seqlm.rnn.training import batchify
from seqlm.store import Store
from seqlm.vocab import EOS_ID
from tests.helpers import prepare

kenlm = pytest.importorskip("kenlm", reason="the kenlm package is not installed (make kenlm)")

BOM = b"\xef\xbb\xbf"
WORDS = [f"w{i}" for i in range(300)]
# Zipf-like word frequencies: enough rare words that orders 1-3 have Kneser-Ney discounts.
WEIGHTS = 1.0 / np.arange(1, len(WORDS) + 1)


def text_lines(n: int, seed: int, unknown: float = 0.0) -> list[str]:
    """``n`` random lines between the edge cases: leading, trailing, consecutive, whitespace-only
    empty lines; ``unknown``: the share of words outside the word list (OOVs)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.08:
            lines.append("")
        elif kind < 0.12:
            lines.append(rng.choice([" ", "\t", "  \t "]))
        else:
            words = rng.choice(WORDS, size=rng.integers(1, 12), p=WEIGHTS / WEIGHTS.sum())
            oov = rng.random(len(words)) < unknown
            lines.append(" ".join(np.where(oov, "zz" + words, words)))
    return ["", "", *lines[: n // 2], "", "", "  ", "", *lines[n // 2 :], "", " ", ""]


def kenlm_sentences(path: Path) -> list[str]:
    """The lines of a file as KenLM's ``query`` reads them (a BOM and CRLF endings stripped)."""
    return path.read_bytes().decode("utf-8").removeprefix("\ufeff").splitlines()


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, Path]:
    """A training text with a BOM, CRLF endings and a final newline; a test text with LF endings,
    OOVs, and a last whitespace-only line with no newline."""
    folder = tmp_path_factory.mktemp("empty-lines")
    train, test = folder / "train.txt", folder / "test.txt"
    train.write_bytes(BOM + "".join(f"{line}\r\n" for line in text_lines(600, 1)).encode())
    test.write_bytes("\n".join(text_lines(120, 2, unknown=0.05)).encode())
    return {"train": train, "test": test}


def seqlm_score(capsys, model: Path, text: Path) -> dict:
    capsys.readouterr()
    assert main(["ngram", "score", str(model), str(text), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# Random text repeats few 4- and 5-grams: the 5-gram takes lmplz's fallback discounts there.
@pytest.mark.parametrize(("order", "fallback"), [(3, []), (5, ["--discount-fallback"])])
def test_cli_counts_and_scores_every_line_as_kenlm_does(texts, tmp_path, capsys, order, fallback):
    arpa, saved = tmp_path / "m.arpa", tmp_path / "m"
    estimate = ["ngram", "estimate", str(texts["train"]), "-o", str(order), "--arpa", str(arpa)]
    assert main([*estimate, *fallback, "--save", str(saved)]) == 0, capsys.readouterr().err
    ours = seqlm_score(capsys, arpa, texts["test"])
    assert seqlm_score(capsys, saved, texts["test"]) == pytest.approx(ours, rel=1e-7)

    peer = kenlm.Model(str(arpa))
    sentences = kenlm_sentences(texts["test"])
    assert sum(s.strip() == "" for s in sentences) > 10  # the edge cases are in the text
    scores = [list(peer.full_scores(s)) for s in sentences]
    # (a) Targets: words + lines, as KenLM's query counts Tokens; an empty line is one </s>.
    assert [len(s) for s in scores] == [len(s.split()) + 1 for s in sentences]
    assert ours["targets"] == sum(len(s) for s in scores)
    # (b) KenLM on seqlm's ARPA gives seqlm's perplexity (KenLM: log10, in float32).
    flat = [score for line in scores for score in line]
    total = sum(log10 for log10, _, _ in flat)
    assert ours["perplexity"] == pytest.approx(10 ** (-total / len(flat)), rel=1e-6)
    known = [log10 for log10, _, oov in flat if not oov]
    assert ours["oov"] == len(flat) - len(known) > 0
    assert ours["perplexity_no_unk"] == pytest.approx(10 ** (-sum(known) / len(known)), rel=1e-6)


def test_pipeline_stages_and_cli_give_the_same_figure(tmp_path, capsys):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for split, n, seed in (("train", 600, 3), ("valid", 60, 4), ("test", 80, 5)):
        raw = "".join(f"{line}\r\n" for line in text_lines(n, seed, unknown=0.03)).encode()
        (folder / f"{split}.txt").write_bytes(BOM + raw)
    # The CLI keeps every training type (min_count 1): the pipeline is set to the same cut.
    config = load_config(None, ["tokenizer=whitespace", "vocab.min_count=1", "orders=[3]"])
    store = Store(tmp_path / "store")
    data = prepare(store, folder, config)
    model = stages.ngram(store, data.tables, 3, config.ngram)
    metrics = stages.load_metrics(stages.evaluate(store, model, data))["test"]

    arpa = tmp_path / "m.arpa"
    assert main(["ngram", "estimate", str(folder), "-o", "3", "--arpa", str(arpa)]) == 0
    ours = seqlm_score(capsys, arpa, folder / "test.txt")
    lines = kenlm_sentences(folder / "test.txt")
    assert metrics["targets"] == ours["targets"] == sum(len(s.split()) + 1 for s in lines)
    assert metrics["oov"] == ours["oov"] > 0
    assert metrics["ppl"] == pytest.approx(ours["perplexity"], rel=1e-6)
    assert metrics["ppl_no_unk"] == pytest.approx(ours["perplexity_no_unk"], rel=1e-6)


def test_a_corpus_of_empty_lines_is_refused_in_one_line(tmp_path, capsys):
    blank = tmp_path / "blank.txt"
    blank.write_bytes(BOM + b"\r\n  \r\n\r\n")
    nothing = tmp_path / "nothing.txt"
    nothing.write_bytes(BOM)
    for path, problem in (
        (blank, "no words to train on (3 lines, all empty)"),
        (nothing, "empty corpus (no lines)"),
    ):
        assert main(["ngram", "estimate", str(path), "-o", "3", "--arpa", str(tmp_path / "m")]) == 1
        assert capsys.readouterr().err == f"seqlm: error: {path}: {problem}\n"


def test_recurrent_scoring_reads_consecutive_line_ends():
    torch.manual_seed(0)
    model = RNNLM("lstm", ModelConfig(8, 8, 1), 7).eval()
    # Lines: "", "3 4", "", "", "5", "" — an empty line is a lone </s>.
    stream = np.array([2, 3, 4, 2, 2, 2, 5, 2, 2])

    def direct(segment: np.ndarray) -> np.ndarray:
        ids = torch.as_tensor(np.append(EOS_ID, segment[:-1]))[:, None]
        h, _ = model(ids, model.init_hidden(1))
        logp = F.log_softmax(model.decoder(h[:, 0]), -1)
        return logp[torch.arange(len(segment)), torch.as_tensor(segment)].detach().numpy()

    np.testing.assert_allclose(score_stream(model, stream, window=3), direct(stream), rtol=1e-5)
    lines = np.split(stream, np.flatnonzero(stream == EOS_ID)[:-1] + 1)
    assert [len(line) for line in lines] == [1, 3, 1, 1, 2, 1]
    reset = score_stream(model, stream, line_reset=True, batch=2)
    np.testing.assert_allclose(reset, np.concatenate([direct(x) for x in lines]), rtol=1e-5)
    columns = score_stream(model, stream, columns=4)
    assert columns.shape == stream.shape and np.isfinite(columns).all()
    data = batchify(stream, 2, torch.device("cpu"))  # </s> + stream, in two columns of 5
    assert data.t().reshape(-1).tolist() == [EOS_ID, *stream.tolist()]
