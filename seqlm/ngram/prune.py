"""Count pruning as ``lmplz --prune``: the thresholds per order (the estimate applies them in
:mod:`seqlm.ngram.kneser_ney`).

lmplz (lm/builder/adjust_counts.cc) marks an n-gram pruned when its raw count is at most its
order's threshold, at every order (raw counts, not the adjusted counts the estimate uses). The
thresholds never decrease, so the prefix and suffix of a kept n-gram, whose raw counts are at
least its own, are kept too: no n-gram survives only as another's context. Pruning changes no
adjusted count and no discount (counts-of-counts are the unpruned model's); a pruned n-gram's
whole adjusted count joins its context's back-off mass (initial_probabilities.cc, AddRight), so
γ(h) = (Σ_kept D(a) + Σ_pruned a) / Σ a and each context's distribution still sums to 1.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np

from seqlm.errors import SeqlmError

Thresholds = Sequence[int | str]


def thresholds(prune: Thresholds, order: int) -> tuple[int, ...]:
    """One threshold per order from lmplz's list (the last one repeats for the orders beyond it;
    an empty list prunes nothing). Unlike lmplz 0.3.0, which takes a non-zero first value and
    drops rare words, unigrams are never pruned: the first threshold must be 0."""
    name = f"--prune {' '.join(map(str, prune))}"
    values = [_count(v) for v in prune]
    if None in values:
        bad = prune[values.index(None)]
        raise SeqlmError(f"{name}: {bad!r} is not a count (a whole number, 0 or more)")
    if len(values) > order:
        raise SeqlmError(f"{name}: {len(values)} thresholds for a model of order {order}")
    if any(b < a for a, b in itertools.pairwise(values)):
        raise SeqlmError(
            f"{name}: the thresholds must not decrease (a kept n-gram needs its prefix and suffix)"
        )
    if values and values[0] != 0:
        raise SeqlmError(f"{name}: unigrams cannot be pruned; the first threshold must be 0")
    return tuple(values + values[-1:] * (order - len(values))) if values else (0,) * order


def _count(value: int | str) -> int | None:
    if isinstance(value, str):
        return int(value) if re.fullmatch(r"[0-9]+", value) else None
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return None
