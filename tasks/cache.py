"""Prefect's cache as a thin layer over the artifact store.

A task's cache key is its artifact's content key, and only while that artifact exists in the store:
a deleted folder is rebuilt, never answered from a stale cached result.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.context import TaskRunContext

from seqlm.store import Plan, Store


def store_cache_key(
    plan: Callable[..., Plan],
) -> Callable[[TaskRunContext, dict[str, Any]], str | None]:
    """A ``cache_key_fn`` for a task with a ``store`` parameter and ``plan``'s parameters."""
    names = list(inspect.signature(plan).parameters)

    def cache_key(_: TaskRunContext, parameters: dict[str, Any]) -> str | None:
        planned = plan(**{name: parameters[name] for name in names})
        found = Store(Path(parameters["store"])).get(planned.stage, planned.key)
        return f"{planned.stage}-{planned.key}" if found else None

    return cache_key
