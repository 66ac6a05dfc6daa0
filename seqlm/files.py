"""Atomic outputs (built under a temporary name, renamed into place) and cross-process locks."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (a file, or a folder made empty) to fill; on success
    it replaces ``path`` whole, and on failure it is removed. A file never replaces a folder nor a
    folder a file, and an OS error names ``path``, not the temporary name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if path.exists() and path.is_dir() != folder:
            code = errno.ENOTDIR if folder else errno.EISDIR
            raise OSError(code, os.strerror(code), str(path))
        if folder:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        yield tmp
        if folder and path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.replace(path)
    except BaseException as e:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename not in (None, str(path)):
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def atomic_dir(path: Path) -> AbstractContextManager[Path]:
    """A temporary folder beside ``path`` that replaces ``path`` whole once filled."""
    return atomic_path(path, folder=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write beside ``path`` and rename into place: a reader never sees half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on ``path`` (created if missing) across processes, held for the block
    and released when the file closes, even if the holder dies. Yields True while held; with
    ``wait`` off, yields False at once (holding nothing) if another holds it.

    A holder may unlink the file to leave nothing behind: whoever then gets the lock of the
    unlinked file sees that it is no longer at ``path`` and locks the path anew.
    """
    path = Path(path)
    while True:
        with path.open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            if _same_file(lock.fileno(), path):
                yield True
                return


def _same_file(fd: int, path: Path) -> bool:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)
