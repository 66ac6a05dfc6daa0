"""One config, one machine: bit-identical models, whether or not other work loads the CPU."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from seqlm.rnn import TrainConfig, train

V = 60


def config(**budget) -> TrainConfig:
    return TrainConfig(emsize=16, nhid=16, nlayers=1, dropout=0.1, bptt=8, batch_size=4,
                       optimizer="adamw", lr=0.01, clip=0.25, schedule="fixed", epochs=2,
                       device="cpu", precision="fp32", **budget)  # fmt: skip


def stream(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, n).astype(np.int64)


@contextmanager
def busy_cpu() -> Iterator[None]:
    """Every core kept busy by other processes for the duration."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(torch.get_num_threads())
    ]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


@pytest.mark.slow  # other processes at work: about a minute on two cores
@pytest.mark.parametrize("model", ["rnn_tanh", "lstm"])
def test_training_is_bit_identical_on_a_loaded_machine(model):
    # Small: on a loaded machine, torch's worker threads wait for their turn at every operation.
    train_stream, valid_stream = stream(400, 0), stream(100, 1)
    idle = train(train_stream, valid_stream, V, model, config())
    with busy_cpu():
        loaded = train(train_stream, valid_stream, V, model, config())
    assert loaded.history[-1]["epoch"] == idle.history[-1]["epoch"] == 2
    assert [h["valid_ppl"] for h in loaded.history] == [h["valid_ppl"] for h in idle.history]
    assert loaded.valid_ppl == idle.valid_ppl
    idle_state, loaded_state = idle.model.state_dict(), loaded.model.state_dict()
    assert idle_state.keys() == loaded_state.keys()
    for name, weights in idle_state.items():
        assert torch.equal(weights, loaded_state[name]), name


def test_a_time_cap_that_cuts_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="seqlm.rnn"):
        result = train(stream(1200, 0), stream(200, 1), V, "lstm", config(max_minutes=1e-9))
    assert result.stopped == "time" and result.epochs == 1
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith(
        "lstm: cut short by the time cap (1e-09 min) at epoch 1 of 2"
    )
