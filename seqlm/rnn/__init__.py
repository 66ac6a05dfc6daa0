"""Recurrent language models (tanh RNN, LSTM, GRU) trained with truncated BPTT.

``train`` → checkpoint (``load_model``) → ``score_stream`` / ``sample``; ``reference`` holds the
NumPy derivation of the vanilla RNN's backward pass.
"""

from seqlm.rnn.checkpoint import load_model, read_checkpoint, save_checkpoint
from seqlm.rnn.model import MODELS, RNNLM, ModelConfig
from seqlm.rnn.plot import plot_learning_curve
from seqlm.rnn.score import RNNScorer, sample, score_stream
from seqlm.rnn.train import TrainConfig, TrainResult, batchify, resolve_device, train

__all__ = [
    "MODELS",
    "RNNLM",
    "ModelConfig",
    "RNNScorer",
    "TrainConfig",
    "TrainResult",
    "batchify",
    "load_model",
    "plot_learning_curve",
    "read_checkpoint",
    "resolve_device",
    "sample",
    "save_checkpoint",
    "score_stream",
    "train",
]
