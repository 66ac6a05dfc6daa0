import json

import numpy as np
import pytest

from flows.cli import main
from seqlm.corpus import read_lines, tokenize
from seqlm.errors import SeqlmError
from seqlm.evaluate import perplexity
from seqlm.ngram import count_ngrams, fit, read_arpa, write_arpa
from tests.helpers import write_lines
from tests.ngram_reference import corpus, random_lines


def test_arpa_round_trip_scores_the_same(tmp_path):
    vocab, train = corpus(n_lines=400, seed=11)
    model = fit(count_ngrams(train, 3, vocab.size), vocab, "kn")
    write_arpa(model, tmp_path / "m.arpa")
    loaded = read_arpa(tmp_path / "m.arpa")
    assert loaded.sizes == model.sizes
    lines = random_lines(50, 150, seed=12)
    ours, theirs = vocab.stream(lines), loaded.vocab.stream(lines)
    np.testing.assert_allclose(loaded.score_stream(theirs), model.score_stream(ours), atol=1e-6)


def test_kenlm_agrees_with_our_scorer(tmp_path):
    kenlm = pytest.importorskip("kenlm")
    vocab, train = corpus(n_lines=400, seed=13)
    model = fit(count_ngrams(train, 4, vocab.size), vocab, "kn")
    write_arpa(model, tmp_path / "m.arpa")
    lines = random_lines(80, 150, seed=14)
    ours = perplexity(model.score_stream(vocab.stream(lines)), vocab.stream(lines)).ppl
    peer = kenlm.Model(str(tmp_path / "m.arpa"))
    total = sum(peer.score(" ".join(t), bos=True, eos=True) for t in lines["tokens"].to_list())
    targets = lines["tokens"].list.len().sum() + lines.height
    assert 10 ** (-total / targets) == pytest.approx(ours, rel=5e-5)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("\\data\\", "data"), "no \\\\data\\\\ header"),
        (lambda t: t.replace("ngram 2=", "ngram 2=x"), r"m.arpa:4: expected 'ngram N=COUNT'"),
        (lambda t: t.replace("\t</s>\t", "\t</s> extra\t", 1), r"m.arpa:\d+: a 1-gram entry needs"),
        (lambda t: t.replace("\n-", "\nx-", 1), r"m.arpa:\d+: not a number"),
        (lambda t: t.replace("\\end\\", ""), "expected section"),
    ],
)
def test_malformed_arpa_names_the_line_and_the_problem(tmp_path, edit, message):
    vocab, train = corpus(n_lines=100, seed=15)
    write_arpa(fit(count_ngrams(train, 2, vocab.size), vocab, "addk"), tmp_path / "m.arpa")
    path = tmp_path / "m.arpa"
    path.write_text(edit(path.read_text()))
    with pytest.raises(SeqlmError, match=message):
        read_arpa(path)


def test_cli_count_estimate_score(tmp_path, capsys):
    train = write_lines(tmp_path / "corpus" / "train.txt", ["a b c", "a b", "b c a", "c a b"] * 20)
    write_lines(tmp_path / "corpus" / "valid.txt", ["a b"])
    test = write_lines(tmp_path / "corpus" / "test.txt", ["a b zzz", "c a"])
    assert (
        main(["ngram", "count", str(train.parent), "--order", "3", "--out", str(tmp_path / "t")])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "t").iterdir())[:3] == [
        "order1.parquet",
        "order2.parquet",
        "order3.parquet",
    ]
    arpa = tmp_path / "m.arpa"
    args = ["ngram", "estimate", str(train), "-o", "2", "--arpa", str(arpa)]
    assert main(args) == 1
    assert "--discount-fallback" in capsys.readouterr().err
    assert main([*args, "--discount-fallback"]) == 0
    assert main(["ngram", "score", str(arpa), str(test), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["oov"], result["targets"]) == (1, 7)
    model = read_arpa(arpa)
    stream = model.vocab.stream(tokenize(read_lines(test), "whitespace"))
    assert result["perplexity"] == pytest.approx(perplexity(model.score_stream(stream), stream).ppl)


def test_cli_reports_bad_input(tmp_path, capsys):
    empty = write_lines(tmp_path / "empty.txt", ["", "  "])
    assert main(["ngram", "estimate", str(empty), "-o", "3", "--arpa", str(tmp_path / "x")]) == 1
    assert "empty" in capsys.readouterr().err
    assert main(["ngram", "count", str(empty), "-o", "0", "--out", str(tmp_path / "t")]) == 1
    assert main(["ngram", "score", str(tmp_path / "missing.arpa"), str(empty)]) == 1
    assert "missing.arpa" in capsys.readouterr().err


def _read_both(path):
    from seqlm.ngram import arpa

    return read_arpa(path), arpa._read_lines(path, path.read_bytes())


def _same_model(a, b):
    assert a.vocab.table.equals(b.vocab.table)
    for x, y in zip(
        [a.context, a.word, a.log10_prob, a.log10_backoff],
        [b.context, b.word, b.log10_prob, b.log10_backoff],
        strict=True,
    ):
        assert all(np.array_equal(u, v) for u, v in zip(x, y, strict=True))


@pytest.fixture(params=["one chunk", "chunks of 97 bytes"])
def chunked(request, monkeypatch):
    """The fast reader parsing sections whole, or in many chunks (a line split by none)."""
    from seqlm.ngram import arpa

    if request.param != "one chunk":
        monkeypatch.setattr(arpa, "CHUNK", 97)


def test_arpa_fast_reader_matches_the_line_reader(tmp_path, chunked, monkeypatch):
    from seqlm.ngram import arpa

    vocab, train = corpus(n_lines=400, seed=11)
    write_arpa(
        fit(count_ngrams(train, 4, vocab.size), vocab, "kn", discount_fallback=True),
        tmp_path / "m.arpa",
    )
    slow = arpa._read_lines(tmp_path / "m.arpa", (tmp_path / "m.arpa").read_bytes())
    monkeypatch.setattr(arpa, "_read_lines", None)  # the fast reader alone
    _same_model(read_arpa(tmp_path / "m.arpa"), slow)


def test_arpa_variants_read_alike(tmp_path, chunked):
    """Spaces for tabs, back-offs of 0 left out, n-grams out of order: the same model."""
    vocab, train = corpus(n_lines=400, seed=13)
    write_arpa(
        fit(count_ngrams(train, 3, vocab.size), vocab, "kn", discount_fallback=True),
        tmp_path / "m.arpa",
    )
    reference = read_arpa(tmp_path / "m.arpa")
    text = (tmp_path / "m.arpa").read_text()
    head, body = text.split("\\2-grams:\n")
    bigrams, rest = body.split("\n\n", 1)
    shuffled = "\n".join(reversed(bigrams.splitlines()))
    variant = (head + "\\2-grams:\n" + shuffled + "\n\n" + rest).replace("\t0.0000000\n", "\n")
    (tmp_path / "v.arpa").write_text(variant.replace("\t", " "))
    fast, slow = _read_both(tmp_path / "v.arpa")
    _same_model(fast, reference)
    _same_model(slow, reference)


def _first_word(line, word):
    p, words, *rest = line.split("\t")
    return "\t".join([p, " ".join([word, *words.split(" ")[1:]]), *rest])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda lines, i: lines.__setitem__(i + 1, lines[i]),
            r"m.arpa:(\d+): this 3-gram is listed twice",
        ),
        (
            lambda lines, i: lines.__setitem__(i, _first_word(lines[i], "</s>")),
            r"m.arpa:\d+: this 3-gram's context is not listed",
        ),
    ],
)
def test_malformed_higher_orders_name_the_line(tmp_path, edit, message):
    vocab, train = corpus(n_lines=400, seed=11)
    write_arpa(
        fit(count_ngrams(train, 3, vocab.size), vocab, "kn", discount_fallback=True),
        tmp_path / "m.arpa",
    )
    lines = (tmp_path / "m.arpa").read_text().split("\n")
    at = lines.index("\\3-grams:") + 5
    edit(lines, at)
    (tmp_path / "m.arpa").write_text("\n".join(lines))
    with pytest.raises(SeqlmError, match=message) as caught:
        read_arpa(tmp_path / "m.arpa")
    assert f"m.arpa:{at + 2 if 'twice' in message else at + 1}:" in str(caught.value)


def _edit_field(lines, marker, field, value):
    """Set one field of the first entry after ``marker``; its 1-based line number."""
    at = lines.index(marker) + 1
    fields = lines[at].split("\t")
    fields[field] = value
    lines[at] = "\t".join(fields)
    return at + 1


@pytest.mark.parametrize(
    ("marker", "field", "value", "problem"),
    [
        ("\\1-grams:", 0, "nan", "log10 p nan is not finite (ARPA writes log 0 as -99)"),
        ("\\1-grams:", 0, "-inf", "log10 p -inf is not finite (ARPA writes log 0 as -99)"),
        ("\\2-grams:", 0, "inf", "log10 p inf is not finite (ARPA writes log 0 as -99)"),
        ("\\2-grams:", 0, "0.5", "log10 p 0.5 is positive (a probability above 1)"),
        ("\\1-grams:", 2, "inf", "back-off inf is not finite"),
        ("\\1-grams:", 2, "nan", "back-off nan is not finite"),
        ("\\1-grams:", 0, "0", None),  # log10 1: a certain word
        ("\\1-grams:", 2, "0.5", None),  # a back-off weight above 1 is legal, as KenLM reads it
    ],
)
def test_arpa_weights_are_checked(tmp_path, marker, field, value, problem):
    vocab, train = corpus(n_lines=100, seed=15)
    path = tmp_path / "m.arpa"
    write_arpa(fit(count_ngrams(train, 2, vocab.size), vocab, "kn", discount_fallback=True), path)
    lines = path.read_text().split("\n")
    at = _edit_field(lines, marker, field, value)
    path.write_text("\n".join(lines))
    if problem is None:
        model = read_arpa(path)
        assert float(value) in np.concatenate([*model.log10_prob, *model.log10_backoff])
        return
    with pytest.raises(SeqlmError) as caught:
        read_arpa(path)
    assert str(caught.value) == f"{path}:{at}: {problem}"
    assert main(["ngram", "score", str(path), str(path)]) == 1


def test_cli_score_refuses_bad_paths_in_one_line(tmp_path, capsys):
    vocab, train = corpus(n_lines=100, seed=15)
    model = fit(count_ngrams(train, 2, vocab.size), vocab, "kn", discount_fallback=True)
    saved, text = tmp_path / "saved", write_lines(tmp_path / "t.txt", ["a b"])
    model.save(saved)
    assert main(["ngram", "score", str(saved), str(text)]) == 0
    capsys.readouterr()
    (saved / "order2.key.npy").unlink()
    for model_path, text_path, message in [
        (tmp_path, text, f"{tmp_path}: not a saved n-gram model"),
        (saved, text, f"{saved / 'order2.key.npy'}: missing from the saved n-gram model"),
        (tmp_path / "none.arpa", text, f"{tmp_path / 'none.arpa'}: cannot read"),
        (saved.with_name("m.arpa"), tmp_path, f"{tmp_path}: not a regular file"),
    ]:
        if model_path.name == "m.arpa":
            write_arpa(model, model_path)
        assert main(["ngram", "score", str(model_path), str(text_path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"seqlm: error: {message}") and err.count("\n") == 1, err
