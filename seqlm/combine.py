"""Linear interpolation of two models, p = λ·p_a + (1−λ)·p_b per target, λ tuned on valid by EM.

EM for a two-component mixture with fixed components: each step sets λ to the mean posterior
weight of component a over the valid targets; the valid likelihood never decreases.
"""

from __future__ import annotations

import numpy as np


def interpolate(logprob_a: np.ndarray, logprob_b: np.ndarray, weight_a: float) -> np.ndarray:
    """ln(λ·p_a + (1−λ)·p_b), computed in log space."""
    with np.errstate(divide="ignore"):
        return np.logaddexp(np.log(weight_a) + logprob_a, np.log1p(-weight_a) + logprob_b)


def tune_weight(
    logprob_a: np.ndarray, logprob_b: np.ndarray, tolerance: float = 1e-7, max_steps: int = 500
) -> float:
    """The λ that maximises the likelihood of the (valid) targets."""
    weight = 0.5
    for _ in range(max_steps):
        mixed = interpolate(logprob_a, logprob_b, weight)
        posterior_a = np.exp(np.log(weight) + logprob_a - mixed)
        new = float(posterior_a.mean())
        if abs(new - weight) < tolerance:
            return new
        weight = new
    return weight
