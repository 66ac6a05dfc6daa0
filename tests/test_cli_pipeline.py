"""`seqlm run` as a user meets it: one line per error, finished work kept, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.cli import main
from seqlm.unigram import UnigramModel
from tests.helpers import SEQLM, bundled_corpus, pipeline_runs, prefect_home

NGRAM_ONLY = ["--set", "orders=[2]", "--set", "rnn.models=[]"]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return bundled_corpus(tmp_path / "corpus.txt", 2000)


@pytest.mark.slow
def test_a_failed_presentation_step_keeps_the_comparison(
    prefect_server, corpus, tmp_path, capfd, monkeypatch
):
    def broken(self, n_words: int, seed: int = 0):
        raise RuntimeError("no sampler today")

    monkeypatch.setattr(UnigramModel, "sample", broken)
    report = tmp_path / "r.json"
    args = ["run", "--corpus", str(corpus), "--set", f"store={tmp_path / 'store'}", *NGRAM_ONLY]
    assert main([*args, "--set", "experiment=broken", "--report", str(report)]) == 1
    out, err = capfd.readouterr()
    rows = json.loads(report.read_text())
    assert [r["model"] for r in rows] == ["unigram", "kn2"]
    assert "| kn2 |" in out and "kn2:" in out  # the table and the samples that worked
    lines = err.strip().splitlines()
    assert "sample unigram: RuntimeError: no sampler today" in err
    assert (
        lines[-1].startswith("seqlm: error: MLflow run ") and "sample unigram failed" in lines[-1]
    )
    assert "Traceback" not in err and "Finished in state" not in err

    parents, children = pipeline_runs("broken")
    parent = parents[0]
    assert parent.info.status == "FAILED"
    assert {"comparison.md", "comparison.parquet", "samples.md"} <= {
        a.path for a in MlflowClient().list_artifacts(parent.info.run_id)
    }
    statuses = {r.info.run_name: r.info.status for r in children}
    assert statuses["unigram"] == statuses["kn2"] == "FINISHED"


def seqlm(tmp_path: Path, *args: str, **kwargs) -> subprocess.Popen[str]:
    """``seqlm ARGS`` in a process of its own, with Prefect and MLflow under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {
        "PREFECT_HOME": prefect_home(tmp_path / "prefect"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
    }
    return subprocess.Popen(
        [str(SEQLM), *args], cwd=tmp_path, env=env, text=True, stderr=subprocess.PIPE, **kwargs
    )


def finish(process: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


@pytest.mark.slow
def test_errors_are_one_line_on_the_terminal(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n" * 50 + b"\xc3\x28\n")  # found out inside the ingest task
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    store = f"store={tmp_path / 'store'}"
    status, err = finish(seqlm(tmp_path, "run", "--corpus", str(bad), "--set", store))
    assert status == 1
    assert err.strip().splitlines()[-1] == f"seqlm: error: {bad}: not UTF-8 at byte offset 150"
    assert "Traceback" not in err and "Failed(" not in err, err
    status, err = finish(seqlm(tmp_path, "run", "--corpus", str(empty), "--set", store))
    assert status == 1 and len(err.strip().splitlines()) <= 5 and "Traceback" not in err, err
    # A file operation that fails names the file; a reader that goes away ends it quietly.
    good = tmp_path / "good.txt"
    good.write_text("a b c\n")
    status, err = finish(
        seqlm(tmp_path, "ngram", "count", str(good), "-o", "2", "--out", "/proc/x")
    )
    assert status == 1 and err.startswith("seqlm: error: /proc/") and err.count("\n") == 1, err
    process = seqlm(tmp_path, "ngram", "tables", "--store", str(tmp_path), stdout=subprocess.PIPE)
    process.stdout.close()  # before it writes anything
    status, err = finish(process)
    assert status in (0, 141) and "Traceback" not in err, err


def processes_with(text: str) -> list[int]:
    """Live processes whose command line or environment mentions ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            seen = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and text.encode() in seen and int(proc.name) != os.getpid():
            found.append(int(proc.name))
    return found


def ngram_rows(report: Path) -> dict[str, float]:
    return {
        r["model"]: r["test_ppl"]
        for r in json.loads(report.read_text())
        if r["family"] in ("unigram", "ngram")
    }


@pytest.mark.slow
def test_kill_9_leaves_no_server_and_the_next_run_marks_the_dead_run_killed(tmp_path, corpus):
    store = tmp_path / "store"
    common = ["run", "--corpus", str(corpus), "--set", f"store={store}", "--set", "orders=[2]"]
    small = ["--set", "rnn.emsize=16", "--set", "rnn.nhid=16", "--set", 'rnn.models=["lstm"]']
    long = ["--set", "rnn.max_minutes=1", "--set", "rnn.epochs=50"]
    process = seqlm(tmp_path, *common, *small, *long, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(store.glob("rnn/.work-*")):
        assert process.poll() is None and time.monotonic() < deadline, "training never started"
        time.sleep(0.5)
    home = f"PREFECT_HOME={tmp_path / 'prefect'}"
    assert len(processes_with(home)) >= 2  # seqlm and its Prefect server
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while processes_with(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_with(home) == []

    quick = ["--set", "rnn.max_minutes=0.5", "--set", "rnn.epochs=1"]
    report = tmp_path / "r.json"
    status, err = finish(seqlm(tmp_path, *common, *small, *quick, "--report", str(report)))
    assert status == 0, err
    assert "marked KILLED" in err
    # The same n-gram figures as a run that was never interrupted, in a store of its own.
    alone = tmp_path / "alone.json"
    fresh = ["--set", f"store={tmp_path / 'fresh'}", "--report", str(alone)]
    status, err = finish(seqlm(tmp_path, *common, "--set", "rnn.models=[]", *fresh))
    assert status == 0, err
    assert ngram_rows(report) == ngram_rows(alone)

    parents, children = pipeline_runs("seqlm", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    statuses = sorted(r.info.status for r in parents)
    assert statuses == ["FINISHED", "FINISHED", "KILLED"]
    assert all(r.info.status != "RUNNING" for r in parents + children)
