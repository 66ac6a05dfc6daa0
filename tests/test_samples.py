from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from seqlm.ngram import count_ngrams, fit
from seqlm.samples import sample_lines
from seqlm.unigram import UnigramModel
from seqlm.vocab import BOS_ID, EOS_ID, Vocabulary, build_vocabulary

# A corpus whose every line is "a b c": a bigram model knows what follows, a unigram one cannot.
TRAIN = pl.DataFrame({"tokens": [["a", "b", "c"]] * 50 + [["c", "b", "a"]] * 5})


def test_bigram_lines_follow_their_context_and_unigram_lines_do_not():
    vocab = build_vocabulary(TRAIN)
    bigram = fit(count_ngrams(vocab.stream(TRAIN), 2, vocab.size), vocab, "addk", add_k=1e-4)
    lines = sample_lines(bigram, vocab, n_lines=20, seed=3)
    assert len(lines) == 20
    assert sum(line == "a b c" for line in lines) >= 15
    unigram = sample_lines(UnigramModel.fit(vocab, 1e-4), vocab, n_lines=20, seed=3)
    assert sum(line == "a b c" for line in unigram) <= 5


def test_next_distribution_is_the_scorer_s():
    vocab = build_vocabulary(TRAIN)
    model = fit(
        count_ngrams(vocab.stream(TRAIN), 3, vocab.size), vocab, "kn", discount_fallback=True
    )
    stream = vocab.stream(pl.DataFrame({"tokens": [["a", "b", "a", "c"]]}))
    scored = model.score_tokens(stream).log10_prob
    history = [BOS_ID]
    for target, log10p in zip(stream, scored, strict=True):
        assert model.next_log10(np.array(history))[target] == pytest.approx(log10p)
        history.append(int(target))
    ids = model.sample(200, seed=1)
    assert BOS_ID not in ids and EOS_ID in ids


LONG_LINE = pl.DataFrame({"tokens": [["a", "b", "c", "d"] * 500]})


def test_a_model_that_never_ends_a_line_in_its_budget_gives_one_long_line():
    vocab = build_vocabulary(LONG_LINE)
    unigram = UnigramModel.fit(vocab, 1e-9)  # p(</s>) = 1/2001
    bigram = fit(count_ngrams(vocab.stream(LONG_LINE), 2, vocab.size), vocab, "addk", add_k=1e-9)
    for model in (unigram, bigram):
        lines = sample_lines(model, vocab, n_lines=3, seed=1, max_words=30)
        assert len(lines) == 1 and len(lines[0].split()) == 30, lines
    assert sample_lines(unigram, vocab, max_words=0) == []


def test_complete_lines_come_first_and_the_cut_one_last():
    vocab = build_vocabulary(LONG_LINE)
    ids = np.array([EOS_ID, 3, 4, EOS_ID, 5, 6])
    fixed = type("Fixed", (), {"sample": lambda self, n, seed=0: ids[:n]})()
    a, b, c = vocab.decode(np.array([3, 4, 5]))
    assert sample_lines(fixed, vocab, n_lines=3) == [
        "</s>",
        f"{a} {b}",
        f"{c} {vocab.decode([6])[0]}",
    ]
    assert sample_lines(fixed, vocab, n_lines=2) == ["</s>", f"{a} {b}"]
    assert sample_lines(fixed, vocab, n_lines=3, max_words=4) == ["</s>", f"{a} {b}"]


def test_a_vocabulary_of_only_the_specials_still_samples():
    # A min_count that leaves no word is refused; a model over the specials alone still samples.
    vocab = Vocabulary(build_vocabulary(TRAIN).table.head(3))
    assert vocab.tokens.to_list() == ["<unk>", "<s>", "</s>"]
    lines = sample_lines(UnigramModel.fit(vocab), vocab, n_lines=3, seed=0, max_words=50)
    assert 1 <= len(lines) <= 3 and all(set(line.split()) <= {"<unk>", "</s>"} for line in lines)


def test_a_recurrent_model_that_never_ends_a_line_gives_one_long_line():
    import torch

    from seqlm.rnn import RNNLM, ModelConfig, RNNScorer

    vocab = build_vocabulary(TRAIN)
    model = RNNLM("lstm", ModelConfig(emsize=8, nhid=8, nlayers=1, dropout=0.0), vocab.size)
    with torch.no_grad():
        model.decoder.bias[EOS_ID] = -1e4
    lines = sample_lines(RNNScorer(model), vocab, n_lines=3, seed=0, max_words=25)
    assert len(lines) == 1 and len(lines[0].split()) == 25
    with torch.no_grad():
        model.decoder.bias[EOS_ID] = 1e4
    assert sample_lines(RNNScorer(model), vocab, n_lines=3, seed=0, max_words=25) == ["</s>"] * 3
