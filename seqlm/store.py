"""The content-addressed artifact store: a stage's output lives in ``<root>/<stage>/<key>/``.

The key hashes the stage's name and version, its config and its inputs' keys (input files by
content, never by mtime), so equal work has equal keys and is done once. A folder is built under a
temporary name and renamed into place with its ``manifest.json`` last: a folder that exists is
complete. The manifest lists every file of the folder with its size and xxh3-128 checksum.

Finding an artifact (``Store.get``, and ``build`` before any work) takes no lock and writes
nothing, so a finished store reads from a read-only mount. It checks the folder against its
manifest: the file list and sizes every time, the checksums once per process (again if a file's
mtime changes). A damaged folder (no manifest, one from before checksums, a file missing, extra,
cut short or changed) is renamed to ``.damaged-<key>-*`` and removed, and ``build`` makes it anew.

Entries beside the finished folders, and when they are cleared (before a build, by any process):

- ``.tmp-<key>-<owner>-<rand>``: a build in progress. Its owner (host, pid, process start time)
  is in its name; cleared once that process no longer runs on this host. A folder of another
  host's process, or from before owners were recorded, is cleared after a day untouched.
- ``.damaged-<key>-<owner>-<rand>``: a damaged folder being removed; cleared like ``.tmp-*``.
- ``.work-<key>``: a resumable build's work (a training checkpoint). Kept across crashes, dead
  owner or not, for a re-run of the same key to go on from; it is used only under
  ``.lock-<key>``, so a second run waits, then finds the work done. Cleared only when its final
  folder exists and no one holds its lock.
- ``.lock-<key>``: the lock of a resumable build (``fcntl.flock``, released when its holder dies);
  its holder removes it when done, and a lock file no one holds is removed.

Every clearing step tolerates entries that vanish under it (another process renaming its folder
into place, or clearing the same entry). An ``OSError`` while building (no space left, read-only,
not a directory) becomes a ``SeqlmError`` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from seqlm.errors import SeqlmError
from seqlm.files import file_lock

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_STALE_SECONDS = 24 * 3600
_BLOCK = 1 << 22

# Folders whose checksums this process has verified: path -> (manifest's identity, every file's
# size and mtime) at the time, so a changed file is checksummed again.
_verified: dict[Path, tuple[Any, ...]] = {}


def file_digest(path: Path) -> str:
    """The xxh3-128 checksum of a file's bytes (several GB/s: cheap next to reading the file)."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def stage_key(
    stage: str, version: int, config: Mapping[str, Any], inputs: Mapping[str, Any]
) -> str:
    """The content key of one stage's output."""
    blob = json.dumps(
        {"stage": stage, "version": version, "config": config, "inputs": inputs},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Plan:
    """What a stage's output is made of: its key, known before any work is done."""

    stage: str
    version: int
    config: Mapping[str, Any]
    inputs: Mapping[str, Any]

    @property
    def key(self) -> str:
        return stage_key(self.stage, self.version, self.config, self.inputs)


@dataclass(frozen=True)
class Artifact:
    """A finished stage output: its folder and what its manifest says. ``seconds``: how long
    this process took to build it; None when it was found in the store."""

    stage: str
    key: str
    path: Path
    seconds: float | None = field(default=None, compare=False)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())


@dataclass(frozen=True)
class Store:
    root: Path

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def get(self, stage: str, key: str) -> Artifact | None:
        """The artifact if its folder is there and intact; a damaged folder is removed."""
        try:
            found, damage = self._lookup(stage, key)
        except OSError as e:
            raise SeqlmError(_os_message(e, self.path(stage, key))) from e
        if damage:
            log.warning("%s %s: damaged (%s), removed", stage, key, damage)
        return found

    def build(
        self,
        plan: Plan,
        produce: Callable[[Path], Mapping[str, int]],
        note: Mapping[str, Any] | None = None,
        resumable: bool = False,
    ) -> Artifact:
        """The planned artifact: found by key, or made by ``produce(tmp_dir) -> row counts``.

        ``note`` goes into the manifest as information only (a source path): never into the key.
        ``resumable``: the work folder is ``.work-<key>`` and survives a failure, so a re-run
        hands ``produce`` what the failed run left there (a training checkpoint) to go on from.
        """
        try:
            return self._find(plan) or self._make(plan, produce, note, resumable)
        except OSError as e:
            raise SeqlmError(_os_message(e, self.path(plan.stage, plan.key))) from e

    def _find(self, plan: Plan) -> Artifact | None:
        found, damage = self._lookup(plan.stage, plan.key)
        if damage:
            log.warning("%s %s: damaged (%s), rebuilt", plan.stage, plan.key, damage)
        elif found:
            log.info("%s %s: exists, skipped", plan.stage, plan.key)
        return found

    def _make(
        self,
        plan: Plan,
        produce: Callable[[Path], Mapping[str, int]],
        note: Mapping[str, Any] | None,
        resumable: bool,
    ) -> Artifact:
        folder = self.root / plan.stage
        folder.mkdir(parents=True, exist_ok=True)
        _clear_stale(folder)
        if not resumable:
            tmp = folder / f".tmp-{plan.key}-{_owner()}-{uuid.uuid4().hex[:8]}"
            return self._build(plan, produce, note, tmp, resumable)
        # One work folder per key: a second run of the same work waits, then finds it done.
        lock = folder / f".lock-{plan.key}"
        with file_lock(lock):
            try:
                work = folder / f".work-{plan.key}"
                return self._find(plan) or self._build(plan, produce, note, work, resumable)
            finally:
                lock.unlink(missing_ok=True)  # held: a waiter then locks the path anew

    def _build(
        self,
        plan: Plan,
        produce: Callable[[Path], Mapping[str, int]],
        note: Mapping[str, Any] | None,
        tmp: Path,
        resumable: bool,
    ) -> Artifact:
        stage, key = plan.stage, plan.key
        tmp.mkdir(exist_ok=resumable)
        start = time.perf_counter()
        try:
            rows = dict(produce(tmp))
            seconds = round(time.perf_counter() - start, 3)
            manifest = {
                "stage": stage,
                "key": key,
                "version": plan.version,
                "config": plan.config,
                "inputs": plan.inputs,
                "note": dict(note or {}),
                "rows": rows,
                "seconds": seconds,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": _records(tmp),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        except BaseException:
            _discard(tmp, resumable)
            raise
        final = self.path(stage, key)
        try:
            os.rename(tmp, final)
        except OSError:
            found = self._lookup(stage, key)[0]
            if found is None:
                _discard(tmp, resumable)
                raise
            # Another run finished the same work first: its folder is equal by construction.
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("%s %s: built concurrently, kept the first", stage, key)
            return found
        _verified[final] = _identity(final, _listing(final))
        log.info("%s %s: built in %.2f s", stage, key, seconds)
        return Artifact(stage, key, final, seconds)

    def _lookup(self, stage: str, key: str) -> tuple[Artifact | None, str | None]:
        """The intact artifact, or None and what was wrong with the folder (now set aside)."""
        path = self.path(stage, key)
        try:
            inode = path.stat().st_ino
        except (FileNotFoundError, NotADirectoryError):
            return None, None
        damage = _damage(path)
        if damage is None:
            return Artifact(stage, key, path), None
        _set_aside(path, key, inode)
        return None, damage


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` but the manifest: relative path -> (size, mtime in ns)."""
    files = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            stat = os.stat(os.path.join(parent, name))
            relative = Path(parent, name).relative_to(folder).as_posix()
            files[relative] = (stat.st_size, stat.st_mtime_ns)
    files.pop(MANIFEST, None)
    return files


def _records(folder: Path) -> dict[str, dict[str, Any]]:
    """What the manifest says of each file: its size and checksum."""
    return {
        name: {"size": size, "xxh3_128": file_digest(folder / name)}
        for name, (size, _) in sorted(_listing(folder).items())
    }


def _identity(folder: Path, listing: Mapping[str, tuple[int, int]]) -> tuple[Any, ...]:
    manifest = os.stat(folder / MANIFEST)
    return manifest.st_ino, manifest.st_mtime_ns, tuple(sorted(listing.items()))


def _damage(folder: Path) -> str | None:
    """What is wrong with a final folder, or None if its files are those of its manifest."""
    try:
        recorded = json.loads((folder / MANIFEST).read_text())["files"]
        listing = _listing(folder)
        for name in sorted(recorded.keys() | listing.keys()):
            if name not in listing:
                return f"{name} missing"
            if name not in recorded:
                return f"{name} not in the manifest"
            if listing[name][0] != recorded[name]["size"]:
                return f"{name} has {listing[name][0]} bytes, not {recorded[name]['size']}"
        identity = _identity(folder, listing)
        if _verified.get(folder) != identity:
            for name, record in sorted(recorded.items()):
                if file_digest(folder / name) != record["xxh3_128"]:
                    return f"{name} checksum differs"
            _verified[folder] = identity
    except FileNotFoundError as e:
        return f"{Path(e.filename or folder).name} missing"
    except ValueError:
        return "manifest unreadable"
    except (KeyError, TypeError, AttributeError):
        return "manifest without checksums"
    return None


def _set_aside(path: Path, key: str, inode: int) -> None:
    """Rename a damaged folder out of the way and remove it; tolerate another process doing so."""
    aside = path.with_name(f".damaged-{key}-{_owner()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if aside.stat().st_ino != inode:
        # Another process removed the damaged folder and built a fresh one meanwhile: keep it.
        try:
            os.rename(aside, path)
            return
        except OSError:
            pass
    shutil.rmtree(aside, ignore_errors=True)


def _discard(work: Path, resumable: bool) -> None:
    """Remove a failed build's folder; resumable work stays unless there is none."""
    if not resumable:
        shutil.rmtree(work, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        work.rmdir()  # only if empty: nothing to resume from


def _clear_stale(folder: Path) -> None:
    """Clear what dead or finished builds left in a stage folder (the rules: module docstring)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        path = folder / name
        if name.startswith((".tmp-", ".damaged-")):
            if _abandoned(path):
                shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(".work-"):
            key = name.removeprefix(".work-")
            if (folder / key / MANIFEST).is_file():
                _clear_locked(folder / f".lock-{key}", path)
        elif name.startswith(".lock-"):
            _clear_locked(path)


def _clear_locked(lock: Path, work: Path | None = None) -> None:
    """Remove a lock file (and the work it guards) unless someone holds it."""
    with file_lock(lock, wait=False) as held:
        if held:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
            lock.unlink(missing_ok=True)


def _abandoned(path: Path) -> bool:
    """A temporary folder whose owner no longer runs (owner unknown: a day untouched)."""
    parts = path.name.split("-")
    alive = _owner_alive(parts[2]) if len(parts) == 4 else None
    if alive is not None:
        return not alive
    try:
        return path.stat().st_mtime < time.time() - _STALE_SECONDS
    except FileNotFoundError:
        return False


@functools.cache
def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None if there is no such process
    (or no ``/proc`` to tell)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name may hold spaces


def _owner() -> str:
    """This process, as ``host.pid.start``: a pid alone may be reused."""
    pid = os.getpid()
    return f"{_host()}.{pid}.{_process_start(pid) or 0}"


def _owner_alive(owner: str) -> bool | None:
    """Whether the owner's process still runs; None when this host cannot tell."""
    host, _, process = owner.partition(".")
    pid, _, start = process.partition(".")
    if host != _host() or not pid.isdigit() or _process_start(os.getpid()) is None:
        return None
    return _process_start(int(pid)) == start


def _os_message(error: OSError, fallback: Path) -> str:
    """``<path>: <reason>``; for "not a directory", the path of the file in the way."""
    path = Path(error.filename) if error.filename else fallback
    if error.errno == errno.ENOTDIR:
        path = next((p for p in (path, *path.parents) if p.is_file()), path)
    reason = error.strerror or str(error)
    return f"{path}: {reason[:1].lower()}{reason[1:]}"
