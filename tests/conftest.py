"""Test isolation: Prefect, MLflow and temporary files live in a temporary folder, never in ~."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from flows.settings import apply_defaults
from tests.helpers import PTB

_HOME = Path(tempfile.mkdtemp(prefix="seqlm-tests-"))
os.environ["PREFECT_HOME"] = str(_HOME / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_HOME}/mlruns/mlflow.db"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
os.environ["MPLCONFIGDIR"] = str(_HOME / "matplotlib")
apply_defaults()  # the project's other defaults, as every entry point sets them, before Prefect


@pytest.fixture(scope="session")
def prefect_server():
    """Prefect's test server (about 8 s to start), shared by the flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def ptb() -> Path:
    if not PTB.is_dir():
        pytest.skip(f"{PTB} is not here")
    return PTB
