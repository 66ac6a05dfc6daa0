"""Training in several processes (DistributedDataParallel, gloo on the CPU): the same learning
curve as one process on the same global batch, resumable after a kill, refused settings in one
line. Each test starts real processes through torch's elastic launcher (~2-4 s each)."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flows.cli import main
from seqlm import stages
from seqlm.config import RnnConfig, load_config
from seqlm.errors import SeqlmError
from seqlm.rnn import load_model, read_checkpoint, train
from seqlm.rnn.distributed import launch
from seqlm.rnn.training import Callbacks, Job
from seqlm.store import Store
from tests.helpers import prepare, write_lines
from tests.test_rnn import SMALL, TINY, V, error_line, pattern_stream, toy_corpus
from tests.test_stages import lines

ROOT = Path(__file__).resolve().parents[1]
SEQLM = [sys.executable, "-c", "import sys; from flows.cli import main; sys.exit(main())"]
# The figures of one process and of two on its halves differ by the order of the sums only:
# measured ≤ 4e-7 relative over two epochs.
RTOL = 1e-5
EXACT = ("epoch", "train_ppl", "valid_ppl", "lr")  # all but the timings


def figures(history: list[dict[str, float]]) -> np.ndarray:
    return np.array([[h[k] for k in EXACT] for h in history])


@pytest.mark.parametrize(
    ("kind", "tied"), [("lstm", False), ("gru", True)]
)  # oneDNN's layer; the written-out one, with the embedding shared by the decoder
def test_two_processes_learn_as_one(kind: str, tied: bool, tmp_path: Path) -> None:
    train_s, valid_s = pattern_stream(400), pattern_stream(40, seed=1)
    config = replace(
        TINY, tied=tied, batch_size=8, epochs=2, patience=0, optimizer="adamw", lr=0.01
    )
    one = train(train_s, valid_s, V, kind, config, tmp_path / "one", vocab_digest="k")
    seen: list[dict[str, float]] = []
    two = train(
        *(train_s, valid_s, V, kind, replace(config, nproc=2), tmp_path / "two"),
        vocab_digest="k",
        callbacks=Callbacks(on_epoch=seen.append),
    )
    np.testing.assert_allclose(figures(two.history), figures(one.history), rtol=RTOL)
    assert [m["epoch"] for m in seen] == [1, 2]  # rank 0's epochs, reported by the launcher
    a, b = one.model.state_dict(), two.model.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=RTOL, atol=1e-5)
    # Rank 0 wrote the checkpoints, with both ranks' random generators.
    stored = read_checkpoint(tmp_path / "two" / "last.pt")
    assert stored["config"]["nproc"] == 2 and len(stored["rng"]["ranks"]) == 2
    saved, _ = load_model(tmp_path / "two" / "best.pt")
    assert all(torch.equal(saved.state_dict()[k], b[k]) for k in b)


def test_the_pipeline_trains_in_two_processes(tmp_path: Path) -> None:
    """rnn.nproc through the stage: the epochs reach the stage's callbacks; the model is keyed
    apart from one process's (not the same bits), and one process's key is as it always was."""
    settings = ["emsize=8", "nhid=8", "bptt=5", "batch_size=4", "rnn.epochs=2", "rnn.dropout=0"]
    one = load_config(None, [*settings, "rnn.device=cpu", "precision=fp32", "min_count=1"])
    two = replace(one, rnn=replace(one.rnn, nproc=2))
    store = Store(tmp_path / "store")
    data = prepare(store, write_lines(tmp_path / "c.txt", lines(80)), one)
    seen: list[dict[str, float]] = []
    alone = stages.rnn(store, data, "lstm", one.rnn)
    split = stages.rnn(store, data, "lstm", two.rnn, Callbacks(on_epoch=seen.append))
    assert [m["epoch"] for m in seen] == [1, 2] and alone.key != split.key
    assert "nproc" not in stages.plan_rnn(data, "lstm", one.rnn).config
    assert stages.plan_rnn(data, "lstm", two.rnn).config["nproc"] == 2
    histories = [json.loads((a.path / stages.HISTORY_FILE).read_text()) for a in (alone, split)]
    np.testing.assert_allclose(figures(histories[1]), figures(histories[0]), rtol=RTOL)


def cli_train(data: Path, out: Path, *flags: str) -> list[str]:
    return [*SEQLM, "rnn", "train", str(data), "--out", str(out), *flags]


@pytest.mark.slow
def test_resume_after_a_kill_continues_exactly(tmp_path: Path) -> None:
    """Kill the whole process group once the first epoch's checkpoint is there; --resume ends
    where an uninterrupted two-process run ends, to the bit (dropout on: each rank's own masks,
    its random generator restored)."""
    data = toy_corpus(tmp_path / "corpus")
    flags = [*SMALL, "--epochs", "6", "--dropout", "0.3", "--nproc", "2", "--log-every-s", "0"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    killed = tmp_path / "killed"
    child = subprocess.Popen(
        cli_train(data, killed, *flags), cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while not (killed / "last.pt").exists() and child.poll() is None:
            time.sleep(0.02)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    epoch = read_checkpoint(killed / "last.pt")["epoch"]
    assert 1 <= epoch < 6, "the run ended before it could be killed"
    resumed = subprocess.run(cli_train(data, killed, "--resume"), cwd=ROOT, env=env, check=False)
    assert resumed.returncode == 0
    whole = tmp_path / "whole"
    assert main(["rnn", "train", str(data), "--out", str(whole), *flags]) == 0
    a, b = read_checkpoint(whole / "last.pt"), read_checkpoint(killed / "last.pt")
    assert b["epoch"] == a["epoch"] == 6
    assert (figures(b["history"]) == figures(a["history"])).all()
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])


def test_refused_process_counts_name_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = toy_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    for flags, message in [
        (["--nproc", "0"], "--nproc must be at least 1, not 0"),
        (["--nproc", "3"], "--nproc 3 must divide --batch-size 4"),
        (["--nproc", "8"], "--nproc 8 must divide --batch-size 4"),
    ]:
        assert main(["rnn", "train", str(data), *SMALL, "--out", str(out), *flags]) == 1
        assert error_line(capsys).startswith(message)
        assert not out.exists()  # refused before any process started or file was written
    with pytest.raises(SeqlmError, match=r"^rnn\.nproc 3 must divide rnn\.batch_size 20 "):
        RnnConfig(nproc=3)


def test_a_failing_rank_is_one_line(tmp_path: Path) -> None:
    """A rank that fails (here: training diverges) ends every rank; the command prints the
    rank's own error line, not the launcher's tracebacks."""
    data = toy_corpus(tmp_path / "corpus")
    flags = [*SMALL, "--nproc", "2", "--optimizer", "sgd", "--lr", "1e30", "--clip", "1e30"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        cli_train(data, tmp_path / "out", *flags), cwd=ROOT, env=env, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    *logged, last = done.stderr.splitlines()
    assert last.startswith("seqlm: error: training diverged at epoch 1, step "), done.stderr
    assert all(re.match(r"\d\d:\d\d:\d\d training lstm", line) for line in logged), done.stderr


def _train_two(errors: Any) -> None:
    try:
        stream = pattern_stream(100)
        train(stream, stream, V, "lstm", replace(TINY, batch_size=8, nproc=2))
    except SeqlmError as e:
        errors.put(str(e))


def test_a_daemon_process_cannot_launch(tmp_path: Path) -> None:
    """A daemon (as Dask's worker processes are) may not start processes: one clear line."""
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    daemon = context.Process(target=_train_two, args=(errors,), daemon=True)
    daemon.start()
    daemon.join(60)
    assert errors.get(timeout=1).startswith("nproc 2: this process is a daemon")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_nccl_on_every_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One process per GPU under NCCL (launched directly, so that it runs on one GPU too)."""
    gpus = torch.cuda.device_count()
    train_s, valid_s = pattern_stream(400), pattern_stream(40, seed=1)
    config = replace(
        TINY, batch_size=4 * gpus, epochs=2, patience=0, optimizer="adamw", lr=0.01, device="cuda"
    )
    one = train(train_s, valid_s, V, "lstm", config, tmp_path / "one")
    job = Job(
        *(train_s, valid_s, V, "lstm", replace(config, nproc=gpus), tmp_path / "many", False),
        identity=dict(vocab_digest="", vocab_size=V, extra={}),
        progress_every_s=0.5,
    )
    many = launch(job, Callbacks())
    assert many.device.startswith("cuda") and read_checkpoint(tmp_path / "many" / "last.pt")
    # cuDNN's kernels may differ with the batch's width: a looser bound than on the CPU.
    np.testing.assert_allclose(figures(many.history), figures(one.history), rtol=1e-3)
    data = toy_corpus(tmp_path / "corpus")
    flags = [*SMALL, "--batch-size", str(4 * (gpus + 1)), "--nproc", str(gpus + 1)]
    assert main(["rnn", "train", str(data), "--out", str(tmp_path / "out"), *flags]) == 1
    assert error_line(capsys) == f"--nproc {gpus + 1} is more than the {gpus} CUDA GPUs torch sees"
