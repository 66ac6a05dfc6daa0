"""Corpus ingestion: find the source files, read their lines, tokenise, split, write Parquet shards.

Every line is a sentence, empty lines included, as KenLM counts them: a line that is empty, holds
only whitespace, or whose tokens the tokenizer all removes is a sentence with no word (one ``</s>``
target; ``lmplz`` trains on it as ``<s> </s>``). A text's final newline does not make an extra
line ("a\n\nb\n" holds 3 lines, "a\nb" 2); ``\r\n`` line endings and a UTF-8 byte-order mark
at the start of a file are stripped. A JSONL/Parquet document splits into lines the same way (a
null document is skipped; an empty one is one empty line). Each source file becomes one shard per
split (``train.parquet``, ``valid.parquet``, ``test.parquet``, a ``tokens: list[str]`` column,
one row per line), so a corpus that gains a file only ingests that file.

Files are read in chunks of whole lines (``iter_lines``; ``train_chunks`` for a corpus's training
text, ``-`` being standard input), so that a file never has to fit in memory where it is consumed
chunk by chunk (``seqlm ngram count``, the pipeline's ingestion). Ingestion's split into blocks
by fractions needs the number of lines first: a first pass counts them (newlines, for text), the
second tokenises chunk by chunk and writes each split's shard a row group at a time, so that it
holds one chunk's lines and tokens (``CHUNK_BYTES`` of text) whatever the file's size.

A FASTA/FASTQ file (read by ``dnaio``) is a sequence corpus: with the ``char`` tokenizer each
residue is a symbol (the word tokenizers are refused for it); lower case (soft-masked) becomes upper
case, and each record is cut into consecutive lines of ``window`` residues (the last one shorter),
so that the split into contiguous blocks of lines is a split by position and nothing leaks.

pyarrow is imported where Parquet is read or written: scoring a text file starts without it.
"""

from __future__ import annotations

import gzip
import io
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

import polars as pl

from seqlm.errors import SeqlmError

# The bundled corpus (Tiny Shakespeare), relative to the project root.
DEFAULT_CORPUS = "data/tinyshakespeare/input.txt"
SPLITS = ("train", "valid", "test")
# Sequence files by suffix: their format, and the residues they may hold (IUPAC codes).
NUCLEOTIDES = "ACGTUNRYSWKMBDHV"
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY" + "BJOUXZ*"
SEQUENCE_FORMATS = {
    suffix + gz: (fmt, alphabet)
    for suffix, fmt, alphabet in (
        (".fa", "fasta", NUCLEOTIDES),
        (".fasta", "fasta", NUCLEOTIDES),
        (".fna", "fasta", NUCLEOTIDES),
        (".faa", "fasta", AMINO_ACIDS),
        (".fq", "fastq", NUCLEOTIDES),
        (".fastq", "fastq", NUCLEOTIDES),
    )
    for gz in ("", ".gz")
}
SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".parquet", *SEQUENCE_FORMATS)
# Residues per line of a sequence record. Each line end is a scored target the cut invents
# (about log2(window) / window bits per residue): at 1000, about 0.01 bits.
WINDOW = 1000
MAX_WINDOW = 10_000

# Python's str.split(): runs of whitespace separate tokens; text is kept exactly as it is.
_WHITESPACE = r"\S+"
# Words (with inner apostrophes, "don't") and every other non-space character as its own token.
_WORDS_AND_PUNCT = r"\w+(?:'\w+)*|[^\w\s]"
WORD_TOKENIZERS = ("whitespace", "punct")
# bpe: subwords learnt from the train split (seqlm.subwords); ingestion keeps the lines' text.
TOKENIZERS = (*WORD_TOKENIZERS, "char", "bpe")
# The char tokenizer's stand-in for a whitespace character: a visible symbol with no whitespace
# inside, so that ARPA files and KenLM's query take it as one token.
SPACE = "\u2581"

_BOM = "\ufeff"
# Text per chunk the streaming readers hand on: big enough that per-chunk work is negligible,
# small enough that a chunk's lines, tokens and ids stay well inside a memory budget.
CHUNK_BYTES = 64 << 20
FIRST_BLOCK = 1 << 20  # a text file's first chunk: see _blocks
STDIN = Path("-")  # the corpus or text name that reads standard input, as in most Unix tools
STDIN_NAME = "standard input"  # how a message names it

_SPLIT_FILE = re.compile(
    rf"^(?:.*\.)?(train|valid|test)({'|'.join(re.escape(s) for s in SUFFIXES)})$"
)


@dataclass(frozen=True)
class Source:
    """One input file; ``split`` is None when the file is a whole corpus to be split by lines."""

    path: Path
    split: str | None = None


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in SUFFIXES if name.endswith(s)), None)


def discover(path: str | Path) -> list[Source]:
    """The source files of a corpus: a file, a directory of split files, or a directory of files."""
    path = Path(path)
    if not path.exists():
        raise SeqlmError(f"{path}: no such file or directory")
    if not path.is_dir():
        check_regular_file(path)
        if _suffix(path) is None:
            raise SeqlmError(f"{path}: unsupported file type (expected {', '.join(SUFFIXES)})")
        return _not_empty([Source(path)])
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and _suffix(p)
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    split_files = {m.group(1): p for p in files if (m := _SPLIT_FILE.match(p.name.lower()))}
    if split_files:
        missing = [s for s in SPLITS if s not in split_files]
        if missing:
            raise SeqlmError(f"{path}: split files found but no {' or '.join(missing)} split")
        return _not_empty([Source(split_files[s], s) for s in SPLITS])
    if not files:
        raise SeqlmError(f"{path}: no corpus files ({', '.join(SUFFIXES)})")
    return _not_empty([Source(p) for p in files])


def _not_empty(sources: list[Source]) -> list[Source]:
    """Refuse a text or JSONL file of no byte now, as ingestion would, rather than after a
    pipeline has started its server."""
    for source in sources:
        if _suffix(source.path) in (".txt", ".jsonl") and source.path.stat().st_size == 0:
            raise _no_lines(source.path)
    return sources


def _no_lines(path: Path) -> SeqlmError:
    return SeqlmError(f"{path}: empty corpus (no lines)")


def check_regular_file(path: Path) -> None:
    """Refuse a path that is not a regular file (a FIFO, a device, a socket) before reading it:
    reading one could block or never end."""
    if not path.is_file():
        what = "no such file" if not path.exists() else "not a regular file"
        raise SeqlmError(f"{path}: {what}")


def _decode(path: Path, raw: bytes, offset: int = 0) -> str:
    """``raw`` as UTF-8; ``offset``: where it starts in the file, so an error names the byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SeqlmError(f"{path}: not UTF-8 at byte offset {offset + e.start}") from None


def read_lines(path: Path, text_field: str = "text", window: int = WINDOW) -> pl.Series:
    """The text lines of one file, empty lines included (``text_field`` names the JSONL field or
    Parquet column); a file with no byte of text has no line. A sequence file's lines are its
    records cut into ``window`` residues."""
    chunks = list(iter_lines(path, text_field, window))
    return pl.concat(chunks) if chunks else pl.Series("text", [], dtype=pl.String)


def iter_lines(
    path: Path, text_field: str = "text", window: int = WINDOW, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[pl.Series]:
    """``read_lines`` in chunks of whole lines, about ``chunk_bytes`` of text each (more where
    one line or document is longer), so that a file never has to fit in memory; their
    concatenation is ``read_lines(path)``."""
    check_regular_file(path)
    suffix = _suffix(path)
    if suffix in SEQUENCE_FORMATS:
        yield from _sequence_chunks(path, window, chunk_bytes)
    elif suffix == ".txt":
        with path.open("rb") as file:
            yield from _text_chunks(path, _blocks(file, chunk_bytes))
    elif suffix == ".txt.gz":
        with gzip.open(path, "rb") as file:
            yield from _text_chunks(path, _blocks(file, chunk_bytes, path))
    elif suffix == ".jsonl":
        with path.open("rb") as file:
            yield from _jsonl_chunks(path, _blocks(file, chunk_bytes), text_field)
    elif suffix == ".parquet":
        yield from _parquet_chunks(path, text_field, chunk_bytes)
    else:
        raise SeqlmError(f"{path}: unsupported file type (expected {', '.join(SUFFIXES)})")


def iter_stdin_lines(chunk_bytes: int = CHUNK_BYTES) -> Iterator[pl.Series]:
    """Standard input's lines in chunks, read as a ``.txt`` file is."""
    yield from _text_chunks(Path(STDIN_NAME), _blocks(sys.stdin.buffer, chunk_bytes))


def _blocks(file: BinaryIO, size: int, gzip_path: Path | None = None) -> Iterator[bytes]:
    """``file``'s bytes in blocks of ``size``, the first ones smaller (from ``FIRST_BLOCK``,
    doubling): whatever works on the text starts at once, not after a whole chunk is read and
    split. A gzip file's damage is one line naming it."""
    block_size = min(size, FIRST_BLOCK)
    while True:
        try:
            block = file.read(block_size)
        except (OSError, EOFError) as e:
            if gzip_path is None:
                raise
            raise SeqlmError(f"{gzip_path}: not a gzip file ({e})") from None
        if not block:
            return
        yield block
        block_size = min(size, 2 * block_size)


def _whole_lines(blocks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """``(offset, bytes)`` of runs of whole lines: each block cut after its last newline and the
    rest carried into the next (a line longer than a block spans several); the last run may lack
    its newline. A newline byte never occurs inside a multi-byte UTF-8 character."""
    carry: list[bytes] = []
    offset = 0
    for block in blocks:
        cut = block.rfind(b"\n") + 1
        if cut == 0:
            carry.append(block)
            continue
        run = b"".join([*carry, block[:cut]])
        yield offset, run
        offset += len(run)
        carry = [block[cut:]]
    rest = b"".join(carry)
    if rest:
        yield offset, rest


def _text_chunks(path: Path, blocks: Iterable[bytes]) -> Iterator[pl.Series]:
    for offset, raw in _whole_lines(blocks):
        text = _decode(path, raw, offset)
        if offset == 0:
            text = text.removeprefix(_BOM)
        if text:
            yield split_lines(pl.Series("text", [text], dtype=pl.String))


def _jsonl_chunks(path: Path, blocks: Iterable[bytes], text_field: str) -> Iterator[pl.Series]:
    """Each run of whole JSON lines read by Polars. A run where no document has the field (or
    every one holds null) has no line; the file is refused for it only if no run has one."""
    absent: SeqlmError | None = None
    found = False
    for offset, raw in _whole_lines(blocks):
        if offset == 0:
            raw = raw.removeprefix(_BOM.encode())
        _decode(path, raw, offset)
        if not raw.strip():
            continue
        try:
            frame = pl.read_ndjson(io.BytesIO(raw), infer_schema_length=None)
        except pl.exceptions.PolarsError as e:
            raise SeqlmError(f"{path}: not valid JSON lines ({str(e).splitlines()[0]})") from None
        try:
            texts = _text_column(path, frame, text_field, "field")
        except SeqlmError as e:
            if text_field in frame.columns and frame[text_field].dtype != pl.Null:
                raise
            absent = absent or e
            continue
        found = True
        yield split_lines(texts)
    if absent is not None and not found:
        raise absent


def _parquet_chunks(path: Path, text_field: str, chunk_bytes: int) -> Iterator[pl.Series]:
    """The text column only, in batches of about ``chunk_bytes`` (rows sized by the file's
    uncompressed bytes per row)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
        _text_column(path, pl.from_arrow(file.schema_arrow.empty_table()), text_field, "column")
        meta = file.metadata
        size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        rows = max(1, chunk_bytes * meta.num_rows // max(size, 1))
        for batch in file.iter_batches(batch_size=rows, columns=[text_field]):
            yield split_lines(pl.from_arrow(batch)[text_field])
    except (pa.ArrowException, OSError) as e:
        raise SeqlmError(f"{path}: not a Parquet file ({str(e).splitlines()[0]})") from None


def split_lines(texts: pl.Series) -> pl.Series:
    """Each document's lines, in order: its final newline ends its last line rather than opening
    another, so "" and "\n" are one empty line each; a null document has none."""
    return (
        texts.drop_nulls()
        .str.strip_suffix("\n")
        .str.split("\n")
        .explode(empty_as_null=False)
        .str.strip_suffix("\r")
        .rename("text")
    )


def is_sequence_file(path: Path) -> bool:
    return _suffix(path) in SEQUENCE_FORMATS


def _sequence_chunks(path: Path, window: int, chunk_bytes: int) -> Iterator[pl.Series]:
    """A FASTA/FASTQ file's records in batches of about ``chunk_bytes`` residues, each record
    upper case and cut into consecutive lines of ``window`` residues (the last one shorter)."""
    fmt, alphabet = SEQUENCE_FORMATS[_suffix(path)]
    for records in _read_records(path, fmt, chunk_bytes):
        yield _cut_records(path, records, alphabet, window)


def _cut_records(path: Path, records: pl.DataFrame, alphabet: str, window: int) -> pl.Series:
    """The records' lines; refuses an empty record and a residue outside the alphabet."""
    empty = records.filter(pl.col("sequence") == "")
    if empty.height:
        raise SeqlmError(f"{path}: record {empty['id'][0]} is empty (no residue)")
    sequences = records["sequence"].str.to_uppercase()
    outside = f"[^{re.escape(alphabet)}]"  # one pattern for Polars' and Python's regex
    bad = sequences.str.contains(outside)
    if bad.any():
        row = int(bad.arg_true()[0])
        found = re.search(outside, sequences[row])
        residue = "a nucleotide" if alphabet == NUCLEOTIDES else "an amino acid"
        raise SeqlmError(
            f"{path}: record {records['id'][row]}, position {found.start() + 1}: "
            f"{found.group()!r} is not {residue}"
        )
    # Residues are ASCII letters or '*' now: the pattern stays small up to MAX_WINDOW.
    return sequences.str.extract_all(f"[A-Z*]{{1,{window}}}").explode().rename("text")


def _read_records(path: Path, fmt: str, chunk_bytes: int) -> Iterator[pl.DataFrame]:
    """Batches of records, about ``chunk_bytes`` residues each: every record's id (its name up
    to the first space) and residues, as ``dnaio`` reads them (gzip too); its format errors
    become one line naming the file."""
    import dnaio  # only where a sequence file is read: text corpora and scoring never need it

    schema = {"id": pl.String, "sequence": pl.String}
    try:
        with dnaio.open(path, fileformat=fmt) as reader:
            batch, size = [], 0
            for record in reader:
                batch.append((record.id, record.sequence))
                size += len(record.sequence)
                if size >= chunk_bytes:
                    yield pl.DataFrame(batch, schema=schema, orient="row")
                    batch, size = [], 0
            if batch:
                yield pl.DataFrame(batch, schema=schema, orient="row")
    except dnaio.exceptions.FileFormatError as e:
        where = f"line {e.line + 1}: " if e.line is not None else ""
        message = str(e.args[0]).splitlines()[0] if e.args else type(e).__name__
        raise SeqlmError(f"{path}: not a valid {fmt.upper()} file ({where}{message})") from None
    except (OSError, EOFError) as e:
        raise SeqlmError(f"{path}: damaged or not a gzip file ({e})") from None


def _text_column(path: Path, frame: pl.DataFrame, name: str, what: str) -> pl.Series:
    if name not in frame.columns:
        raise SeqlmError(f"{path}: no text {what} {name!r} (has: {', '.join(frame.columns)})")
    if frame[name].dtype != pl.String:
        raise SeqlmError(f"{path}: {what} {name!r} holds {frame[name].dtype}, not text")
    return frame[name]


def tokenize(lines: pl.Series, tokenizer: str) -> pl.DataFrame:
    """One row per line, its tokens in a ``tokens: list[str]`` column (empty for a line with no
    token: it is still a sentence). ``char``: each character is a token, and each whitespace
    character the token ``SPACE`` (a line of spaces is a line of such tokens)."""
    if tokenizer == "whitespace":
        tokens = _whitespace_tokens(lines)
    elif tokenizer == "punct":
        tokens = lines.str.to_lowercase().str.extract_all(_WORDS_AND_PUNCT)
    elif tokenizer == "char":  # every character a token, whitespace as its stand-in
        tokens = lines.str.replace_all(r"\s", SPACE).str.extract_all(".")
    elif tokenizer == "bpe":  # the text as it is, for subwords learnt from the train split
        return lines.rename("text").to_frame()
    else:
        raise SeqlmError(f"unknown tokenizer {tokenizer!r} (choose from {', '.join(TOKENIZERS)})")
    return tokens.rename("tokens").to_frame()


def _whitespace_tokens(lines: pl.Series) -> pl.Series:
    """Each line's runs of non-whitespace. Where the only whitespace is single spaces between
    words (as in most corpora, and in text KenLM writes) the lines are split at them instead:
    the same tokens in two thirds of the regex's time (20M tokens: 0.94-1.15 s, not 1.46-1.60)."""
    words = lines.str.strip_chars(" ")
    if words.str.contains("  ", literal=True).any() or words.str.contains(r"[^\S ]").any():
        return lines.str.extract_all(_WHITESPACE)
    none = pl.lit([], dtype=pl.List(pl.String))
    return pl.select(pl.when(words == "").then(none).otherwise(words.str.split(" "))).to_series()


def require_words(lines: pl.DataFrame, where: Path) -> None:
    """Refuse training text with no line, or with lines but no word: its vocabulary would have
    nothing to predict but ``</s>`` (``lmplz`` refuses such a corpus too)."""
    _check_training(where, lines.height, lines.height > 0 and has_words(lines))


def has_words(lines: pl.DataFrame) -> bool:
    if "tokens" in lines.columns:
        return lines["tokens"].list.len().sum() > 0
    return lines["text"].str.contains(r"\S").any()


def _check_training(where: Path, n_lines: int, words: bool) -> None:
    if n_lines == 0:
        raise _no_lines(where)
    if not words:
        raise SeqlmError(f"{where}: no words to train on ({n_lines:,} lines, all empty)")


def split_blocks(
    n_lines: int, fractions: Sequence[float], where: Path
) -> dict[str, tuple[int, int]]:
    """Contiguous (start, length) blocks of train, valid and test; none may be empty."""
    n_valid = round(n_lines * fractions[1])
    n_test = round(n_lines * fractions[2])
    lengths = {"train": n_lines - n_valid - n_test, "valid": n_valid, "test": n_test}
    for split, length in lengths.items():
        if length <= 0:
            raise SeqlmError(f"{where}: the {split} split is empty ({n_lines} lines in all)")
    starts = {"train": 0, "valid": lengths["train"], "test": lengths["train"] + n_valid}
    return {s: (starts[s], lengths[s]) for s in SPLITS}


FRACTIONS = (0.9, 0.05, 0.05)  # a whole file's train, valid and test blocks


def require_symbols(path: Path, tokenizer: str) -> None:
    """A sequence file has no words: the word tokenizers are refused for it (``char`` reads one
    residue per token; a subword tokenizer reads the residues' lines as text)."""
    if is_sequence_file(path) and tokenizer in WORD_TOKENIZERS:
        raise SeqlmError(
            f"{path}: a FASTA/FASTQ file has no words, so not the {tokenizer} tokenizer: set "
            'corpus.tokenizer = "char" (--tokenizer char) to read one residue per token'
        )


CHARS = "chars"  # a line's characters as read (a sequence line's residues)


def split_source(
    source: Source,
    tokenizer: str,
    text_field: str = "text",
    fractions: Sequence[float] | None = FRACTIONS,
    window: int = WINDOW,
) -> dict[str, pl.DataFrame]:
    """The tokenised lines of one source file by split: a split file's own split; any other file
    cut into blocks by ``fractions`` or, with None, training text whole (as ``lmplz`` reads its
    input). A file with no line is refused, and so is training text with no word."""
    splits = _split_counted(source, tokenizer, text_field, fractions, window)
    return {split: lines.drop(CHARS) for split, lines in splits.items()}


def _split_counted(
    source: Source,
    tokenizer: str,
    text_field: str,
    fractions: Sequence[float] | None,
    window: int,
) -> dict[str, pl.DataFrame]:
    """``split_source``'s splits, each line with its number of characters (``CHARS``)."""
    require_symbols(source.path, tokenizer)
    text = read_lines(source.path, text_field, window)
    parts: dict[str, list[pl.DataFrame]] = {}
    for split, lines in _pieces(source, [text], lambda: len(text), tokenizer, fractions):
        parts.setdefault(split, []).append(lines)
    return {split: pl.concat(frames) for split, frames in parts.items()}


def _pieces(
    source: Source,
    texts: Iterable[pl.Series],
    count: Callable[[], int],
    tokenizer: str,
    fractions: Sequence[float] | None,
) -> Iterator[tuple[str, pl.DataFrame]]:
    """The tokenised lines of one source file, each with its characters (``CHARS``), as
    consecutive ``(split, lines)`` pieces in the file's order, from its lines in chunks
    (``texts``); ``count()`` gives their number where fractions cut the file into blocks. A file
    with no line is refused, and so is training text with no word, once the last chunk is read."""
    whole = (0, sys.maxsize)
    if source.split is not None:
        blocks = {source.split: whole}
    elif fractions is None:
        blocks = {"train": whole}
    else:
        n_lines = count()
        if n_lines == 0:
            raise _no_lines(source.path)
        blocks = split_blocks(n_lines, fractions, source.path)
    start, n_train, words = 0, 0, False
    for text in texts:
        lines = tokenize(text, tokenizer).with_columns(text.str.len_chars().alias(CHARS))
        for split, (first, length) in blocks.items():
            lo, hi = max(first, start), min(first + length, start + lines.height)
            if lo < hi:
                piece = lines.slice(lo - start, hi - lo)
                if split == "train":
                    n_train += piece.height
                    words = words or has_words(piece)
                yield split, piece
        start += lines.height
    if start == 0:
        raise _no_lines(source.path)
    if "train" in blocks:
        _check_training(source.path, n_train, words)


def count_lines(
    path: Path, text_field: str = "text", window: int = WINDOW, chunk_bytes: int = CHUNK_BYTES
) -> int:
    """How many lines ``iter_lines(path)`` gives, read in blocks: a text file's newlines (and an
    unterminated last line), any other file's lines as read."""
    check_regular_file(path)
    suffix = _suffix(path)
    if suffix not in (".txt", ".txt.gz"):
        return sum(len(lines) for lines in iter_lines(path, text_field, window, chunk_bytes))
    bom = _BOM.encode()
    newlines, size, head, last = 0, 0, b"", b"\n"
    with (gzip.open if suffix == ".txt.gz" else open)(path, "rb") as file:
        for block in _blocks(file, chunk_bytes, path if suffix == ".txt.gz" else None):
            newlines += block.count(b"\n")
            size += len(block)
            head += block[: len(bom) - len(head)]
            last = block[-1:]
    # An unterminated last line is a line, unless it is nothing but the byte-order mark.
    unterminated = last != b"\n" and not (size == len(bom) and head == bom)
    return newlines + unterminated


def ingest(
    source: Source,
    out_dir: Path,
    tokenizer: str,
    text_field: str = "text",
    fractions: Sequence[float] = FRACTIONS,
    window: int = WINDOW,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict[str, int]:
    """Tokenise one source file into ``<split>.parquet`` shards in ``out_dir``, chunk by chunk of
    about ``chunk_bytes`` of text (one row group or more each); returns the number of lines per
    split (``<split>``) and their characters as read (``<split>_chars``: line ends not counted;
    a sequence's residues)."""
    import pyarrow.parquet as pq

    require_symbols(source.path, tokenizer)
    texts = iter_lines(source.path, text_field, window, chunk_bytes)
    count = partial(count_lines, source.path, text_field, window, chunk_bytes)
    rows: dict[str, int] = {}
    with ExitStack() as stack:
        writers: dict[str, pq.ParquetWriter] = {}
        for split, lines in _pieces(source, texts, count, tokenizer, fractions):
            table = lines.drop(CHARS).to_arrow()
            if split not in writers:
                path = out_dir / f"{split}.parquet"
                writers[split] = stack.enter_context(
                    pq.ParquetWriter(path, table.schema, compression="zstd")
                )
            writers[split].write_table(table)
            rows[split] = rows.get(split, 0) + lines.height
            rows[f"{split}_chars"] = rows.get(f"{split}_chars", 0) + int(lines[CHARS].sum())
    return rows


def load_corpus(
    path: str | Path,
    tokenizer: str,
    splits: Sequence[str] = SPLITS,
    text_field: str = "text",
    fractions: Sequence[float] | None = FRACTIONS,
    window: int = WINDOW,
) -> dict[str, pl.DataFrame]:
    """The tokenised lines of each of ``splits`` of a corpus, in memory, concatenated over its
    files in order, as the pipeline's ingestion splits them (``split_source``); the command-line
    tools and benchmarks read a corpus with it. Split files of other splits are not read."""
    parts: dict[str, list[pl.DataFrame]] = {split: [] for split in splits}
    for source in discover(path):
        if source.split is not None and source.split not in parts:
            continue
        for split, lines in split_source(source, tokenizer, text_field, fractions, window).items():
            if split in parts:
                parts[split].append(lines)
    for split, frames in parts.items():
        if not frames:
            raise SeqlmError(f"{path}: no {split} text")
    return {split: pl.concat(frames) for split, frames in parts.items()}


def iter_split(shard_dir: Path, split: str, rows: int = 1 << 16) -> Iterator[pl.DataFrame]:
    """One shard's lines of ``split`` in batches of ``rows`` lines, as ``load_split`` reads them
    whole."""
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(shard_dir / f"{split}.parquet").iter_batches(rows):
        yield pl.from_arrow(batch)


def load_split(shard_dirs: Sequence[Path], split: str) -> pl.DataFrame:
    """The lines of one split, concatenated over the ingested shards in order."""
    files = [d / f"{split}.parquet" for d in shard_dirs if (d / f"{split}.parquet").exists()]
    if not files:
        raise SeqlmError(f"the {split} split is empty (no shard holds it)")
    return pl.read_parquet(files)


def train_chunks(
    path: str | Path,
    tokenizer: str,
    text_field: str = "text",
    window: int = WINDOW,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[pl.DataFrame]:
    """The tokenised training lines of a corpus in chunks of whole lines, in order: what
    ``load_corpus(path, tokenizer, ["train"], fractions=None)`` reads whole, as ``lmplz`` reads
    its input, with each file refused as ``split_source`` refuses it once its last chunk is read.
    ``-`` reads standard input as a ``.txt`` file."""
    if Path(path) == STDIN:
        sources = [Source(STDIN)]
    else:
        sources = [s for s in discover(path) if s.split in (None, "train")]
    for source in sources:
        require_symbols(source.path, tokenizer)
        if source.path == STDIN:
            texts = iter_stdin_lines(chunk_bytes)
        else:
            texts = iter_lines(source.path, text_field, window, chunk_bytes)
        n_lines, words = 0, False
        for text in texts:
            lines = tokenize(text, tokenizer)
            n_lines += lines.height
            words = words or has_words(lines)
            yield lines
        _check_training(source.path, n_lines, words)
