"""The service on PostgreSQL: a cluster on loopback (`seqlm service start`), the Prefect server and
the MLflow tracking server on it, `seqlm serve` and a deployment run, whose records are then read
back through MLflow's client and straight from the two databases. Also: a tracking store or a
Prefect API that is down, or refuses the login, fails in one line, at once."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg2
import pytest
from mlflow.tracking import MlflowClient

from flows import postgres
from flows.cli import main
from flows.local_server import check_api
from seqlm.errors import SeqlmError
from seqlm.net import free_port
from tasks.tracking import check_reachable
from tests.helpers import SEQLM, bundled_corpus, pipeline_runs, prefect_home, run_seqlm
from tests.test_service import (
    MODEL_FAMILIES,
    deployment_run,
    healthy,
    start,
    stop,
    wait_until,
)


@pytest.fixture
def cluster() -> Iterator[postgres.Cluster]:
    """A cluster folder and a free port, stopped and removed afterwards (``mkdtemp``: a short
    path, as a socket's must be, that the ``postgres`` user reaches once it owns the folder)."""
    try:
        postgres.pg_program("initdb")
    except SeqlmError as e:
        if os.environ.get("CI"):
            raise  # .ci/run installs PostgreSQL: CI never skips this
        pytest.skip(str(e))
    folder = Path(tempfile.mkdtemp(prefix="seqlm-pg-"))
    c = postgres.cluster(folder, free_port())
    try:
        yield c
    finally:
        postgres.stop(c)
        shutil.rmtree(folder)


@contextmanager
def servers(c: postgres.Cluster, root: Path) -> Iterator[dict[str, str]]:
    """`seqlm service prefect` and `seqlm service mlflow` on the cluster, on free ports, until
    both answer; yields the clients' environment."""
    prefect_port, mlflow_port = free_port(), free_port()
    env = os.environ | {
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
    }
    service = [str(SEQLM), "service"]
    where = ["--folder", str(c.folder), "--port", str(c.port)]
    prefect = [*service, "prefect", *where, "--http-port", str(prefect_port)]
    mlflow = [*service, "mlflow", *where, "--http-port", str(mlflow_port)]
    started = [
        start(prefect, env, root, root / "prefect.log"),
        start([*mlflow, "--artifacts", "artifacts"], env, root, root / "mlflow.log"),
    ]
    try:
        for name, variable in (("prefect", "PREFECT_API_URL"), ("mlflow", "MLFLOW_TRACKING_URI")):
            log = (root / f"{name}.log").read_text
            wait_until(lambda url=env[variable]: healthy(url), 180, log)
        yield env
    finally:
        for process in started:
            stop(process)


def count_rows(c: postgres.Cluster, database: str, query: str) -> int:
    with closing(psycopg2.connect(c.url(database))) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchone()[0]


@pytest.mark.slow
def test_a_deployment_run_is_recorded_in_postgresql(cluster, tmp_path):
    start_cluster = run_seqlm(
        ["service", "start", "--folder", str(cluster.folder), "--port", str(cluster.port)],
        tmp_path,
    )
    assert start_cluster.returncode == 0, start_cluster.stderr
    assert (cluster.password_file.stat().st_mode & 0o777) == 0o600
    corpus = bundled_corpus(tmp_path / "corpus" / "input.txt", 2000)
    with servers(cluster, tmp_path) as env:
        serve = [str(SEQLM), "serve", "--corpus", str(corpus)]
        served = start(serve, env, tmp_path, tmp_path / "serve.log")
        try:
            done = deployment_run({"env": env, "root": tmp_path}, f"corpus={corpus}")
        finally:
            stop(served)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Completed" in done.stdout

        parents, children = pipeline_runs("seqlm", env["MLFLOW_TRACKING_URI"])
        assert len(parents) == 1
        models = [r for r in children if r.data.tags.get("family") in MODEL_FAMILIES]
        assert sorted(r.info.run_name for r in models) == ["kn2", "kn3", "unigram"]
        assert all(r.data.metrics["test_ppl"] > 1 for r in models)
        assert parents[0].data.metrics["test_ppl/kn3"] > 1
        # Artifacts go through the server to its folder.
        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        names = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
        assert "comparison.md" in names
        assert list((tmp_path / "artifacts").rglob("comparison.md"))

    # The records are in PostgreSQL (the servers are gone; the cluster still runs).
    runs = len(parents) + len(children)
    assert count_rows(cluster, "mlflow", "SELECT count(*) FROM runs") >= runs
    completed = "SELECT count(*) FROM flow_run WHERE state_type = 'COMPLETED'"
    assert count_rows(cluster, "prefect", completed) == 1
    assert not list(tmp_path.rglob("*.db"))  # no SQLite anywhere

    stop_cluster = run_seqlm(
        ["service", "stop", "--folder", str(cluster.folder), "--port", str(cluster.port)],
        tmp_path,
    )
    assert stop_cluster.returncode == 0, stop_cluster.stderr
    assert not postgres.running(cluster)


@pytest.mark.parametrize(
    "uri, says",
    [
        ("http://127.0.0.1:{port}", "MLflow store http://127.0.0.1:{port}: not reachable"),
        (
            "postgresql+psycopg2://seqlm:secret@127.0.0.1:{port}/mlflow",
            "MLflow store postgresql+psycopg2://seqlm:***@127.0.0.1:{port}/mlflow: not reachable",
        ),
        # SQLAlchemy 2.1 reads plain postgresql:// as psycopg 3, which is not installed.
        ("postgresql://seqlm:secret@127.0.0.1:{port}/mlflow", "postgresql+psycopg2:// names"),
    ],
    ids=["http", "postgresql+psycopg2", "postgresql"],
)
def test_a_tracking_store_that_is_down_is_named_in_one_line(uri, says):
    port = free_port()  # nothing listens there
    with pytest.raises(SeqlmError) as raised:
        check_reachable(uri.format(port=port))
    message = str(raised.value)
    assert says.format(port=port) in message
    assert "\n" not in message and "secret" not in message


def test_a_prefect_api_that_is_down_is_named_in_one_line():
    url = f"http://127.0.0.1:{free_port()}/api"
    with pytest.raises(SeqlmError, match=f"the Prefect server at {url} is not answering"):
        check_api(url)


def test_the_cluster_refuses_a_wrong_password_and_names_a_taken_port(cluster):
    postgres.start(cluster)
    wrong = cluster.mlflow_url.replace(cluster.password_file.read_text().strip(), "wrong")
    with pytest.raises(SeqlmError, match="password authentication failed") as raised:
        check_reachable(wrong)
    assert "wrong" not in str(raised.value)
    check_reachable(cluster.mlflow_url)  # the right one passes

    second = Path(tempfile.mkdtemp(prefix="seqlm-pg-"))
    try:
        with pytest.raises(SeqlmError, match=f"127.0.0.1:{cluster.port}: could not create"):
            postgres.start(postgres.cluster(second, cluster.port))
    finally:
        shutil.rmtree(second)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "serve"])
def test_seqlm_against_services_that_are_down(command, tmp_path):
    """`seqlm run` with an MLflow server that is down, `seqlm serve` with a Prefect server that
    is down: one line naming it, exit 1, no traceback, in seconds (not MLflow's minutes of
    retries)."""
    dead = free_port()
    corpus = bundled_corpus(tmp_path / "input.txt", 300)
    env = os.environ | {"PREFECT_HOME": prefect_home(tmp_path / ".prefect")}
    if command == "run":
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{dead}"
        argv = ["run", "--corpus", str(corpus), "--set", "rnn.models=[]"]
        names = f"MLflow store http://127.0.0.1:{dead}: not reachable"
    else:
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{dead}/api"
        argv = ["serve", "--corpus", str(corpus)]
        names = f"the Prefect server at http://127.0.0.1:{dead}/api is not answering"
    done = run_seqlm(argv, tmp_path, env, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("seqlm: error:")]
    assert names in line


def test_service_commands_name_a_cluster_that_is_not_running(tmp_path, capsys):
    where = ["--folder", str(tmp_path / "none"), "--port", str(free_port())]
    for command in ("prefect", "mlflow"):
        assert main(["service", command, *where]) == 1
        line = capsys.readouterr().err.strip()
        assert line.endswith("not running; start it with `seqlm service start`"), line
