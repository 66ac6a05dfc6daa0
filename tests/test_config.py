from __future__ import annotations

import pytest

from seqlm.config import PipelineConfig, load_config
from seqlm.errors import SeqlmError


def test_defaults_file_and_overrides(tmp_path):
    assert load_config().corpus.tokenizer == "punct"
    path = tmp_path / "c.toml"
    path.write_text('[vocab]\nmin_count = 3\n[corpus]\ntokenizer = "whitespace"\n')
    overrides = ["vocab.max_size=100", "unigram.add_k=1", "test_fraction=0.1", "orders=[3]"]
    config = load_config(path, overrides)
    assert config.vocab.min_count == 3 and config.vocab.max_size == 100
    assert config.corpus.tokenizer == "whitespace"
    assert config.unigram.add_k == 1.0 and isinstance(config.unigram.add_k, float)
    assert config.ngram.orders == [3]
    assert config.corpus.fractions == pytest.approx((0.85, 0.05, 0.1))
    assert PipelineConfig.from_dict(config.to_dict()) == config
    assert config.flat()["vocab.min_count"] == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("nope=1", "unknown config key 'nope'"),
        ("vocab.nope=1", "unknown config key 'vocab.nope'"),
        ("min_count=two", "'vocab.min_count' needs a int, not 'two'"),
        ("min_count=-1", "0 \\(auto\\) or more"),
        ("min_count=true", "needs a int"),
        ("tokenizer=bpe", "unknown tokenizer 'bpe'"),
        ("min_count", "not key=value"),
        ("valid_fraction=0.99", "sum below 1"),
        ("add_k=1", "ambiguous: say unigram.add_k or ngram.add_k"),
        ("orders=[2, 11]", "between 1 and 10"),
        ("orders=3", "needs a list"),
        ("smoothing=wb", "unknown smoothing 'wb'"),
        ("rnn.precision=fp16", "rnn.precision must be auto, fp32, bf16, not 'fp16'"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(SeqlmError, match=message):
        load_config(None, [override])


def test_bad_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[vocab]\nsize = 3\n")
    with pytest.raises(SeqlmError, match=r"c\.toml: unknown config key 'vocab.size'"):
        load_config(path)
    path.write_text("[vocab\n")
    with pytest.raises(SeqlmError, match="invalid TOML"):
        load_config(path)
    with pytest.raises(SeqlmError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
