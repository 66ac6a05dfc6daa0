"""Count pruning as ``lmplz --prune``: thresholds per order, and the model without pruned rows.

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


def keep_masks(counts: Sequence[np.ndarray], limits: Sequence[int]) -> list[np.ndarray | None]:
    """Per order, the rows kept (raw count above the threshold); None where nothing is pruned
    (threshold 0: every counted n-gram has a count of 1 or more)."""
    return [counts[n] > t if t > 0 else None for n, t in enumerate(limits)]


def drop_pruned(
    keep: Sequence[np.ndarray | None], context: Sequence[np.ndarray], *columns: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], ...]:
    """The kept rows of ``context`` and of every per-order list in ``columns``, each order's
    context rows renumbered to the kept rows of the order below."""
    out: tuple[list[np.ndarray], ...] = tuple([] for _ in range(1 + len(columns)))
    renumber = None  # old row of the order below → its row once pruned
    for n, k in enumerate(keep):
        ctx = context[n] if renumber is None else renumber[context[n]]
        for kept, per_order in zip(out, (ctx, *(c[n] for c in columns)), strict=True):
            kept.append(per_order if k is None else per_order[k])
        renumber = None if k is None else np.cumsum(k) - 1
    return out
