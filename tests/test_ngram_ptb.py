"""Penn Treebank against KenLM's recorded figures (/work/shared/reference/kenlm-ptb.md)."""

import numpy as np
import pytest

from seqlm.corpus import read_lines, tokenize
from seqlm.evaluate import perplexity
from seqlm.ngram import count_ngrams, fit
from seqlm.ngram.estimate import first_seen
from seqlm.vocab import build_vocabulary
from tests.helpers import PTB

pytestmark = pytest.mark.skipif(not PTB.exists(), reason="PTB data not present")

LMPLZ_DISCOUNTS = [
    [0.25656, 0.82888, 1.26492],
    [0.727802, 1.09876, 1.4713],
    [0.868879, 1.25462, 1.44822],
    [0.942828, 1.38314, 1.43173],
    [0.959671, 1.3879, 1.24171],
]


def test_ptb_kneser_ney_matches_kenlm():
    train = tokenize(read_lines(PTB / "ptb.train.txt"), "whitespace")
    vocab = build_vocabulary(train)
    stream = vocab.stream(train)
    test = vocab.stream(tokenize(read_lines(PTB / "ptb.test.txt"), "whitespace"))
    tables = count_ngrams(stream, 5, vocab.size)
    # KenLM lists 10,002 unigrams: its reserved <unk> besides the corpus's own.
    assert [t.height for t in tables] == [10_001, 264_990, 586_558, 717_733, 737_952]
    for order, target, discounts in ((5, 141.1862071, LMPLZ_DISCOUNTS), (3, 148.2814995, None)):
        model = fit(tables[:order], vocab, "kn", first_seen=first_seen(stream, vocab.size))
        ppl = perplexity(model.score_stream(test), test)
        assert ppl.ppl == pytest.approx(target, rel=1e-7)
        assert (ppl.oov, ppl.targets) == (4794, 82430)
        if discounts:
            np.testing.assert_allclose(model.info["discounts"], discounts, rtol=5e-5)
            assert ppl.ppl_no_unk == pytest.approx(161.847, rel=1e-5)
