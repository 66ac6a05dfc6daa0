"""What ``seqlm ngram score`` and ``seqlm rnn score`` share: the tokenizer a text is split with,
and one report (KenLM ``query``'s summary lines, or one JSON object) with one exit rule."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from seqlm.corpus import read_lines, tokenize
from seqlm.errors import SeqlmError
from seqlm.evaluate import Perplexity, perplexity
from seqlm.vocab import Vocabulary

UNRECORDED = "whitespace"  # a model with no record (an ARPA file) is read as KenLM reads text


def text_tokenizer(model: Path, recorded: str | None, given: str | None) -> str:
    """The tokenizer to split a text with before ``model`` scores it: the one the model was
    trained with; ``given`` (--tokenizer) may only repeat it."""
    if recorded is not None and given is not None and given != recorded:
        raise SeqlmError(
            f"{model}: trained on text split by the {recorded} tokenizer, not --tokenizer {given} "
            "(scores would compare other tokens)"
        )
    return recorded or given or UNRECORDED


def score_text(
    text: Path,
    tokenizer: str,
    vocab: Vocabulary,
    score: Callable[[np.ndarray], np.ndarray],
    as_json: bool,
) -> int:
    """Score every target of ``text`` (its tokens and one ``</s>`` per line, over ``vocab``'s
    ids) with ``score`` (the stream's per-target natural-log probabilities) and report it."""
    stream = vocab.stream(tokenize(read_lines(text), tokenizer))
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
