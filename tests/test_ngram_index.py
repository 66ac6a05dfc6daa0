"""Sorted search of n-gram keys, checked against a dictionary of the keys' rows."""

from __future__ import annotations

import numpy as np
import pytest

from seqlm.ngram import sorting
from seqlm.ngram.index import SEARCH_BLOCK, SORTED_SEARCH, _blocked_search, lookup
from seqlm.overlap import ahead, in_slices


@pytest.mark.parametrize("queries", [10, SORTED_SEARCH, 3 * SORTED_SEARCH + 7])
def test_lookup_finds_each_key_row_and_misses_absent_ones(queries: int) -> None:
    rng = np.random.default_rng(queries)
    keys = np.unique(rng.integers(0, 1 << 40, 200_000))
    asked = np.concatenate([rng.choice(keys, queries // 2), rng.integers(0, 1 << 40, queries)])
    rng.shuffle(asked)
    row_of = {int(k): row for row, k in enumerate(keys)}
    expected = np.array([row_of.get(int(q), -1) for q in asked])
    assert np.array_equal(lookup(keys, asked), expected)


@pytest.mark.parametrize("numpy_faster", [True, False])
@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_either_sort_gives_the_sorted_keys(
    numpy_faster: bool, dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever sort this CPU runs faster, the same array: keys with repeats, at both ends of
    the type's range."""
    monkeypatch.setattr(sorting, "_numpy_sorts_faster", lambda: numpy_faster)
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    keys = rng.integers(info.min, info.max, 100_000, dtype=dtype, endpoint=True)
    keys = np.concatenate([keys, keys[:1000], np.array([info.min, info.max], dtype=dtype)])
    assert np.array_equal(sorting.sorted_copy(keys), np.array(sorted(keys.tolist()), dtype=dtype))


@pytest.mark.parametrize("queries", [0, 1, SEARCH_BLOCK - 1, SEARCH_BLOCK, 5 * SEARCH_BLOCK + 3])
def test_a_blocked_search_is_numpys_search(queries: int) -> None:
    """Sorted queries with repeats, keys repeated too, and queries past both ends and between
    blocks: the insertion points of one ``np.searchsorted``."""
    rng = np.random.default_rng(queries)
    keys = np.sort(rng.integers(100, 1000, 3000))
    asked = np.sort(rng.integers(0, 1100, queries))
    assert np.array_equal(_blocked_search(keys, asked), np.searchsorted(keys, asked))


@pytest.mark.parametrize("length", [0, 5, 3_000_001])
def test_a_pass_in_slices_covers_every_element_once(length: int) -> None:
    seen = np.zeros(length, dtype=np.int64)
    in_slices(lambda part: np.add.at(seen, np.arange(length)[part], 1), length)
    assert np.all(seen == 1)


def test_ahead_yields_every_item_in_order_then_stops() -> None:
    items = [np.arange(n) for n in range(5)]
    got = list(ahead(iter(items)))
    assert len(got) == len(items) and all(a is b for a, b in zip(got, items, strict=True))
