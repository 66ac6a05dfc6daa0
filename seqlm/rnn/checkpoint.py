"""Checkpoints: plain dictionaries of tensors and numbers, written atomically, read with
``torch.load(weights_only=True)`` (no pickled classes, so a checkpoint cannot run code).

Keys: ``format``, ``version``, ``model`` (``rnn_tanh``, ``lstm`` or ``gru``), ``config`` (the
``TrainConfig`` as a dict), ``vocab_digest``, ``vocab_size``, ``extra`` (strings the caller adds,
such as the tokenizer), ``weights`` (the state_dict), ``optimizer``, ``rng`` (torch CPU and CUDA
generator states) and the fields of training's ``TrainState``: ``epoch``, ``step``, ``lr``,
``best_valid_loss``, ``bad_epochs``, ``elapsed_s``, ``history`` (one metrics dict per epoch).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from seqlm.errors import SeqlmError
from seqlm.rnn.config import TrainConfig
from seqlm.rnn.model import RNNLM

FORMAT = "seqlm-rnn-checkpoint"
VERSION = 2  # 2: the architecture beside a flat config, the weights as ``weights``


class CheckpointError(SeqlmError):
    """A checkpoint file that cannot be read back (truncated, foreign, another format version)."""


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file beside ``path`` and rename it into place: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 is for the temporary name only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint's dictionary, its tensors on ``device``; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch's unpickler fails in many ways on a foreign or cut file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or foreign: {first})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a seqlm recurrent-model checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {state.get('version')}, expected {VERSION}"
        )
    return state


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[RNNLM, dict[str, Any]]:
    """The trained model (in eval mode, on ``device``) and the checkpoint's dictionary."""
    state = read_checkpoint(path, device)
    model = RNNLM(state["model"], TrainConfig(**state["config"]), state["vocab_size"])
    try:
        model.load_state_dict(state["weights"])
    except RuntimeError as e:
        raise SeqlmError(f"{path}: weights do not fit the stored model config ({e})") from None
    return model.to(device).eval(), state
