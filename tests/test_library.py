"""The library alone: the whole ladder and its comparison in one call, with Prefect and MLflow
out of reach, and a stored model loaded back to score text."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest

import seqlm
from seqlm import stages
from seqlm.report import identity
from seqlm.store import Store
from tests.helpers import bundled_corpus

pytestmark = pytest.mark.slow  # the whole ladder, in a subprocess

# Run in a fresh interpreter where importing Prefect or MLflow fails, as if neither were installed.
SCRIPT = """
import importlib.abc, json, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in ("prefect", "mlflow"):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, NotInstalled())
import seqlm

table = seqlm.run(
    sys.argv[1], store=sys.argv[2], orders=[2, 3], models=["gru"], emsize=16, nhid=16,
    bptt=10, batch_size=8, epochs=1, device="cpu",
)
print(json.dumps(table.to_dicts()))
"""


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    corpus = bundled_corpus(folder / "corpus.txt", 2000)
    store = folder / "store"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(corpus), str(store)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return store, json.loads(done.stdout.splitlines()[-1])


def test_the_comparison_needs_neither_prefect_nor_mlflow(ladder):
    store, rows = ladder
    assert [r["model"] for r in rows][:4] == ["unigram", "kn2", "kn3", "gru"]
    # The best recurrent model mixed with the n-gram model best on valid.
    best_ngram = min(rows[1:3], key=lambda r: r["valid_ppl"])
    assert rows[4]["model"] == f"gru+{best_ngram['model']}"
    assert [r["family"] for r in rows] == ["unigram", "ngram", "ngram", "rnn", "interpolated"]
    assert len({r["targets"] for r in rows}) == 1
    assert rows[0]["test_ppl"] > rows[1]["test_ppl"] > rows[2]["test_ppl"] > 1
    # The interpolation is tuned on valid: no worse there than either of its parts.
    assert rows[4]["valid_ppl"] <= min(best_ngram["valid_ppl"], rows[3]["valid_ppl"]) + 1e-9
    # What the store holds is the same table.
    (folder,) = (store / "compare").iterdir()
    compared = Store(store).get("compare", folder.name)
    assert stages.load_comparison(compared).to_dicts() == rows


@pytest.mark.parametrize("stage", ["unigram", "ngram", "rnn"])
def test_a_loaded_model_scores_the_test_text_as_the_pipeline_did(ladder, stage):
    store, rows = ladder
    for folder in (store / stage).iterdir():
        name = identity(Store(store).get(stage, folder.name)).name
        row = next(r for r in rows if r["model"] == name)
        model = seqlm.load(folder)
        test = pl.read_parquet(next((store / "ingest").glob("*/test.parquet")))
        result = model.score(test["tokens"].list.join(" "))
        assert result.targets == row["targets"]
        assert result.ppl == pytest.approx(row["test_ppl"], rel=1e-6)
        assert len(model.sample(2)) == 2
