import json
import logging
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from seqlm.corpus import read_lines, tokenize
from seqlm.errors import SeqlmError
from seqlm.ngram import NgramModel, count_ngrams, fit, write_arpa
from seqlm.vocab import BOS_ID, EOS_ID, UNK_ID, build_vocabulary
from tests.helpers import PTB
from tests.ngram_reference import BruteKneserNey, corpus, random_lines


def every_next_word(vocab_size: int, history: list[int]) -> np.ndarray:
    """Lines ``history w`` for every predictable w (w is scored after ``<s> history``)."""
    words = [w for w in range(vocab_size) if w != BOS_ID]
    return np.array([i for w in words for i in (*history, w, EOS_ID)]), len(history)


def next_word_mass(model: NgramModel, history: list[int]) -> float:
    stream, at = every_next_word(model.vocab.size, history)
    logp = model.score_tokens(stream).log10_prob.reshape(-1, at + 2)[:, at]
    return float((10.0**logp).sum())


def test_kneser_ney_equals_the_definition_on_held_out_text():
    vocab, train = corpus(n_lines=600, seed=1)
    held_out = vocab.stream(random_lines(60, 150, seed=2))  # unseen n-grams and words
    assert (held_out == UNK_ID).any()
    model = fit(count_ngrams(train, 3, vocab.size), vocab, "kn")
    brute = BruteKneserNey(train, 3, vocab.size)
    np.testing.assert_allclose(model.info["discounts"], [d[1:] for d in brute.discounts])
    got = model.score_tokens(held_out).log10_prob
    np.testing.assert_allclose(got, brute.log10_probs(held_out), rtol=1e-10)


@pytest.mark.parametrize("smoothing", ["kn", "addk", "mle"])
def test_next_word_distributions_sum_to_one(smoothing):
    # Without a literal <unk>: lmplz's uniform floor reserves a slot for it beside a spelled one.
    vocab, train = corpus(n_lines=600, seed=3, unk=False)
    model = fit(count_ngrams(train, 3, vocab.size), vocab, smoothing, add_k=0.5)
    first, second = int(train[0]), int(train[1])
    for history in ([], [first], [first, second]):
        assert next_word_mass(model, history) == pytest.approx(1.0, abs=1e-9)


def test_add_k_unigram_and_mle_bigram_are_the_textbook_formulas():
    vocab, train = corpus(n_lines=300, seed=4)
    tables = count_ngrams(train, 2, vocab.size)
    addk = fit(tables[:1], vocab, "addk", add_k=0.5)
    counts = np.bincount(train, minlength=vocab.size).astype(float)
    expected = (counts + 0.5) / (counts.sum() + 0.5 * (vocab.size - 1))
    np.testing.assert_allclose(addk.score_stream(train), np.log(expected[train]))
    mle = fit(tables, vocab, "mle")
    first = int(train[0])
    after_bos = (tables[1]["w1"] == BOS_ID) & (tables[1]["w2"] == first)
    p = tables[1].filter(after_bos)["count"].item() / (train == EOS_ID).sum()
    assert mle.score_tokens(train).log10_prob[0] == pytest.approx(np.log10(p))


def test_invalid_discounts_name_the_order_and_the_fallback(caplog):
    lines = pl.DataFrame({"tokens": [["a", "b"], ["a", "b", "c"]]})
    vocab = build_vocabulary(lines)
    train = vocab.stream(lines)
    tables = count_ngrams(train, 3, vocab.size)
    with pytest.raises(SeqlmError, match=r"order \d.*--discount-fallback"):
        fit(tables, vocab, "kn")
    with caplog.at_level(logging.WARNING):
        model = fit(tables, vocab, "kn", discount_fallback=True)
    assert "fallback discounts D1=0.5 D2=1 D3+=1.5" in caplog.text
    assert [0.5, 1.0, 1.5] in model.info["discounts"]
    assert np.isfinite(model.score_stream(train)).all()


def test_saved_model_scores_identically(tmp_path):
    vocab, train = corpus(n_lines=300, seed=6)
    model = fit(count_ngrams(train, 4, vocab.size), vocab, "kn")
    model.save(tmp_path / "kn")
    loaded = NgramModel.load(tmp_path / "kn")
    np.testing.assert_array_equal(loaded.score_stream(train), model.score_stream(train))
    assert loaded.info["discounts"] == model.info["discounts"]


def test_per_sentence_scores_sum_the_tokens():
    vocab, train = corpus(n_lines=50, seed=7)
    scores = fit(count_ngrams(train, 2, vocab.size), vocab, "addk").score_tokens(train)
    lines = np.split(scores.log10_prob, np.flatnonzero(train == EOS_ID)[:-1] + 1)
    np.testing.assert_allclose(scores.sentence_log10(), [line.sum() for line in lines])


def test_unknown_smoothing_and_bad_ids_are_refused():
    vocab, train = corpus(n_lines=50, seed=8)
    tables = count_ngrams(train, 2, vocab.size)
    with pytest.raises(SeqlmError, match="unknown smoothing"):
        fit(tables, vocab, "witten-bell")
    with pytest.raises(SeqlmError, match="outside"):
        fit(tables, vocab, "kn", discount_fallback=True).score_stream(np.array([999, EOS_ID]))


def test_kneser_ney_with_empty_lines_equals_the_definition():
    vocab, train = corpus(n_lines=600, seed=9, unk=False, empty=0.15)
    held_out = vocab.stream(random_lines(60, 150, seed=10, unk=False, empty=0.2))
    assert ((held_out == EOS_ID) & (np.roll(held_out, 1) == EOS_ID)).any()
    model = fit(count_ngrams(train, 3, vocab.size), vocab, "kn")
    brute = BruteKneserNey(train, 3, vocab.size)
    np.testing.assert_allclose(model.info["discounts"], [d[1:] for d in brute.discounts])
    scores = model.score_tokens(held_out)
    np.testing.assert_allclose(scores.log10_prob, brute.log10_probs(held_out), rtol=1e-10)
    assert len(scores.sentence_log10()) == (held_out == EOS_ID).sum()
    assert next_word_mass(model, []) == pytest.approx(1.0, abs=1e-9)


def test_a_loaded_model_maps_its_files_and_copies_nothing(tmp_path):
    vocab, train = corpus(n_lines=300, seed=6)
    model = fit(count_ngrams(train, 4, vocab.size), vocab, "kn")
    model.save(tmp_path / "kn")
    allocated = pa.total_allocated_bytes()
    loaded = NgramModel.load(tmp_path / "kn")
    assert pa.total_allocated_bytes() == allocated  # nothing read into Arrow's memory
    arrays = [*loaded.keys, *loaded.log10_prob, *loaded.log10_backoff]
    assert all(not a.flags.owndata and not a.flags.writeable for a in arrays)  # views of the map
    assert loaded.keys is loaded.stored_keys  # searched as stored, not rebuilt
    np.testing.assert_array_equal(loaded.score_stream(train), model.score_stream(train))
    # The rows and words ARPA needs come from the keys: the same file as the unsaved model's.
    write_arpa(model, tmp_path / "a.arpa")
    write_arpa(loaded, tmp_path / "b.arpa")
    assert (tmp_path / "a.arpa").read_bytes() == (tmp_path / "b.arpa").read_bytes()
    history = np.array([BOS_ID, int(train[0])])
    np.testing.assert_array_equal(loaded.next_log10(history), model.next_log10(history))


def test_an_older_or_damaged_saved_model_is_refused_in_one_line(tmp_path):
    vocab, train = corpus(n_lines=100, seed=6)
    model = fit(count_ngrams(train, 2, vocab.size), vocab, "addk")
    model.save(tmp_path / "m")
    meta = tmp_path / "m" / "model.json"
    meta.write_text(
        json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "format"})
    )
    with pytest.raises(
        SeqlmError, match=r"format 1, not 3; re-save it: seqlm ngram estimate .*--save"
    ):
        NgramModel.load(tmp_path / "m")
    for name, damage in [
        ("order2.key.npy", lambda data: data[:200]),  # cut short
        ("order2.log10_prob.npy", lambda data: b"not numpy" + data[9:]),  # overwritten
        ("order1.log10_backoff.npy", lambda data: data.replace(b"<f8", b"<f4")),  # retyped
        ("order2.key.npy", lambda _: (tmp_path / "m" / "order1.key.npy").read_bytes()),  # length
    ]:
        model.save(tmp_path / "m")
        path = tmp_path / "m" / name
        path.write_bytes(damage(path.read_bytes()))
        with pytest.raises(SeqlmError, match="damaged saved n-gram model"):
            NgramModel.load(tmp_path / "m")


def resident_mib() -> float:
    return (
        int(next(s for s in open("/proc/self/status") if s.startswith("VmRSS")).split()[1]) / 1024
    )


@pytest.mark.skipif(not PTB.exists() or not Path("/proc/self/status").exists(), reason="PTB, Linux")
def test_the_saved_ptb_5_gram_loads_in_place_and_scores_as_the_fitted_one(tmp_path, monkeypatch):
    train = tokenize(read_lines(PTB / "ptb.train.txt"), "whitespace")
    vocab = build_vocabulary(train)
    test = vocab.stream(tokenize(read_lines(PTB / "ptb.test.txt"), "whitespace"))
    model = fit(count_ngrams(vocab.stream(train), 5, vocab.size), vocab, "kn")
    model.save(tmp_path / "kn5")
    NgramModel.load(tmp_path / "kn5")  # the readers' own first-use memory is not the model's
    before = resident_mib()
    loaded = NgramModel.load(tmp_path / "kn5")
    grown = resident_mib() - before
    assert grown < 8, grown  # its 54 MiB of arrays stay on disk until a search reads them
    # Scored as a model too large to hold: the pages the searches read are let go once scored.
    monkeypatch.setattr("seqlm.ngram.model.HELD_MODEL_BYTES", 0)
    scores = loaded.score_stream(test)
    grown = resident_mib() - before
    assert grown < 20, grown
    np.testing.assert_array_equal(scores, model.score_stream(test))


def test_batched_scoring_and_saving_equal_the_whole(tmp_path, monkeypatch):
    """Scored a few lines at a time, a text's scores are those of the whole stream at once; saved
    with its keys worked out a few rows at a time, a model's files are byte for byte the same."""
    vocab, train = corpus(n_lines=300, seed=6)
    model = fit(count_ngrams(train, 4, vocab.size), vocab, "kn")
    model.save(tmp_path / "whole")
    whole = model.score_tokens(train).log10_prob * np.log(10.0)
    monkeypatch.setattr("seqlm.ngram.model.SCORE_BATCH", 37)
    monkeypatch.setattr("seqlm.ngram.model.SAVE_BATCH", 50)
    np.testing.assert_array_equal(model.score_stream(train), whole)
    fitted = fit(count_ngrams(train, 4, vocab.size), vocab, "kn")
    fitted.save(tmp_path / "batched")
    NgramModel.load(tmp_path / "batched").save(tmp_path / "again")
    for name in ("order1.key.npy", "order4.key.npy", "order4.log10_prob.npy", "model.json"):
        expected = (tmp_path / "whole" / name).read_bytes()
        assert (tmp_path / "batched" / name).read_bytes() == expected
        assert (tmp_path / "again" / name).read_bytes() == expected


def _listed(model: NgramModel) -> list[dict[tuple[int, ...], tuple[float, float]]]:
    """Per order, each listed n-gram's words → (log10 p, log10 back-off)."""
    grams, names = [], [()]
    for n in range(model.order):
        context, word = np.asarray(model.context[n]), np.asarray(model.word[n])
        names = [names[c] + (int(w),) for c, w in zip(context, word, strict=True)]
        weights = zip(model.log10_prob[n], model.log10_backoff[n], strict=True)
        grams.append(dict(zip(names, weights, strict=True)))
    return grams


def _from_listed(vocab, grams: list[dict]) -> NgramModel:
    """A model of exactly the n-grams ``grams`` lists (as ``_listed`` gives them)."""
    context, word, p, bo = [], [], [], []
    rows: dict[tuple[int, ...], int] = {(): 0}
    for level in grams:
        names = sorted(level, key=lambda g: (rows[g[:-1]], g[-1]))
        context.append(np.array([rows[g[:-1]] for g in names], dtype=np.int64))
        word.append(np.array([g[-1] for g in names], dtype=np.int64))
        p.append(np.array([level[g][0] for g in names]))
        bo.append(np.array([level[g][1] for g in names]))
        rows = {g: i for i, g in enumerate(names)}
    return NgramModel(vocab, context, word, p, bo)


def _brute_log10(grams: list[dict], stream: np.ndarray) -> np.ndarray:
    """Back-off scoring by dictionary look-ups: the longest listed n-gram ending at each target
    (within its line), plus the back-offs of the listed contexts from its length up."""
    out, line = [], [BOS_ID]
    for target in map(int, stream):
        line.append(target)
        fits = range(1, min(len(grams), len(line)) + 1)
        longest = max((n for n in fits if tuple(line[-n:]) in grams[n - 1]), default=0)
        p = grams[longest - 1][tuple(line[-longest:])][0] if longest else -np.inf
        for k in range(max(longest, 1), min(len(grams), len(line))):
            p += grams[k - 1].get(tuple(line[-k - 1 : -1]), (0.0, 0.0))[1]
        out.append(p)
        line = [BOS_ID] if target == EOS_ID else line
    return np.array(out)


def test_scores_equal_brute_force_back_off_where_words_and_contexts_are_unlisted():
    """Without some words' n-grams (the unigram rows are then searched, not the word ids) and
    without <s>'s (no line context), scores are still the longest listed n-gram's."""
    vocab, train = corpus(n_lines=300, seed=11)
    held_out = vocab.stream(random_lines(80, 150, seed=12))
    grams = _listed(fit(count_ngrams(train, 3, vocab.size), vocab, "kn"))
    dropped = {int(train[0]), int(train[5])}
    for without in (dropped, dropped | {BOS_ID}):
        kept = [{g: v for g, v in level.items() if not without & set(g)} for level in grams]
        model = _from_listed(vocab, kept)
        assert len(model.keys[0]) < vocab.size
        got = model.score_tokens(held_out).log10_prob
        np.testing.assert_allclose(got, _brute_log10(kept, held_out), rtol=1e-12)
