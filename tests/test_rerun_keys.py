"""Re-running the pipeline with other n-gram orders: the recurrent models and the champion stay."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from flows.corpus_to_model import corpus_to_model
from tasks.registry import CHAMPION, registered_name
from tests.helpers import bundled_corpus


@pytest.mark.slow
def test_other_ngram_orders_retrain_no_recurrent_model_nor_move_the_champion(
    prefect_server, tmp_path
):
    corpus = bundled_corpus(tmp_path / "corpus.txt", 2000)
    store = tmp_path / "store"
    config = {
        "run": {"store": str(store), "experiment": "orders"},
        "ngram": {"orders": [2, 3]},
        "rnn": {"models": ["lstm"], "emsize": 16, "nhid": 16, "epochs": 1},
    }
    first = {r["model"]: r for r in corpus_to_model(str(corpus), config=config)["comparison"]}
    client = MlflowClient()
    name = registered_name(str(corpus))
    champion = client.get_model_version_by_alias(name, CHAMPION)
    trained = {p: p.stat().st_mtime_ns for p in store.glob("rnn/*/manifest.json")}
    vocabularies = set(store.glob("vocab/*"))
    assert len(trained) == 1 and len(vocabularies) == 1

    fewer = config | {"ngram": {"orders": [2]}}
    second = {r["model"]: r for r in corpus_to_model(str(corpus), config=fewer)["comparison"]}
    assert set(second) == {"unigram", "kn2", "lstm", "lstm+kn2"}
    # The same vocabulary and the same recurrent model, found in the store, not trained again.
    assert set(store.glob("vocab/*")) == vocabularies
    assert {p: p.stat().st_mtime_ns for p in store.glob("rnn/*/manifest.json")} == trained
    assert second["lstm"] == first["lstm"]
    # Without the 3-gram no model is better on the same targets: the champion stays.
    assert min(r["test_ppl"] for r in second.values()) >= float(champion.tags["test_ppl"])
    assert client.get_model_version_by_alias(name, CHAMPION).version == champion.version
