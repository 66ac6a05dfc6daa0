"""What a served deployment run shows in Prefect: seqlm's own lines, runs named for their work."""

from __future__ import annotations

import logging
import re
import time
from uuid import UUID

import pytest

from tests.test_service import deployment_run, service  # noqa: F401  (the served fixture)

pytestmark = pytest.mark.slow  # a served deployment run

STAGES = ("ingest input.txt", "count input.txt", "vocabulary", "fit unigram", "fit kn2",
          "evaluate kn2", "compare 3 models")  # fmt: skip


def read_run(api: str, run_id: str, stage_lines: int) -> tuple[str, list, list[str]]:
    """The flow run's name, its log (once ``stage_lines`` stage lines arrived: logs reach the
    server in batches) and its task runs' names, through the Prefect client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    flow_run = UUID(run_id)
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        deadline = time.monotonic() + 30
        while True:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run])))
            found = [log for log in logs if re.search(r"\s(built .* s|found)$", log.message)]
            if len(found) >= stage_lines or time.monotonic() > deadline:
                break
            time.sleep(1)
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run]))
        )
        return client.read_flow_run(flow_run).name, logs, [t.name for t in tasks]


def test_a_served_run_logs_seqlm_stage_lines_and_names_its_runs(service):  # noqa: F811
    done = deployment_run(service, f"corpus={service['corpus']}")
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1)
    name, logs, tasks = read_run(service["env"]["PREFECT_API_URL"], run_id, len(STAGES) + 2)
    assert name == "input.txt"  # the corpus
    assert set(STAGES) <= set(tasks), tasks
    lines = {log.message.split("  ")[0]: log for log in logs if log.name == "seqlm.stages"}
    for stage in STAGES:
        assert stage in lines, f"{stage}: no line in {[log.message for log in logs]}"
        assert lines[stage].level == logging.INFO
        assert re.fullmatch(rf"{stage}\s+(built\s+\d+\.\d\d s|found)", lines[stage].message)
    # The library's own progress reaches the run log too (the seqlm logger's level is set).
    assert any(log.name == "seqlm.store" for log in logs)
