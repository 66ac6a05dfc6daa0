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
    return perplexity_of_sums(
        float(logprobs.sum()), float(logprobs[~is_unk].sum()), int(is_unk.sum()), len(targets)
    )


def perplexity_of_sums(total: float, known_total: float, oov: int, targets: int) -> Perplexity:
    """Perplexity from Σ ln p over the targets, Σ ln p over those not ``<unk>``, the ``<unk>``
    targets and all targets (summed over the parts of a text scored part by part)."""
    known = int(targets) - int(oov)
    return Perplexity(
        ppl=float(np.exp(-total / targets)),
        ppl_no_unk=float(np.exp(-known_total / known)) if known else float("nan"),
        oov=int(oov),
        targets=int(targets),
        logprob=float(total),
    )
