"""A temporary Prefect API server for one ``seqlm run``, which dies with the process that started
it.

Prefect starts the same server (a uvicorn subprocess) when a flow runs with no API configured, but
that one outlives a parent killed with SIGKILL and keeps listening. This one asks the kernel to kill
it when its parent dies (``PR_SET_PDEATHSIG``), and is stopped normally when the run ends.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flows.settings import apply_defaults
from seqlm.errors import SeqlmError
from seqlm.net import free_port

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STARTUP_SECONDS = 120.0  # a cold start migrates the database: allow for a slow, busy disk


def ephemeral_app() -> object:
    """The API without the UI or the scheduling services, as Prefect's own temporary server.
    The server process's entry point: the project's defaults go in before Prefect is imported."""
    apply_defaults()
    from prefect.server.api.server import create_app

    return create_app(ephemeral=True)


@contextmanager
def prefect_api(warm_up: Callable[[], object] = lambda: None) -> Iterator[None]:
    """Run the block against the configured Prefect API (PREFECT_API_URL, a profile, a test
    harness) or, when there is none, against a local server started for it and stopped after it;
    ``warm_up`` (the flow's imports) runs while that server starts."""
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    configured = get_current_settings().api.url
    if configured is not None:
        check_api(configured)
        warm_up()
        yield
        return
    with _local_server() as (url, wait):
        # Every thread (log and event workers too) reads the process-wide settings.
        os.environ["PREFECT_API_URL"] = url
        refresh_global_settings_context()
        try:
            warm_up()
            wait()
            yield
        finally:
            _drain_workers()
            del os.environ["PREFECT_API_URL"]
            refresh_global_settings_context()


def check_api(url: str) -> None:
    """One line naming a Prefect API that does not answer (Prefect's client would fail later,
    with a traceback)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=5):
            pass
    except (ValueError, OSError) as e:  # a malformed URL; URLError is an OSError
        reason = getattr(e, "reason", None) or e
        raise SeqlmError(
            f"the Prefect server at {url} is not answering ({reason}); start one with "
            "`prefect server start --host 127.0.0.1` or set PREFECT_API_URL"
        ) from None


@contextmanager
def _local_server(
    timeout: float = STARTUP_SECONDS,
) -> Iterator[tuple[str, Callable[[], None]]]:
    """Start the server and yield its API URL and a function that waits until it answers."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            f"{__name__}:ephemeral_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ],
        preexec_fn=_die_with(os.getpid()) if sys.platform == "linux" else None,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        yield url, lambda: _wait_healthy(process, url, timeout)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _drain_workers() -> None:
    """Send the logs and events still queued before the server goes."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def _die_with(parent: int) -> Callable[[], None]:
    """Run in the child before exec: SIGKILL when the parent dies (also if it already has)."""

    def set_death_signal() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return set_death_signal


def _wait_healthy(process: subprocess.Popen[bytes], url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SeqlmError(f"Prefect server {url}: exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise SeqlmError(f"Prefect server {url}: no answer within {timeout:.0f} s")
