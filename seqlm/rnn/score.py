"""Scoring a vocabulary stream: the natural-log probability of every target, and sampling.

The stream is the list of targets (each line's ids, then ``</s>``). Each *segment* of it is read
from a ``</s>`` input with a zero state, as if a previous line had just ended, so every element of
the stream is a target:

- carried (the standard setup): the whole stream is one segment and the state runs on across
  lines; ``columns > 1`` cuts it at line ends into that many segments scored side by side (faster;
  the state restarts at each cut, as in the word-language-model example's batched evaluation);
- ``line_reset=True`` (like-for-like with n-gram models): every line is a segment, so each
  line's first token is predicted from the ``</s>`` input and a zero state, and the state is reset
  to zeros after every ``</s>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from seqlm.errors import SeqlmError
from seqlm.rnn.model import RNNLM
from seqlm.vocab import BOS_ID, EOS_ID

# Positions decoded at once: bounds the (rows, vocabulary) logits (160 MB at 10k types).
_DECODE_ROWS = 4096


def _segments(stream: np.ndarray, line_reset: bool, columns: int) -> list[np.ndarray]:
    """Offsets ``[start, end)`` of the segments, cut after ``</s>`` ids."""
    ends = np.flatnonzero(stream == EOS_ID) + 1
    if len(ends) == 0 or ends[-1] != len(stream):
        ends = np.append(ends, len(stream))
    if not line_reset:
        # Cut at the line end nearest each even share of the stream.
        wanted = np.arange(1, columns) * len(stream) / columns
        ends = np.unique(np.append(ends[np.searchsorted(ends, wanted)], len(stream)))
    starts = np.concatenate([[0], ends[:-1]])
    return [np.arange(s, e) for s, e in zip(starts, ends, strict=True)]


@torch.no_grad()
def score_stream(
    model: RNNLM,
    stream: np.ndarray,
    *,
    line_reset: bool = False,
    columns: int = 1,
    window: int = 256,
    batch: int = 256,
) -> np.ndarray:
    """ln p of every target of ``stream`` (float64, aligned with it), segment by segment as the
    module docstring says; ``window`` time steps of up to ``batch`` segments per recurrent call."""
    stream = np.asarray(stream)
    if len(stream) == 0:
        raise SeqlmError("no targets to score (empty stream)")
    if stream.min() < 0 or stream.max() >= model.vocab_size:
        raise SeqlmError(f"stream ids outside the model's vocabulary of {model.vocab_size}")
    was_training = model.training
    model.eval()
    device = model.decoder.weight.device
    data = torch.as_tensor(stream, dtype=torch.long, device=device)
    out = torch.empty(len(stream), dtype=torch.float64, device=device)
    # Longest first, so each batch of segments is padded little.
    segments = sorted(_segments(stream, line_reset, columns), key=len, reverse=True)
    for first in range(0, len(segments), batch):
        group = segments[first : first + batch]
        length = len(group[0])
        pos = torch.full((length, len(group)), -1, dtype=torch.long)
        for b, seg in enumerate(group):
            pos[: len(seg), b] = torch.from_numpy(seg)
        pos = pos.to(device)
        valid = pos >= 0
        targets = data[pos.clamp(min=0)]
        inputs = torch.cat([torch.full_like(targets[:1], EOS_ID), targets[:-1]])
        hidden = model.init_hidden(len(group))
        for t in range(0, length, window):
            h, hidden = model(inputs[t : t + window], hidden)
            v = valid[t : t + window]  # padding is never decoded
            h, where, tgt = h[v], pos[t : t + window][v], targets[t : t + window][v]
            for r in range(0, len(h), _DECODE_ROWS):
                logp = F.log_softmax(model.decoder(h[r : r + _DECODE_ROWS]).float(), dim=-1)
                lp = logp.gather(-1, tgt[r : r + _DECODE_ROWS, None]).squeeze(-1)
                out[where[r : r + _DECODE_ROWS]] = lp.double()
    model.train(was_training)
    return out.cpu().numpy()


@torch.no_grad()
def sample(
    model: RNNLM, n_words: int, *, temperature: float = 1.0, top_k: int = 0, seed: int = 0
) -> np.ndarray:
    """``n_words`` ids drawn one at a time, starting from a ``</s>`` input and a zero state.
    ``<s>`` (context only, never a target) is never drawn; ``top_k`` = 0 keeps every type."""
    if temperature <= 0:
        raise SeqlmError(f"temperature must be positive, not {temperature}")
    if n_words < 0 or top_k < 0:
        raise SeqlmError(f"words ({n_words}) and top-k ({top_k}) must not be negative")
    was_training = model.training
    model.eval()
    device = model.decoder.weight.device
    gen = torch.Generator(device=device).manual_seed(seed)
    ids = torch.empty(n_words, dtype=torch.long, device=device)
    x = torch.full((1, 1), EOS_ID, dtype=torch.long, device=device)
    hidden = model.init_hidden(1)
    for i in range(n_words):
        h, hidden = model(x, hidden)
        logits = model.decoder(h[-1, 0]).float() / temperature
        logits[BOS_ID] = float("-inf")
        if 0 < top_k < len(logits):
            logits[logits < torch.topk(logits, top_k).values[-1]] = float("-inf")
        ids[i] = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)[0]
        x = ids[i].view(1, 1)
    model.train(was_training)
    return ids.cpu().numpy()


@dataclass(frozen=True)
class RNNScorer:
    """A trained model as the pipeline's ``LanguageModel``: ``score_stream(stream) -> ln p``."""

    model: RNNLM
    line_reset: bool = False  # the state restarts at every line
    columns: int = 1

    def score_stream(self, stream: np.ndarray) -> np.ndarray:
        return score_stream(self.model, stream, line_reset=self.line_reset, columns=self.columns)

    def sample(self, n_words: int, seed: int = 0) -> np.ndarray:
        return sample(self.model, n_words, seed=seed)
