"""Where the flow's tasks run (``run.executor``): the flow's own threads, or a Dask cluster
through Prefect's ``DaskTaskRunner``.

Only the flow knows of Dask: the library's runner seam (``seqlm.pipeline.Runner``) gets a
``tasks.stages.PrefectRunner`` whose task runner submits each task run to the cluster's workers.
Every worker must see the artifact store at the same path (a shared file system), and reach the
Prefect API the flow run reports to (its settings travel with each task).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from seqlm.config import RunConfig
from seqlm.errors import SeqlmError

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner

PROBE_SECONDS = 5  # a scheduler that answers does so in well under a second
# A cluster for the run on this machine: one single-threaded worker process per core (Polars
# threads within each), each limited to its share of memory; no dashboard.
LOCAL_CLUSTER = {"processes": True, "threads_per_worker": 1, "dashboard_address": None}
PARTS_PER_THREAD = 2  # hash parts per worker thread: a slow part leaves the others busy


@contextmanager
def task_runner(run: RunConfig) -> Iterator[DaskTaskRunner | None]:
    """The task runner of executor dask, started for the block and closed after it (a local
    cluster with it); None for executor local (the flow's own). A scheduler at
    ``run.dask_address`` is checked to answer first."""
    if run.executor != "dask":
        yield None
        return
    from prefect_dask import DaskTaskRunner

    if run.dask_address:
        probe(run.dask_address)
        dask = DaskTaskRunner(address=run.dask_address)
    else:
        dask = DaskTaskRunner(
            cluster_class="distributed.LocalCluster", cluster_kwargs=LOCAL_CLUSTER
        )
    with dask:
        yield dask


def probe(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Refuse a Dask scheduler address that does not answer within ``timeout`` seconds."""
    from distributed import Client

    try:
        with Client(address, timeout=timeout, set_as_default=False):
            pass
    except (OSError, TimeoutError, ValueError) as e:
        raise SeqlmError(
            f"run.dask_address: the Dask scheduler at {address} is not answering "
            f"({type(e).__name__})"
        ) from None


def partitions(dask: DaskTaskRunner | None) -> int:
    """How many hash parts the cluster's n-gram merging and estimation use: a few per worker
    thread (0 without a cluster: one task per stage)."""
    if dask is None:
        return 0
    threads = sum(dask.client.nthreads().values())
    return PARTS_PER_THREAD * max(threads, 1)
