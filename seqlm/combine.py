"""Linear interpolation of two models, p = λ·p_a + (1−λ)·p_b per target, λ tuned on valid.

The log-likelihood Σ ln(λ·p_a + (1−λ)·p_b) is concave in λ, so its maximum on [0, 1] is an end
point or the root of its derivative Σ (p_a − p_b) / p, found by bisection to machine precision
(where EM, its usual tuner, crawls when the best λ lies near an end).
"""

from __future__ import annotations

import numpy as np


def interpolate(logprob_a: np.ndarray, logprob_b: np.ndarray, weight_a: float) -> np.ndarray:
    """ln(λ·p_a + (1−λ)·p_b), computed in log space."""
    with np.errstate(divide="ignore"):
        return np.logaddexp(np.log(weight_a) + logprob_a, np.log1p(-weight_a) + logprob_b)


def _slope(logprob_a: np.ndarray, logprob_b: np.ndarray, weight_a: float) -> float:
    """d/dλ of the log-likelihood: Σ (p_a − p_b) / p."""
    mixed = interpolate(logprob_a, logprob_b, weight_a)
    return float(np.sum(np.exp(logprob_a - mixed) - np.exp(logprob_b - mixed)))


def tune_weight(logprob_a: np.ndarray, logprob_b: np.ndarray, steps: int = 60) -> float:
    """The λ in [0, 1] that maximises the likelihood of the (valid) targets."""
    low, high = 0.0, 1.0
    if _slope(logprob_a, logprob_b, high) >= 0:
        return high
    if _slope(logprob_a, logprob_b, low) <= 0:
        return low
    for _ in range(steps):
        mid = (low + high) / 2
        if _slope(logprob_a, logprob_b, mid) > 0:
            low = mid
        else:
            high = mid
    return (low + high) / 2
