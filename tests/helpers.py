"""Paths and small helpers shared by the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # conftest imports this module before it sets up the environment
    import polars as pl
    from mlflow.entities import Run

    from seqlm.config import PipelineConfig
    from seqlm.stages import Prepared
    from seqlm.store import Artifact, Store
    from seqlm.vocab import Vocabulary

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PTB = SHARED / "ptb"
BUNDLED = Path(__file__).resolve().parents[1] / "data" / "tinyshakespeare" / "input.txt"
SEQLM = Path(sys.executable).with_name("seqlm")  # the installed command, beside the venv's python
# KenLM's binaries: $KENLM_BIN, else the benchmark's build (bench/ngram.py makes it), else PATH.
KENLM_BIN = Path(
    os.environ.get("KENLM_BIN", Path(__file__).parents[1] / "bench/.scratch/kenlm/build/bin")
)


def kenlm_tool(name: str) -> str | None:
    built = KENLM_BIN / name
    return str(built) if built.is_file() else shutil.which(name)


def prefect_home(path: Path) -> str:
    """A Prefect home at ``path`` whose database is already migrated (a copy of one migrated
    once per session: a fresh home spends about 10 s of its first ``seqlm run`` migrating);
    left as it is if it exists."""
    template = Path(os.environ["PREFECT_HOME"]).with_name("prefect-migrated")
    if not template.is_dir():
        tmp = template.with_name(template.name + ".tmp")
        tmp.mkdir()
        upgrade = [str(SEQLM.with_name("prefect")), "server", "database", "upgrade", "-y"]
        env = os.environ | {"PREFECT_HOME": str(tmp)}
        subprocess.run(upgrade, env=env, check=True, capture_output=True)
        tmp.rename(template)
    if not path.exists():
        shutil.copytree(template, path)
    return str(path)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def bundled_corpus(path: Path, stop: int, start: int = 0) -> Path:
    """Lines ``start`` to ``stop`` of the bundled corpus at ``path``: a small real text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(BUNDLED.read_text().splitlines(keepends=True)[start:stop]))
    return path


def prepare(store: Store, path: Path, config: PipelineConfig) -> Prepared:
    """The pipeline's data stages on a corpus, in this process: shards, vocabulary, tables."""
    from seqlm import corpus, pipeline

    return pipeline.prepare(pipeline.Local(store), corpus.discover(path), config)


def run_seqlm(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The ``seqlm`` command in a subprocess, its output captured as text."""
    return subprocess.run(
        [str(SEQLM), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def pipeline_runs(experiment: str, tracking_uri: str | None = None) -> tuple[list[Run], list[Run]]:
    """An MLflow experiment's pipeline runs and their child runs (one per model), oldest first;
    the process's tracking URI unless another is given."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    parent = "mlflow.parentRunId"
    return [r for r in runs if parent not in r.data.tags], [
        r for r in runs if parent in r.data.tags
    ]


def assert_merged_tables_recount(store: Store, tables: Artifact) -> tuple[Vocabulary, pl.DataFrame]:
    """Assert that the merged tables of ``tables`` (a ``tables/`` artifact) equal a full recount:
    the train text of every shard they were merged from, counted at once over their vocabulary,
    every order. Returns that vocabulary and train text."""
    from seqlm import corpus, stages
    from seqlm.ngram import count_ngrams, read_tables
    from seqlm.ngram.counts import word_columns
    from seqlm.vocab import VOCAB_FILE, Vocabulary

    folder = tables.path / stages.TABLES_DIR
    vocab = Vocabulary.load(folder / VOCAB_FILE)
    shards = [s.path for c in stages.inputs(tables, "counts") for s in stages.inputs(c, "shard")]
    train = corpus.load_split(shards, "train")
    merged = read_tables(folder)
    recount = count_ngrams(vocab.stream(train), len(merged), vocab.size)
    assert len(merged) == len(recount)
    for n, (got, want) in enumerate(zip(merged, recount, strict=True), start=1):
        columns = word_columns(n)
        assert got.sort(columns).equals(want.sort(columns)), f"order {n} differs from a recount"
    return vocab, train
