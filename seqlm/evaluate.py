"""Perplexity over a stream of targets, the same way for every model family.

Targets are the ids of a vocabulary stream (every token of every line, then one ``</s>`` per line);
a model hands back the natural-log probability of each target. The headline perplexity includes
the ``<unk>`` targets (as KenLM's ``query`` reports "including OOVs"); ``ppl_no_unk`` leaves
them out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from seqlm.vocab import UNK_ID


@dataclass(frozen=True)
class Perplexity:
    ppl: float
    ppl_no_unk: float
    oov: int
    targets: int
    logprob: float

    @property
    def oov_rate(self) -> float:
        return self.oov / self.targets

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self) | {"oov_rate": self.oov_rate}


def perplexity(logprobs: np.ndarray, targets: np.ndarray) -> Perplexity:
    """Perplexity = exp(−Σ ln p / N) over the N targets, with and without the ``<unk>`` ones."""
    logprobs = np.asarray(logprobs, dtype=np.float64)
    if logprobs.shape != targets.shape:
        raise ValueError(f"{logprobs.shape[0]} log-probabilities for {targets.shape[0]} targets")
    if len(targets) == 0:
        raise ValueError("no targets to score")
    is_unk = targets == UNK_ID
    known = int((~is_unk).sum())
    total = float(logprobs.sum())
    no_unk = float(logprobs[~is_unk].sum())
    return Perplexity(
        ppl=float(np.exp(-total / len(targets))),
        ppl_no_unk=float(np.exp(-no_unk / known)) if known else float("nan"),
        oov=int(is_unk.sum()),
        targets=len(targets),
        logprob=total,
    )
