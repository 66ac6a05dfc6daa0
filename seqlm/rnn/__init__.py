"""Recurrent language models (tanh RNN, LSTM, GRU) trained with truncated BPTT.

``train`` → checkpoint (``load_model``) → ``score_stream`` / ``sample``; ``reference`` holds the
NumPy derivation of the vanilla RNN's backward pass. ``seqlm.rnn.config`` needs no torch; the
names below import it on first use, so that a command that trains nothing starts fast.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "MODELS": "seqlm.rnn.config",
    "ModelConfig": "seqlm.rnn.config",
    "TrainConfig": "seqlm.rnn.config",
    "check_processes": "seqlm.rnn.distributed",
    "RNNLM": "seqlm.rnn.model",
    "load_model": "seqlm.rnn.checkpoint",
    "read_checkpoint": "seqlm.rnn.checkpoint",
    "save_checkpoint": "seqlm.rnn.checkpoint",
    "plot_learning_curve": "seqlm.rnn.plot",
    "RNNScorer": "seqlm.rnn.score",
    "sample": "seqlm.rnn.score",
    "score_stream": "seqlm.rnn.score",
    "Callbacks": "seqlm.rnn.training",
    "TrainResult": "seqlm.rnn.training",
    "TrainState": "seqlm.rnn.training",
    "batchify": "seqlm.rnn.training",
    "resolve_device": "seqlm.rnn.training",
    "train": "seqlm.rnn.training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'seqlm.rnn' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
