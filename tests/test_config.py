from __future__ import annotations

from dataclasses import fields

import polars as pl
import pytest

from seqlm.config import PipelineConfig, RnnConfig, load_config, writable_file
from seqlm.errors import SeqlmError
from seqlm.rnn.config import ModelConfig, TrainConfig
from seqlm.vocab import build_vocabulary


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
        ("tokenizer=nonsense", "unknown tokenizer 'nonsense'"),
        ("min_count", "not key=value"),
        ("valid_fraction=0.96", "corpus.valid_fraction and corpus.test_fraction must sum below 1"),
        ("test_fraction=0", r"corpus.test_fraction must be between 0 and 1, not 0"),
        ("valid_fraction=nan", "corpus.valid_fraction must be a finite number, not nan"),
        ("text_field=''", "corpus.text_field must not be empty"),
        ("unigram.add_k=-1", "unigram.add_k must be finite and not negative"),
        ("unigram.add_k=inf", "unigram.add_k must be a finite number, not inf"),
        ("ngram.add_k=0", "ngram.add_k must be positive"),
        ("orders=[3, 2, 3]", r"ngram.orders lists 3 twice: \[3, 2, 3\]"),
        ("max_size=3", "vocab.max_size must be 0 \\(no limit\\) or above 3, not 3"),
        ("add_k=1", "ambiguous: say unigram.add_k or ngram.add_k"),
        ("orders=[2, 13]", "between 1 and 12"),
        ("orders=3", "needs a list"),
        ("smoothing=wb", "unknown smoothing 'wb'"),
        ("rnn.precision=fp16", "rnn.precision must be one of auto, fp32, bf16, not 'fp16'"),
        ("rnn.lr=-1", "^rnn.lr must be positive, not -1$"),
        ("rnn.lr=nan", "^rnn.lr must be a finite number, not nan$"),
        ("rnn.lr=-inf", "^rnn.lr must be a finite number, not -inf$"),
        ("rnn.clip=0", "^rnn.clip must be positive, not 0$"),
        ("rnn.batch_size=0", "^rnn.batch_size must be at least 1, not 0$"),
        ("rnn.bptt=-3", "^rnn.bptt must be at least 1, not -3$"),
        ("rnn.emsize=0", "^rnn.emsize must be at least 1"),
        ("rnn.nhid=0", "^rnn.nhid must be at least 1"),
        ("rnn.nlayers=0", "^rnn.nlayers must be at least 1"),
        ("rnn.epochs=0", "^rnn.epochs must be at least 1"),
        ("rnn.dropout=1", r"^rnn.dropout must be in \[0, 1\), not 1$"),
        ("rnn.dropout=-0.1", r"^rnn.dropout must be in \[0, 1\), not -0.1$"),
        ("rnn.max_minutes=-1", r"^rnn.max_minutes must not be negative \(0: no time budget\)"),
        ("rnn.optimizer=adam", "^rnn.optimizer must be one of sgd, adamw, not 'adam'$"),
        ("rnn.seed=-1", "^rnn.seed must be between 0 and"),
        ("rnn.device=tpu", "^rnn.device must be one of auto, cpu, cuda"),
        ("rnn.tied=true", None),  # emsize == nhid by default
        ("rnn.models=['gru', 'gru']", "^rnn.models lists 'gru' twice"),
        ("experiment=''", "^run.experiment must not be empty or blank"),
        ('experiment="a\\tb"', "^run.experiment must not hold control characters"),
        ("experiment='" + "x" * 257 + "'", "^run.experiment must be at most 256 characters"),
        ("store=''", "^run.store must name a folder"),
    ],
)
def test_bad_overrides(override, message):
    if message is None:
        load_config(None, [override])
        return
    with pytest.raises(SeqlmError, match=message):
        load_config(None, [override])


def test_tied_needs_equal_sizes_wherever_it_is_set():
    with pytest.raises(
        SeqlmError, match=r"^rnn.tied needs rnn.emsize == rnn.nhid, not 128 and 64$"
    ):
        load_config(None, ["rnn.tied=true", "rnn.nhid=64"])
    with pytest.raises(SeqlmError, match=r"^tied needs emsize == nhid, not 200 and 64$"):
        ModelConfig(tied=True, emsize=200, nhid=64)


def test_one_rule_for_every_recurrent_setting():
    """The pipeline's section, the library's configs: the same rule, named as each spells it."""
    with pytest.raises(SeqlmError, match=r"^rnn.lr must be positive, not -2$"):
        RnnConfig(lr=-2.0)
    with pytest.raises(SeqlmError, match=r"^lr must be positive, not -2$"):
        TrainConfig(lr=-2.0)
    with pytest.raises(SeqlmError, match=r"^max_minutes must be a finite number, not inf$"):
        TrainConfig(max_minutes=float("inf"))
    with pytest.raises(SeqlmError, match=r"^dropout must be a finite number, not nan$"):
        ModelConfig(dropout=float("nan"))


def test_the_rnn_section_is_the_library_config_with_a_list_of_models(tmp_path):
    """One set of recurrent settings: every training setting is reachable from a TOML file and
    an override, with the library's defaults."""
    rnn = RnnConfig()
    assert TrainConfig.of(rnn) == TrainConfig()
    assert [f.name for f in fields(RnnConfig)] == [*(f.name for f in fields(TrainConfig)), "models"]
    path = tmp_path / "c.toml"
    path.write_text('[rnn]\npatience = 5\nschedule = "fixed"\n')
    config = load_config(path, ["rnn.lr_decay=0.25", "init_range=0.05", "rnn.weight_decay=0.01"])
    assert (config.rnn.patience, config.rnn.schedule, config.rnn.lr_decay) == (5, "fixed", 0.25)
    assert (config.rnn.init_range, config.rnn.weight_decay) == (0.05, 0.01)
    with pytest.raises(SeqlmError, match=r"^rnn.schedule must be one of plateau, fixed, not 'x'$"):
        load_config(None, ["rnn.schedule=x"])


def test_store_is_checked_by_writing_in_it(tmp_path):
    store = tmp_path / "a" / "store"
    config = load_config(None, [f"run.store='{store}'"])
    assert config.run.check_store() == store
    assert (
        list(tmp_path.iterdir()) == []
    )  # nothing made: the run makes the store, the probe is gone
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for path in (blocker, blocker / "store"):
        config = load_config(None, [f"run.store='{path}'"])
        with pytest.raises(SeqlmError, match=r"^run.store: ") as caught:
            config.run.check_store()
        assert f"{blocker} is not a directory" in str(caught.value)
    assert blocker.read_text() == "x"


def test_report_path_is_checked(tmp_path):
    assert writable_file(tmp_path / "r.json", "--report") == tmp_path / "r.json"
    with pytest.raises(SeqlmError, match=f"^--report: {tmp_path} is a directory$"):
        writable_file(tmp_path, "--report")
    with pytest.raises(SeqlmError, match=f"^--report: {tmp_path / 'no'}: no such directory$"):
        writable_file(tmp_path / "no" / "r.json", "--report")


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


def test_min_count_that_leaves_no_word_is_refused():
    lines = pl.DataFrame({"tokens": [["a", "b"], ["a", "c"]]})
    assert build_vocabulary(lines, 2).size == 4
    message = (
        r"^vocab.min_count 3 leaves no word \(the most frequent training type occurs 2 times\)$"
    )
    with pytest.raises(SeqlmError, match=message):
        build_vocabulary(lines, 3)


def test_run_refuses_bad_outputs_before_the_flow_starts(tmp_path, capsys):
    from flows.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n" * 30)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for flags, message in [
        (["--report", str(tmp_path)], f"--report: {tmp_path} is a directory"),
        (["--report", str(tmp_path / "no" / "r.json")], f"--report: {tmp_path / 'no'}: no such"),
        (["--set", f"run.store='{blocker}'"], f"run.store: {blocker} is not a directory"),
        (["--set", "rnn.lr=0"], "rnn.lr must be positive, not 0"),
    ]:
        store = ["--set", f"run.store='{tmp_path / 'store'}'"]  # a later --set wins
        assert main(["run", "--corpus", str(corpus), *store, *flags]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"seqlm: error: {message}") and err.count("\n") == 1, err
    assert blocker.read_text() == "x"
