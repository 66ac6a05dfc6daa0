"""The store-backed stages as Prefect tasks, made from the stages' records by one factory.

Tasks pass paths and artifact keys, never frames. The artifact store is the cache (a stage whose
key exists is found, not rebuilt), so Prefect neither caches nor persists these tasks' results:
nothing a run reads back is a pickle.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect import Task, task, unmapped
from prefect.cache_policies import NO_CACHE

from seqlm.stages import STAGES, Stage
from seqlm.store import Artifact, Store


def stage_task(stage: Stage) -> Task:
    """The stage as a task of its name, each run named by the stage's label (``fit kn5``)."""

    @functools.wraps(stage.build)  # Prefect reads the stage's parameters and docstring
    def run(*args: Any, **kwargs: Any) -> Artifact:
        return stage.run(*args, **kwargs)

    def name(parameters: dict[str, Any]) -> str:  # Prefect passes an argument of this name
        return stage.label(parameters)

    return task(run, name=stage.name, task_run_name=name, cache_policy=NO_CACHE)


TASKS = {name: stage_task(stage) for name, stage in STAGES.items()}


@dataclass(frozen=True)
class PrefectRunner:
    """The pipeline's stages as tasks of the current flow run; ``map`` submits one task run per
    item, which run side by side under the flow's task runner."""

    store: Store

    def __call__(self, stage: Stage, *args: Any) -> Artifact:
        return TASKS[stage.name](self.store, *args)

    def map(self, stage: Stage, items: Sequence[Any], *args: Any) -> list[Artifact]:
        futures = TASKS[stage.name].map(self.store, items, *(unmapped(a) for a in args))
        return futures.result()
