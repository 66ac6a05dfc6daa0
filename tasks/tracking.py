"""MLflow tracking: one parent run per pipeline run, one child run per model.

Runs are addressed by id through ``MlflowClient`` rather than MLflow's active-run stack, so tasks
running in worker threads log to the right run.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from seqlm.errors import SeqlmError
from seqlm.files import file_lock

log = logging.getLogger("seqlm.tracking")

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
# Who runs a pipeline run: a run left RUNNING by a process that is gone was killed.
OWNER_PID, OWNER_HOST, OWNER_STARTED = "seqlm.pid", "seqlm.host", "seqlm.started"
_MAX_PARAM_LENGTH = 6000


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


class Tracker:
    """The MLflow experiment of a pipeline, checked writable before any work starts."""

    def __init__(self, experiment: str) -> None:
        uri = tracking_uri()
        if uri.startswith("sqlite:///"):
            _check_writable(Path(uri.removeprefix("sqlite:///")).parent, uri)
        mlflow.set_tracking_uri(uri)
        try:
            # The first client of a new sqlite store creates its tables, and MLflow's tracking
            # store does so unguarded: runs that start at once would migrate the same file together.
            with _sqlite_init_lock(uri):
                self.client = MlflowClient(uri)
                found = self.client.get_experiment_by_name(experiment)
                self.experiment_id = (
                    found.experiment_id if found else self.client.create_experiment(experiment)
                )
        except Exception as e:  # the store's own error types vary with the backend
            raise SeqlmError(f"MLflow store {uri}: cannot be used ({e})") from None

    def start_run(
        self,
        name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str] | None = None,
        parent: str | None = None,
    ) -> str:
        run_tags = {MLFLOW_RUN_NAME: name, **(tags or {})}
        if parent:
            run_tags[MLFLOW_PARENT_RUN_ID] = parent
        else:
            run_tags |= owner_tags()
        run = self.client.create_run(self.experiment_id, run_name=name, tags=run_tags)
        run_id = run.info.run_id
        for key, value in params.items():
            self.client.log_param(run_id, key, str(value)[:_MAX_PARAM_LENGTH])
        return run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, float(value), step=step)

    def log_files(self, run_id: str, files: Mapping[str, bytes | str], folder: str = "") -> None:
        """Small generated files (tables, reports) logged by name."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                path = Path(tmp) / name
                if isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content)
                self.client.log_artifact(run_id, str(path), folder or None)

    def log_path(self, run_id: str, path: Path, folder: str = "") -> None:
        self.client.log_artifact(run_id, str(path), folder or None)

    def log_folder(self, run_id: str, path: Path, folder: str) -> None:
        """Everything under ``path``, as ``folder/...``."""
        self.client.log_artifacts(run_id, str(path), folder)

    def finish(self, run_id: str, failed: bool = False) -> None:
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def end_abandoned_runs(self) -> list[str]:
        """Mark KILLED every RUNNING pipeline run of the experiment whose process, on this host,
        is gone (killed, or its machine restarted), with its RUNNING child runs; returns their
        ids. Runs of other hosts, and of processes still alive, are left alone."""
        running = self.client.search_runs(
            [self.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
        )
        dead = {r.info.run_id for r in running if _owner_gone(r.data.tags)}
        for run in running:
            if run.info.run_id in dead or run.data.tags.get(MLFLOW_PARENT_RUN_ID) in dead:
                self.client.set_terminated(run.info.run_id, "KILLED")
        for run_id in sorted(dead):
            log.warning("MLflow run %s: its process is gone; marked KILLED", run_id)
        return sorted(dead)


def owner_tags() -> dict[str, str]:
    """This process: pid, host and start time (so that a later process given the same pid is not
    taken for it)."""
    pid = os.getpid()
    return {
        OWNER_PID: str(pid),
        OWNER_HOST: socket.gethostname(),
        OWNER_STARTED: _process_start(pid) or "",
    }


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot: field 22 of ``/proc/<pid>/stat``),
    None when there is no such process (or no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after "(comm)" start at field 3


def _owner_gone(tags: Mapping[str, str]) -> bool:
    started = tags.get(OWNER_STARTED)
    if not started or tags.get(OWNER_HOST) != socket.gethostname():
        return False  # not ours to judge: no owner recorded, or another machine's
    return _process_start(int(tags[OWNER_PID])) != started


@contextmanager
def _sqlite_init_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a sqlite store (``mlflow.db.lock``) for its set-up: creating the
    tables and the experiment once, whatever the number of processes starting together."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    with file_lock(db.parent / f"{db.name}.lock"):
        yield


def _check_writable(folder: Path, uri: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise SeqlmError(f"MLflow store {uri}: {folder} is not writable ({e.strerror})") from None


def recent_pipelines(experiment: str, last: int) -> pl.DataFrame:
    """One row per recent pipeline run (newest first): its start, corpus and each model's test
    perplexity in a column of its own."""
    uri = tracking_uri()
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SeqlmError(f"MLflow store {uri}: no experiment {experiment!r}")
    parents = client.search_runs(
        [found.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    parents = [r for r in parents if MLFLOW_PARENT_RUN_ID not in r.data.tags][:last]
    rows = []
    for parent in parents:
        children = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'",
        )
        row = {
            "started": time.strftime(
                "%Y-%m-%d %H:%M", time.localtime(parent.info.start_time / 1000)
            ),
            "run": parent.info.run_id[:8],
            "corpus": parent.data.params.get("corpus", ""),
        }
        for child in sorted(children, key=lambda r: r.info.start_time):
            if "test_ppl" in child.data.metrics:
                row[child.info.run_name] = child.data.metrics["test_ppl"]
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
