"""The command line as a user meets it: pipeline models scored and sampled, the tokenizer a
model records, one score report, help for every option, --version, a closed pipe."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import polars as pl
import pytest

from flows.cli import HelpFormatter, build_parser, main
from seqlm import corpus, stages
from seqlm.config import load_config
from seqlm.ngram import write_arpa
from seqlm.store import Store
from tests.helpers import BUNDLED, prepare

SEQLM = str(Path(sys.executable).with_name("seqlm"))
# Capitals and punctuation: the punct tokenizer (the pipeline's default) and whitespace differ.
TEXT = ["First Citizen:", "Before we proceed any further, hear me speak.", "", "You are all."]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict[str, Path]:
    """An n-gram and a recurrent model built by the pipeline's stages on a small corpus (punct
    tokenizer), and a text to score."""
    root = tmp_path_factory.mktemp("pipeline")
    source = root / "corpus.txt"
    source.write_text("".join(BUNDLED.read_text().splitlines(keepends=True)[:600]))
    config = load_config(
        None,
        ["rnn.nhid=16", "rnn.emsize=16", "rnn.epochs=1", "rnn.bptt=10", "rnn.batch_size=4"],
    )
    store = Store(root / "store")
    data = prepare(store, source, config)
    text = root / "text.txt"
    text.write_text("\n".join(TEXT) + "\n")
    return {
        "ngram": stages.ngram(store, data.tables, 2, config.ngram).path,
        "rnn": stages.rnn(store, data, "lstm", config.rnn).path,
        "text": text,
    }


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def score(capsys, *args: str) -> dict:
    status, out, err = run_cli(capsys, *args, "--json")
    assert status == 0, err
    return json.loads(out)


def targets(tokenizer: str) -> int:
    """Tokens plus one </s> per line of TEXT under ``tokenizer``."""
    lines = corpus.tokenize(pl.Series(TEXT), tokenizer)
    return int(lines["tokens"].list.len().sum()) + lines.height


def test_rnn_score_and_sample_take_any_folder_the_pipeline_wrote(pipeline, capsys):
    folder = pipeline["rnn"]
    given = [folder, folder / stages.CHECKPOINTS, folder / stages.CHECKPOINTS / "best.pt"]
    reports = [score(capsys, "rnn", "score", path, pipeline["text"]) for path in given]
    assert reports[0] == reports[1] == reports[2]
    assert reports[0]["targets"] == targets("punct") != targets("whitespace")
    status, out, err = run_cli(capsys, "rnn", "sample", folder, "--words", "30", "--seed", "1")
    assert status == 0, err
    vocab = set(stages.load_vocabulary(stages_vocab(folder)).tokens.to_list())
    assert out.split() and set(out.split()) <= vocab


def stages_vocab(rnn_folder: Path):
    """The vocabulary artifact a recurrent model's manifest names."""
    (vocab,) = stages.inputs(Store(rnn_folder.parents[1]).get("rnn", rnn_folder.name), "vocab")
    return vocab


def test_ngram_score_reads_the_recorded_tokenizer(pipeline, capsys):
    folder, text = pipeline["ngram"], pipeline["text"]
    recorded = score(capsys, "ngram", "score", folder, text)
    assert recorded == score(capsys, "ngram", "score", folder, text, "--tokenizer", "punct")
    assert recorded["targets"] == targets("punct")
    # An ARPA file records no tokenizer: whitespace, as KenLM reads text, unless told otherwise.
    arpa = folder.parent / "kn2.arpa"
    write_arpa(stages.LOADERS["ngram"](folder), arpa)
    assert score(capsys, "ngram", "score", arpa, text)["targets"] == targets("whitespace")
    told = score(capsys, "ngram", "score", arpa, text, "--tokenizer", "punct")
    assert told["perplexity"] == pytest.approx(recorded["perplexity"], rel=1e-6)


@pytest.mark.parametrize("family", ["ngram", "rnn"])
def test_a_tokenizer_other_than_the_recorded_one_is_refused(pipeline, capsys, family):
    model = pipeline[family]
    status, out, err = run_cli(
        capsys, family, "score", model, pipeline["text"], "--tokenizer", "whitespace"
    )
    assert status == 1 and out == ""
    assert err.strip() == (
        f"seqlm: error: {model}: trained on text split by the punct tokenizer, not --tokenizer "
        "whitespace (scores would compare other tokens)"
    )


def test_both_score_commands_print_one_report(pipeline, capsys):
    reports = {}
    for family in ("ngram", "rnn"):
        status, out, err = run_cli(capsys, family, "score", pipeline[family], pipeline["text"])
        assert status == 0, err
        reports[family] = [line.split("\t")[0] for line in out.splitlines()]
        assert sorted(score(capsys, family, "score", pipeline[family], pipeline["text"])) == [
            "oov",
            "perplexity",
            "perplexity_no_unk",
            "targets",
        ]
    assert (
        reports["ngram"]
        == reports["rnn"]
        == [
            "Perplexity including OOVs:",
            "Perplexity excluding OOVs:",
            "OOVs:",
            "Tokens:",
        ]
    )


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"seqlm {version('seqlm')}"


def all_options(parser: argparse.ArgumentParser, path: str = "seqlm"):
    """Every (command, parser, action) of the parser and its sub-commands, help actions aside."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from all_options(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, parser, action


def test_every_option_of_every_command_has_help_with_its_default():
    options = list(all_options(build_parser()))
    assert {path for path, _, _ in options} >= {
        "seqlm run", "seqlm serve", "seqlm compare", "seqlm ngram count", "seqlm ngram estimate",
        "seqlm ngram score", "seqlm ngram tables", "seqlm store tables", "seqlm rnn train",
        "seqlm rnn sample", "seqlm rnn score",
    }  # fmt: skip
    for path, sub, action in options:
        name = f"{path} {'/'.join(action.option_strings) or action.dest}"
        assert action.help, f"{name}: no help"
        assert sub.formatter_class is HelpFormatter, f"{path}: shows no defaults"
        shown = HelpFormatter(path)._get_help_string(action)
        if action.option_strings and action.default not in (None, False):
            assert "default" in shown, f"{name}: its default is not shown"


def closed_pipe(*args: str) -> tuple[int, str]:
    """``seqlm ARGS`` writing to a pipe whose reader has gone: exit status and stderr."""
    process = subprocess.Popen(
        [SEQLM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    process.stdout.close()
    err = process.stderr.read()
    return process.wait(timeout=120), err


@pytest.mark.slow
def test_a_closed_pipe_ends_every_command_quietly(pipeline, tmp_path):
    text = pipeline["text"]
    for args in (
        ["--help"],
        ["--version"],
        ["ngram", "score", pipeline["ngram"], text],
        ["ngram", "tables", "--json", "--store", pipeline["ngram"].parents[1]],
        ["rnn", "score", pipeline["rnn"], text, "--json"],
        ["rnn", "sample", pipeline["rnn"], "--words", "2000"],
        ["rnn", "train", "--help"],
    ):
        status, err = closed_pipe(*map(str, args))
        assert status in (0, 141) and err == "", f"{args}: {status} {err}"


def test_the_tools_start_without_prefect_or_mlflow():
    """The parser, the library's tools and the served process's module import neither Prefect nor
    MLflow: ``main`` and ``serve_deployments`` apply the project's environment defaults before
    either reads its settings."""
    code = (
        "import sys\nimport flows.serve\nfrom flows.cli import main\n"
        "try:\n    status = main(sys.argv[1:])\n"
        "except SystemExit as done:\n    status = done.code\n"
        "print(status, sorted(m for m in ('prefect', 'mlflow') if m in sys.modules))"
    )
    for args in (["--help"], ["ngram", "tables", "--store", "absent"], ["rnn", "score", "-h"]):
        done = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
        )
        assert done.stdout.splitlines()[-1] == "0 []", (args, done.stdout, done.stderr)


def test_a_saved_n_gram_model_is_scored_and_sampled_without_pyarrow(pipeline):
    """Start-up is most of scoring a short text: ``ngram score`` and ``ngram sample`` of a saved
    model import none of the counting machinery, nor pyarrow (0.1 s), since the model's arrays
    are NumPy files."""
    code = (
        "import sys\nfrom flows.cli import main\nstatus = main(sys.argv[1:])\n"
        "print(status, sorted(m for m in ('pyarrow', 'seqlm.ngram.counts') if m in sys.modules))"
    )
    for args in (
        ["ngram", "score", pipeline["ngram"], pipeline["text"], "--json"],
        ["ngram", "sample", pipeline["ngram"], "--words", "50"],
    ):
        done = subprocess.run(
            [sys.executable, "-c", code, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.stdout.splitlines()[-1] == "0 []", (args, done.stdout, done.stderr)


def test_the_environment_defaults_never_override_the_user(tmp_path, monkeypatch):
    from flows.settings import apply_defaults

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_HOME")
    monkeypatch.setenv("MLFLOW_CONFIGURE_LOGGING", "true")
    apply_defaults()
    assert os.environ["PREFECT_HOME"] == str(tmp_path / ".prefect")
    assert os.environ["MLFLOW_CONFIGURE_LOGGING"] == "true"


@pytest.mark.parametrize("family", ["ngram", "rnn"])
def test_an_empty_text_is_refused_in_one_line(pipeline, capsys, tmp_path, family):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    status, out, err = run_cli(capsys, family, "score", pipeline[family], empty)
    assert (status, out, err) == (1, "", f"seqlm: error: {empty}: no text to score\n")
