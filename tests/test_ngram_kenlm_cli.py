"""KenLM users' habits: ARPA on standard output, text on standard input, lmplz's spellings,
query's -v levels and lmplz's --prune, checked against KenLM's binaries (when built) and the
kenlm package (always)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import kenlm
import numpy as np
import polars as pl
import pytest

from flows.cli import main
from seqlm.corpus import read_lines, tokenize
from seqlm.errors import SeqlmError
from seqlm.evaluate import perplexity
from seqlm.ngram import count_ngrams, fit, read_arpa, write_arpa
from seqlm.ngram.estimate import first_seen
from seqlm.vocab import BOS_ID, build_vocabulary
from tests.helpers import PTB, kenlm_tool, write_lines
from tests.ngram_reference import corpus, random_lines

LMPLZ, QUERY = kenlm_tool("lmplz"), kenlm_tool("query")
needs_ptb = pytest.mark.skipif(not PTB.exists(), reason="PTB data not present")

# `lmplz -o 3 --prune 0 1 1 -S 1G --text ptb.train.txt --arpa p3.arpa` (KenLM 0.3.0; lmplz refuses
# the literal <unk> of PTB, so it read the text with <unk> spelled <UNK>, which KenLM's vocabulary
# takes for its unknown word), then `query -v summary p3.arpa < ptb.test.txt` (<UNK> spelling too).
LMPLZ_PRUNED_SIZES = [10_002, 88_482, 81_305]  # lmplz's own <unk> besides the corpus's
QUERY_PRUNED_PPL = 164.789109452294


def sentences(lines: pl.DataFrame) -> list[str]:
    return [" ".join(t) for t in lines["tokens"].to_list()]


def text_file(path: Path, lines: pl.DataFrame) -> Path:
    return write_lines(path, sentences(lines))


def small_arpa(tmp_path: Path, order: int = 3, prune: tuple[int, ...] = ()) -> Path:
    vocab, train = corpus(n_lines=400, seed=31)
    model = fit(count_ngrams(train, order, vocab.size), vocab, "kn", prune=prune)
    write_arpa(model, tmp_path / "m.arpa")
    return tmp_path / "m.arpa"


def parse_levels(out: str) -> list[tuple[list[tuple[str, int, int, float]], float, int]]:
    """query's word+sentence output: per line, its (word, id, n, log10p) and Total and OOV."""
    parsed = []
    for line in out.splitlines():
        *words, total = line.split("\t")
        match = re.fullmatch(r"Total: (\S+) OOV: (\d+)", total)
        assert match, line
        entries = []
        for w in words:
            surface, rest = w.rsplit("=", 1)
            word_id, n, p = rest.split(" ")
            entries.append((surface, int(word_id), int(n), float(p)))
        parsed.append((entries, float(match[1]), int(match[2])))
    return parsed


# ---- standard output and input, lmplz's spellings ----


def test_estimate_writes_the_arpa_to_standard_output(tmp_path, capsysbinary):
    train = text_file(tmp_path / "train.txt", random_lines(300, 60, seed=32))
    args = ["ngram", "estimate", str(train), "-o", "3"]
    assert main([*args, "--arpa", str(tmp_path / "m.arpa")]) == 0
    capsysbinary.readouterr()
    assert main(args) == 0
    out = capsysbinary.readouterr().out  # the ARPA alone: the log is on standard error
    assert out.startswith(b"\n\\data\\\n") and out == (tmp_path / "m.arpa").read_bytes()


def test_score_reads_standard_input(tmp_path, capsys, monkeypatch):
    arpa = small_arpa(tmp_path)
    text = text_file(tmp_path / "test.txt", random_lines(40, 160, seed=33))
    assert main(["ngram", "score", str(arpa), str(text), "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    for name in ([], ["-"]):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.read_bytes())))
        assert main(["ngram", "score", str(arpa), *name, "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == from_file


def test_score_refuses_standard_input_that_is_not_utf8(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a \xff b\n")))
    assert main(["ngram", "score", str(small_arpa(tmp_path))]) == 1
    assert capsys.readouterr().err == "seqlm: error: standard input: not UTF-8 at byte offset 2\n"


def test_discount_fallback_takes_lmplz_spelling(tmp_path, capsys):
    train = write_lines(tmp_path / "train.txt", ["a b c", "a b", "b c a", "c a b"] * 20)
    for spelling in ("--discount-fallback", "--discount_fallback"):
        args = ["ngram", "estimate", str(train), "-o", "2", "--arpa", str(tmp_path / "m.arpa")]
        assert main([*args, spelling]) == 0
    with pytest.raises(SystemExit):
        main(["ngram", "estimate", "--help"])
    assert capsys.readouterr().out.count("--discount-fallback, --discount_fallback") == 1


# ---- query -v ----


@pytest.mark.parametrize("chunk_bytes", [None, 300])
def test_word_and_sentence_levels_match_the_kenlm_package(
    tmp_path, capsys, monkeypatch, chunk_bytes
):
    """Also with the text scored in chunks of a few lines each: the same lines, the same figures."""
    if chunk_bytes is not None:
        monkeypatch.setattr("seqlm.scoring.SCORE_CHUNK_BYTES", chunk_bytes)
    arpa = small_arpa(tmp_path, order=4)
    lines = random_lines(60, 170, seed=34)  # words beyond the training's 150: OOVs
    text = text_file(tmp_path / "test.txt", lines)
    assert main(["ngram", "score", str(arpa), str(text), "-v", "word", "-v", "sentence"]) == 0
    ours = parse_levels(capsys.readouterr().out)
    peer = kenlm.Model(str(arpa))
    ids = {w: i for i, w in enumerate(read_arpa(arpa).vocab.tokens.to_list())}
    assert len(ours) == lines.height
    for sentence, (entries, total, oov) in zip(sentences(lines), ours, strict=True):
        theirs = list(peer.full_scores(sentence))
        assert [e[0] for e in entries] == [*sentence.split(), "</s>"]
        assert [e[1] for e in entries] == [ids.get(e[0], 0) for e in entries]
        assert [e[2] for e in entries] == [t[1] for t in theirs]
        np.testing.assert_allclose([e[3] for e in entries], [t[0] for t in theirs], atol=1e-5)
        assert oov == sum(t[2] for t in theirs)
        assert total == pytest.approx(peer.score(sentence), abs=1e-4)
    assert main(["ngram", "score", str(arpa), str(text), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    log10 = sum(peer.score(sentence) for sentence in sentences(lines))
    assert summary["targets"] == sum(len(s.split()) + 1 for s in sentences(lines))
    assert summary["perplexity"] == pytest.approx(10 ** (-log10 / summary["targets"]), rel=1e-6)


def test_levels_print_what_query_prints(tmp_path, capsys):
    arpa = small_arpa(tmp_path)
    text = write_lines(tmp_path / "t.txt", ["w0 w1 zzz", "", "w2"])
    assert main(["ngram", "score", str(arpa), str(text), "-v", "sentence"]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"(Total: -\d+(\.\d+)? OOV: [01]\n){3}", out), out
    assert main(["ngram", "score", str(arpa), str(text), "-v", "word"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [len(line.split("\t")) for line in out] == [5, 2, 3]  # a tab after each target
    assert re.fullmatch(r"</s>=2 1 -\d+\.\d+\t", out[1]), out[1]  # no "<s> </s>" bigram
    assert out[1].endswith("\t")
    assert main(["ngram", "score", str(arpa), str(text), "-v", "summary", "-v", "sentence"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[3].startswith("Perplexity including OOVs:\t") and out[-1] == "Tokens:\t7"


@pytest.mark.skipif(QUERY is None, reason="KenLM's query is not built ($KENLM_BIN)")
def test_word_level_matches_query(tmp_path, capsys):
    arpa = small_arpa(tmp_path, order=4)
    text = text_file(tmp_path / "test.txt", random_lines(60, 170, seed=35))
    assert main(["ngram", "score", str(arpa), str(text), "-v", "word", "-v", "sentence"]) == 0
    ours = parse_levels(capsys.readouterr().out)
    with text.open("rb") as stdin:
        run = subprocess.run(
            [QUERY, "-v", "word", "-v", "sentence", str(arpa)],
            stdin=stdin,
            capture_output=True,
            check=True,
        )
    theirs = parse_levels(run.stdout.decode())
    assert len(ours) == len(theirs)
    for (ours_words, ours_total, ours_oov), (words, total, oov) in zip(ours, theirs, strict=True):
        assert [(w, n) for w, _, n, _ in ours_words] == [(w, n) for w, _, n, _ in words]
        np.testing.assert_allclose([e[3] for e in ours_words], [e[3] for e in words], atol=1e-5)
        assert (ours_total, ours_oov) == (pytest.approx(total, abs=1e-4), oov)


def test_json_is_the_summary_only(tmp_path, capsys):
    arpa = small_arpa(tmp_path)
    text = write_lines(tmp_path / "t.txt", ["w0 w1"])
    assert main(["ngram", "score", str(arpa), str(text), "--json", "-v", "word"]) == 1
    assert "--json" in capsys.readouterr().err


# ---- --prune ----


def test_pruned_model_still_sums_to_one():
    # No literal <unk> in the corpus: no unknown-word share reserved, so every order sums to 1.
    vocab, train = corpus(n_lines=600, seed=36, unk=False)
    model = fit(count_ngrams(train, 4, vocab.size), vocab, "kn", prune=(0, 1, 1, 2))
    full = fit(count_ngrams(train, 4, vocab.size), vocab, "kn")
    assert all(p < f for p, f in zip(model.sizes[1:], full.sizes[1:], strict=True))
    assert model.sizes[0] == full.sizes[0]
    for history in ([1], [1, 5], [1, 5, 7], [3, 4, 5], [9, 9, 9]):
        pruned, unpruned = (10.0 ** m.next_log10(np.array(history)) for m in (model, full))
        pruned[BOS_ID] = unpruned[BOS_ID] = 0.0  # never predicted
        assert pruned.sum() == pytest.approx(1.0, abs=1e-9)
        assert unpruned.sum() == pytest.approx(1.0, abs=1e-9)
        assert not np.allclose(pruned, unpruned)


@pytest.mark.parametrize(
    ("prune", "problem"),
    [
        (["0", "2", "1"], "must not decrease"),
        (["1"], "unigrams cannot be pruned"),
        (["0", "-1"], "'-1' is not a count"),
        (["0", "1.5"], "'1.5' is not a count"),
        (["0", "1", "1", "1"], "4 thresholds for a model of order 3"),
    ],
)
def test_bad_prune_is_one_line(tmp_path, capsys, prune, problem):
    train = write_lines(tmp_path / "train.txt", ["a b c"] * 5)
    assert main(["ngram", "estimate", str(train), "-o", "3", "--prune", *prune]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"seqlm: error: --prune {' '.join(prune)}: ") and problem in err
    assert err.count("\n") == 1


def test_prune_in_the_library():
    vocab, train = corpus(n_lines=400, seed=37)
    tables = count_ngrams(train, 3, vocab.size)
    with pytest.raises(SeqlmError, match=r"--prune 0 1\.5: 1\.5 is not a count"):
        fit(tables, vocab, "kn", prune=(0, 1.5))
    with pytest.raises(SeqlmError, match="--smoothing kn, not addk"):
        fit(tables, vocab, "addk", prune=(0, 1))
    assert fit(tables, vocab, "kn", prune=(0,)).sizes == fit(tables, vocab, "kn").sizes


def arpa_entries(path: Path, rename: dict[str, str] | None = None) -> dict[int, pl.DataFrame]:
    """Each order's entries (``ngram``, ``p``, ``bo``); ``rename`` maps words (and drops the
    unigram a word is renamed to, as KenLM's own <unk> when the corpus's <UNK> becomes it)."""
    text = path.read_text()
    out = {}
    for m in re.finditer(r"^\\(\d+)-grams:\n(.*?)(?=^\\)", text, re.M | re.S):
        fields = pl.Series(m[2].strip().split("\n")).str.split("\t").list
        frame = pl.DataFrame(
            {
                "p": fields.get(0).cast(pl.Float64),
                "ngram": fields.get(1),
                "bo": fields.get(2, null_on_oob=True).cast(pl.Float64).fill_null(0.0),
            }
        )
        for old, new in (rename or {}).items():
            if m[1] == "1":
                frame = frame.filter(pl.col("ngram") != new)
            ngram = pl.col("ngram").str.split(" ").list.eval(pl.element().replace(old, new))
            frame = frame.with_columns(ngram.list.join(" "))
        out[int(m[1])] = frame.sort("ngram")
    return out


def assert_same_arpa(ours: Path, theirs: Path, rename: dict[str, str]) -> None:
    """The same n-grams per order, and log10 p and back-off within lmplz's 7 printed digits
    (KenLM computes in float32)."""
    a, b = arpa_entries(ours), arpa_entries(theirs, rename)
    assert a.keys() == b.keys()
    for n in a:
        assert a[n]["ngram"].to_list() == b[n]["ngram"].to_list(), f"order {n}"
        for col in ("p", "bo"):
            np.testing.assert_allclose(a[n][col].to_numpy(), b[n][col].to_numpy(), atol=1e-6)


@needs_ptb
@pytest.mark.skipif(LMPLZ is None, reason="KenLM's lmplz is not built ($KENLM_BIN)")
@pytest.mark.parametrize(("order", "prune"), [(3, ["0", "1", "1"]), (4, ["0", "0", "2", "3"])])
def test_prune_writes_the_arpa_lmplz_writes(tmp_path, order, prune):
    # lmplz refuses PTB's literal <unk>: it reads it spelled <UNK> (its own <unk> is then extra).
    renamed = tmp_path / "train.txt"
    renamed.write_text((PTB / "ptb.train.txt").read_text().replace("<unk>", "<UNK>"))
    theirs, ours = tmp_path / "lmplz.arpa", tmp_path / "seqlm.arpa"
    lmplz = [LMPLZ, "-o", str(order), "--prune", *prune, "-S", "1G", "-T", str(tmp_path)]
    subprocess.run(
        [*lmplz, "--text", str(renamed), "--arpa", str(theirs)], capture_output=True, check=True
    )
    args = ["ngram", "estimate", str(PTB / "ptb.train.txt"), "-o", str(order), "--prune", *prune]
    assert main([*args, "--arpa", str(ours)]) == 0
    assert_same_arpa(ours, theirs, {"<UNK>": "<unk>"})


@needs_ptb
def test_prune_matches_lmplz_recorded_figures(tmp_path):
    train = tokenize(read_lines(PTB / "ptb.train.txt"), "whitespace")
    vocab = build_vocabulary(train)
    stream = vocab.stream(train)
    test_lines = tokenize(read_lines(PTB / "ptb.test.txt"), "whitespace")
    test = vocab.stream(test_lines)
    tables = count_ngrams(stream, 3, vocab.size)
    model = fit(tables, vocab, "kn", first_seen=first_seen(stream, vocab.size), prune=(0, 1, 1))
    assert model.sizes == [LMPLZ_PRUNED_SIZES[0] - 1, *LMPLZ_PRUNED_SIZES[1:]]
    ours = model.score_tokens(test)
    assert perplexity(model.score_stream(test), test).ppl == pytest.approx(
        QUERY_PRUNED_PPL, rel=1e-7
    )
    write_arpa(model, tmp_path / "pruned.arpa")
    peer = kenlm.Model(str(tmp_path / "pruned.arpa"))
    theirs = np.array([peer.score(s) for s in sentences(test_lines)])
    np.testing.assert_allclose(ours.sentence_log10(), theirs, atol=1e-4)
