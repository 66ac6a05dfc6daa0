"""The content-addressed artifact store: a stage's output lives in ``<root>/<stage>/<key>/``.

The key hashes the stage's name and version, its config and its inputs' keys (input files by
content, never by mtime), so equal work has equal keys and is done once. A folder is built under a
temporary name and renamed into place with its ``manifest.json`` last: a folder that exists is
complete, and a crash leaves only a ``.tmp-*`` folder that is never read (and is cleared later).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqlm.files import file_lock

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_STALE_TMP_SECONDS = 24 * 3600


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
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
    """A finished stage output: its folder and what its manifest says."""

    stage: str
    key: str
    path: Path

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())


@dataclass(frozen=True)
class Store:
    root: Path

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def get(self, stage: str, key: str) -> Artifact | None:
        path = self.path(stage, key)
        return Artifact(stage, key, path) if (path / MANIFEST).is_file() else None

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
        stage, key = plan.stage, plan.key
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if not resumable:
            return self._build(
                plan, produce, note, final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            )
        # One work folder per key: a second run of the same work waits, then finds it done
        # (so once the artifact exists, the lock file has no one left to guard against).
        lock = final.parent / f".lock-{key}"
        with file_lock(lock):
            artifact = self._build(plan, produce, note, final.parent / f".work-{key}", True)
            lock.unlink(missing_ok=True)
        return artifact

    def _build(
        self,
        plan: Plan,
        produce: Callable[[Path], Mapping[str, int]],
        note: Mapping[str, Any] | None,
        tmp: Path,
        resumable: bool = False,
    ) -> Artifact:
        stage, key = plan.stage, plan.key
        found = self.get(stage, key)
        if found is not None:
            log.info("%s %s: exists, skipped", stage, key)
            return found
        final = self.path(stage, key)
        self._clear_stale(final.parent)
        tmp.mkdir(exist_ok=resumable)
        start = time.perf_counter()
        try:
            rows = dict(produce(tmp))
        except BaseException:
            if not resumable:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
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
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        try:
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if self.get(stage, key) is None:
                raise
            # Another run finished the same work first: its folder is equal by construction.
            log.info("%s %s: built concurrently, kept the first", stage, key)
        else:
            log.info("%s %s: built in %.2f s", stage, key, seconds)
        return Artifact(stage, key, final)

    @staticmethod
    def _clear_stale(folder: Path) -> None:
        """Remove temporary folders a crashed run left behind (old enough to be no one's)."""
        cutoff = time.time() - _STALE_TMP_SECONDS
        for tmp in folder.glob(".tmp-*"):
            if tmp.stat().st_mtime < cutoff:
                shutil.rmtree(tmp, ignore_errors=True)
