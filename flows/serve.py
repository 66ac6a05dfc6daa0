"""Deployments of ``corpus-to-model``, served by ``seqlm serve``.

Two deployments: ``on-demand`` (no schedule; started with ``prefect deployment run``) and
``nightly`` (retrains on a cron schedule). Both need a Prefect server at ``PREFECT_API_URL``.
Their runs read corpora only under the corpus roots (``flows.guard``), which the runs started by
this process inherit through ``SEQLM_CORPUS_ROOTS``, and the project's environment defaults;
their run section (store, experiment, executor: ``seqlm serve --set run.KEY=VALUE``) is this
process's, which they inherit through ``SEQLM_SERVICE_RUN``.
``serve_deployments`` is the served process's entry point: Prefect is imported there, once those
defaults are in the environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from flows.local_server import check_api
from flows.settings import apply_defaults
from seqlm.config import PipelineConfig, RunConfig, load_config
from seqlm.corpus import DEFAULT_CORPUS
from seqlm.errors import SeqlmError

NIGHTLY = "0 3 * * *"
LOCAL_PREFECT_API = "http://127.0.0.1:4200/api"  # what `prefect server start` opens
SERVICE_RUN_ENV = "SEQLM_SERVICE_RUN"  # the serving command's run section, as JSON


def deployments(corpus: str = DEFAULT_CORPUS, cron: str = NIGHTLY) -> list[Any]:
    """Both deployments; the API checks a run's parameters against the flow's typed form."""
    from flows.corpus_to_model import corpus_to_model

    parameters = {"corpus": corpus}
    return [
        corpus_to_model.to_deployment(
            name="on-demand",
            parameters=parameters,
            enforce_parameter_schema=True,
            description="Run the whole pipeline once, with the parameters given at run time.",
        ),
        corpus_to_model.to_deployment(
            name="nightly",
            cron=cron,
            parameters=parameters,
            enforce_parameter_schema=True,
            description=f"Retrain on the corpus on the schedule {cron!r}.",
        ),
    ]


def check_server() -> str:
    """The Prefect API URL, once it answers; a clear error naming it otherwise."""
    url = os.environ.get("PREFECT_API_URL", "")
    check_api(url)
    return url


def service_run(settings: Sequence[str]) -> RunConfig:
    """The deployments' run section: the defaults, then ``run.KEY=VALUE`` settings (nothing
    else: a run chooses its model settings itself)."""
    config = load_config(None, settings)
    if config != replace(PipelineConfig(), run=config.run):
        raise SeqlmError(f"--set: seqlm serve takes run settings only, not {list(settings)}")
    return config.run


def serve_deployments(
    corpus: str = DEFAULT_CORPUS,
    cron: str = NIGHTLY,
    roots: Sequence[str] = (),
    settings: Sequence[str] = (),
) -> None:
    """Serve both deployments; ``roots`` (else ``SEQLM_CORPUS_ROOTS``, else the working
    directory) are the folders their runs may read a corpus from, the default ``corpus`` too;
    ``settings`` (``run.KEY=VALUE``) set their run section: store, experiment, executor."""
    run = service_run(settings)
    # Prefect reads its settings (the API URL too) once, when imported: the defaults go in first.
    apply_defaults()
    os.environ[SERVICE_RUN_ENV] = json.dumps(asdict(run))  # the runs' processes inherit it
    os.environ.setdefault("PREFECT_API_URL", LOCAL_PREFECT_API)
    from prefect import serve

    from flows.guard import ROOTS_ENV, check_inside_roots, corpus_roots

    if roots:
        os.environ[ROOTS_ENV] = os.pathsep.join(str(Path(root).resolve()) for root in roots)
    from tasks.tracking import check_reachable, tracking_uri

    check_inside_roots(Path(corpus), corpus_roots())
    check_server()
    check_reachable(tracking_uri())  # else every run would fail on it
    serve(*deployments(corpus, cron))
