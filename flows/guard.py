"""What a deployment run may ask for.

Deployment runs are started through Prefect's API, which on a local server has no
authentication: anyone who reaches it picks the parameters. Such a run may choose its corpus,
only under the corpus roots, and the model settings, but not where results are written (the
``run`` section: the artifact store and the MLflow experiment are the service's, its defaults;
a form that sends them back unchanged is accepted).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect.runtime import deployment

from seqlm.config import RunConfig
from seqlm.corpus import discover
from seqlm.errors import SeqlmError

ROOTS_ENV = "SEQLM_CORPUS_ROOTS"


def corpus_roots() -> list[Path]:
    """The folders a deployment run may read a corpus from: ``SEQLM_CORPUS_ROOTS``
    (os.pathsep-separated), else the working directory (the project folder), resolved."""
    listed = [p for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p]
    return [Path(p).resolve() for p in listed or [os.getcwd()]]


def check_deployment_request(
    corpus: str, config: Mapping[str, Any] | None, roots: Sequence[Path]
) -> None:
    """Refuse a ``run`` setting other than its default, and a corpus outside ``roots`` (after
    resolving symlinks and ``..``): the path given, checked before it is looked at, then every
    file in it."""
    own = asdict(RunConfig())
    for key, value in ((config or {}).get("run") or {}).items():
        if value != own.get(key):
            raise SeqlmError(
                f"run.{key}: a deployment run cannot set it (the service's own setting)"
            )
    check_inside_roots(Path(corpus), roots)
    for source in discover(corpus):
        check_inside_roots(source.path, roots)


def check_inside_roots(path: Path, roots: Sequence[Path]) -> None:
    """Refuse ``path`` unless it resolves to a place under one of ``roots``."""
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise SeqlmError(f"{path}: outside the corpus roots of this service ({allowed})")


def guard_deployment_run(corpus: str, config: Mapping[str, Any] | None) -> None:
    """In a run of a deployment, check its request against this process's corpus roots."""
    if deployment.id:
        check_deployment_request(corpus, config, corpus_roots())
