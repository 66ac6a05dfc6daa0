"""Prefect tasks: each a thin wrapper around one library call, or a tracking step.

Importing this package first sets the project's defaults for what would otherwise phone home or
write outside the project (the user's own environment variables win). The ``seqlm`` command
imports it first, so the library's own commands get the same defaults.
"""

import os
from pathlib import Path

for _name, _value in {
    "PREFECT_HOME": str(Path.cwd() / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Task results are not persisted (Prefect would cloudpickle them and unpickle them on a cache
    # hit): the artifact store is the cache.
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
    # matplotlib's font cache and settings, which would otherwise go to the home folder.
    "MPLCONFIGDIR": str(Path.cwd() / ".cache" / "matplotlib"),
}.items():
    os.environ.setdefault(_name, _value)
