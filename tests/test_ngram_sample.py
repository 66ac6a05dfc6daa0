"""The vectorised sampler against the model's own next-word distributions, KenLM's scores of what
it writes, and the command line."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from flows.cli import main
from seqlm.errors import SeqlmError
from seqlm.ngram import NgramModel, count_ngrams, fit, read_arpa, write_arpa
from seqlm.ngram.sample import Sampler, _Increasing
from seqlm.vocab import BOS_ID, EOS_ID, build_vocabulary
from tests.ngram_reference import corpus


def small_model(smoothing: str, order: int = 3, **options) -> NgramModel:
    vocab, train = corpus(n_lines=300, n_words=12, seed=3)
    tables = count_ngrams(train, order, vocab.size)
    return fit(tables, vocab, smoothing, add_k=0.5, discount_fallback=True, **options)


def skewed(model: NgramModel) -> NgramModel:
    """The model with every listed back-off weight off by 30 %: its next-word distributions no
    longer sum to one, and the sampler must draw them normalised all the same."""
    bumped = [np.where(bo != 0, bo + np.log10(1.3), 0.0) for bo in model.log10_backoff]
    return NgramModel(
        vocab=model.vocab,
        context=model.context,
        word=model.word,
        log10_prob=model.log10_prob,
        log10_backoff=bumped,
        info=model.info,
    )


def next_word_chi2(model: NgramModel, ids: np.ndarray, min_seen: int) -> tuple[float, int]:
    """Pearson's χ² of the words drawn after each history of two words (``<s>``-padded, within
    a line) seen at least ``min_seen`` times, against the model's ``next_log10`` there, with
    <s> left out and renormalised; and its degrees of freedom. Every drawn word has p > 0."""
    size = model.vocab.size
    before = np.concatenate(([EOS_ID, EOS_ID], ids[:-2])), np.concatenate(([EOS_ID], ids[:-1]))
    first = before[1] == EOS_ID  # the line's first word: history <s>
    h1 = np.where(first, BOS_ID, before[1])
    h2 = np.where(first, -1, np.where(before[0] == EOS_ID, BOS_ID, before[0]))
    history = (h2 + 1) * size + h1
    seen, which, counts = np.unique(history, return_inverse=True, return_counts=True)
    chi2, dof = 0.0, 0
    for k in np.flatnonzero(counts >= min_seen):
        older, last = divmod(int(seen[k]), size)
        p = 10.0 ** model.next_log10(np.array([last] if older == 0 else [older - 1, last]))
        p[BOS_ID] = 0.0
        expected = p / p.sum() * counts[k]
        observed = np.bincount(ids[which == k], minlength=size)
        assert observed[expected == 0].sum() == 0
        cells = expected >= 5  # the rarer words pooled into one cell
        e = np.append(expected[cells], expected[~cells].sum())
        o = np.append(observed[cells], observed[~cells].sum())
        keep = e > 0
        chi2 += float((((o - e) ** 2)[keep] / e[keep]).sum())
        dof += int(keep.sum()) - 1
    return chi2, dof


@pytest.mark.parametrize(
    ("smoothing", "options", "change"),
    [
        ("kn", {}, None),
        ("kn", {"prune": (0, 1, 1)}, None),  # the pruned n-grams' mass in the back-offs
        ("addk", {}, None),
        ("mle", {}, None),
        ("kn", {}, skewed),
    ],
    ids=["kn", "kn-pruned", "addk", "mle", "kn-unnormalised"],
)
def test_next_words_follow_the_model(smoothing, options, change):
    model = small_model(smoothing, **options)
    model = change(model) if change else model
    ids = model.sample(1_000_000, seed=5)
    chi2, dof = next_word_chi2(model, ids, min_seen=2000)
    assert dof > 200
    # Within 5 standard deviations of χ²'s mean: a sampler off by 1 % at one word fails.
    assert chi2 < dof + 5 * np.sqrt(2 * dof), (chi2, dof)


def test_a_wrong_distribution_fails_the_same_check():
    """The χ² check has teeth: the unskewed model's draws, judged by the skewed one, fail."""
    model = small_model("kn")
    chi2, dof = next_word_chi2(skewed(model), model.sample(1_000_000, seed=5), min_seen=2000)
    assert chi2 > dof + 20 * np.sqrt(2 * dof)


def test_a_line_s_place_does_not_depend_on_its_length():
    """A unigram model ending a line with p = 1/4: the first line is as long as any (4 tokens
    on average with its </s>), not the first of many streams to end (nearer 1)."""
    lines = pl.DataFrame({"tokens": [["a", "b", "c"]] * 100})
    vocab = build_vocabulary(lines)
    model = fit(count_ngrams(vocab.stream(lines), 1, vocab.size), vocab, "mle")
    assert 10 ** model.log10_prob[0][EOS_ID] == pytest.approx(0.25)
    firsts = [np.argmax(model.sample(2048, seed) == EOS_ID) + 1 for seed in range(400)]
    assert np.mean(firsts) == pytest.approx(4.0, abs=0.35)  # standard error 0.17


def test_kenlm_scores_every_sampled_line(tmp_path):
    kenlm = pytest.importorskip("kenlm")
    model = small_model("kn", order=4)
    write_arpa(model, tmp_path / "m.arpa")
    ids = model.sample(20_000, seed=2)
    ends = np.flatnonzero(ids == EOS_ID)
    lines = np.split(ids[: ends[-1] + 1], ends[:-1] + 1)
    ours = model.score_tokens(ids[: ends[-1] + 1]).sentence_log10()
    assert np.isfinite(ours).all() and len(ours) > 500
    peer = kenlm.Model(str(tmp_path / "m.arpa"))
    texts = [" ".join(model.vocab.decode(line[:-1])) for line in lines]
    theirs = [peer.score(text, bos=True, eos=True) for text in texts]
    np.testing.assert_allclose(theirs, ours, atol=1e-4)


def test_the_sample_is_deterministic_exact_in_length_and_whole_lines_first():
    model = small_model("kn")
    ids = model.sample(10_000, seed=4)
    assert len(ids) == 10_000 and BOS_ID not in ids
    np.testing.assert_array_equal(ids, model.sample(10_000, seed=4))
    assert not np.array_equal(ids, model.sample(10_000, seed=5))
    blocks = list(model.sampler.blocks(3_000_000, seed=1))
    assert len(blocks) > 2 and sum(map(len, blocks)) == 3_000_000
    assert all(block[-1] == EOS_ID for block in blocks[:-1])  # whole lines until the cut
    assert len(model.sample(1, seed=0)) == 1 and len(model.sample(0)) == 0


def test_a_model_missing_a_suffix_is_refused(tmp_path):
    arpa = tmp_path / "gap.arpa"
    arpa.write_text(
        "\\data\\\nngram 1=5\nngram 2=2\nngram 3=1\n\n\\1-grams:\n"
        "-1\t<unk>\t0\n-99\t<s>\t0\n-1\t</s>\t0\n-1\ta\t0\n-1\tb\t0\n\n"
        "\\2-grams:\n-0.5\t<s> a\t0\n-0.5\ta b\t0\n\n"
        "\\3-grams:\n-0.1\t<s> a </s>\n\n\\end\\\n"  # its suffix, "a </s>", is not listed
    )
    with pytest.raises(SeqlmError, match="3-grams whose last 2 words"):
        read_arpa(arpa).sample(1000)  # refused once a line's draws reach "<s> a"


def test_cli_writes_the_sample_as_text(tmp_path, capsys):
    model = small_model("addk")
    arpa, out = tmp_path / "m.arpa", tmp_path / "sample.txt"
    write_arpa(model, arpa)
    assert (
        main(["ngram", "sample", str(arpa), "--words", "5000", "--seed", "3", "--out", str(out)])
        == 0
    )
    text = out.read_text()
    assert main(["ngram", "sample", str(arpa), "--words", "5000", "--seed", "3"]) == 0
    assert capsys.readouterr().out == text
    loaded = read_arpa(arpa)
    ids = loaded.sample(5000, seed=3)
    lines = text.splitlines()
    assert len(lines) == np.count_nonzero(ids == EOS_ID) + (ids[-1] != EOS_ID)
    assert sum(len(line.split()) for line in lines) + len(lines) - (ids[-1] != EOS_ID) == 5000
    parts = np.split(ids, np.flatnonzero(ids == EOS_ID) + 1)
    assert (
        lines
        == [" ".join(loaded.vocab.decode(part[part != EOS_ID])) for part in parts][: len(lines)]
    )


def test_cli_refuses_bad_input_in_one_line(tmp_path, capsys):
    arpa, out = tmp_path / "m.arpa", tmp_path / "out.txt"
    write_arpa(small_model("addk"), arpa)  # addk logs nothing: stderr holds the error alone
    for words, model in (("0", arpa), ("-3", arpa), ("5", tmp_path / "missing.arpa")):
        assert main(["ngram", "sample", str(model), "--words", words, "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("positive" in err[0] or "missing.arpa" in err[0]), err
    assert not out.exists()


def test_a_sample_does_not_depend_on_the_contexts_reached_before():
    """The sampler works out each context's tables as draws first reach it: a sampler that has
    drawn elsewhere already gives the same lines as a fresh one."""
    model = small_model("kn")
    warm = model.sampler
    list(warm.blocks(50_000, seed=11))
    fresh = Sampler(model.keys, model.log10_prob, model.log10_backoff, model.vocab.size)
    for seed in (0, 4):
        np.testing.assert_array_equal(
            np.concatenate(list(warm.blocks(20_000, seed))),
            np.concatenate(list(fresh.blocks(20_000, seed))),
        )


def test_contexts_worked_out_as_reached_or_whole_give_the_same_words():
    """An order with more n-grams than the words asked for is worked out a context at a time as
    draws reach it, a smaller one whole at once: a sampler whose orders are all whole (from a long
    sample before) draws the same words as fresh ones that reach their contexts one by one."""
    vocab, train = corpus(n_lines=4000, n_words=150, seed=6)
    model = fit(count_ngrams(train, 4, vocab.size), vocab, "kn", discount_fallback=True)
    tables = (model.keys, model.log10_prob, model.log10_backoff, model.vocab.size)
    whole = Sampler(*tables)
    list(whole.blocks(max(map(len, model.keys)), seed=1))
    assert all(whole.complete)
    for n_words, seed in ((3000, 0), (3000, 3), (200, 5), (1, 2)):
        fresh = Sampler(*tables)
        words = np.concatenate(list(fresh.blocks(n_words, seed)))
        assert not fresh.complete[-1]  # 4-grams: 8,012
        np.testing.assert_array_equal(words, np.concatenate(list(whole.blocks(n_words, seed))))


def test_the_two_stage_search_counts_as_numpy_s():
    """Every 16th value searched first, then 16 halved: NumPy's count of values ≤ each target,
    with the array extended piece by piece (ties, targets before the first and past the last)."""
    rng = np.random.default_rng(0)
    values = np.sort(np.round(rng.random(5000) * 300, 1))
    store = _Increasing(len(values) + 7)
    for piece in np.array_split(values, [1, 17, 40, 2000, 2001]):
        store.extend(piece)
        targets = np.sort(np.concatenate([rng.random(3000) * 320 - 10, values[::7]]))
        expected = np.searchsorted(values[: store.filled], targets, side="right")
        np.testing.assert_array_equal(store.count_at_most(targets), expected)
