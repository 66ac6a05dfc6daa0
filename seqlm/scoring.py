"""What ``seqlm ngram score``, ``seqlm rnn score`` and ``seqlm.load`` share: the tokenizer a text
is split with (a named one, or the subwords saved with the model), the text (a file, or standard
input), and one report (KenLM ``query``'s lines at its ``-v`` levels, or one JSON object) with
one exit rule."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from seqlm import subwords
from seqlm.corpus import CHUNK_BYTES, STDIN, STDIN_NAME, iter_lines, iter_stdin_lines, tokenize
from seqlm.errors import SeqlmError
from seqlm.evaluate import Perplexity, perplexity_of_sums
from seqlm.overlap import ahead
from seqlm.vocab import UNK_ID, Vocabulary

if TYPE_CHECKING:
    from seqlm.ngram.model import NgramModel

Splitter = Callable[[pl.Series], pl.DataFrame]  # lines → their tokens (a ``tokens`` column)

UNRECORDED = "whitespace"  # a model with no record (an ARPA file) is read as KenLM reads text
# query's -v levels: each target, each line's total, the whole text's perplexity.
WORD, SENTENCE, SUMMARY = "word", "sentence", "summary"
LEVELS = (WORD, SENTENCE, SUMMARY)
# Text scored at once where lines are scored on their own: small enough that reading and splitting
# the next chunk overlaps most of the scoring, large enough that NumPy's per-call costs stay thin.
SCORE_CHUNK_BYTES = 8 << 20


def text_tokenizer(model: Path, recorded: str | None, given: str | None) -> str:
    """The tokenizer to split a text with before ``model`` scores it: the one the model was
    trained with; ``given`` (--tokenizer) may only repeat it."""
    if recorded is not None and given is not None and given != recorded:
        raise SeqlmError(
            f"{model}: trained on text split by the {recorded} tokenizer, not --tokenizer {given} "
            "(scores would compare other tokens)"
        )
    if recorded is None and given == subwords.BPE:
        raise SeqlmError(
            f"{model}: records no tokenizer (an ARPA file cannot carry one): score the folder "
            "saved with the model, which holds its bpe tokenizer"
        )
    return recorded or given or UNRECORDED


def splitter(tokenizer: str, folder: Path) -> Splitter:
    """How a model's text is split into tokens: by a named tokenizer, or (``bpe``) by the
    subword tokenizer saved in the model's ``folder``, exactly the one it was trained with."""
    if tokenizer == subwords.BPE:
        return partial(subwords.encode, subwords.load(folder / subwords.TOKENIZER_FILE))
    return partial(tokenize, tokenizer=tokenizer)


def text_chunks(text: Path | str | None, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pl.Series]:
    """The lines of ``text``, or of standard input when it is None or ``-`` (read as a ``.txt``
    file is), in chunks of whole lines of about ``chunk_bytes``."""
    if text is not None and Path(text) != STDIN:
        return iter_lines(Path(text), chunk_bytes=chunk_bytes)
    return iter_stdin_lines(chunk_bytes)


def score_text(
    text: Path | str | None,
    split: Splitter,
    vocab: Vocabulary,
    score: Callable[[np.ndarray], np.ndarray],
    as_json: bool,
    levels: Sequence[str] = (SUMMARY,),
    lengths: Callable[[np.ndarray], np.ndarray] | None = None,
    by_line: bool = False,
) -> int:
    """Score every target of ``text`` (a file, or standard input: see :func:`text_chunks`; its
    tokens as ``split`` gives them and one ``</s>`` per line, over ``vocab``'s ids) with
    ``score`` (the stream's per-target natural-log probabilities) and report it at ``levels``
    (query's -v). The word level needs ``lengths``: each target's matched n-gram length.

    ``by_line``: ``score`` scores each line on its own (n-grams), so the text is scored in
    chunks, the next read and split in a thread while one is scored, and is never whole in
    memory; otherwise it is scored whole (a recurrent state runs on from line to line)."""
    name = str(text) if text is not None and Path(text) != STDIN else STDIN_NAME
    if as_json and set(levels) != {SUMMARY}:
        raise SeqlmError("--json prints one JSON object, the summary: not with -v word|sentence")
    if WORD in levels and lengths is None:
        raise SeqlmError("-v word: this model has no n-gram lengths to print")
    chunks = text_chunks(text, SCORE_CHUNK_BYTES if by_line else CHUNK_BYTES)
    if not by_line:
        chunks = iter([pl.concat([pl.Series("text", [], dtype=pl.String), *chunks])])
    sums = np.zeros(4)  # Σ ln p, Σ ln p of the known targets, the <unk> targets, all targets
    for lines, stream in ahead(_streams(chunks, split, vocab)):
        logprobs = score(stream)
        if WORD in levels or SENTENCE in levels:
            per_word = lengths(stream) if WORD in levels else None
            sys.stdout.write(_details(lines, stream, logprobs / math.log(10), per_word, levels))
        unknown = stream == UNK_ID
        sums += (logprobs.sum(), logprobs[~unknown].sum(), unknown.sum(), len(stream))
    if sums[3] == 0:
        raise SeqlmError(f"{name}: no text to score")
    return _report(perplexity_of_sums(*sums), name, as_json, SUMMARY in levels)


def _streams(
    chunks: Iterator[pl.Series], split: Splitter, vocab: Vocabulary
) -> Iterator[tuple[pl.DataFrame, np.ndarray]]:
    """Each chunk's lines split into tokens, and their id stream (none for a chunk of no line)."""
    for chunk in chunks:
        if len(chunk):
            lines = split(chunk)
            yield lines, vocab.stream(lines)


def ngram_lengths(model: NgramModel, stream: np.ndarray) -> np.ndarray:
    """The length of the n-gram each target of ``stream`` is scored by (query's ngram_length)."""
    return model.score_tokens(stream).ngram_length.astype(np.int64)


def _details(
    lines: pl.DataFrame,
    stream: np.ndarray,
    log10p: np.ndarray,
    lengths: np.ndarray | None,
    levels: Sequence[str],
) -> str:
    """query's per-word and per-line output: ``word=id n log10p`` and a tab for each target,
    then ``Total: log10 OOV: k`` (sentence level) and a newline for each line. Unlike query,
    whose word level alone ends no line, every line ends in a newline."""
    per_line = lines["tokens"].list.len().to_numpy().astype(np.int64) + 1  # its </s> too
    starts = np.concatenate(([0], np.cumsum(per_line)[:-1]))
    line_end = pl.Series(np.repeat("\n", len(per_line)), dtype=pl.String)
    if SENTENCE in levels:
        totals = _float32_text(np.add.reduceat(log10p, starts))
        oov = np.add.reduceat((stream == UNK_ID).astype(np.int64), starts)
        line_end = "Total: " + totals + " OOV: " + pl.Series(oov).cast(pl.String) + line_end
    if WORD not in levels:
        return line_end.str.join("").item()
    words = lines["tokens"].list.concat(pl.lit(["</s>"])).explode()
    tail = np.full(len(stream), "", dtype=object)  # after each line's </s>, the line's end
    tail[starts + per_line - 1] = line_end.to_numpy()
    entries = pl.select(
        pl.concat_str(
            words,
            pl.lit("="),
            pl.Series(stream).cast(pl.String),
            pl.lit(" "),
            pl.Series(lengths).cast(pl.String),
            pl.lit(" "),
            _float32_text(log10p),
            pl.lit("\t"),
            pl.Series(tail, dtype=pl.String),
        )
    ).to_series()
    return entries.str.join("").item()


def _float32_text(values: np.ndarray) -> pl.Series:
    """As KenLM prints a float: the shortest digits that read back as the same float32, and no
    ``.0`` on a whole number."""
    return pl.Series(values, dtype=pl.Float32).cast(pl.String).str.replace(r"\.0$", "")


def _report(result: Perplexity, text: str, as_json: bool, summary: bool = True) -> int:
    """Print the report (the summary lines unless ``summary`` is off); a perplexity that is not
    finite (a target the model gives probability 0) is reported, then refused in one line (exit
    status 1)."""
    if summary and as_json:
        print(
            json.dumps(
                {
                    "perplexity": result.ppl,
                    "perplexity_no_unk": result.ppl_no_unk,
                    "oov": result.oov,
                    "targets": result.targets,
                }
            )
        )
    elif summary:
        print(f"Perplexity including OOVs:\t{result.ppl:.10g}")
        print(f"Perplexity excluding OOVs:\t{result.ppl_no_unk:.10g}")
        print(f"OOVs:\t{result.oov}")
        print(f"Tokens:\t{result.targets}")
    if not math.isfinite(result.ppl):
        raise SeqlmError(f"{text}: perplexity {result.ppl} (a target has probability 0)")
    return 0
