"""Recurrent models on CUDA (bf16 autocast, cuDNN); skipped without a GPU.

Imports only ``seqlm.rnn``, so it runs wherever torch does."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from seqlm.rnn import TrainConfig, load_model, score_stream, train
from seqlm.vocab import EOS_ID

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

V = 12
CYCLE = np.tile(np.append(np.arange(3, 10), EOS_ID), 400).astype(np.int32)  # fully predictable


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_trains_on_cuda_and_scores_like_cpu(kind: str, tmp_path: Path) -> None:
    config = TrainConfig(
        emsize=32, nhid=32, nlayers=2, dropout=0.0, bptt=16, batch_size=8, epochs=3,
        patience=0, optimizer="adamw", lr=0.03, clip=5 / 35, schedule="fixed", device="cuda",
        precision="auto",
    )  # fmt: skip
    result = train(CYCLE, CYCLE[:400], V, kind, config, tmp_path, vocab_digest="k")
    assert result.device.startswith("cuda") and result.valid_ppl < 1.5
    on_gpu, state = load_model(tmp_path / "best.pt", "cuda")
    on_cpu, _ = load_model(tmp_path / "best.pt", "cpu")
    assert state["epoch"] == 3
    for reset in (False, True):
        gpu = score_stream(on_gpu, CYCLE[:400], line_reset=reset)
        cpu = score_stream(on_cpu, CYCLE[:400], line_reset=reset)
        np.testing.assert_allclose(gpu, cpu, atol=2e-3)


def test_auto_device_is_cuda_with_bf16(tmp_path: Path) -> None:
    config = TrainConfig(
        emsize=16, nhid=16, nlayers=1, dropout=0.0, bptt=8, batch_size=4, epochs=1,
        optimizer="sgd", lr=35.0, clip=5 / 35, schedule="fixed", precision="auto",
    )  # fmt: skip
    result = train(
        CYCLE, CYCLE[:200], V, "lstm", replace(config, device="auto"), tmp_path, vocab_digest="k"
    )
    assert result.device.startswith("cuda") and result.precision == "bf16"
    assert np.isfinite(result.best_valid_loss)
