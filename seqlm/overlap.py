"""Making the next items in a thread while this one is used."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def ahead(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """``items`` (none of them None), the next ``depth`` made in a thread, one after another,
    while this one is used: ``depth`` items more are held. Decoding Parquet, tokenising with
    Polars and sorting with NumPy all release the GIL, so making and using overlap on two cores."""
    with ThreadPoolExecutor(1) as pool:
        upcoming = deque(pool.submit(next, items, None) for _ in range(depth))
        while (item := upcoming.popleft().result()) is not None:
            upcoming.append(pool.submit(next, items, None))
            yield item
