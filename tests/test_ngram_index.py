"""Sorted search of n-gram keys, checked against a dictionary of the keys' rows."""

from __future__ import annotations

import numpy as np
import pytest

from seqlm.ngram.index import SORTED_SEARCH, lookup
from seqlm.overlap import ahead


@pytest.mark.parametrize("queries", [10, SORTED_SEARCH, 3 * SORTED_SEARCH + 7])
def test_lookup_finds_each_key_row_and_misses_absent_ones(queries: int) -> None:
    rng = np.random.default_rng(queries)
    keys = np.unique(rng.integers(0, 1 << 40, 200_000))
    asked = np.concatenate([rng.choice(keys, queries // 2), rng.integers(0, 1 << 40, queries)])
    rng.shuffle(asked)
    row_of = {int(k): row for row, k in enumerate(keys)}
    expected = np.array([row_of.get(int(q), -1) for q in asked])
    assert np.array_equal(lookup(keys, asked), expected)


def test_ahead_yields_every_item_in_order_then_stops() -> None:
    items = [np.arange(n) for n in range(5)]
    got = list(ahead(iter(items)))
    assert len(got) == len(items) and all(a is b for a, b in zip(got, items, strict=True))
