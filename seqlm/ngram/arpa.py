"""ARPA text format: writing any n-gram model, reading one back for scoring.

Sections ``\\n-grams:`` hold ``log10 p <TAB> w1 … wn [<TAB> log10 back-off]``; log10 0 is written
as −99, the ARPA convention.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import polars as pl

from seqlm.errors import SeqlmError
from seqlm.ngram.index import lookup
from seqlm.ngram.lines import check_order
from seqlm.ngram.model import NgramModel
from seqlm.vocab import SPECIALS, UNK, Vocabulary

log = logging.getLogger(__name__)

LOG_ZERO = -99.0
# KenLM's stand-in for a model without <unk>: the word is then almost impossible.
MISSING_UNK_LOG10 = -100.0


def write_arpa(model: NgramModel, path: Path) -> None:
    """Write ``model`` as an ARPA file (via a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tokens = model.vocab.tokens
    with tmp.open("wb") as out:
        header = ["", "\\data\\"] + [f"ngram {n}={s}" for n, s in enumerate(model.sizes, 1)]
        out.write(("\n".join(header) + "\n").encode())
        for n in range(1, model.order + 1):
            out.write(f"\n\\{n}-grams:\n".encode())
            words = pl.DataFrame(
                {f"w{i}": tokens.gather(w) for i, w in enumerate(model.words(n), start=1)}
            )
            frame = words.select(
                pl.Series("p", np.maximum(model.log10_prob[n - 1], LOG_ZERO)),
                pl.concat_str(pl.all(), separator=" ").alias("ngram"),
            )
            if n < model.order:
                frame = frame.with_columns(bo=np.maximum(model.log10_backoff[n - 1], LOG_ZERO))
            frame.write_csv(
                out, include_header=False, separator="\t", quote_style="never", float_precision=7
            )
        out.write(b"\n\\end\\\n")
    tmp.replace(path)


def read_arpa(path: Path) -> NgramModel:
    """An ARPA file as a model over its own unigram list (ids: specials first, then file order)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise SeqlmError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise SeqlmError(f"{path}: not UTF-8 at byte offset {e.start}") from None
    lines = (
        pl.Series("text", text.split("\n"))
        .str.strip_chars()
        .to_frame()
        .with_row_index("line", offset=1)
        .filter(pl.col("text") != "")
    )
    sizes, sections = _layout(path, lines)
    grams = [_parse_section(path, n, sections[n - 1], len(sizes)) for n in range(1, len(sizes) + 1)]
    for n, (size, frame) in enumerate(zip(sizes, grams, strict=True), start=1):
        if frame.height != size:
            raise SeqlmError(
                f"{path}: the header announces {size} {n}-grams, the file has {frame.height}"
            )
    return _build(path, grams)


def _layout(path: Path, lines: pl.DataFrame) -> tuple[list[int], list[pl.DataFrame]]:
    """The header's n-gram counts and each order's body lines."""
    markers = lines.filter(pl.col("text").str.starts_with("\\"))
    marks = list(zip(markers["line"].to_list(), markers["text"].to_list(), strict=True))
    if not marks or marks[0][1] != "\\data\\":
        raise SeqlmError(f"{path}: no \\data\\ header: not an ARPA file")
    header = lines.filter(
        (pl.col("line") > marks[0][0]) & (pl.col("line") < (marks[1][0] if len(marks) > 1 else 0))
    )
    sizes = []
    for line, entry in header.iter_rows():
        field = entry.removeprefix("ngram ").split("=")
        if not entry.startswith("ngram ") or len(field) != 2 or not field[1].strip().isdigit():
            raise SeqlmError(
                f"{path}:{line}: expected 'ngram N=COUNT' in the header, got {entry!r}"
            )
        if int(field[0]) != len(sizes) + 1:
            raise SeqlmError(f"{path}:{line}: expected the count of {len(sizes) + 1}-grams")
        sizes.append(int(field[1]))
    if not sizes:
        raise SeqlmError(f"{path}: the \\data\\ header lists no n-gram counts")
    check_order(len(sizes))
    expected = [f"\\{n}-grams:" for n in range(1, len(sizes) + 1)] + ["\\end\\"]
    got = [text for _, text in marks[1:]]
    if got != expected:
        wrong = next(
            (i for i, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e), len(got)
        )
        where = f"{path}:{marks[wrong + 1][0]}" if wrong < len(got) else f"{path}: end of file"
        raise SeqlmError(f"{where}: expected section {expected[min(wrong, len(expected) - 1)]}")
    bounds = [line for line, _ in marks[1:]]
    sections = [
        lines.filter((pl.col("line") > lo) & (pl.col("line") < hi))
        for lo, hi in itertools.pairwise(bounds)
    ]
    return sizes, sections


def _parse_section(path: Path, n: int, body: pl.DataFrame, order: int) -> pl.DataFrame:
    """``line``, ``p``, ``bo`` and the words ``w1..wn`` (tokens) of one order's entries."""
    fields = body.with_columns(pl.col("text").str.extract_all(r"\S+").alias("f"))
    width = pl.col("f").list.len()
    allowed = [n + 1] if n == order else [n + 1, n + 2]
    bad = fields.filter(~width.is_in(allowed))
    if bad.height:
        line, entry = bad["line"][0], bad["text"][0]
        raise SeqlmError(
            f"{path}:{line}: a {n}-gram entry needs {' or '.join(map(str, allowed))} fields "
            f"(log10 p, {n} word(s){', back-off' if n < order else ''}), got {entry!r}"
        )
    parsed = fields.select(
        "line",
        "text",
        pl.col("f").list.get(0).cast(pl.Float64, strict=False).alias("p"),
        pl.when(width == n + 2)
        .then(pl.col("f").list.get(n + 1, null_on_oob=True))
        .otherwise(pl.lit("0"))
        .cast(pl.Float64, strict=False)
        .alias("bo"),
        *[pl.col("f").list.get(i).alias(f"w{i}") for i in range(1, n + 1)],
    )
    bad = parsed.filter(pl.col("p").is_null() | pl.col("bo").is_null())
    if bad.height:
        raise SeqlmError(f"{path}:{bad['line'][0]}: not a number in {bad['text'][0]!r}")
    return parsed.drop("text")


def _build(path: Path, grams: list[pl.DataFrame]) -> NgramModel:
    unigrams = grams[0]
    dup = unigrams.filter(pl.col("w1").is_duplicated())
    if dup.height:
        raise SeqlmError(f"{path}:{dup['line'][1]}: unigram {dup['w1'][0]!r} is listed twice")
    for token in SPECIALS[1:]:
        if token not in unigrams["w1"]:
            raise SeqlmError(f"{path}: no {token} unigram")
    if UNK not in unigrams["w1"]:
        log.warning("%s: no <unk> unigram; unknown words get log10 p = %g", path, MISSING_UNK_LOG10)
        unk = {"line": 0, "p": MISSING_UNK_LOG10, "bo": 0.0, "w1": UNK}
        unigrams = pl.concat([unigrams, pl.DataFrame([unk], schema=unigrams.schema)])
    words = unigrams.filter(~pl.col("w1").is_in(SPECIALS))["w1"]
    vocab = Vocabulary(
        pl.DataFrame({"token": [*SPECIALS, *words]})
        .with_row_index("id")
        .select("token", pl.col("id").cast(pl.UInt32), pl.lit(0, dtype=pl.UInt64).alias("count"))
    )
    size = vocab.size
    ids_of_tokens = np.arange(size, dtype=np.int64)
    context, word, prob, backoff, keys = [], [], [], [], []
    for n, frame in enumerate([unigrams, *grams[1:]], start=1):
        cols = [
            frame[f"w{i}"].replace_strict(vocab.tokens, ids_of_tokens, default=None)
            for i in range(1, n + 1)
        ]
        unknown = np.logical_or.reduce([c.is_null().to_numpy() for c in cols])
        if unknown.any():
            line = frame["line"][int(np.argmax(unknown))]
            raise SeqlmError(f"{path}:{line}: a word of this {n}-gram is not listed as a unigram")
        ids = [c.to_numpy().astype(np.int64) for c in cols]
        rows = np.zeros(frame.height, dtype=np.int64)
        for k in range(1, n):
            rows = lookup(keys[k - 1], rows * size + ids[k - 1])
            if np.any(rows < 0):
                line = frame["line"][int(np.argmax(rows < 0))]
                raise SeqlmError(f"{path}:{line}: this {n}-gram's context is not listed")
        key = rows * size + ids[-1]
        order = np.argsort(key, kind="stable")
        key = key[order]
        if np.any(key[1:] == key[:-1]):
            line = frame["line"][int(order[1:][key[1:] == key[:-1]][0])]
            raise SeqlmError(f"{path}:{line}: this {n}-gram is listed twice")
        keys.append(key)
        context.append(rows[order])
        word.append(ids[-1][order])
        prob.append(frame["p"].to_numpy()[order])
        backoff.append(frame["bo"].to_numpy()[order])
    return NgramModel(
        vocab, context, word, prob, backoff, {"smoothing": "arpa", "source": str(path)}
    )
