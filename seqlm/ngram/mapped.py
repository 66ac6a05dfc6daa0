"""Arrays mapped from files, whose pages a long pass lets go once it is done with them."""

from __future__ import annotations

import mmap

import numpy as np


def release(array: np.ndarray) -> None:
    """Drop the pages of a mapped array from the process (they stay in the page cache, and come
    back on the next read): a model written out order by order need not stay resident."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):  # np.frombuffer of a map
        base = base.obj
    if isinstance(base, mmap.mmap):
        base.madvise(mmap.MADV_DONTNEED)
