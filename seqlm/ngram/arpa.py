"""ARPA text format: writing any n-gram model, reading one back for scoring.

Sections ``\\n-grams:`` hold ``log10 p <TAB> w1 … wn [<TAB> log10 back-off]``; log10 0 is written
as −99, the ARPA convention. As KenLM's reader does, a file is refused for a positive log10 p (a
probability above 1) and for a back-off that is not finite; a positive back-off is legal (a
back-off weight may exceed 1). Unlike KenLM, a log10 p that is not finite (``nan``, ``-inf``) is
refused too: ARPA writes log 0 as −99, and a NaN would poison every score.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import mmap
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import polars as pl

from seqlm.errors import SeqlmError
from seqlm.files import atomic_path
from seqlm.ngram.index import lookup
from seqlm.ngram.lines import check_key_space, check_order
from seqlm.ngram.mapped import release
from seqlm.ngram.model import NgramModel
from seqlm.overlap import ahead
from seqlm.vocab import SPECIALS, UNK, Vocabulary

log = logging.getLogger(__name__)

LOG_ZERO = -99.0
_END = b"\\end\\\n"  # the line that ends an ARPA file
# KenLM's stand-in for a model without <unk>: the word is then almost impossible.
MISSING_UNK_LOG10 = -100.0


def write_arpa(model: NgramModel, path: Path | BinaryIO) -> None:
    """Write ``model`` as ARPA to a file (via a temporary file renamed into place) or to a
    binary stream (``sys.stdout.buffer``: ``lmplz``'s way), which is left open."""
    if not isinstance(path, str | Path):
        _write_arpa(model, path)
        return
    with atomic_path(Path(path)) as tmp, tmp.open("wb") as out:
        _write_arpa(model, out)


WRITE_BATCH = 1 << 20  # n-grams formatted at a time: the text of a few batches is all that is held
WRITERS = 2  # batches formatted side by side (Polars' string work releases the GIL)


def _write_arpa(model: NgramModel, out: BinaryIO) -> None:
    header = ["", "\\data\\"] + [f"ngram {n}={s}" for n, s in enumerate(model.sizes, 1)]
    out.write(("\n".join(header) + "\n").encode())
    batches = [
        (n, start, min(start + WRITE_BATCH, size))
        for n, size in enumerate(model.sizes, start=1)
        for start in range(0, max(size, 1), WRITE_BATCH)
    ]
    # One chunk, gathered by uint32: Polars' gather is 10× slower from a chunked series or by
    # uint16 indices (which it converts first).
    tokens = model.vocab.tokens.rechunk()
    with ThreadPoolExecutor(WRITERS) as pool:
        formatting: deque[tuple[int, Future[bytes]]] = deque()
        for n, start, stop in batches:
            formatting.append((n, pool.submit(_section, model, tokens, n, start, stop)))
            if len(formatting) > WRITERS:
                _write_batch(model, out, *formatting.popleft())
        while formatting:
            _write_batch(model, out, *formatting.popleft())
    out.write(b"\n" + _END)


def _section(model: NgramModel, tokens: pl.Series, n: int, start: int, stop: int) -> bytes:
    """Rows ``start..stop`` of order ``n`` as ARPA lines (after the order's heading at its first
    row): each n-gram's words (``tokens`` of their ids) found through the context rows."""
    rows = np.arange(start, stop)
    words = []  # w_n, w_(n−1), …
    for k in range(n, 0, -1):
        words.append(tokens.gather(model.word[k - 1][rows].astype(np.uint32)))
        if k > 1:
            rows = np.asarray(model.context[k - 1][rows])
    text = pl.select(pl.concat_str(words[::-1], separator=" ")).to_series()
    frame = pl.DataFrame(
        [pl.Series("p", np.maximum(model.log10_prob[n - 1][start:stop], LOG_ZERO)), text]
    )
    if n < model.order:
        frame = frame.with_columns(bo=np.maximum(model.log10_backoff[n - 1][start:stop], LOG_ZERO))
    out = io.BytesIO()
    if start == 0:
        out.write(f"\n\\{n}-grams:\n".encode())
    frame.write_csv(
        out, include_header=False, separator="\t", quote_style="never", float_precision=7
    )
    return out.getvalue()


def _write_batch(model: NgramModel, out: BinaryIO, n: int, text: Future[bytes]) -> None:
    out.write(text.result())
    top = (model.context, model.word) if n == model.order else ()
    for done in (model.log10_prob, model.log10_backoff, *top):
        release(done[n - 1])  # read once, in order (the orders below are gathered from)


def read_arpa(path: Path) -> NgramModel:
    """An ARPA file as a model over its own unigram list (ids: specials first, then file order).

    A well-formed file is parsed section by section with Polars' CSV reader (words straight into
    an ``Enum`` of the unigrams), from a map of the file, ``CHUNK`` bytes at a time, whose pages
    go once parsed: the text is never whole in memory, only the model. Anything that reader does
    not take cleanly is parsed again line by line, which names the offending line.
    """
    path = Path(path)
    try:
        with path.open("rb") as file, _mapped(file) as data:
            try:
                model = _read_fast(path, data)
            except (
                _Irregular,
                _Unlinked,
                pl.exceptions.PolarsError,
                ValueError,
                UnicodeDecodeError,
            ):
                model = None
            return model if model is not None else _read_lines(path, data[:])
    except OSError as e:
        raise SeqlmError(f"{path}: cannot read ({e.strerror})") from None


@contextlib.contextmanager
def _mapped(file: BinaryIO) -> Iterator[mmap.mmap | bytes]:
    """The file mapped read-only, or its bytes where it cannot be mapped (empty, a pipe)."""
    try:
        data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        yield file.read()
        return
    with data:
        yield data


class _Level(NamedTuple):
    """One order of a model being read, sorted by ``key`` (context row × vocabulary size + word).

    ``packed`` holds the n-gram's ids side by side in one integer where they fit, so that finding
    a context of the order above is one sorted search rather than one per word (None otherwise).
    """

    context: np.ndarray
    word: np.ndarray
    p: np.ndarray
    bo: np.ndarray
    key: np.ndarray
    packed: np.ndarray | None


class _Irregular(Exception):
    """The file is not in the plain layout the fast reader takes (maybe not wrong: re-read)."""


_HEADER_ENTRY = re.compile(rb"ngram (\d+)=(\d+)")
CHUNK = 1 << 26  # bytes of a section parsed at a time


def _read_fast(path: Path, data: mmap.mmap | bytes) -> NgramModel:
    """Sections one after another, each body read as CSV: ``log10 p``, the words and the
    back-off, separated by single tabs or spaces (spaces become tabs first)."""
    sizes, pos = _fast_header(data)
    unigrams, pos = _fast_section(data, pos, sizes, 1, pl.String)
    if unigrams["w1"].is_duplicated().any() or unigrams["w1"].str.contains(r"\s").any():
        raise _Irregular
    vocab, enum, levels = _vocabulary_and_unigrams(path, unigrams)
    for n in range(2, len(sizes) + 1):
        frame, pos = _fast_section(data, pos, sizes, n, enum)
        ids = [frame[f"w{i}"].to_physical().to_numpy() for i in range(1, n + 1)]
        p = frame["p"].to_numpy()
        bo = frame["bo"].to_numpy() if n < len(sizes) else np.zeros(len(p))
        del frame
        levels.append(_link(vocab.size, levels, ids, p, bo))  # _Unlinked: re-read, name the line
        if levels[-1].packed is not None:  # packed ids find the next contexts: drop the older ones
            levels[-2] = levels[-2]._replace(packed=None)
    if data[pos : pos + len(_END)] != _END or data[pos + len(_END) :].strip():
        raise _Irregular
    return _model(path, vocab, levels)


def _fast_header(data: mmap.mmap | bytes) -> tuple[list[int], int]:
    """The ``\\data\\`` header's n-gram counts, and where the ``\\1-grams:`` marker starts."""
    begin = data.find(b"\\data\\\n")
    if begin < 0 or data[:begin].strip():
        raise _Irregular
    cursor = begin + len(b"\\data\\\n")
    first = data.find(b"\n\\1-grams:\n", cursor - 1)
    if first < 0 or b"\r" in data[:first]:
        raise _Irregular
    sizes = []
    for line in data[cursor:first].split(b"\n"):
        match = _HEADER_ENTRY.fullmatch(line.strip())
        if match is None and line.strip():
            raise _Irregular
        if match is not None:
            if int(match[1]) != len(sizes) + 1:
                raise _Irregular
            sizes.append(int(match[2]))
    if not sizes:
        raise _Irregular
    check_order(len(sizes))
    return sizes, first + 1


def _fast_section(
    data: mmap.mmap | bytes, pos: int, sizes: list[int], n: int, words: pl.DataType
) -> tuple[pl.DataFrame, int]:
    """Order ``n``'s entries, its marker at ``pos``: ``p``, ``w1..wn`` (of type ``words``) and,
    below the top, ``bo``; and where the next marker starts."""
    marker = f"\\{n}-grams:\n".encode()
    if data[pos : pos + len(marker)] != marker:
        raise _Irregular
    after = f"\n\\{n + 1}-grams:\n".encode() if n < len(sizes) else b"\n" + _END
    top, chunks = n == len(sizes), []
    # The next chunk's text is made (copied, spaces made tabs) while Polars parses this one.
    texts = (
        (_chunk_text(data, begin, end, n, top), begin, end)
        for begin, end in _chunks(data, pos + len(marker), after)
    )
    with contextlib.closing(ahead(texts)) as made:
        for text, begin, end in made:
            chunks.append(_parse_chunk(text, n, words, top))
            _let_go(data, begin, end)
    frame = pl.concat(chunks) if len(chunks) > 1 else chunks[0]
    if frame.height != sizes[n - 1]:
        raise _Irregular
    return frame, end + 1


def _chunks(data: mmap.mmap | bytes, start: int, after: bytes) -> Iterator[tuple[int, int]]:
    """A section's body from ``start`` to the newline before the marker ``after``, as ranges of
    about ``CHUNK`` bytes that end at a newline (the last at the marker)."""
    while True:
        stop = data.find(after, start - 1, start + CHUNK + len(after))
        if stop >= 0:
            yield start, stop
            return
        end = data.rfind(b"\n", start, start + CHUNK) + 1 or data.find(b"\n", start + CHUNK) + 1
        if end <= start:  # no newline left, so no marker either
            raise _Irregular
        yield start, end
        start = end


def _chunk_text(data: mmap.mmap | bytes, begin: int, end: int, n: int, top: bool) -> bytes:
    """The whole lines of ``data[begin:end]`` as tab-separated text for the CSV reader."""
    while end > begin and data[end - 1 : end] in (b" ", b"\t", b"\n"):
        end -= 1
    # Lines without a back-off read as null only after a full-width row: lead with one.
    lead = b"" if top else b"0" + b"\t<s>" * n + b"\t0\n"
    with memoryview(data) as view:  # one copy of the text, then one with tabs for spaces
        text = b"".join((lead, view[begin:end]))
    if b"\r" in text:
        raise _Irregular
    return text.replace(b" ", b"\t")


def _parse_chunk(text: bytes, n: int, words: pl.DataType, top: bool) -> pl.DataFrame:
    """Entries of order ``n`` from ``_chunk_text``'s text (none without a ``bo`` below the
    top)."""
    schema = {"p": pl.Float64} | {f"w{i}": words for i in range(1, n + 1)}
    if not top:
        schema["bo"] = pl.Float64
    frame = pl.read_csv(text, separator="\t", has_header=False, schema=schema, quote_char=None)
    if not top:
        frame = frame.slice(1).with_columns(pl.col("bo").fill_null(0.0))
    nulls = pl.sum_horizontal(pl.all().exclude("bo").null_count())
    if frame.select((nulls > 0) | _bad_weights(not top).any()).item():
        raise _Irregular
    return frame


def _let_go(data: mmap.mmap | bytes, start: int, end: int) -> None:
    """Drop the mapped pages of ``data[start:end]`` from the process (they stay in the page
    cache): what has been parsed need not stay resident."""
    if isinstance(data, mmap.mmap):
        first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        last = end // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first:
            data.madvise(mmap.MADV_DONTNEED, first, last - first)


def _with_unk(path: Path, unigrams: pl.DataFrame) -> pl.DataFrame:
    for token in SPECIALS[1:]:
        if token not in unigrams["w1"]:
            raise SeqlmError(f"{path}: no {token} unigram")
    if UNK in unigrams["w1"]:
        return unigrams
    log.warning("%s: no <unk> unigram; unknown words get log10 p = %g", path, MISSING_UNK_LOG10)
    unk = {"line": 0, "p": MISSING_UNK_LOG10, "bo": 0.0, "w1": UNK}
    unk = {k: v for k, v in unk.items() if k in unigrams.columns}
    return pl.concat([unigrams, pl.DataFrame([unk], schema=unigrams.schema)])


def _vocabulary(unigrams: pl.DataFrame) -> Vocabulary:
    words = unigrams.filter(~pl.col("w1").is_in(SPECIALS))["w1"]
    return Vocabulary(
        pl.DataFrame({"token": [*SPECIALS, *words]})
        .with_row_index("id")
        .select("token", pl.col("id").cast(pl.UInt32), pl.lit(0, dtype=pl.UInt64).alias("count"))
    )


def _vocabulary_and_unigrams(
    path: Path, unigrams: pl.DataFrame
) -> tuple[Vocabulary, pl.Enum, list[_Level]]:
    """The file's vocabulary (``<unk>`` added if missing), an ``Enum`` of its tokens, and the
    levels read so far: the unigrams'."""
    unigrams = _with_unk(path, unigrams)
    vocab = _vocabulary(unigrams)
    enum = pl.Enum(vocab.tokens)
    ids = unigrams["w1"].cast(enum).to_physical().to_numpy().astype(np.int64)
    order = np.argsort(ids)
    p = unigrams["p"].to_numpy()[order]
    bo = unigrams["bo"].to_numpy()[order] if "bo" in unigrams.columns else np.zeros(len(ids))
    ids = ids[order]
    return vocab, enum, [_Level(np.zeros(vocab.size, dtype=np.int64), ids, p, bo, ids, ids)]


class _Unlinked(Exception):
    def __init__(self, row: int, problem: str) -> None:
        super().__init__(problem)
        self.row, self.problem = row, problem


def _link(
    size: int, levels: list[_Level], ids: list[np.ndarray], p: np.ndarray, bo: np.ndarray
) -> _Level:
    """One order's level from its word ids and the levels below; ``_Unlinked`` names an entry
    whose context is unlisted, or a repeat."""
    n, bits = len(ids), max(int(size - 1).bit_length(), 1)
    check_key_space(len(levels[-1].key), size, n)
    word = ids[-1].astype(np.int64)
    if n == 2:
        rows = ids[0].astype(np.int64)
    elif levels[-1].packed is not None:
        rows = lookup(levels[-1].packed, _pack(ids[:-1], bits))
    else:
        rows = ids[0].astype(np.int64)
        for k in range(2, n):
            rows = lookup(levels[k - 1].key, rows * size + ids[k - 1])
            if np.any(rows < 0):
                break
    if np.any(rows < 0):
        raise _Unlinked(int(np.argmax(rows < 0)), "'s context is not listed")
    key = rows * size + word
    packed = _pack(ids, bits) if n * bits <= 63 else None
    if np.all(key[1:] > key[:-1]):
        return _Level(rows, word, p, bo, key, packed)
    order = np.argsort(key, kind="stable")
    key = key[order]
    if np.any(key[1:] == key[:-1]):
        raise _Unlinked(int(order[1:][key[1:] == key[:-1]][0]), " is listed twice")
    packed = packed[order] if packed is not None else None
    return _Level(rows[order], word[order], p[order], bo[order], key, packed)


def _pack(ids: list[np.ndarray], bits: int) -> np.ndarray:
    out = ids[0].astype(np.int64)
    for col in ids[1:]:
        out <<= bits
        out |= col
    return out


def _model(path: Path, vocab: Vocabulary, levels: list[_Level]) -> NgramModel:
    return NgramModel(
        vocab,
        context=[level.context for level in levels],
        word=[level.word for level in levels],
        log10_prob=[level.p for level in levels],
        log10_backoff=[level.bo for level in levels],
        info={"smoothing": "arpa", "source": str(path)},
        stored_keys=[level.key for level in levels],  # searched as linked, not worked out again
    )


def _read_lines(path: Path, data: bytes) -> NgramModel:
    """The line-by-line reader: slower, and names the line of any problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SeqlmError(f"{path}: not UTF-8 at byte offset {e.start}") from None
    del data
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
    bad = parsed.filter(_bad_weights())
    if bad.height:
        line, p, bo = bad["line"][0], bad["p"][0], bad["bo"][0]
        if not np.isfinite(p):
            problem = f"log10 p {p:g} is not finite (ARPA writes log 0 as {LOG_ZERO:g})"
        elif p > 0:
            problem = f"log10 p {p:g} is positive (a probability above 1)"
        else:
            problem = f"back-off {bo:g} is not finite"
        raise SeqlmError(f"{path}:{line}: {problem}")
    return parsed.drop("text")


def _bad_weights(backoff: bool = True) -> pl.Expr:
    """Entries whose log10 p is not finite or positive, or whose back-off is not finite."""
    bad = ~pl.col("p").is_finite() | (pl.col("p") > 0)
    return bad | ~pl.col("bo").is_finite() if backoff else bad


def _build(path: Path, grams: list[pl.DataFrame]) -> NgramModel:
    unigrams = grams[0]
    dup = unigrams.filter(pl.col("w1").is_duplicated())
    if dup.height:
        raise SeqlmError(f"{path}:{dup['line'][1]}: unigram {dup['w1'][0]!r} is listed twice")
    vocab, _, levels = _vocabulary_and_unigrams(path, unigrams)
    ids_of_tokens = np.arange(vocab.size, dtype=np.int64)
    for n, frame in enumerate(grams[1:], start=2):
        cols = [
            frame[f"w{i}"].replace_strict(vocab.tokens, ids_of_tokens, default=None)
            for i in range(1, n + 1)
        ]
        unknown = np.logical_or.reduce([c.is_null().to_numpy() for c in cols])
        if unknown.any():
            line = frame["line"][int(np.argmax(unknown))]
            raise SeqlmError(f"{path}:{line}: a word of this {n}-gram is not listed as a unigram")
        ids = [c.to_numpy().astype(np.int64) for c in cols]
        try:
            levels.append(
                _link(vocab.size, levels, ids, frame["p"].to_numpy(), frame["bo"].to_numpy())
            )
        except _Unlinked as e:
            raise SeqlmError(f"{path}:{frame['line'][e.row]}: this {n}-gram{e.problem}") from None
    return _model(path, vocab, levels)
