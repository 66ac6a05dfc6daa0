"""The flow on a real Dask cluster (two worker processes) through Prefect's DaskTaskRunner: the
same tables and models as the local executor, a scheduler that does not answer refused before
any work, and a worker killed inside a build replaced without changing the result."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from distributed import Client, LocalCluster, WorkerPlugin
from polars.testing import assert_frame_equal

from flows.corpus_to_model import corpus_to_model
from seqlm.net import free_port
from seqlm.ngram import NgramModel, read_tables
from seqlm.ngram.counts import word_columns
from seqlm.store import Store
from tests.helpers import BUNDLED, prefect_home, run_seqlm

pytestmark = pytest.mark.slow  # each test runs the flow, two of them on a cluster

SHARDS = 10
ORDER = 5
# Run on the workers: stages as task runs, the partitioned merge's and estimate's calls.
ON_WORKERS = {"ingest", "types", "counts", "partition", "merge_part", "adjust", "interpolate"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Ten shard files of real text, with blank lines."""
    folder = tmp_path_factory.mktemp("shards")
    lines = BUNDLED.read_text().splitlines()[:4000]
    for i in range(SHARDS):
        part = lines[i::SHARDS]
        (folder / f"part{i:02d}.txt").write_text("".join(f"{line}\n" for line in part))
    return folder


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes of 800 MB each (Prefect, Polars and the
    library take ~320 MB of it: a worker pauses at 80 %), and a client to watch them."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit="800MB",
            dashboard_address=None,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield cluster.scheduler_address, client


def settings(store: Path, address: str | None = None) -> dict:
    run = {"store": str(store), "experiment": "dask"}
    if address:
        run |= {"executor": "dask", "dask_address": address}
    return {"run": run, "ngram": {"orders": [ORDER]}, "rnn": {"models": []}}


@pytest.fixture(scope="module")
def local(prefect_server, corpus, tmp_path_factory):
    """The local executor's run: its store and its comparison."""
    store = tmp_path_factory.mktemp("local") / "store"
    result = corpus_to_model(corpus=str(corpus), config=settings(store))
    return store, result["comparison"]


def test_the_cluster_builds_what_the_local_executor_builds(local, corpus, cluster, tmp_path):
    address, client = cluster
    store = tmp_path / "store"
    result = corpus_to_model(corpus=str(corpus), config=settings(store, address))

    assert figures(result["comparison"]) == figures(local[1])
    seen = client.run_on_scheduler(lambda dask_scheduler: set(dask_scheduler.task_prefixes))
    assert seen >= ON_WORKERS
    # Every shard partitioned, every artifact complete, in the store every worker sees.
    assert len(list((store / "partition").glob("*/manifest.json"))) == SHARDS
    assert [p for p in store.rglob("*") if p.name.startswith((".tmp-", ".work-"))] == []
    # The partitioned tables, taken together, are the local run's tables cut to the vocabulary.
    local_tables = read_tables(one(local[0], "cutoff") / "tables")
    (merged,) = (store / "parts_merged").glob("*/parts")
    for n, table in enumerate(local_tables, start=1):
        parts = pl.read_parquet(sorted((merged / f"order{n}").glob("part*.parquet")))
        assert_frame_equal(parts.sort(word_columns(n)), table, check_dtypes=False)
    same_model(one(local[0], "ngram"), one(store, "ngram"))


def test_a_worker_killed_inside_a_build_is_replaced(local, corpus, cluster, tmp_path):
    address, client = cluster
    store = tmp_path / "store"
    flag = tmp_path / "killed.json"
    client.register_plugin(KillInsideBuild(store / "counts", flag), name="kill")
    try:
        result = corpus_to_model(corpus=str(corpus), config=settings(store, address))
    finally:
        client.unregister_worker_plugin("kill")

    killed = json.loads(flag.read_text())  # the worker's pid and the build it was inside
    assert killed["building"] and not alive(killed["pid"])
    # Dask ran the lost task again elsewhere; the store cleared the dead build's folder.
    assert figures(result["comparison"]) == figures(local[1])
    assert len(list((store / "counts").glob("*/manifest.json"))) == SHARDS
    assert [p for p in store.rglob("*") if p.name.startswith((".tmp-", ".work-"))] == []
    same_model(one(local[0], "ngram"), one(store, "ngram"))
    # Prefect's view: one count task run per shard, each completed.
    counts = count_task_runs()
    assert len(counts) == SHARDS and {r.state_type.value for r in counts} == {"COMPLETED"}


def test_a_scheduler_that_does_not_answer_stops_the_run(corpus, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    store = tmp_path / "store"
    args = ["run", "--corpus", str(corpus)]
    for setting in (f"store={store}", "executor=dask", f"dask_address={address}", "models=[]"):
        args += ["--set", setting]
    env = os.environ | {"PREFECT_HOME": prefect_home(tmp_path / "prefect")}
    done = run_seqlm(args, cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"seqlm: error: run.dask_address: the Dask scheduler at {address} is not answering "
        "(OSError)"
    ]
    assert not store.exists()


class KillInsideBuild(WorkerPlugin):
    """SIGKILL to its worker, once across the cluster: when the worker is inside a build of the
    stage whose folder is ``stage`` (the store's work folder named by its process exists)."""

    def __init__(self, stage: Path, flag: Path) -> None:
        self.stage, self.flag = stage, flag

    def transition(self, key: object, start: str, finish: str, **kwargs: object) -> None:
        if finish == "executing" and str(key).startswith(self.stage.name):
            threading.Thread(target=self._kill_inside_build, daemon=True).start()

    def _kill_inside_build(self) -> None:
        mine = f".{os.getpid()}."  # a work folder is .tmp-<key>-<host>.<pid>.<start>-<id>
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.flag.exists():
            building = [p.name for p in self.stage.glob(".tmp-*") if mine in p.name]
            if building:
                try:
                    fd = os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return
                os.write(fd, json.dumps({"pid": os.getpid(), "building": building}).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.001)


def figures(rows: list[dict]) -> dict:
    return {r["model"]: (r["test_ppl"], r["valid_ppl"], r["targets"]) for r in rows}


def one(store: Path, stage: str) -> Path:
    (folder,) = (p.parent for p in (store / stage).glob("*/manifest.json"))
    assert Store(store).get(stage, folder.name) is not None
    return folder


def same_model(a: Path, b: Path) -> None:
    """Two model folders of the store with equal arrays, information and vocabulary."""
    x, y = NgramModel.load(a / "model"), NgramModel.load(b / "model")
    assert x.info == y.info and x.vocab.digest() == y.vocab.digest()
    for n in range(ORDER):
        assert np.array_equal(x.keys[n], y.keys[n])
        assert np.array_equal(x.log10_prob[n], y.log10_prob[n])
        assert np.array_equal(x.log10_backoff[n], y.log10_backoff[n])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def count_task_runs() -> list:
    """The count task runs of the latest flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as prefect:
        (latest,) = prefect.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        runs = prefect.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[latest.id]))
        )
    return [r for r in runs if r.name.startswith("count ")]
