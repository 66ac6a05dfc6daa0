"""What a run reads back, what it loads, what it names, where it writes, and what a deployment run
may ask for."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import cloudpickle
import mlflow
import pandas as pd
import polars as pl
import prefect
import pytest
from mlflow.tracking import MlflowClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from flows.corpus_to_model import corpus_to_model
from flows.guard import ROOTS_ENV, check_deployment_request, corpus_roots
from seqlm.errors import SeqlmError
from tasks.registry import CHAMPION, MAX_NAME, registered_name
from tests.helpers import bundled_corpus, run_seqlm


@pytest.fixture
def corpus(tmp_path) -> Path:
    return bundled_corpus(tmp_path / "corpus" / "input.txt", 1000)


def config(tmp_path: Path, experiment: str, rnn: bool = False) -> dict:
    return {
        "run": {"store": str(tmp_path / "store"), "experiment": experiment},
        "ngram": {"orders": [2]},
        "rnn": {"models": ["lstm"] if rnn else [], "emsize": 16, "nhid": 16, "epochs": 1},
    }


class Bait:
    """Unpickling it touches ``marker``: a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def plant(storage: Path, key: str, marker: Path) -> None:
    """A persisted task result as Prefect writes one: JSON around a base64 cloudpickle."""
    record = {
        "metadata": {
            "storage_key": str(storage / key),
            "expiration": None,
            "serializer": {"type": "pickle", "picklelib": "cloudpickle"},
            "prefect_version": prefect.__version__,
            "storage_block_id": None,
        },
        "result": base64.b64encode(cloudpickle.dumps(Bait(marker))).decode(),
    }
    (storage / key).write_text(json.dumps(record))


@pytest.mark.slow
def test_no_task_result_is_read_back_or_written(prefect_server, corpus, tmp_path):
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore
    from prefect.settings import get_current_settings

    storage = Path(get_current_settings().results.local_storage_path)
    storage.mkdir(parents=True, exist_ok=True)
    before = set(storage.iterdir())
    marker = tmp_path / "unpickled"
    cfg = config(tmp_path, "safety")
    corpus_to_model(corpus=str(corpus), config=cfg)
    # Every stage's output under the key Prefect's cache used to look it up by: <stage>-<key>.
    planted = [f"{p.parent.name}-{p.name}" for p in (tmp_path / "store").glob("*/*")]
    assert any(key.startswith("ingest-") for key in planted)
    for key in planted:
        plant(storage, key, marker)
    # The bait is live: Prefect's own result store runs it on reading.
    ResultStore(result_storage=LocalFileSystem(basepath=str(storage))).read(planted[0])
    assert marker.exists()
    marker.unlink()

    again = corpus_to_model(corpus=str(corpus), config=cfg)
    assert again["comparison"][0]["model"] == "unigram"
    assert not marker.exists()
    assert set(storage.iterdir()) - before == {storage / key for key in planted}


LOAD_AND_SCORE = """
import importlib.abc, json, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("prefect", "tasks", "flows"):
            raise ImportError(f"{name} is not importable here")

sys.meta_path.insert(0, Refuse())
import mlflow, pandas as pd
mlflow.models.get_model_info(sys.argv[1])  # MLflow's own start-up: the store, the registry
before = {m.split(".")[0] for m in sys.modules}
model = mlflow.pyfunc.load_model(sys.argv[1])
scores = model.predict(pd.DataFrame({"text": json.loads(sys.argv[2])}))
print(json.dumps({
    "target": scores["target"].tolist(),
    "logprob": scores["logprob"].tolist(),
    "modules": sorted({m.split(".")[0] for m in sys.modules} - before - sys.stdlib_module_names),
}))
"""


def with_dependencies(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` name and everything they install, normalised."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        with contextlib.suppress(metadata.PackageNotFoundError):  # optional, not installed
            todo += [Requirement(r) for r in metadata.requires(name) or []]
    return seen


@pytest.mark.slow
def test_the_registered_model_loads_as_code_without_prefect(prefect_server, corpus, tmp_path):
    corpus = corpus.rename(corpus.with_name("registry.txt"))  # a registered model of its own
    rows = corpus_to_model(corpus=str(corpus), config=config(tmp_path, "code", rnn=True))[
        "comparison"
    ]
    name = registered_name(str(corpus))
    uri = f"models:/{name}@{CHAMPION}"
    champion = MlflowClient().get_model_version_by_alias(name, CHAMPION)
    best = min(rows, key=lambda r: r["valid_ppl"])
    assert champion.tags["model"] == best["model"]

    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path)))
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert not any(f.endswith(".pkl") for f in files), sorted(files)
    assert "registry_model.py" in files  # the model's definition, beside MLmodel
    assert {f.split("/")[1] for f in files if f.startswith("code/")} == {"seqlm"}
    requirements = (folder / "requirements.txt").read_text().split()
    assert "torch==2.13.0" in requirements
    packages = {r.split("==")[0] for r in requirements}
    assert {"mlflow", "numpy", "polars", "pyarrow", "pandas", "torch"} <= packages

    test_lines = pl.read_parquet(next((tmp_path / "store" / "ingest").glob("*/test.parquet")))
    lines = test_lines["tokens"].list.join(" ").to_list()[:20]
    here = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": lines}))
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_SCORE, uri, json.dumps(lines)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    there = json.loads(done.stdout.strip().splitlines()[-1])
    assert there["target"] == here["target"].tolist()
    assert there["logprob"] == pytest.approx(here["logprob"].tolist(), rel=1e-12)
    # What loading and scoring import beyond mlflow and pandas: seqlm (logged with the model)
    # and packages its requirements install; plotting and orchestration stay out.
    loaded = set(there["modules"])
    assert {"seqlm", "torch", "xxhash"} <= loaded
    assert not {"prefect", "tasks", "flows", "matplotlib"} & loaded
    owners = metadata.packages_distributions()
    installed = with_dependencies(requirements)
    missing = {
        m
        for m in loaded - {"seqlm"}
        if not m.startswith("code_model_")  # MLflow's name for the model's own file
        if not {canonicalize_name(d) for d in owners.get(m, [])} & installed
    }
    assert not missing, f"imported at load, not in the requirements: {missing}"


def test_registered_names_are_valid_and_one_per_corpus(tmp_path):
    folder = tmp_path / "tiny shakespeare: v2"
    folder.mkdir()
    a, b = folder / "input.txt", folder / "extra.txt.gz"
    a.touch()
    b.touch()
    assert registered_name(str(a)) == "seqlm-tiny-shakespeare-v2-input"
    assert registered_name(str(b)) == "seqlm-tiny-shakespeare-v2-extra"
    assert registered_name(str(folder)) == "seqlm-tiny-shakespeare-v2"
    assert registered_name(str(folder / ".." / folder.name / "input.txt")) == registered_name(
        str(a)
    )
    long, longer = tmp_path / ("x" * 200), tmp_path / ("x" * 200 + "y")
    long.mkdir()
    longer.mkdir()
    capped = registered_name(str(long))
    assert len(capped) == MAX_NAME and capped != registered_name(str(longer))
    client = MlflowClient()
    for path in (a, b, folder, long):  # MLflow takes every one of them
        assert client.create_registered_model(registered_name(str(path))).name


def test_a_deployment_request_stays_under_the_corpus_roots(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "corpora").mkdir(parents=True)
    inside = root / "corpora" / "a.txt"
    inside.write_text("a b c\n" * 20)
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours\n" * 20)
    roots = [root.resolve()]
    check_deployment_request(str(inside), {"vocab": {"min_count": 1}}, roots)
    check_deployment_request(str(root / "corpora"), None, roots)

    (root / "corpora" / "link.txt").symlink_to(outside)
    (root / "escape.txt").symlink_to(outside)
    refused = {
        str(outside): f"{outside}: outside the corpus roots",
        str(root / "corpora" / ".." / ".." / "secret.txt"): "secret.txt: outside the corpus roots",
        str(root / "escape.txt"): "escape.txt: outside the corpus roots",
        str(root / "corpora"): "link.txt: outside the corpus roots",  # a file of a corpus folder
    }
    for corpus, message in refused.items():
        with pytest.raises(SeqlmError, match=message):
            check_deployment_request(corpus, None, roots)
    for key in ("store", "experiment"):
        with pytest.raises(SeqlmError, match=f"^run.{key}: a deployment run cannot set it"):
            check_deployment_request(str(inside), {"run": {key: "x"}}, roots)

    monkeypatch.chdir(root)
    monkeypatch.delenv(ROOTS_ENV, raising=False)
    assert corpus_roots() == roots
    monkeypatch.setenv(ROOTS_ENV, os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert corpus_roots() == [(tmp_path / "a").resolve(), (tmp_path / "b").resolve()]


def project_env(home: Path) -> dict[str, str]:
    """The environment of a user: a home folder, and none of the test session's settings."""
    cleared = {"PREFECT_", "MLFLOW_", "MPLCONFIGDIR", "DO_NOT_TRACK", "XDG_"}
    env = {k: v for k, v in os.environ.items() if not any(k.startswith(c) for c in cleared)}
    return env | {"HOME": str(home)}


@pytest.mark.slow
def test_commands_write_nothing_in_the_home_folder(tmp_path):
    home = tmp_path / "home"
    project = tmp_path / "project"
    home.mkdir()
    project.mkdir()
    text = bundled_corpus(project / "corpus.txt", 1000)
    tiny = ["--emsize", "8", "--nhid", "8", "--epochs", "1", "--max-minutes", "0.05"]
    commands = [
        ["ngram", "estimate", str(text), "-o", "2", "--arpa", "kn2.arpa"],
        ["rnn", "train", str(text), "--model", "rnn_tanh", "--out", "rnn", *tiny],
        ["run", "--corpus", str(text), "--set", "rnn.models=[]", "--set", "orders=[2]"],
    ]
    for args in commands:
        done = run_seqlm(args, cwd=project, env=project_env(home))
        assert done.returncode == 0, done.stderr
        assert not list(home.rglob("*")), (args, sorted(home.rglob("*")))
    assert (project / "rnn" / "learning_curve.png").is_file()
    assert (project / "mlruns" / "mlflow.db").is_file()
