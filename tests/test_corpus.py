from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from seqlm.corpus import (
    SPLITS,
    Source,
    count_lines,
    discover,
    ingest,
    iter_lines,
    load_corpus,
    load_split,
    read_lines,
    split_blocks,
    tokenize,
    train_chunks,
)
from seqlm.errors import SeqlmError
from tests.helpers import write_lines

LINES = [f"line {i} has words, and punctuation." for i in range(20)]


def test_reads_every_format_to_the_same_lines(tmp_path):
    write_lines(tmp_path / "a.txt", LINES)
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress("\n".join(LINES).encode()))
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"body": line, "n": i}) + "\n" for i, line in enumerate(LINES))
    )
    pl.DataFrame({"body": LINES}).write_parquet(tmp_path / "d.parquet")
    want = tokenize(pl.Series(LINES), "whitespace")
    for name in ("a.txt", "b.txt.gz", "c.jsonl", "d.parquet"):
        got = tokenize(read_lines(tmp_path / name, text_field="body"), "whitespace")
        assert got.equals(want), name


def test_jsonl_documents_split_into_lines(tmp_path):
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "one two\nthree"}) + "\n")
    assert read_lines(tmp_path / "c.jsonl").to_list() == ["one two", "three"]


def test_tokenizers():
    lines = pl.Series(["  The cat's  hat, isn't it?  ", "", "   ", "-- !"])
    assert tokenize(lines, "whitespace")["tokens"].to_list() == [
        ["The", "cat's", "hat,", "isn't", "it?"],
        [],
        [],
        ["--", "!"],
    ]
    assert tokenize(lines, "punct")["tokens"].to_list() == [
        ["the", "cat's", "hat", ",", "isn't", "it", "?"],
        [],
        [],
        ["-", "-", "!"],
    ]
    with pytest.raises(SeqlmError, match="unknown tokenizer"):
        tokenize(lines, "nope")


@pytest.mark.parametrize("spaces", [" ", " \t\u00a0\u3000"])
def test_whitespace_tokens_are_python_split(spaces):
    """Lines whose only whitespace is single spaces are split at them, others by the regex: both
    give ``str.split()``'s tokens (leading, trailing and only spaces, empty lines, non-ASCII)."""
    rng = np.random.default_rng(7)
    alphabet = list("ab\u00e9\u4e2d'") + list(spaces) * 3
    lines = ["".join(rng.choice(alphabet, size=rng.integers(0, 12))) for _ in range(2000)]
    if spaces == " ":  # single spaces between words, as most corpora have
        lines = [" ".join(line.split()) for line in lines] + ["", " x y "]
    got = tokenize(pl.Series(lines), "whitespace")["tokens"].to_list()
    assert got == [line.split() for line in lines]


def test_split_directory_is_used_as_given(tmp_path):
    for split in ("train", "valid", "test"):
        write_lines(tmp_path / f"ptb.{split}.txt", [split])
    assert [(s.path.name, s.split) for s in discover(tmp_path)] == [
        ("ptb.train.txt", "train"),
        ("ptb.valid.txt", "valid"),
        ("ptb.test.txt", "test"),
    ]
    (tmp_path / "ptb.valid.txt").unlink()
    with pytest.raises(SeqlmError, match="no valid split"):
        discover(tmp_path)


def test_directory_of_files_skips_hidden_and_other_types(tmp_path):
    write_lines(tmp_path / "b.txt", ["b"])
    write_lines(tmp_path / "sub" / "a.txt", ["a"])
    write_lines(tmp_path / ".hidden" / "c.txt", ["c"])
    (tmp_path / "notes.md").write_text("x")
    assert [s.path.relative_to(tmp_path).as_posix() for s in discover(tmp_path)] == [
        "b.txt",
        "sub/a.txt",
    ]


def test_single_corpus_splits_into_contiguous_blocks(tmp_path):
    text = [*LINES[:10], "", *LINES[10:19]]  # the empty line is a line too
    write_lines(tmp_path / "a.txt", text)
    rows = ingest(Source(tmp_path / "a.txt"), tmp_path, "whitespace", fractions=(0.8, 0.1, 0.1))
    blocks = {"train": text[:16], "valid": text[16:18], "test": text[18:]}
    assert rows == {s: len(b) for s, b in blocks.items()} | {
        f"{s}_chars": sum(map(len, b)) for s, b in blocks.items()
    }
    whole = tokenize(pl.Series(text), "whitespace")
    parts = [load_split([tmp_path], s) for s in ("train", "valid", "test")]
    assert pl.concat(parts).equals(whole)
    assert split_blocks(100, (0.9, 0.05, 0.05), tmp_path) == {
        "train": (0, 90),
        "valid": (90, 5),
        "test": (95, 5),
    }


def test_bad_input_names_the_file_and_the_problem(tmp_path):
    with pytest.raises(SeqlmError, match="no such file"):
        discover(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nbad \xff byte\n")
    with pytest.raises(SeqlmError, match=r"bad\.txt: not UTF-8 at byte offset 14"):
        read_lines(bad)
    for content in (b"", b"\xef\xbb\xbf"):
        (tmp_path / "empty.txt").write_bytes(content)
        with pytest.raises(SeqlmError, match=r"empty\.txt: empty corpus \(no lines\)"):
            ingest(Source(tmp_path / "empty.txt"), tmp_path, "whitespace")
    blank = write_lines(tmp_path / "blank.txt", ["", "   ", "\t"] * 10)
    with pytest.raises(SeqlmError, match=r"blank\.txt: no words to train on \(26 lines"):
        ingest(Source(blank), tmp_path, "whitespace")
    short = write_lines(tmp_path / "short.txt", ["one line", "two lines"])
    with pytest.raises(SeqlmError, match=r"short\.txt: the valid split is empty"):
        ingest(Source(short), tmp_path, "whitespace")
    (tmp_path / "x.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(SeqlmError, match=r"x\.jsonl: no text field 'text'"):
        read_lines(tmp_path / "x.jsonl")
    with pytest.raises(SeqlmError, match=r"x\.csv: unsupported file type"):
        discover(write_lines(tmp_path / "x.csv", ["a,b"]))


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (b"a\n\nb\n", ["a", "", "b"]),
        (b"a\nb", ["a", "b"]),
        (b"\n", [""]),
        (b"\n\n", ["", ""]),
        (b"\xef\xbb\xbfa b\r\n\r\n  \r\nc\r\n", ["a b", "", "  ", "c"]),
        (b"\xef\xbb\xbf", []),
        (b"", []),
    ],
)
def test_every_line_is_a_line_empty_ones_included(tmp_path, raw, want):
    (tmp_path / "a.txt").write_bytes(raw)
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(raw))
    assert read_lines(tmp_path / "a.txt").to_list() == want
    assert read_lines(tmp_path / "a.txt.gz").to_list() == want


def test_documents_split_into_lines_the_same_way(tmp_path):
    docs = ["one\n\ntwo\n", None, "", "three\r\nfour", "\n"]
    want = ["one", "", "two", "", "three", "four", ""]
    jsonl = "".join(json.dumps({"text": d}) + "\n" for d in docs)
    (tmp_path / "c.jsonl").write_bytes(b"\xef\xbb\xbf" + jsonl.encode())
    pl.DataFrame({"text": docs}).write_parquet(tmp_path / "d.parquet")
    assert read_lines(tmp_path / "c.jsonl").to_list() == want
    assert read_lines(tmp_path / "d.parquet").to_list() == want


def test_ingest_keeps_empty_lines_in_every_split(tmp_path):
    text = ["", "a b", "", "   ", *[f"w{i}" for i in range(14)], "", "x"]
    (tmp_path / "a.txt").write_bytes(("\r\n".join(text) + "\r\n").encode())
    rows = ingest(Source(tmp_path / "a.txt"), tmp_path, "whitespace", fractions=(0.8, 0.1, 0.1))
    # Characters as read ("a b", "   ", w0..w11 | w12, w13 | "x"): no CR or LF counts.
    chars = {"train_chars": 3 + 3 + 10 * 2 + 2 * 3, "valid_chars": 2 * 3, "test_chars": 1}
    assert rows == {"train": 16, "valid": 2, "test": 2} | chars
    assert load_split([tmp_path], "train")["tokens"].to_list()[:4] == [[], ["a", "b"], [], []]
    assert load_split([tmp_path], "test")["tokens"].to_list() == [[], ["x"]]


def test_non_regular_files_are_refused_by_name_and_skipped_in_a_directory(tmp_path):
    write_lines(tmp_path / "a.txt", ["a"])
    os.mkfifo(tmp_path / "pipe.txt")
    with pytest.raises(SeqlmError, match=r"pipe\.txt: not a regular file"):
        discover(tmp_path / "pipe.txt")
    with pytest.raises(SeqlmError, match=r"pipe\.txt: not a regular file"):
        read_lines(tmp_path / "pipe.txt")
    assert [s.path.name for s in discover(tmp_path)] == ["a.txt"]


def test_load_corpus_reads_each_split_as_ingestion_writes_it(tmp_path):
    folder = tmp_path / "corpus"
    write_lines(folder / "a.txt", [f"Word{i}, and more." for i in range(40)])
    write_lines(folder / "b.txt", ["", *(f"other {i}" for i in range(19))])
    shards = []
    for i, source in enumerate(discover(folder)):
        shards.append(tmp_path / "shards" / str(i))
        shards[-1].mkdir(parents=True)
        ingest(source, shards[-1], "punct")
    loaded = load_corpus(folder, "punct")
    for split in SPLITS:
        assert loaded[split].equals(load_split(shards, split))
    # Whole files as training text (as lmplz reads its input); a split not asked for is not read.
    assert load_corpus(folder, "punct", ["train"], fractions=None)["train"].height == 60
    write_lines(tmp_path / "split" / "train.txt", ["a b"])
    (tmp_path / "split" / "valid.txt").write_bytes(b"\xff")
    (tmp_path / "split" / "test.txt").write_text("c\n")
    assert load_corpus(tmp_path / "split", "whitespace", ["train", "test"])["test"].height == 1


# ---- the chunk iterator: a file in chunks of whole lines, never whole in memory --------------

# Blank lines, CRLF ends, a line longer than many blocks, multi-byte characters everywhere (so
# that tiny blocks cut them), an unterminated last line.
TRICKY = (
    "first line\n\n  \r\nsecond\r\n"
    + "é€😀 " * 3000
    + "\nÅngström naïve café\n\n\n日本語の文\r\nlast, unterminated 😀"
)


def python_lines(raw: bytes) -> list[str]:
    """The reference: Python's own decoding and splitting of a text file (no byte, no line)."""
    text = raw.decode("utf-8-sig")
    return document_lines(text) if text else []


def document_lines(text: str) -> list[str]:
    """A document's lines ("" is one empty line, as "\n" is)."""
    return [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 4096, 1 << 26])
def test_text_chunks_are_the_files_lines(tmp_path, chunk_bytes):
    raw = b"\xef\xbb\xbf" + TRICKY.encode()
    (tmp_path / "a.txt").write_bytes(raw)
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(raw))
    want = python_lines(raw)
    for name in ("a.txt", "a.txt.gz"):
        chunks = list(iter_lines(tmp_path / name, chunk_bytes=chunk_bytes))
        assert pl.concat(chunks).to_list() == want
        assert read_lines(tmp_path / name).to_list() == want
        if chunk_bytes < 100:
            assert len(chunks) >= 3


def test_a_bad_byte_in_a_later_chunk_names_its_offset_in_the_file(tmp_path):
    raw = TRICKY.encode() + b"\nbad \xff byte\n"
    (tmp_path / "bad.txt").write_bytes(raw)
    with pytest.raises(UnicodeDecodeError) as python:
        raw.decode()
    with pytest.raises(
        SeqlmError, match=f"bad\\.txt: not UTF-8 at byte offset {python.value.start}$"
    ):
        list(iter_lines(tmp_path / "bad.txt", chunk_bytes=100))


def test_document_chunks_are_the_files_lines(tmp_path):
    docs = [TRICKY, None, "", "three\r\nfour", "\n", *(f"doc {i}\n" for i in range(50))]
    want = [line for d in docs if d is not None for line in document_lines(d)]
    jsonl = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs)
    (tmp_path / "c.jsonl").write_bytes(b"\xef\xbb\xbf" + jsonl.encode())
    pl.DataFrame({"text": docs}).write_parquet(tmp_path / "d.parquet", row_group_size=8)
    for name in ("c.jsonl", "d.parquet"):
        chunks = list(iter_lines(tmp_path / name, chunk_bytes=16))
        assert len(chunks) > 5, name
        assert pl.concat(chunks).to_list() == want, name
        assert read_lines(tmp_path / name).to_list() == want, name


def test_a_jsonl_chunk_without_the_field_has_no_line(tmp_path):
    """Documents without the field are null documents, whichever chunk they fall in."""
    rows = [{"title": "no text"}] * 5 + [{"text": "a b"}, {"title": "x"}, {"text": "c"}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert pl.concat(iter_lines(tmp_path / "c.jsonl", chunk_bytes=8)).to_list() == ["a b", "c"]
    (tmp_path / "none.jsonl").write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(SeqlmError, match=r"none\.jsonl: no text field 'text' \(has: title\)"):
        list(iter_lines(tmp_path / "none.jsonl", chunk_bytes=8))


def test_sequence_chunks_are_the_files_lines(tmp_path):
    sequences = [f"{'ACGT' * (i + 1)}acg" for i in range(30)]
    (tmp_path / "x.fa").write_text(
        "".join(f">r{i}\n{s[:-3]}\n{s[-3:]}\n" for i, s in enumerate(sequences))
    )
    want = [s.upper()[i : i + 7] for s in sequences for i in range(0, len(s), 7)]
    chunks = list(iter_lines(tmp_path / "x.fa", window=7, chunk_bytes=20))
    assert len(chunks) > 5
    assert pl.concat(chunks).to_list() == want
    assert read_lines(tmp_path / "x.fa", window=7).to_list() == want


def test_train_chunks_read_the_corpus_as_load_corpus_reads_its_training_text(tmp_path):
    folder = tmp_path / "corpus"
    (folder).mkdir()
    (folder / "a.txt").write_bytes(TRICKY.encode())
    write_lines(folder / "b.txt", ["", *(f"Other {i}, more." for i in range(40))])
    chunks = list(train_chunks(folder, "punct", chunk_bytes=64))
    assert len(chunks) > 5
    assert pl.concat(chunks).equals(
        load_corpus(folder, "punct", ["train"], fractions=None)["train"]
    )
    (folder / "c.txt").write_text("\n  \n")
    with pytest.raises(SeqlmError, match=r"c\.txt: no words to train on \(2 lines"):
        list(train_chunks(folder, "punct", chunk_bytes=64))


# ---- streaming ingestion: the shards of a file read in chunks, as Python splits it -----------


def expected_splits(lines: list[str], fractions=(0.8, 0.1, 0.1)) -> dict[str, list[list[str]]]:
    """The reference: each split's block of the lines, tokenised by Python's str.split()."""
    blocks = split_blocks(len(lines), fractions, Path("reference"))
    return {s: [line.split() for line in lines[a : a + n]] for s, (a, n) in blocks.items()}


@pytest.mark.parametrize("chunk_bytes", [1, 16, 4096, 1 << 26])
def test_streamed_shards_are_the_files_splits(tmp_path, chunk_bytes):
    raw = b"\xef\xbb\xbf" + (TRICKY + "\n" + "\n".join(LINES) + "\n\n  \n" + TRICKY).encode()
    docs = [TRICKY, None, "", "three\r\nfour", "\n", *LINES, TRICKY]
    files = {
        "a.txt": (raw, python_lines(raw)),
        "a.txt.gz": (gzip.compress(raw), python_lines(raw)),
        "c.jsonl": (
            "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs).encode(),
            [line for d in docs if d is not None for line in document_lines(d)],
        ),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    pl.DataFrame({"text": docs}).write_parquet(tmp_path / "d.parquet", row_group_size=4)
    files["d.parquet"] = (b"", files["c.jsonl"][1])
    for name, (_, lines) in files.items():
        out = tmp_path / "shards" / name
        out.mkdir(parents=True)
        rows = ingest(Source(tmp_path / name), out, "whitespace", fractions=(0.8, 0.1, 0.1),
                      chunk_bytes=chunk_bytes)  # fmt: skip
        want = expected_splits(lines)
        for split in SPLITS:
            assert load_split([out], split)["tokens"].to_list() == want[split], (name, split)
            assert rows[split] == len(want[split])
        if chunk_bytes == 16 and name.endswith("txt"):
            assert pq.ParquetFile(out / "train.parquet").metadata.num_row_groups > 3


def test_streamed_sequence_shards_are_the_files_splits(tmp_path):
    sequences = [f"{'ACGT' * (i + 1)}acg" for i in range(30)]
    (tmp_path / "x.fa").write_text("".join(f">r{i}\n{s}\n" for i, s in enumerate(sequences)))
    lines = [s.upper()[i : i + 7] for s in sequences for i in range(0, len(s), 7)]
    rows = ingest(Source(tmp_path / "x.fa"), tmp_path, "char", window=7, chunk_bytes=20)
    blocks = split_blocks(len(lines), (0.9, 0.05, 0.05), tmp_path)
    for split, (start, length) in blocks.items():
        want = [list(line) for line in lines[start : start + length]]
        assert load_split([tmp_path], split)["tokens"].to_list() == want
        assert rows[f"{split}_chars"] == sum(map(len, lines[start : start + length]))


@pytest.mark.parametrize("raw", [b"", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n", b"a", b"a\n\nb", b"\n\n"])
def test_count_lines_counts_the_lines_read(tmp_path, raw):
    (tmp_path / "a.txt").write_bytes(raw)
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(raw))
    for name in ("a.txt", "a.txt.gz"):
        assert count_lines(tmp_path / name, chunk_bytes=1) == len(python_lines(raw))


def test_streamed_ingestion_refuses_a_file_once_its_last_chunk_is_read(tmp_path):
    (tmp_path / "train.txt").write_text("\n" * 50)
    with pytest.raises(SeqlmError, match=r"train\.txt: no words to train on \(50 lines"):
        ingest(Source(tmp_path / "train.txt", "train"), tmp_path, "whitespace", chunk_bytes=4)
    (tmp_path / "valid.txt").write_text("")
    with pytest.raises(SeqlmError, match=r"valid\.txt: empty corpus \(no lines\)"):
        ingest(Source(tmp_path / "valid.txt", "valid"), tmp_path, "whitespace", chunk_bytes=4)
