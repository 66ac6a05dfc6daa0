from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from seqlm.ngram import count_ngrams, fit
from seqlm.samples import sample_lines
from seqlm.unigram import UnigramModel
from seqlm.vocab import BOS_ID, EOS_ID, build_vocabulary

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
