"""What ``seqlm ngram score``, ``seqlm rnn score`` and ``seqlm.load`` share: the tokenizer a text
is split with (a named one, or the subwords saved with the model), and one report (KenLM
``query``'s summary lines, or one JSON object) with one exit rule."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from seqlm import subwords
from seqlm.corpus import read_lines, tokenize
from seqlm.errors import SeqlmError
from seqlm.evaluate import Perplexity, perplexity
from seqlm.vocab import Vocabulary

Splitter = Callable[[pl.Series], pl.DataFrame]  # lines → their tokens (a ``tokens`` column)

UNRECORDED = "whitespace"  # a model with no record (an ARPA file) is read as KenLM reads text


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


def score_text(
    text: Path,
    split: Splitter,
    vocab: Vocabulary,
    score: Callable[[np.ndarray], np.ndarray],
    as_json: bool,
) -> int:
    """Score every target of ``text`` (its tokens as ``split`` gives them and one ``</s>`` per
    line, over ``vocab``'s ids) with ``score`` (the stream's per-target natural-log
    probabilities) and report it."""
    stream = vocab.stream(split(read_lines(text)))
    if len(stream) == 0:
        raise SeqlmError(f"{text}: no text to score")
    return _report(perplexity(score(stream), stream), text, as_json)


def _report(result: Perplexity, text: Path, as_json: bool) -> int:
    """Print the report; a perplexity that is not finite (a target the model gives probability
    0) is reported, then refused in one line (exit status 1)."""
    if as_json:
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
    else:
        print(f"Perplexity including OOVs:\t{result.ppl:.10g}")
        print(f"Perplexity excluding OOVs:\t{result.ppl_no_unk:.10g}")
        print(f"OOVs:\t{result.oov}")
        print(f"Tokens:\t{result.targets}")
    if not math.isfinite(result.ppl):
        raise SeqlmError(f"{text}: perplexity {result.ppl} (a target has probability 0)")
    return 0
