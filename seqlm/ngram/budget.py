"""The memory budget of counting and estimation, spelt as ``lmplz -S``: ``4G``, ``512M``, ``80%``.

A budget bounds the working set of the stages that grow with the corpus: they work through the
corpus in chunks sized to it and spill what they have finished to disk. What the interpreter and
its libraries hold before any data is read (``BASELINE``) is not the budget's to spend. Within
``whole_tree`` (the pipeline's stages) the budget is the process tree's: what the process and its
children (the temporary Prefect server) hold when a stage asks for its working set is measured
and left out instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from seqlm.allocator import c_function
from seqlm.errors import SeqlmError

DEFAULT_MEMORY = "50%"  # of physical memory, leaving room for the page cache and other work
BASELINE = 300 << 20  # Python, NumPy, Polars and PyArrow loaded, nothing read yet
_UNITS = {"": 1 << 20, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt%]?)\s*", re.IGNORECASE)
_TREE: ContextVar[bool] = ContextVar("seqlm_budget_tree", default=False)


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_memory(text: str | int, setting: str = "--memory") -> int:
    """Bytes of a budget: a number with a unit (b, K, M, G, T; none means M, as lmplz reads it)
    or a percentage of physical memory."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = _SIZE.fullmatch(str(text))
        if match is None:
            raise SeqlmError(f"{setting}: {text!r} is not a memory size (e.g. 4G, 512M or 50%)")
        number, unit = float(match[1]), match[2].lower()
        if unit == "%":
            if not 0 < number <= 100:
                raise SeqlmError(f"{setting}: {text!r} is not a percentage in (0, 100]")
            size = int(physical_memory() * number / 100)
        else:
            size = int(number * _UNITS[unit])
    if size <= 0:
        raise SeqlmError(f"{setting}: the memory budget must be positive, not {text!r}")
    return size


def format_size(size: int) -> str:
    """``size`` bytes as the shortest of ``parse_memory``'s spellings that is not smaller."""
    for unit in ("T", "G", "M", "K"):
        scale = _UNITS[unit.lower()]
        if size >= scale:
            return f"{-(-size * 10 // scale) / 10:g}{unit}"
    return f"{size}b"


def working_set(budget: int, setting: str, needed: int) -> int:
    """What the stages may spend of ``budget``: what is left once what the process holds (the
    baseline, or within ``whole_tree`` its tree's RSS now) is left out; refuses a budget below
    ``needed`` + that, naming the smallest that would work."""
    held = tree_resident() if _TREE.get() else BASELINE
    if budget < held + needed:
        raise SeqlmError(
            f"{setting}: a budget of {format_size(budget)} is too small to make progress; "
            f"the smallest that works here is {format_size(held + needed)}"
        )
    return budget - held


@contextmanager
def whole_tree() -> Iterator[None]:
    """Within the block (in this thread), ``working_set`` leaves out what the process tree holds
    when it is asked, so that a budget bounds the whole tree: the pipeline's process grows with
    Prefect's and MLflow's state and starts a Prefect server, well past ``BASELINE``."""
    token = _TREE.set(True)
    try:
        yield
    finally:
        _TREE.reset(token)


def tree_resident() -> int:
    """Bytes resident now in this process and all its descendants (file-backed pages included,
    as a peak RSS counts them); ``BASELINE`` where there is no ``/proc``."""
    if not Path("/proc/self/statm").exists():
        return BASELINE
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:  # the parent's id follows the command's name, which may hold spaces and ")"
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # ended meanwhile
            children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total * os.sysconf("SC_PAGE_SIZE")


def give_back_freed() -> None:
    """Return the allocators' free pages to the system. glibc's heap and Arrow's pool (mimalloc)
    keep what NumPy and Arrow free for reuse (2.4 GB after counting 100M tokens; 140 MB of
    Parquet batches after estimating a 20M-token 5-gram), so what comes next would spend its
    budget on top of the leftovers; ``malloc_trim`` is skipped where the C library has none."""
    import pyarrow as pa  # here, not at import: the command line's start-up does without it

    pa.default_memory_pool().release_unused()
    trim = c_function("malloc_trim")
    if trim is not None:
        trim(0)
