"""The project's environment defaults, applied by every entry point before Prefect or MLflow is
imported: both read their settings when imported (Prefect its home, server and logging settings;
MLflow whether to configure its loggers), so the defaults must be in the environment first.

Entry points: the ``seqlm`` command (``flows.cli.main``, before it parses a command; no module
the parser imports imports Prefect or MLflow), the temporary API server's process
(``flows.local_server.ephemeral_app``), the served deployments' process
(``flows.serve.serve_deployments``, whose flow runs inherit its environment) and the tests'
``conftest.py``. The user's own environment always wins.
"""

from __future__ import annotations

import os
from pathlib import Path


def apply_defaults() -> None:
    """Set every default the environment does not already set: what would otherwise phone home
    or write outside the project (the working directory)."""
    project = Path.cwd()
    defaults = {
        "PREFECT_HOME": str(project / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Task results are not persisted (Prefect would cloudpickle them and unpickle them on a
        # cache hit): the artifact store is the cache.
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "seqlm",
        # The library also logs outside flow runs (by hand, in tests): that is not an error.
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        # The temporary local server migrates its database on a cold start: allow for a slow disk.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        # MLflow's loggers pass their lines on to the application's handlers (one format on the
        # terminal, where only warnings show) instead of printing them in a format of their own.
        "MLFLOW_CONFIGURE_LOGGING": "false",
        # Registering a model reads back its run's artifacts: no progress bar per read in the
        # middle of the comparison the run prints.
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # matplotlib's font cache and settings, which would otherwise go to the home folder.
        "MPLCONFIGDIR": str(project / ".cache" / "matplotlib"),
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
