"""The store-backed stages as Prefect tasks, made from the stages' records by one factory.

Tasks pass paths and artifact keys, never frames. The artifact store is the cache (a stage whose
key exists is found, not rebuilt), so Prefect neither caches nor persists these tasks' results:
nothing a run reads back is a pickle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from prefect import Task, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.utilities.callables import get_call_parameters

from seqlm.ngram.partitioned import local_map
from seqlm.stages import STAGES, Stage
from seqlm.store import Artifact, Store

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner


def stage_task(stage: Stage) -> Task:
    """The stage as a task of its name, each run named by the stage's label (``fit kn5``)."""

    @functools.wraps(stage.build)  # Prefect reads the stage's parameters and docstring
    def run(*args: Any, **kwargs: Any) -> Artifact:
        return stage.run(*args, **kwargs)

    def name(parameters: dict[str, Any]) -> str:  # Prefect passes an argument of this name
        return stage.label(parameters)

    return task(run, name=stage.name, task_run_name=name, cache_policy=NO_CACHE)


TASKS = {name: stage_task(stage) for name, stage in STAGES.items()}
T = TypeVar("T")


@dataclass(frozen=True)
class PrefectRunner:
    """The pipeline's stages as tasks of the current flow run; ``map`` submits one task run per
    item, which run side by side under ``task_runner`` (a Dask cluster's) or else the flow's.
    ``parts``: the hash parts of the partitioned n-gram stages (0: one task per stage)."""

    store: Store
    task_runner: DaskTaskRunner | None = None
    parts: int = 0

    def __call__(self, stage: Stage, *args: Any) -> Artifact:
        return TASKS[stage.name](self.store, *args)

    def map(self, stage: Stage, items: Sequence[Any], *args: Any) -> list[Artifact]:
        return self._map(TASKS[stage.name], self.store, items, *(unmapped(a) for a in args))

    def mapper(self, fn: Callable[..., T], calls: Sequence[tuple[Any, ...]]) -> list[T]:
        """``fn(*args)`` for each call on the cluster's workers, through its client: the calls
        are the coordinating stage's task run's work (a task run each would cost ~0.4 s of
        Prefect's bookkeeping per call, more than most calls take). Without a cluster, here."""
        if self.task_runner is None or not calls:
            return local_map(fn, calls)
        client = self.task_runner.client
        return client.gather(client.map(fn, *zip(*calls, strict=True), pure=False))

    def _map(self, mapped: Task, *args: Any) -> list[Any]:
        if self.task_runner is None:
            return mapped.map(*args).result()
        parameters = get_call_parameters(mapped.fn, args, {}, apply_defaults=False)
        return self.task_runner.map(mapped, parameters).result()
