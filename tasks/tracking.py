"""MLflow tracking: one parent run per pipeline run, one child run per model.

Runs are addressed by id through ``MlflowClient`` rather than MLflow's active-run stack, so tasks
running in worker threads log to the right run.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import mlflow
import sqlalchemy
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag, Metric
from mlflow.store.db.db_types import DATABASE_ENGINES
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from sqlalchemy.pool import NullPool

from seqlm.config import PipelineConfig, RnnConfig
from seqlm.errors import SeqlmError, first_line
from seqlm.files import file_lock
from seqlm.pipeline import progress_bar
from seqlm.report import ModelResult, row_name
from seqlm.stages import Prepared, plan_rnn
from seqlm.store import Artifact, stage_key

if TYPE_CHECKING:
    from seqlm.rnn.training import Callbacks

log = logging.getLogger("seqlm.tracking")

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
# Who runs a pipeline run: a run left RUNNING by a process that is gone was killed.
OWNER_PID, OWNER_HOST, OWNER_STARTED = "seqlm.pid", "seqlm.host", "seqlm.started"
_MAX_PARAM_LENGTH = 6000
# Without this tag the MLflow 3 UI may open the experiment in its GenAI view (traces).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# The tag of the run that holds the copy of a store artifact (its key): later runs reference it.
COPY_TAG = "copy_of"
# Per-epoch figures of a recurrent model, logged at the epoch's step.
EPOCH_METRICS = ("train_ppl", "valid_ppl", "tokens_per_second", "lr")
_MAX_RUN_NAME = 250


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


class Tracker:
    """The MLflow experiment of a pipeline, checked writable before any work starts."""

    def __init__(self, experiment: str) -> None:
        uri = tracking_uri()
        self.experiment = experiment
        if uri.startswith("sqlite:///"):
            _check_writable(Path(uri.removeprefix("sqlite:///")).parent, uri)
        check_reachable(uri)
        mlflow.set_tracking_uri(uri)
        try:
            # The first client of a new sqlite store creates its tables, and MLflow's tracking
            # store does so unguarded: runs that start at once would migrate the same file together.
            with _sqlite_init_lock(uri):
                self.client = MlflowClient(uri)
                self.experiment_id = self._experiment(experiment)
        except Exception as e:  # the store's own error types vary with the backend
            reason = first_line(e)
            raise SeqlmError(f"MLflow store {shown(uri)}: cannot be used ({reason})") from None

    def _experiment(self, name: str) -> str:
        """The experiment's id, created or tagged as model development."""
        found = self.client.get_experiment_by_name(name)
        if found is None:
            return self.client.create_experiment(name, tags=EXPERIMENT_KIND)
        for key, value in EXPERIMENT_KIND.items():
            if found.tags.get(key) != value:
                self.client.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id

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
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self.client.log_batch(run_id, metrics=batch)

    def log_epoch(self, run_id: str, epoch: Mapping[str, float]) -> None:
        """One epoch's figures of a recurrent model (training's ``on_epoch``)."""
        self.log_metrics(run_id, {k: epoch[k] for k in EPOCH_METRICS}, step=int(epoch["epoch"]))

    def log_corpus(self, run_id: str, corpus: str, key: str) -> None:
        """The corpus as the run's MLflow dataset: its path, with its content key as digest."""
        source = LocalArtifactDatasetSource(str(Path(corpus).resolve()))
        dataset = MetaDataset(source, name=Path(corpus).name, digest=key)
        # The entity mlflow.log_input logs, here for a run addressed by id.
        context = InputTag("mlflow.data.context", "corpus")
        self.client.log_inputs(run_id, [DatasetInput(dataset._to_mlflow_entity(), [context])])

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

    def log_once(
        self,
        run_id: str,
        artifact: Artifact,
        name: str,
        files: Sequence[str] = (),
        max_bytes: int | None = None,
    ) -> str | None:
        """A store artifact's folder logged as ``name/`` (or only ``files`` of it, at the top)
        by the first run of the experiment that logs it; every run gets the tags
        ``<name>_key``, ``<name>_path`` and ``<name>_run`` (the run that holds the copy), so
        that an unchanged re-run copies nothing. Returns the run that holds the copy: None for
        a folder over ``max_bytes``, which stays in the store only."""
        paths = [artifact.path / f for f in files]
        holder = self._holder(artifact.key)
        if holder is None and (max_bytes is None or _bytes(paths or [artifact.path]) <= max_bytes):
            holder = run_id
            for path in paths:
                self.client.log_artifact(run_id, str(path))
            if not files:
                self.client.log_artifacts(run_id, str(artifact.path), name)
            self.client.set_tag(run_id, COPY_TAG, artifact.key)
        refs = {"key": artifact.key, "path": str(artifact.path), "run": holder}
        for suffix, value in refs.items():
            if value is not None:
                self.client.set_tag(run_id, f"{name}_{suffix}", value)
        return holder

    def _holder(self, key: str) -> str | None:
        """The run of the experiment (not deleted) that holds a copy of artifact ``key``."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.{COPY_TAG} = '{key}'", max_results=1
        )
        return found[0].info.run_id if found else None

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


@dataclass
class PipelineRun:
    """One pipeline run's tracking, opened once and passed as one value: its experiment, its
    parent run, the tags every run of it carries (the corpus and vocabulary keys), and the child
    runs started before their model was fitted (a recurrent model's: its epochs log as they end)."""

    experiment: str
    run_id: str
    tags: dict[str, str]
    several: bool = False  # several tokenizations: models named <tokenizer>/<model>
    started: dict[str, str] = field(default_factory=dict)

    @property
    def tracker(self) -> Tracker:
        return Tracker(self.experiment)

    def start_model_run(self, name: str, family: str, params: Mapping[str, Any]) -> str:
        """A model's child run, named by the model."""
        tags = {"family": family, **self.tags}
        return self.tracker.start_run(name, params, tags=tags, parent=self.run_id)

    def training(self, data: Prepared, config: RnnConfig) -> Callable[[str], Callbacks]:
        """What follows each recurrent model's training: its child run, started with the
        model's settings, gets each epoch's figures; a terminal shows a progress bar."""

        def follow(model: str) -> Callbacks:
            name = row_name(model, data.tokenizer, self.several)
            run = self.start_model_run(name, "rnn", plan_rnn(data, model, config).config)
            self.started[name] = run
            return replace(progress_bar(model), on_epoch=partial(self.tracker.log_epoch, run))

        return follow

    def abandon(self) -> None:
        """Mark FAILED the child runs still RUNNING (the pipeline failed before tracking them)."""
        tracker = self.tracker
        for run in self.started.values():
            if tracker.client.get_run(run).info.status == "RUNNING":
                tracker.finish(run, failed=True)


@contextmanager
def pipeline_run(
    tracker: Tracker, corpus: str, config: PipelineConfig, datasets: Sequence[Prepared]
) -> Iterator[PipelineRun]:
    """The parent run of a pipeline run (one prepared corpus per tokenization): FINISHED when
    the block ends, FAILED (with the child runs left RUNNING) when it raises."""
    shards = [s.key for data in datasets for s in data.shards]
    corpus_key = stage_key("corpus", 1, {}, {"shards": shards})
    keys = {"corpus_key": corpus_key, "vocab_key": ",".join(d.vocab.key for d in datasets)}
    params = {
        "corpus": corpus,
        "shard_keys": ",".join(shards),
        **keys,
        "vocab_size": ",".join(str(d.vocab.manifest["rows"]["types"]) for d in datasets),
        **config.flat(),
    }
    run_id = tracker.start_run(pipeline_run_name(corpus, config), params, tags=keys)
    tracker.log_corpus(run_id, corpus, corpus_key)
    parent = PipelineRun(tracker.experiment, run_id, keys, several=len(datasets) > 1)
    try:
        yield parent
    except BaseException:
        parent.abandon()
        tracker.finish(run_id, failed=True)
        raise
    tracker.finish(run_id)


def _bytes(paths: Sequence[Path]) -> int:
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files)


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


def shown(uri: str) -> str:
    """The URI as a message shows it: a password in it hidden."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def check_reachable(uri: str) -> None:
    """One quick try at a tracking server or a database (not SQLite), so that one that is down or
    refuses the login fails at once, in one line: MLflow's own clients retry a refused connection
    for minutes."""
    scheme = urlsplit(uri).scheme
    try:
        if scheme in ("http", "https"):
            httpx.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
        elif scheme.split("+")[0] in DATABASE_ENGINES and scheme != "sqlite":
            engine = sqlalchemy.create_engine(uri, poolclass=NullPool)
            try:
                engine.connect().close()
            finally:
                engine.dispose()
    except Exception as e:  # each driver has error types of its own
        # SQLAlchemy 2.1 reads plain postgresql:// as psycopg 3; the project installs psycopg2.
        hint = "; postgresql+psycopg2:// names its driver" if isinstance(e, ImportError) else ""
        reason = first_line(e)
        raise SeqlmError(f"MLflow store {shown(uri)}: not reachable ({reason}){hint}") from None


def _check_writable(folder: Path, uri: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise SeqlmError(f"MLflow store {uri}: {folder} is not writable ({e.strerror})") from None


def metric_name(figure: str, model: str) -> str:
    """``test_ppl/lstm``; an interpolation's ``+`` (which MLflow refuses in a name) becomes ``-``:
    ``test_ppl/lstm-kn5``."""
    return f"{figure}/{model.replace('+', '-')}"


def pipeline_metrics(results: Sequence[ModelResult]) -> dict[str, float]:
    """Every model's figures, for the pipeline run: the runs list and run comparison show the
    models side by side. Bits per token = −Σ log2 p / N = log2 of the perplexity; bits per
    character compare across tokenizations."""
    metrics = {}
    for r in results:
        figures = {
            "test_ppl": r.test_ppl,
            "valid_ppl": r.valid_ppl,
            "test_ppl_no_unk": r.test_ppl_no_unk,
            "test_bits_per_token": math.log2(r.test_ppl),
            "test_bpc": r.test_bpc,
        }
        metrics |= {metric_name(k, r.model): v for k, v in figures.items()}
    return metrics


def _literal(value: Any) -> str:
    """A setting's value as ``--set`` takes it: ``[2,3]``, ``true``, ``whitespace``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return str(value)


def changed_settings(config: PipelineConfig) -> dict[str, Any]:
    """The settings that differ from the defaults (where results go, ``run.*``, left out)."""
    defaults = PipelineConfig().flat()
    return {k: v for k, v in config.flat().items() if not k.startswith("run.") and defaults[k] != v}


def pipeline_run_name(corpus: str, config: PipelineConfig) -> str:
    """The corpus and what differs from the defaults: ``input.txt · ngram.orders=[2,3]``,
    ``input.txt · defaults``. MLflow shows the start time beside it."""
    changed = changed_settings(config)
    what = " ".join(f"{k}={_literal(v)}" for k, v in changed.items()) or "defaults"
    return f"{Path(corpus).name} · {what}"[:_MAX_RUN_NAME]


_NGRAM = re.compile(r"([a-z]+?)(\d+)")
_RECURRENT = ("rnn_tanh", "gru", "lstm")


def ladder_order(model: str) -> tuple[int, int, str]:
    """Where a model stands on the ladder: unigram, n-grams by order, rnn_tanh, gru, lstm, then
    interpolations (and anything else)."""
    if model == "unigram":
        return (0, 0, model)
    if (ngram := _NGRAM.fullmatch(model)) is not None:
        return (1, int(ngram[2]), model)
    if model in _RECURRENT:
        return (2, _RECURRENT.index(model), model)
    return (3, 0, model)


def recent_pipelines(experiment: str, last: int) -> list[dict[str, Any]]:
    """The recent pipeline runs (newest first): id, name, start, corpus, each model's test
    perplexity in ladder order (from the run's ``test_ppl/<model>`` metrics) and the settings
    that differ between the runs listed."""
    uri = tracking_uri()
    check_reachable(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SeqlmError(f"MLflow store {uri}: no experiment {experiment!r}")
    runs = client.search_runs(
        [found.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    parents = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags][:last]
    settings = {k for r in parents for k in r.data.params if "." in k and not k.startswith("run.")}
    differ = sorted(k for k in settings if len({r.data.params.get(k) for r in parents}) > 1)
    rows = []
    for run in parents:
        ppl = {
            name.removeprefix("test_ppl/").replace("-", "+"): value
            for name, value in run.data.metrics.items()
            if name.startswith("test_ppl/")
        }
        rows.append(
            {
                "run": run.info.run_id,
                "name": run.info.run_name,
                "started": time.strftime(
                    "%Y-%m-%dT%H:%M:%S%z", time.localtime(run.info.start_time / 1000)
                ),
                "corpus": run.data.params.get("corpus", ""),
                "test_ppl": {m: ppl[m] for m in sorted(ppl, key=ladder_order)},
                "config": {k: run.data.params.get(k) for k in differ},
            }
        )
    return rows
