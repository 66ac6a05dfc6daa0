from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from seqlm.evaluate import perplexity
from seqlm.unigram import UnigramModel
from seqlm.vocab import BOS_ID, build_vocabulary

TRAIN = pl.DataFrame({"tokens": [["a", "b", "a"], ["a", "c"]]})


def test_add_k_probabilities():
    vocab = build_vocabulary(TRAIN)  # <unk> 0, <s> 0, </s> 2, a 3, b 1, c 1
    model = UnigramModel.fit(vocab, add_k=1.0)
    p = np.exp(model.logprob)
    assert p[BOS_ID] == 0.0
    assert p.sum() == pytest.approx(1.0)
    # (count + 1) / (7 targets + 1 · 5 predictable types)
    assert p[vocab.ids(pl.Series(["a"])).item()] == pytest.approx(4 / 12)
    assert p[0] == pytest.approx(1 / 12)


def test_perplexity_by_hand():
    vocab = build_vocabulary(TRAIN)
    model = UnigramModel.fit(vocab, add_k=0.0)
    stream = vocab.stream(pl.DataFrame({"tokens": [["a", "zzz"]]}))  # a, <unk>, </s>
    result = perplexity(model.score_stream(stream), stream)
    assert result.targets == 3 and result.oov == 1
    assert result.ppl == np.inf  # MLE gives the unseen <unk> probability 0
    assert result.ppl_no_unk == pytest.approx(np.exp(-(np.log(3 / 7) + np.log(2 / 7)) / 2))


def test_round_trip(tmp_path):
    vocab = build_vocabulary(TRAIN)
    model = UnigramModel.fit(vocab, 0.5)
    model.save(tmp_path, vocab)
    assert np.array_equal(UnigramModel.load(tmp_path).logprob, model.logprob)
