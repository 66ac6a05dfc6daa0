"""The real flow under Prefect's test server, tracked in a real MLflow sqlite store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from flows.cli import main
from flows.corpus_to_model import corpus_to_model
from tasks.registry import CHAMPION, registered_name
from tests.helpers import bundled_corpus

# Every test here runs the whole flow on Prefect's test server.
pytestmark = pytest.mark.slow

METRICS = {"test_ppl", "test_ppl_no_unk", "valid_ppl", "oov_rate", "train_seconds"}


@pytest.fixture
def corpus(tmp_path):
    return bundled_corpus(tmp_path / "corpus.txt", 2000)


def config(tmp_path, experiment: str, rnn: bool = False) -> dict:
    """Unigram, KN 2 and 3, and with ``rnn`` a tiny LSTM (one short epoch)."""
    return {
        "run": {"store": str(tmp_path / "store"), "experiment": experiment},
        "ngram": {"orders": [2, 3]},
        "rnn": {
            "models": ["lstm"] if rnn else [],
            "emsize": 16,
            "nhid": 16,
            "dropout": 0.0,
            "epochs": 1,
            "max_minutes": 0.1,
        },
    }


@pytest.fixture(scope="module")
def ladder(prefect_server, tmp_path_factory):
    """The flow run twice on one corpus and store (the second finds every stage): the folder,
    the corpus and both results."""
    folder = tmp_path_factory.mktemp("flow")
    corpus = bundled_corpus(folder / "corpus.txt", 2000)
    first = corpus_to_model(corpus=str(corpus), config=config(folder, "flow", rnn=True))
    built = {p: p.stat().st_mtime for p in (folder / "store").glob("*/*/manifest.json")}
    second = corpus_to_model(corpus=str(corpus), config=config(folder, "flow", rnn=True))
    rebuilt = {p: p.stat().st_mtime for p in (folder / "store").glob("*/*/manifest.json")}
    assert rebuilt == built  # the second run found every stage in the store
    return folder, corpus, first, second


def test_flow_tracks_a_parent_and_a_child_per_model(ladder):
    _, corpus, result, again = ladder
    rows = result["comparison"]
    names = [r["model"] for r in rows]
    assert names[:4] == ["unigram", "kn2", "kn3", "lstm"]
    assert names[4] in ("lstm+kn2", "lstm+kn3")
    assert [r["family"] for r in rows] == ["unigram", "ngram", "ngram", "rnn", "interpolated"]
    assert len({r["targets"] for r in rows}) == 1 and rows[0]["targets"] > 0
    # Context helps: each n-gram rung beats the one below it.
    assert rows[0]["test_ppl"] > rows[1]["test_ppl"] > rows[2]["test_ppl"] > 1
    # The recurrent model also has its like-for-like figure; n-grams' is their own.
    assert rows[3]["test_ppl_line_reset"] > 1 and rows[4]["test_ppl_line_reset"] is None
    assert rows[2]["test_ppl_line_reset"] == rows[2]["test_ppl"]
    best = min(rows, key=lambda r: r["valid_ppl"])

    client = MlflowClient()
    experiment = client.get_experiment_by_name("flow")
    parent = client.get_run(result["mlflow_run"])
    children = {
        r.info.run_name: r
        for r in client.search_runs(
            [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
    }
    assert sorted(children) == sorted([*names, f"register {best['model']}"])
    for row in rows:
        child = children[row["model"]]
        assert child.data.tags["family"] == row["family"]
        assert child.data.tags["vocab_key"] == parent.data.params["vocab_key"]
        assert set(child.data.metrics) >= METRICS
        assert child.data.metrics["test_ppl"] == pytest.approx(row["test_ppl"])
    assert parent.data.params["corpus"] == str(corpus)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    logged = {
        "comparison.parquet",
        "comparison.md",
        "tokens.parquet",
        "perplexity.png",
        "samples.md",
    }
    assert logged <= artifacts
    # Per-epoch metrics and the learning curve of the recurrent model.
    lstm = children["lstm"]
    history = client.get_metric_history(lstm.info.run_id, "train_ppl")
    assert [m.step for m in history] == list(range(1, len(history) + 1))
    assert lstm.data.metrics["valid_ppl"] == pytest.approx(rows[3]["valid_ppl"])
    # fp32 by default, on every machine; the config's device "auto" is tagged as resolved.
    assert lstm.data.params["precision"] == "fp32"
    assert lstm.data.tags["trained.precision"] == "fp32"
    assert lstm.data.params["device"] == "auto"
    assert lstm.data.tags["trained.device"] in ("cpu", "cuda")
    assert int(lstm.data.tags["trained.epochs"]) == len(history)
    files = {a.path for a in client.list_artifacts(lstm.info.run_id, "model")}
    assert {"model/learning_curve.png", "model/checkpoint"} <= files
    kn3 = children["kn3"].data.params
    assert Path(kn3["tables_path"]).is_dir() and kn3["tables_path"].endswith(kn3["tables_key"])
    assert {a.path for a in client.list_artifacts(children["kn3"].info.run_id, "model")} == {
        "model/manifest.json",
        "model/model",
    }
    # Every model but the interpolation writes lines of its own.
    assert sorted(result["samples"]) == sorted(names[:4])
    assert all(len(result["samples"][name]) == 3 for name in names[:3])
    assert all(all(lines) for lines in result["samples"].values())

    # The second run found every stage in the store and recorded a new pipeline run.
    assert again["comparison"] == rows and again["mlflow_run"] != result["mlflow_run"]
    # One registration run (the first champion) beside two pipelines of 1 + len(rows) runs.
    assert len(client.search_runs([experiment.experiment_id])) == 2 * (1 + len(rows)) + 1


def test_the_comparison_comes_from_the_library_alone(ladder):
    """The table the flow returns is the compare stage's, in the store."""
    from seqlm import stages
    from seqlm.store import Store

    folder, _, result, _ = ladder
    store = Store(folder / "store")
    (compared,) = [store.get("compare", p.name) for p in (folder / "store/compare").iterdir()]
    assert stages.load_comparison(compared).to_dicts() == result["comparison"]


def test_champion_reloads_from_the_registry(ladder):
    folder, corpus, result, _ = ladder
    rows = result["comparison"]
    name = registered_name(str(corpus))
    client = MlflowClient()
    champion = client.get_model_version_by_alias(name, CHAMPION)
    best = min(rows, key=lambda r: r["valid_ppl"])
    assert champion.tags["model"] == best["model"]
    assert float(champion.tags["test_ppl"]) == pytest.approx(best["test_ppl"])
    # The second run, no better, left the alias where the first run's registration put it.
    assert champion.run_id in {
        r.info.run_id
        for r in client.search_runs(
            [client.get_experiment_by_name("flow").experiment_id],
            f"tags.mlflow.parentRunId = '{result['mlflow_run']}'",
        )
    }

    # Loaded back through the registry, it scores the test text to the same perplexity.
    test_lines = pl.read_parquet(next((folder / "store" / "ingest").glob("*/test.parquet")))
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    scores = model.predict(pd.DataFrame({"text": test_lines["tokens"].list.join(" ")}))
    assert len(scores) == best["targets"]
    assert np.exp(-scores["logprob"].mean()) == pytest.approx(best["test_ppl"], rel=1e-9)


def test_cli_run_writes_the_report(prefect_server, corpus, tmp_path, capsys):
    report = tmp_path / "r.json"
    sets = [f"store={tmp_path / 'store'}", "orders=[2]", "rnn.models=[]"]
    args = ["run", "--corpus", str(corpus), "--report", str(report)]
    assert main([*args, *(x for item in sets for x in ("--set", item))]) == 0
    rows = json.loads(report.read_text())
    assert {"model", "test_ppl", "test_ppl_no_unk", "oov", "targets"} <= set(rows[0])
    out, err = capsys.readouterr()
    assert "| unigram |" in out
    assert "Downloading artifacts" not in err  # MLflow's progress bars, as a model is registered


def test_cli_bad_input_is_one_clear_line(prefect_server, tmp_path, capsys):
    store = tmp_path / "store"
    cases = [
        (["--corpus", str(tmp_path / "missing")], "missing: no such file or directory"),
        (["--set", "nope=1"], "unknown config key 'nope'"),
        (["--set", "min_count=x"], "'vocab.min_count' needs a int"),
    ]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n" * 50 + b"\xc3\x28\n")
    cases.append((["--corpus", str(bad)], "bad.txt: not UTF-8 at byte offset 150"))
    for args, message in cases:
        assert main(["run", "--set", f"store={store}", *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("seqlm: error: ") and message in err[-1], err[-1]
    # Nothing half-written is left in the store.
    assert not list(store.glob("*/*"))


def test_compare_reads_recent_runs_from_mlflow(ladder, capsys):
    rows = ladder[2]["comparison"]
    capsys.readouterr()
    assert main(["compare", "--experiment", "flow", "--last", "5"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].split(" | ")[3:] == [r["model"] for r in rows] + ["config |"]
    assert len(table) == 4  # header, rule, the two runs
    assert f"{rows[0]['test_ppl']:,.2f}" in table[2]
    assert main(["compare", "--experiment", "nowhere"]) == 1
    assert "no experiment 'nowhere'" in capsys.readouterr().err


def test_an_unwritable_mlflow_store_fails_before_any_work(
    prefect_server, corpus, tmp_path, capsys, monkeypatch
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/mlflow.db")
    store = tmp_path / "store"
    assert main(["run", "--corpus", str(corpus), "--set", f"store={store}"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("seqlm: error: MLflow store sqlite:///") and "not writable" in line
    assert not store.exists()  # nothing was ingested, counted or trained
