"""MLflow tracking: one parent run per pipeline run, one child run per model.

Runs are addressed by id through ``MlflowClient`` rather than MLflow's active-run stack, so tasks
running in worker threads log to the right run.
"""

from __future__ import annotations

import os
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

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
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
