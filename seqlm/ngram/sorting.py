"""Sorting the packed integer keys that counting and searching work with."""

from __future__ import annotations

import numpy as np
import polars as pl


def sorted_copy(values: np.ndarray) -> np.ndarray:
    """``values`` ascending, as a new read-only array. Polars' sort of 64-bit integers takes a
    quarter of NumPy's time (20M keys: 0.35-0.45 s against 1.4-1.8 s, NumPy 2.4 on this x86)."""
    return pl.Series(values).sort().to_numpy()
