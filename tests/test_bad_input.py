"""Bad input, one row per case: every command answers with exactly one line that names the file or
setting and the problem, the row's exit status, no traceback, and no temporary entry left behind.

Rows run the real ``seqlm`` command line in-process (``flows.cli.main``) inside a temporary working
folder; the rows that need the orchestrated pipeline to start run it as a subprocess and are marked
``slow``. Store damage has rows of its own below: the re-run repairs the store and gives the
undamaged figures.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flows.cli import main
from tests.helpers import prefect_home, run_seqlm

# A Zipf-like vocabulary, so that Kneser–Ney finds counts-of-counts to estimate discounts from.
WORDS = [f"w{i}" for i in range(400)]
TEMPORARY = re.compile(r"^\.(tmp|work|lock|old)|\.tmp-|\.old-|^\.damaged")


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, len(WORDS) + 1)
    p = weights / weights.sum()
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 9), p=p)) for _ in range(n)]


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


GOOD = "\n".join(sentences(300)) + "\n"


def good_corpus(t: Path) -> None:
    write(t / "good.txt", GOOD)


def split_dir(t: Path, **replace: str | bytes) -> None:
    texts: dict[str, str | bytes] = {
        "train": "\n".join(sentences(200, 1)) + "\n",
        "valid": "\n".join(sentences(20, 2)) + "\n",
        "test": "\n".join(sentences(20, 3)) + "\n",
    }
    texts.update(replace)
    for split, text in texts.items():
        write(t / "corpus" / f"{split}.txt", text)


def fifo(t: Path) -> None:
    os.mkfifo(t / "pipe.txt")


def jsonl(rows: list[object]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def parquet(t: Path, frame: pl.DataFrame) -> None:
    frame.write_parquet(t / "docs.parquet")


def arpa(t: Path, edit: Callable[[str], str] = lambda s: s) -> None:
    """A small real ARPA model (estimated by seqlm), then edited."""
    good_corpus(t)
    assert (
        main(["ngram", "estimate", str(t / "good.txt"), "-o", "3", "--arpa", str(t / "m.arpa")])
        == 0
    )
    write(t / "m.arpa", edit((t / "m.arpa").read_text()))
    write(t / "text.txt", "w0 w1 w2\nw3 nope\n")


def saved_model(t: Path, damage: Callable[[Path], None]) -> None:
    good_corpus(t)
    argv = ["ngram", "estimate", str(t / "good.txt"), "-o", "3", "--arpa", str(t / "m.arpa")]
    assert main([*argv, "--save", str(t / "model")]) == 0
    damage(t / "model")
    write(t / "text.txt", "w0 w1 w2\nw3 nope\n")


def first_file(folder: Path) -> Path:
    return sorted(p for p in folder.rglob("*") if p.is_file())[0]


def replace_line(text: str, old: str, new: str) -> str:
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(old))
    lines[index] = new + lines[index][len(old) :]
    return "\n".join(lines) + "\n"


def second_unigram(text: str, value: str) -> str:
    """The ARPA text with the log-probability of its second unigram entry set to ``value``."""
    lines = text.splitlines()
    start = lines.index("\\1-grams:") + 2
    parts = lines[start].split("\t")
    parts[0] = value
    lines[start] = "\t".join(parts)
    return "\n".join(lines) + "\n"


def bigram_backoff(text: str, value: str) -> str:
    lines = text.splitlines()
    start = lines.index("\\2-grams:") + 1
    parts = lines[start].split("\t")
    lines[start] = "\t".join([*parts[:2], value])
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    """``argv`` and ``names`` may hold ``{t}``, the row's working folder."""

    id: str
    argv: list[str]
    names: str  # the file or setting the one line must name
    problem: str  # a regular expression the line must match (the problem, in words)
    setup: Callable[[Path], None] = lambda t: None
    status: int = 1
    marks: list[pytest.MarkDecorator] = field(default_factory=list)


RUN = ["run", "--corpus", "good.txt", "--set", "rnn.models=[]"]


def run_set(key: str, value: str, problem: str, names: str | None = None) -> Case:
    """``seqlm run`` with one bad setting: refused before any work starts."""
    return Case(
        f"run-{key}={value}", [*RUN, "--set", f"{key}={value}"], names or key, problem, good_corpus
    )


CASES = [
    # --- ingestion: files, formats, folders, splits -------------------------------------------
    Case(
        "missing-file",
        ["ngram", "count", "nope.txt", "-o", "2", "--out", "c"],
        "nope.txt",
        "no such file",
    ),
    Case(
        "empty-file",
        ["ngram", "count", "e.txt", "-o", "2", "--out", "c"],
        "e.txt",
        "empty",
        lambda t: write(t / "e.txt", ""),
    ),
    Case(
        "bom-only",
        ["ngram", "count", "e.txt", "-o", "2", "--out", "c"],
        "e.txt",
        "empty",
        lambda t: write(t / "e.txt", b"\xef\xbb\xbf"),
    ),
    Case(
        "blank-lines-only",
        ["ngram", "estimate", "b.txt", "-o", "2", "--arpa", "m.arpa"],
        "b.txt",
        "no word|no token|empty",
        lambda t: write(t / "b.txt", "\n\n  \n\n"),
    ),
    Case(
        "unsupported-suffix",
        ["ngram", "count", "x.csv", "-o", "2", "--out", "c"],
        "x.csv",
        "unsupported file type",
        lambda t: write(t / "x.csv", "a,b\n"),
    ),
    Case(
        "not-utf8",
        ["ngram", "count", "l.txt", "-o", "2", "--out", "c"],
        "l.txt",
        "not UTF-8",
        lambda t: write(t / "l.txt", "caf\xe9\n".encode("latin-1")),
    ),
    Case(
        "not-gzip",
        ["ngram", "count", "x.txt.gz", "-o", "2", "--out", "c"],
        "x.txt.gz",
        "gzip",
        lambda t: write(t / "x.txt.gz", "plain text\n"),
    ),
    Case(
        "truncated-gzip",
        ["ngram", "count", "x.txt.gz", "-o", "2", "--out", "c"],
        "x.txt.gz",
        "gzip|truncated|end",
        lambda t: write(t / "x.txt.gz", gzip.compress(GOOD.encode())[:200]),
    ),
    Case(
        "fasta-no-header",
        ["ngram", "count", "x.fna", "-o", "2", "--out", "c", "--tokenizer", "char"],
        "x.fna",
        "not a valid FASTA file \\(line 1: ",
        lambda t: write(t / "x.fna", "ACGT\nACGT\n"),
    ),
    Case(
        "fasta-empty-record",
        ["ngram", "count", "x.fna", "-o", "2", "--out", "c", "--tokenizer", "char"],
        "x.fna",
        "record a is empty",
        lambda t: write(t / "x.fna", ">a\n>b\nACGT\n"),
    ),
    Case(
        "fasta-residue-outside-alphabet",
        ["ngram", "count", "x.fna", "-o", "2", "--out", "c", "--tokenizer", "char"],
        "x.fna",
        "record NC_1, position 812: 'E' is not a nucleotide",
        lambda t: write(t / "x.fna", ">NC_1 test\n" + "ACGT" * 202 + "ACGE\n"),
    ),
    Case(
        "fastq-broken-record",
        ["ngram", "count", "x.fq", "-o", "2", "--out", "c", "--tokenizer", "char"],
        "x.fq",
        "not a valid FASTQ file",
        lambda t: write(t / "x.fq", "@r1\nACGT\n+\nIIII\n@r2\nACGT\n+\nII\n"),
    ),
    Case(
        "fasta-word-tokenizer",
        ["ngram", "count", "x.fa", "-o", "2", "--out", "c"],
        "x.fa",
        "has no words, so not the whitespace tokenizer",
        lambda t: write(t / "x.fa", ">a\nACGT\n"),
    ),
    Case(
        "gzip-not-utf8",
        ["ngram", "count", "x.txt.gz", "-o", "2", "--out", "c"],
        "x.txt.gz",
        "not UTF-8",
        lambda t: write(t / "x.txt.gz", gzip.compress("caf\xe9\n".encode("latin-1"))),
    ),
    Case(
        "jsonl-invalid",
        ["ngram", "count", "d.jsonl", "-o", "2", "--out", "c"],
        "d.jsonl",
        "JSON",
        lambda t: write(t / "d.jsonl", '{"text": "a b"}\n{"text": \n'),
    ),
    Case(
        "jsonl-no-field",
        ["ngram", "count", "d.jsonl", "-o", "2", "--out", "c"],
        "d.jsonl",
        "no text field 'text'",
        lambda t: write(t / "d.jsonl", jsonl([{"body": "a b"}])),
    ),
    Case(
        "jsonl-field-not-text",
        ["ngram", "count", "d.jsonl", "-o", "2", "--out", "c"],
        "d.jsonl",
        "not text",
        lambda t: write(t / "d.jsonl", jsonl([{"text": 3}, {"text": 4}])),
    ),
    Case(
        "jsonl-not-utf8",
        ["ngram", "count", "d.jsonl", "-o", "2", "--out", "c"],
        "d.jsonl",
        "not UTF-8",
        lambda t: write(t / "d.jsonl", '{"text": "caf\xe9"}\n'.encode("latin-1")),
    ),
    Case(
        "not-parquet",
        ["ngram", "count", "docs.parquet", "-o", "2", "--out", "c"],
        "docs.parquet",
        "not a Parquet file",
        lambda t: write(t / "docs.parquet", "text\n"),
    ),
    Case(
        "parquet-no-column",
        ["ngram", "count", "docs.parquet", "-o", "2", "--out", "c"],
        "docs.parquet",
        "no text column 'text'",
        lambda t: parquet(t, pl.DataFrame({"body": ["a b"]})),
    ),
    Case(
        "parquet-column-not-text",
        ["ngram", "count", "docs.parquet", "-o", "2", "--out", "c"],
        "docs.parquet",
        "not text",
        lambda t: parquet(t, pl.DataFrame({"text": [1, 2]})),
    ),
    Case(
        "empty-folder",
        ["ngram", "count", "d", "-o", "2", "--out", "c"],
        "d",
        "no corpus files",
        lambda t: (t / "d").mkdir(),
    ),
    Case(
        "folder-of-other-files",
        ["ngram", "count", "d", "-o", "2", "--out", "c"],
        "d",
        "no corpus files",
        lambda t: write(t / "d" / "notes.md", "# x\n"),
    ),
    Case(
        "folder-of-hidden-files",
        ["ngram", "count", "d", "-o", "2", "--out", "c"],
        "d",
        "no corpus files",
        lambda t: write(t / "d" / ".hidden.txt", GOOD),
    ),
    Case(
        "split-missing",
        ["ngram", "count", "corpus", "-o", "2", "--out", "c"],
        "corpus",
        "no test split",
        lambda t: (split_dir(t), (t / "corpus" / "test.txt").unlink()),
    ),
    Case(
        "fifo",
        ["ngram", "count", "pipe.txt", "-o", "2", "--out", "c"],
        "pipe.txt",
        "not a regular file",
        fifo,
    ),
    Case(
        "device",
        ["ngram", "count", "/dev/null", "-o", "2", "--out", "c"],
        "/dev/null",
        "not a regular file|unsupported file type",
    ),
    Case("run-fifo", [*RUN[:1], "--corpus", "pipe.txt"], "pipe.txt", "not a regular file", fifo),
    Case("run-missing-corpus", ["run", "--corpus", "nope"], "nope", "no such file"),
    Case(
        "rnn-missing-data", ["rnn", "train", "nope.txt", "--out", "o"], "nope.txt", "no such file"
    ),
    # --- configuration: refused before any work starts ----------------------------------------
    run_set("nonsense.key", "1", "unknown config"),
    run_set("rnn.nonsense", "1", "unknown config key"),
    run_set("add_k", "2", "ambiguous"),
    run_set("rnn.lr", "fast", "needs a float"),
    run_set("rnn.lr", "-1", "positive"),
    run_set("rnn.lr", "nan", "positive|finite"),
    run_set("rnn.batch_size", "0", "at least 1|positive"),
    run_set("rnn.bptt", "0", "at least 1|positive"),
    run_set("rnn.emsize", "0", "at least 1|positive"),
    run_set("rnn.nlayers", "0", "at least 1|positive"),
    run_set("rnn.dropout", "1.5", "dropout"),
    Case(
        "run-rnn.tied-sizes",
        [*RUN, "--set", "rnn.emsize=64", "--set", "rnn.tied=true"],
        "rnn.tied",
        "emsize|nhid",
        good_corpus,
    ),
    run_set("rnn.epochs", "0", "at least 1|positive"),
    run_set("rnn.max_minutes", "-1", "negative|positive"),
    run_set("rnn.clip", "-1", "negative|positive"),
    run_set("rnn.models", '["transformer"]', "unknown model"),
    run_set("rnn.optimizer", "adam9", "optimizer|choose"),
    run_set("rnn.device", "tpu", "auto.*cpu.*cuda"),
    run_set("rnn.precision", "fp8", "fp32"),
    run_set("ngram.orders", "[0]", "between 1 and"),
    run_set("ngram.orders", "[13]", "between 1 and"),
    run_set("ngram.smoothing", "witten", "unknown smoothing"),
    run_set("unigram.add_k", "-1", "negative"),
    run_set("vocab.min_count", "-1", "0 \\(auto\\) or more"),
    run_set("vocab.max_size", "2", "above 3"),
    run_set("corpus.tokenizer", "nonsense", "unknown tokenizer"),
    run_set("corpus.bpe_vocab_size", "0", "must be positive"),
    run_set("corpus.valid_fraction", "0.97", "sum below 1", names="corpus.valid_fraction"),
    run_set("run.store", "good.txt", "not a directory"),
    run_set("run.experiment", '""', "empty|name"),
    Case("override-without-value", [*RUN, "--set", "rnn.lr"], "rnn.lr", "key=value", good_corpus),
    Case(
        "config-missing",
        [*RUN, "--config", "nope.toml"],
        "nope.toml",
        "no such config file",
        good_corpus,
    ),
    Case(
        "config-invalid-toml",
        [*RUN, "--config", "c.toml"],
        "c.toml",
        "invalid TOML",
        lambda t: (good_corpus(t), write(t / "c.toml", "[rnn\nlr = 1\n")),
    ),
    Case(
        "config-section-not-table",
        [*RUN, "--config", "c.toml"],
        "c.toml",
        "table of keys",
        lambda t: (good_corpus(t), write(t / "c.toml", "rnn = 3\n")),
    ),
    Case(
        "config-bad-value",
        [*RUN, "--config", "c.toml"],
        "c.toml",
        "rnn.bptt",
        lambda t: (good_corpus(t), write(t / "c.toml", "[rnn]\nbptt = -3\n")),
    ),
    Case(
        "report-folder-missing",
        [*RUN, "--report", "no/such/r.json"],
        "no/such",
        "no such|not exist",
        good_corpus,
    ),
    Case(
        "report-is-folder",
        [*RUN, "--report", "d"],
        "d",
        "directory",
        lambda t: (good_corpus(t), (t / "d").mkdir()),
    ),
    # --- the n-gram tools -------------------------------------------------------------------
    Case(
        "bpe-vocab-size-too-large",
        [
            "ngram",
            "count",
            "good.txt",
            "-o",
            "2",
            "--out",
            "c",
            "--tokenizer=bpe",
            "--bpe-vocab-size=100000",
        ],
        "--bpe-vocab-size",
        "at most \\d+ for this corpus, not 100000",
        good_corpus,
    ),
    Case(
        "bpe-estimate-without-save",
        ["ngram", "estimate", "good.txt", "-o", "2", "--arpa", "m.arpa", "--tokenizer", "bpe"],
        "--tokenizer bpe",
        "--save",
        good_corpus,
    ),
    Case(
        "bpe-arpa-score",
        ["ngram", "score", "m.arpa", "text.txt", "--tokenizer", "bpe"],
        "m.arpa",
        "cannot carry",
        arpa,
    ),
    Case(
        "order-0",
        ["ngram", "estimate", "good.txt", "-o", "0", "--arpa", "m.arpa"],
        "order",
        "between 1 and 12",
        good_corpus,
    ),
    Case(
        "order-13",
        ["ngram", "count", "good.txt", "-o", "13", "--out", "c"],
        "order",
        "between 1 and 12",
        good_corpus,
    ),
    Case(
        "arpa-folder-missing",
        ["ngram", "estimate", "good.txt", "-o", "2", "--arpa", "no/m.arpa"],
        "no/m.arpa",
        "No such file|no such",
        good_corpus,
    ),
    Case(
        "arpa-is-folder",
        ["ngram", "estimate", "good.txt", "-o", "2", "--arpa", "d"],
        "d",
        "directory",
        lambda t: (good_corpus(t), (t / "d").mkdir()),
    ),
    Case(
        "count-out-is-file",
        ["ngram", "count", "good.txt", "-o", "2", "--out", "good.txt"],
        "good.txt",
        "not a directory|exists",
        good_corpus,
    ),
    Case(
        "tiny-corpus-discounts",
        ["ngram", "estimate", "s.txt", "-o", "3", "--arpa", "m.arpa"],
        "discount",
        "discount-fallback",
        lambda t: write(t / "s.txt", "a b c\n"),
    ),
    Case(
        "score-model-missing",
        ["ngram", "score", "nope.arpa", "good.txt"],
        "nope.arpa",
        "no such file",
        good_corpus,
    ),
    Case(
        "score-model-folder",
        ["ngram", "score", "d", "good.txt"],
        "d",
        "not a saved model|no ",
        lambda t: (good_corpus(t), (t / "d").mkdir()),
    ),
    Case(
        "score-model-file-missing",
        ["ngram", "score", "model", "text.txt"],
        "model",
        "missing|no model.json",
        lambda t: saved_model(t, lambda m: first_file(m).unlink()),
    ),
    Case(
        "score-text-missing", ["ngram", "score", "m.arpa", "nope.txt"], "nope.txt", "no such", arpa
    ),
    Case(
        "score-text-folder",
        ["ngram", "score", "m.arpa", "d"],
        "d",
        "not a regular file|folder|directory",
        lambda t: (arpa(t), (t / "d").mkdir()),
    ),
    Case(
        "score-text-empty",
        ["ngram", "score", "m.arpa", "e.txt"],
        "e.txt",
        "empty|no text",
        lambda t: (arpa(t), write(t / "e.txt", "")),
    ),
    Case(
        "arpa-nan",
        ["ngram", "score", "m.arpa", "text.txt"],
        "m.arpa:",
        "finite|nan",
        lambda t: arpa(t, lambda s: second_unigram(s, "nan")),
    ),
    Case(
        "arpa-inf",
        ["ngram", "score", "m.arpa", "text.txt"],
        "m.arpa:",
        "finite|inf",
        lambda t: arpa(t, lambda s: second_unigram(s, "inf")),
    ),
    Case(
        "arpa-positive",
        ["ngram", "score", "m.arpa", "text.txt"],
        "m.arpa:",
        "positive",
        lambda t: arpa(t, lambda s: second_unigram(s, "0.5")),
    ),
    Case(
        "arpa-backoff-nan",
        ["ngram", "score", "m.arpa", "text.txt"],
        "m.arpa:",
        "finite|nan",
        lambda t: arpa(t, lambda s: bigram_backoff(s, "nan")),
    ),
    Case(
        "arpa-not-a-number",
        ["ngram", "score", "m.arpa", "text.txt"],
        "m.arpa:",
        "number|float",
        lambda t: arpa(t, lambda s: second_unigram(s, "minus-one")),
    ),
    Case(
        "arpa-no-header",
        ["ngram", "score", "m.arpa", "text.txt"],
        "m.arpa",
        "data",
        lambda t: arpa(t, lambda s: s.replace("\\data\\", "data")),
    ),
    Case(
        "arpa-count-mismatch",
        ["ngram", "score", "m.arpa", "text.txt"],
        "m.arpa",
        "2-grams|ngram 2",
        lambda t: arpa(t, lambda s: replace_line(s, "ngram 2=", "ngram 2=1")),
    ),
    Case(
        "arpa-truncated",
        ["ngram", "score", "m.arpa", "text.txt"],
        "m.arpa",
        "end|truncated|expected",
        lambda t: arpa(t, lambda s: s[: len(s) // 2]),
    ),
    Case(
        "arpa-binary-garbage",
        ["ngram", "score", "m.arpa", "text.txt"],
        "m.arpa",
        "UTF-8|data|ARPA",
        lambda t: (arpa(t), write(t / "m.arpa", bytes(range(256)) * 4)),
    ),
    Case(
        "score-saved-damaged",
        ["ngram", "score", "model", "text.txt"],
        "model",
        "damaged|not|corrupt",
        lambda t: saved_model(t, lambda m: write(first_file(m), b"garbage")),
    ),
    # --- the recurrent tools --------------------------------------------------------------------
    Case(
        "rnn-out-is-file",
        ["rnn", "train", "good.txt", "--out", "good.txt", "--epochs", "1"],
        "good.txt",
        "not a (directory|folder)",
        good_corpus,
    ),
    Case(
        "rnn-lr-negative",
        ["rnn", "train", "corpus", "--out", "o", "--lr", "-1"],
        "lr",
        "positive",
        split_dir,
    ),
    Case(
        "rnn-bptt-zero",
        ["rnn", "train", "corpus", "--out", "o", "--bptt", "0"],
        "bptt",
        "at least 1|positive",
        split_dir,
    ),
    Case(
        "rnn-dropout",
        ["rnn", "train", "corpus", "--out", "o", "--dropout", "1"],
        "dropout",
        "dropout|below 1",
        split_dir,
    ),
    Case(
        "rnn-empty-valid",
        ["rnn", "train", "corpus", "--out", "o"],
        "valid",
        "empty|no ",
        lambda t: split_dir(t, valid=""),
    ),
    Case("rnn-sample-missing", ["rnn", "sample", "nope.pt"], "nope.pt", "no such"),
    Case(
        "rnn-sample-garbage",
        ["rnn", "sample", "g.pt"],
        "g.pt",
        "checkpoint",
        lambda t: write(t / "g.pt", b"not a checkpoint"),
    ),
    Case(
        "rnn-sample-folder",
        ["rnn", "sample", "d"],
        "d",
        "checkpoint|no ",
        lambda t: (t / "d").mkdir(),
    ),
    Case(
        "rnn-sample-pickle",
        ["rnn", "sample", "p.pt"],
        "p.pt",
        "checkpoint",
        lambda t: write(t / "p.pt", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."),
    ),
    Case(
        "rnn-score-missing-checkpoint",
        ["rnn", "score", "nope.pt", "good.txt"],
        "nope.pt",
        "no such",
        good_corpus,
    ),
    # --- other commands ---------------------------------------------------------------------------
    Case(
        "compare-no-experiment",
        ["compare", "--experiment", "nothing-here"],
        "nothing-here",
        "no experiment",
    ),
    Case(
        "tables-store-is-file",
        ["ngram", "tables", "--store", "good.txt"],
        "good.txt",
        "not a directory",
        good_corpus,
    ),
]


def leftovers(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if TEMPORARY.search(p.name)]


def check_one_line(out: str, err: str, status: int, case: Case, t: Path) -> None:
    text = out + err
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    line = lines[0]
    assert status == case.status, line
    assert line.startswith("seqlm: error: "), line
    assert case.names.format(t=t) in line, f"{line!r} does not name {case.names!r}"
    assert re.search(case.problem, line, re.IGNORECASE), f"{line!r} does not say {case.problem!r}"
    assert not leftovers(t), leftovers(t)


def test_the_catalogue_is_large_and_its_names_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) + len(STORE_DAMAGE) + len(PIPELINE_CASES) >= 60


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, monkeypatch, capfd) -> None:
    monkeypatch.chdir(tmp_path)
    case.setup(tmp_path)
    capfd.readouterr()
    argv = [a.format(t=tmp_path) for a in case.argv]
    status = main(argv)
    out, err = capfd.readouterr()
    check_one_line(out, err, status, case, tmp_path)


# --- store damage: the re-run finds the damage, rebuilds, gives the undamaged figures ---

STORE_DAMAGE = {
    "manifest-deleted": lambda store: (store / "vocab").glob("*/manifest.json"),
    "table-truncated": lambda store: (store / "tables").glob("*/tables/order2.parquet"),
    "model-flipped": lambda store: (store / "ngram").glob("*/model/*"),
    "shard-deleted": lambda store: (store / "ingest").glob("*/train.parquet"),
    "evaluation-truncated": lambda store: (store / "evaluate").glob("*/test.parquet"),
}


def build_ladder(store_root: Path, corpus: Path) -> dict[str, float]:
    """The n-gram rungs through the library's stages, as the flow runs them: test perplexities."""
    from seqlm import pipeline, stages
    from seqlm.config import PipelineConfig
    from seqlm.corpus import discover
    from seqlm.store import Store

    cfg = PipelineConfig().with_values({"ngram.orders": [2, 3], "vocab.min_count": 1})
    store = Store(store_root)
    data = pipeline.prepare(pipeline.Local(store), discover(corpus), cfg)
    models = {f"kn{n}": stages.ngram(store, data.tables, n, cfg.ngram) for n in (2, 3)}
    models["unigram"] = stages.unigram(store, data.vocab, cfg.unigram)
    return {
        name: stages.load_metrics(stages.evaluate(store, m, data))["test"]["ppl"]
        for name, m in models.items()
    }


def damage(path: Path, how: str) -> None:
    if how.endswith("deleted"):
        path.unlink()
    elif how.endswith("truncated"):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", list(STORE_DAMAGE))
def test_damaged_store_is_repaired(how: str, tmp_path: Path) -> None:
    corpus = write(tmp_path / "c.txt", GOOD)
    store = tmp_path / "store"
    undamaged = build_ladder(store, corpus)
    target = sorted(STORE_DAMAGE[how](store))[0]
    damage(target, how)
    assert build_ladder(store, corpus) == undamaged
    assert not leftovers(store), leftovers(store)


# --- the orchestrated pipeline, in a process of its own ---

PIPELINE_CASES = [
    Case(
        "run-empty-file",
        ["run", "--corpus", "e.txt"],
        "e.txt",
        "empty",
        lambda t: write(t / "e.txt", ""),
    ),
    Case(
        "run-split-empty",
        ["run", "--corpus", "s.txt", "--set", "rnn.models=[]"],
        "s.txt",
        "split is empty",
        lambda t: write(t / "s.txt", "one line\n"),
    ),
    Case(
        "run-min-count-leaves-no-word",
        [*RUN, "--set", "vocab.min_count=100000"],
        "vocab.min_count",
        "leaves no word",
        good_corpus,
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in PIPELINE_CASES])
def test_bad_input_in_the_pipeline(case: Case, tmp_path: Path) -> None:
    case.setup(tmp_path)
    env = os.environ | {"PREFECT_HOME": prefect_home(tmp_path / ".prefect")}
    done = run_seqlm(case.argv, cwd=tmp_path, env=env)
    lines = [line for line in done.stderr.splitlines() if line.startswith("seqlm: error")]
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    assert len((done.stdout + done.stderr).strip().splitlines()) <= 5, done.stderr
    check_one_line("", lines[0], done.returncode, case, tmp_path)
