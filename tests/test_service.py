"""The pipeline as a service: a real Prefect server, `seqlm serve`, `prefect deployment run`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from flows.params import PipelineSettings
from seqlm.net import free_port
from seqlm.store import Store
from tests.helpers import BUNDLED, assert_merged_tables_recount, bundled_corpus

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow  # a Prefect server and a serve process for the module
MODEL_FAMILIES = ("unigram", "ngram", "rnn", "interpolated")


def wait_until(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(what)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        env=env,
        cwd=cwd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[dict]:
    """A Prefect server on a free loopback port and `seqlm serve` against it."""
    root = tmp_path_factory.mktemp("service")
    api = f"http://127.0.0.1:{free_port()}/api"
    env = os.environ | {
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlruns/mlflow.db",
    }
    port = api.split(":")[2].split("/")[0]
    server = start(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
        env,
        root,
        root / "server.log",
    )
    try:
        wait_until(lambda: healthy(api), 120, (root / "server.log").read_text)
        corpus = bundled_corpus(root / "corpus" / "input.txt", 2000)
        served = start(
            [str(BIN / "seqlm"), "serve", "--corpus", str(corpus)], env, root, root / "serve.log"
        )
        try:
            yield {"env": env, "root": root, "corpus": corpus}
        finally:
            stop(served)
    finally:
        stop(server)


def deployment_run(service: dict, *params: str) -> subprocess.CompletedProcess:
    """`prefect deployment run --watch` with the n-gram rungs only (quick), and ``params``."""
    args = [str(BIN / "prefect"), "deployment", "run", "corpus-to-model/on-demand", "--watch"]
    for param in ("orders=[2, 3]", "recurrent_models=[]", *params):
        args += ["--param", param]
    # The deployment appears once `seqlm serve` has registered it.
    deadline = time.monotonic() + 90
    while True:
        done = subprocess.run(
            args,
            env=service["env"],
            cwd=service["root"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if "not found" not in done.stdout + done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(1)


def test_deployment_run_completes_and_is_tracked(service):
    done = deployment_run(service, f"corpus={service['corpus']}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Completed" in done.stdout
    client = MlflowClient(service["env"]["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("seqlm")
    runs = client.search_runs([experiment.experiment_id])
    models = sorted(r.info.run_name for r in runs if r.data.tags.get("family") in MODEL_FAMILIES)
    assert models == ["kn2", "kn3", "unigram"]  # the orders and recurrent_models parameters
    assert sum("mlflow.parentRunId" not in r.data.tags for r in runs) == 1
    assert (service["root"] / "data" / "store" / "vocab").is_dir()


def test_a_missing_corpus_fails_that_run_only(service):
    done = deployment_run(service, f"corpus={service['root'] / 'nowhere'}")
    assert done.returncode != 0
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1)
    api = service["env"]["PREFECT_API_URL"]
    state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]
    assert state["type"] == "FAILED"
    assert "nowhere: no such file or directory" in state["message"]
    again = deployment_run(service, f"corpus={service['corpus']}")
    assert again.returncode == 0, again.stdout + again.stderr


def failed_with(service: dict, done: subprocess.CompletedProcess) -> str:
    """The message of a deployment run that failed."""
    assert done.returncode != 0, done.stdout
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1)
    api = service["env"]["PREFECT_API_URL"]
    state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]
    assert state["type"] == "FAILED"
    return state["message"]


def test_a_deployment_run_stays_under_the_corpus_roots_and_in_the_store(service):
    # The served process's folder is its only corpus root: the bundled corpus is outside it.
    outside = failed_with(service, deployment_run(service, f"corpus={BUNDLED}"))
    assert f"{BUNDLED}: outside the corpus roots of this service ({service['root']})" in outside
    elsewhere = service["root"].parent / "elsewhere"
    for key, value in (("store", str(elsewhere)), ("experiment", "other")):
        config = json.dumps({"run": {key: value}})
        message = failed_with(service, deployment_run(service, f"config={config}"))
        assert f"run.{key}: a deployment run cannot set it" in message
    assert not elsewhere.exists()
    client = MlflowClient(service["env"]["MLFLOW_TRACKING_URI"])
    assert client.get_experiment_by_name("other") is None


def test_the_deployment_offers_the_typed_form_and_refuses_bad_settings(service):
    api = service["env"]["PREFECT_API_URL"]
    wait_until(
        lambda: httpx.get(f"{api}/deployments/name/corpus-to-model/on-demand").status_code == 200,
        90,
        "the deployment was not registered",
    )
    deployment = httpx.get(f"{api}/deployments/name/corpus-to-model/on-demand", timeout=10).json()
    assert deployment["enforce_parameter_schema"] is True
    schema = deployment["parameter_openapi_schema"]
    assert schema["properties"]["config"]["default"] == PipelineSettings().model_dump()
    lr = schema["definitions"]["RnnConfig"]["properties"]["lr"]
    assert lr["type"] == "number" and lr["description"]

    # A wrong type is refused before any run exists; a wrong value fails the run in one line.
    wrong = deployment_run(service, 'config={"rnn": {"lr": "fast"}}')
    assert wrong.returncode != 0
    assert "Validation failed for field 'config.rnn.lr'" in wrong.stdout + wrong.stderr
    assert "UUID" not in wrong.stdout
    message = failed_with(service, deployment_run(service, 'config={"rnn": {"lr": -1}}'))
    assert "rnn.lr must be positive" in message

    # The whole form sent back (the run section unchanged) runs, with the overrides on top.
    form = json.dumps(PipelineSettings().model_dump())
    done = deployment_run(service, f"corpus={service['corpus']}", f"config={form}")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_new_shard_is_counted_alone_and_merges_to_a_full_recount(service):
    root = service["root"]
    folder = root / "shards"
    bundled_corpus(folder / "a.txt", 3500, start=2000)
    bundled_corpus(folder / "b.txt", 5000, start=3500)
    first = deployment_run(service, f"corpus={folder}")
    assert first.returncode == 0, first.stdout + first.stderr

    store = Store(root / "data" / "store")
    before = {stage: set(store.root.glob(f"{stage}/*")) for stage in ("ingest", "counts", "tables")}
    bundled_corpus(folder / "c.txt", 5300, start=5000)  # a tenth of the lines: a new shard
    second = deployment_run(service, f"corpus={folder}")
    assert second.returncode == 0, second.stdout + second.stderr
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", second.stdout).group(1)
    api = service["env"]["PREFECT_API_URL"]
    assert httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]["type"] == "COMPLETED"
    new = {stage: set(store.root.glob(f"{stage}/*")) - seen for stage, seen in before.items()}
    # Only the new file was ingested and counted; the tables were merged again, once.
    assert [len(new[stage]) for stage in ("ingest", "counts", "tables")] == [1, 1, 1]
    (counted,) = new["counts"]
    assert store.get("counts", counted.name).manifest["note"]["source"] == str(folder / "c.txt")

    (merged,) = new["tables"]
    tables = store.get("tables", merged.name)
    assert sorted(tables.manifest["note"]["sources"]) == [
        str(folder / name) for name in ("a.txt", "b.txt", "c.txt")
    ]
    assert_merged_tables_recount(store, tables)
