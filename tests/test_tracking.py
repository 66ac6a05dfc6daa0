"""What MLflow shows of the pipeline: every model's figures on the pipeline run, the corpus as a
dataset, model folders copied once per store key, one champion per corpus content, and
``seqlm compare``. Each test has an MLflow store of its own, in a temporary folder."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from flows.cli import main
from flows.corpus_to_model import corpus_to_model
from seqlm.config import PipelineConfig
from tasks.registry import CHAMPION, champion_alias, move_alias, registered_name
from tasks.tracking import EXPERIMENT_KIND, ladder_order, metric_name, pipeline_run_name
from tests.helpers import bundled_corpus, pipeline_runs

PARENT = "mlflow.parentRunId"


@pytest.fixture
def mlruns(tmp_path, monkeypatch):
    """An MLflow store of the test's own (the process-wide URI is set back afterwards)."""
    folder = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    yield folder
    monkeypatch.undo()
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])


@pytest.fixture
def corpus(tmp_path):
    return bundled_corpus(tmp_path / "corpus.txt", 1500)


def settings(tmp_path: Path, **sections: dict) -> dict:
    """KN 2 and a tiny LSTM trained for one epoch, unless ``sections`` say otherwise."""
    rnn = {"models": ["lstm"], "emsize": 16, "nhid": 16, "dropout": 0.0, "epochs": 1}
    return {
        "run": {"store": str(tmp_path / "store"), "experiment": "tracking"},
        "ngram": {"orders": [2]},
        "rnn": rnn | sections.pop("rnn", {}),
        **sections,
    }


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_an_unchanged_rerun_copies_nothing_and_mlflow_compares_the_models(
    prefect_server, corpus, tmp_path, mlruns, capsys
):
    first = corpus_to_model(corpus=str(corpus), config=settings(tmp_path))
    size = folder_bytes(mlruns)
    again = corpus_to_model(corpus=str(corpus), config=settings(tmp_path))
    assert again["comparison"] == first["comparison"]
    grown = folder_bytes(mlruns) - size
    assert grown < 1 << 20, f"mlruns/ grew by {grown:,} bytes on an unchanged re-run"

    client = MlflowClient()
    experiment = client.get_experiment_by_name("tracking")
    assert EXPERIMENT_KIND.items() <= experiment.tags.items()
    parents, children = pipeline_runs("tracking")
    assert [p.info.run_id for p in parents] == [first["mlflow_run"], again["mlflow_run"]]
    name = parents[0].info.run_name
    assert name.startswith("corpus.txt · ngram.orders=[2] rnn.emsize=16 rnn.nhid=16 ")
    assert name.endswith(" rnn.models=[lstm]")
    assert name == parents[1].info.run_name
    models = [r["model"] for r in first["comparison"]]
    assert models == ["unigram", "kn2", "lstm", "lstm+kn2"]
    for parent in parents:
        # Every model's figures on the pipeline run; the chart too.
        for row in first["comparison"]:
            metrics = parent.data.metrics
            assert metrics[metric_name("test_ppl", row["model"])] == pytest.approx(row["test_ppl"])
            assert metrics[metric_name("valid_ppl", row["model"])] == pytest.approx(
                row["valid_ppl"]
            )
            assert metrics[metric_name("test_ppl_no_unk", row["model"])] == pytest.approx(
                row["test_ppl_no_unk"]
            )
            bits = metrics[metric_name("test_bits_per_token", row["model"])]
            assert bits == pytest.approx(math.log2(row["test_ppl"]))
        assert "perplexity.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
        # The corpus as a dataset, its content key as digest.
        (dataset,) = client.get_run(parent.info.run_id).inputs.dataset_inputs
        assert dataset.dataset.digest == parent.data.params["corpus_key"]
        assert dataset.dataset.name == "corpus.txt" and str(corpus) in dataset.dataset.source
    # Children named by model; the second run's reference the first run's copies.
    by_run = {p.info.run_id: {} for p in parents}
    for child in children:
        by_run[child.data.tags[PARENT]][child.info.run_name] = child
    old, new = (by_run[p.info.run_id] for p in parents)
    assert sorted(new) == sorted(models)  # the champion stays: no registration run
    for model in models:
        tags = new[model].data.tags
        assert tags["model_run"] == old[model].info.run_id == old[model].data.tags["model_run"]
        assert tags["model_key"] == old[model].data.tags["model_key"]
        assert Path(tags["model_path"]).is_dir()
        assert client.list_artifacts(new[model].info.run_id, "model") == []
    assert parents[1].data.tags["comparison_run"] == parents[0].info.run_id
    # The epochs of the model trained in the first run, logged as they happened (one point per
    # epoch), and those of the model found in the store, from its history, in the second.
    for run in (old["lstm"], new["lstm"]):
        history = client.get_metric_history(run.info.run_id, "train_ppl")
        assert [m.step for m in history] == [1]

    # The runs list compares the models side by side: one column per model.
    frame = mlflow.search_runs([experiment.experiment_id])
    frame = frame[frame[f"tags.{PARENT}"].isna()]
    assert len(frame) == 2
    for model in models:
        assert frame[f"metrics.{metric_name('test_ppl', model)}"].notna().all()

    capsys.readouterr()
    assert main(["compare", "--experiment", "tracking", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in listed] == [again["mlflow_run"], first["mlflow_run"]]
    assert list(listed[0]["test_ppl"]) == models
    assert listed[0]["test_ppl"]["lstm+kn2"] == pytest.approx(first["comparison"][3]["test_ppl"])
    assert listed[0]["config"] == {}  # nothing differs between the two runs
    assert main(["compare", "--experiment", "tracking"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split(" | ")[3:] == [*models, "config |"]


@pytest.mark.slow
def test_one_champion_per_corpus_content(prefect_server, corpus, tmp_path, mlruns):
    def run(add_k: float) -> dict:
        config = settings(tmp_path, rnn={"models": []}, unigram={"add_k": add_k})
        config["ngram"] = {"orders": []}
        return corpus_to_model(corpus=str(corpus), config=config)

    client = MlflowClient()
    name = registered_name(str(corpus))
    original = corpus.read_text()

    def champion(alias: str = CHAMPION) -> str:
        return str(client.get_model_version_by_alias(name, alias).version)

    def corpus_key(result: dict) -> str:
        return client.get_run(result["mlflow_run"]).data.params["corpus_key"]

    good = run(0.1)
    key = corpus_key(good)
    assert champion() == champion(champion_alias(key)) == "1"
    # Worse on the same targets: the champion stays, and nothing is registered.
    worse = run(50.0)
    assert worse["comparison"][0]["test_ppl"] > good["comparison"][0]["test_ppl"]
    assert champion() == champion(champion_alias(key)) == "1"
    # Other content: a champion of its own, the one of the latest run.
    corpus.write_text(original + "a line the first content did not have\n")
    other = corpus_key(run(50.0))
    assert other != key
    assert champion() == champion(champion_alias(other)) == "2"
    # Back to the first content: its champion again, registered once.
    corpus.write_text(original)
    run(0.1)
    assert champion() == champion(champion_alias(key)) == "1"
    # A model registered before is not logged again, even with its aliases gone.
    for alias in (CHAMPION, champion_alias(key)):
        client.delete_registered_model_alias(name, alias)
    run(0.1)
    assert champion() == champion(champion_alias(key)) == "1"
    assert len(client.search_model_versions(f"name = '{name}'")) == 2


def test_run_names_say_what_differs_from_the_defaults():
    assert pipeline_run_name("data/ptb", PipelineConfig()) == "ptb · defaults"
    config = PipelineConfig().with_values(
        {"ngram.orders": [2, 3], "tokenizer": "whitespace", "store": "elsewhere"}
    )
    assert pipeline_run_name("a/b.txt", config) == "b.txt · corpus.tokenizer=whitespace " + (
        "ngram.orders=[2,3]"
    )


def test_ladder_order():
    names = ["lstm+kn5", "lstm", "kn10", "gru", "kn2", "rnn_tanh", "unigram", "addk3"]
    assert sorted(names, key=ladder_order) == [
        "unigram",
        "kn2",
        "addk3",
        "kn10",
        "rnn_tanh",
        "gru",
        "lstm",
        "lstm+kn5",
    ]


def test_runs_moving_one_alias_at_once_all_succeed(tmp_path):
    """MLflow's SQL store looks an alias up, then inserts it: writers at once race on the insert
    (a unique constraint), which ``move_alias`` tries again. Four threads move thirty aliases each
    between two versions, against a real sqlite store."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    client.create_registered_model("m")
    versions = [client.create_model_version("m", source=str(tmp_path)).version for _ in range(2)]
    barrier, errors = threading.Barrier(4), []

    def move(i: int) -> None:
        own = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        barrier.wait()
        for k in range(30):
            try:
                move_alias(own, "m", f"alias{k}", versions[i % 2])
            except MlflowException as e:
                errors.append(str(e))

    threads = [threading.Thread(target=move, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {client.get_model_version_by_alias("m", f"alias{k}").version for k in range(30)} <= set(
        versions
    )
