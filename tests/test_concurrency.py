"""Two pipeline runs at once against one artifact store and one MLflow sqlite store."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from seqlm import stages
from seqlm.store import MANIFEST
from tests.helpers import SEQLM, bundled_corpus, pipeline_runs, prefect_home

pytestmark = pytest.mark.slow  # two `seqlm run` processes at once


def test_two_runs_at_once_share_the_store(tmp_path):
    corpus = bundled_corpus(tmp_path / "corpus" / "input.txt", 3000)
    store = tmp_path / "store"
    # A fresh MLflow store: both runs create its tables and the experiment at the same moment.
    tracking = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    runs = []
    for i in (1, 2):
        env = os.environ | {"PREFECT_HOME": prefect_home(tmp_path / f"prefect{i}")}
        env["MLFLOW_TRACKING_URI"] = tracking
        args = [str(SEQLM), "run", "--corpus", str(corpus), "--report"]
        args += [str(tmp_path / f"report{i}.json")]
        for setting in (f"store={store}", "rnn.models=[]", "orders=[2]"):
            args += ["--set", setting]
        log = (tmp_path / f"run{i}.log").open("w")
        runs.append(
            subprocess.Popen(args, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        )
    for i, run in enumerate(runs, start=1):
        assert run.wait(timeout=240) == 0, (tmp_path / f"run{i}.log").read_text()[-4000:]

    # One folder per stage key, each complete, and nothing left half-written.
    leftovers = [p for p in store.rglob("*") if p.name.startswith((".tmp-", ".work-"))]
    assert leftovers == []
    folders = sorted(p for p in store.glob("*/*") if p.is_dir())
    assert all((p / MANIFEST).is_file() for p in folders)
    for p in folders:
        manifest = json.loads((p / MANIFEST).read_text())
        assert (manifest["stage"], manifest["key"]) == (p.parent.name, p.name)
    built = {stage: len(list(store.glob(f"{stage}/*"))) for stage in stages.STAGES}
    # One source file, so one shard and one table of each kind; models: unigram and kn2.
    assert built == {
        "ingest": 1,
        "types": 1,
        "subwords": 0,
        "encode": 0,
        "counts": 1,
        "vocab": 1,
        "tables": 1,
        "cutoff": 1,
        "partition": 0,
        "parts_merged": 0,
        "unigram": 1,
        "ngram": 1,
        "ngram_parts": 0,
        "rnn": 0,
        "evaluate": 2,
        "interpolate": 0,
        "compare": 1,
    }

    reports = [json.loads((tmp_path / f"report{i}.json").read_text()) for i in (1, 2)]
    figures = [
        {row["model"]: (row["test_ppl"], row["valid_ppl"], row["targets"]) for row in report}
        for report in reports
    ]
    assert figures[0] == figures[1]
    assert sorted(figures[0]) == ["kn2", "unigram"]

    # Both runs are tracked in the one MLflow store, in one experiment.
    parents, _ = pipeline_runs("seqlm", tracking)
    assert [r.info.status for r in parents] == ["FINISHED", "FINISHED"]
