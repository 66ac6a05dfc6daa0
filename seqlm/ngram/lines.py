"""Padding a vocabulary stream into lines as KenLM reads them: one ``<s>`` in front of each line.

A stream holds each line's ids followed by ``</s>``; n-grams live inside a padded line
``<s> w1 … wk </s>`` and never cross into the next one. An empty line (two ``</s>`` in a row, or
one at the start) pads to ``<s> </s>``, as ``lmplz`` reads it.
"""

from __future__ import annotations

import numpy as np

from seqlm.errors import SeqlmError
from seqlm.vocab import BOS_ID, EOS_ID

MAX_ORDER = 12  # k-mers of DNA and characters need long contexts


def check_order(order: int) -> None:
    if not 1 <= order <= MAX_ORDER:
        raise SeqlmError(f"n-gram order must be between 1 and {MAX_ORDER}, not {order}")


def check_key_space(contexts: int, vocab_size: int, n: int) -> None:
    """N-grams are found by the key ``context row × vocabulary size + word`` in an int64: refuse
    an order whose ``contexts`` × ``vocab_size`` would overflow it (far beyond any corpus that
    fits in memory, but never silently)."""
    if contexts * vocab_size > 1 << 63:
        raise SeqlmError(
            f"{n}-grams: {contexts:,} contexts × {vocab_size:,} vocabulary entries overflow the "
            "64-bit n-gram keys (cut the vocabulary: vocab.max_size)"
        )


def pad_lines(stream: np.ndarray) -> np.ndarray:
    """The stream with ``<s>`` before every line."""
    stream = np.asarray(stream)
    if len(stream) and stream[-1] != EOS_ID:
        raise SeqlmError("the id stream must end with </s> (id 2): its last line is unterminated")
    if np.any(stream == BOS_ID):
        raise SeqlmError("the id stream holds <s> (id 1), which is context only and never a target")
    ends = np.flatnonzero(stream == EOS_ID)
    starts = np.concatenate(([0], ends[:-1] + 1)) if len(ends) else ends
    narrow = len(stream) == 0 or (int(stream.max()) < 1 << 31 and int(stream.min()) >= 0)
    return np.insert(stream.astype(np.int32 if narrow else np.int64, copy=False), starts, BOS_ID)
