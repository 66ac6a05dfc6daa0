"""The recurrent language models: a tanh RNN, an LSTM and a GRU over word embeddings.

All three are torch's recurrent layers: fused on the GPU (cuDNN) and for the LSTM on the CPU
(oneDNN); on the CPU the tanh RNN and the GRU run through ``seqlm.rnn.recurrence``, the same
layers with their time loop and its back-propagation written out (torch's own record a dozen
autograd nodes per step there).
For the vanilla RNN, ``h_t = tanh(W_x x_t + W_h h_{t-1} + b_h)`` and
``p_t = softmax(W_y h_t + b_y)`` map onto the parameters as:

- ``x_t`` = ``encoder.weight[token_t]`` (the embedding; dropout applied in training),
- ``W_x`` = ``rnn.weight_ih_l{k}``, ``W_h`` = ``rnn.weight_hh_l{k}`` for layer ``k``,
  ``b_h`` = ``rnn.bias_ih_l{k} + rnn.bias_hh_l{k}``,
- ``W_y`` = ``decoder.weight``, ``b_y`` = ``decoder.bias``.

``seqlm.rnn.reference`` computes this same model, and its gradients, from the equations in NumPy.
"""

from __future__ import annotations

import torch
from torch import nn

from seqlm.rnn.config import ModelConfig
from seqlm.rnn.recurrence import run_cpu

_LAYERS: dict[str, type[nn.RNNBase]] = {"rnn_tanh": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class RNNLM(nn.Module):
    """Embedding → dropout → recurrent layers (dropout between them) → dropout → linear decoder.

    ``forward`` takes ids ``(T, B)`` and returns the top layer's outputs ``(T, B, nhid)``;
    ``decoder`` turns them into logits, so the loss can be computed as the caller needs.
    """

    def __init__(self, model: str, shape: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.kind = model  # rnn_tanh, lstm or gru
        self.shape = shape
        self.vocab_size = vocab_size
        c = shape
        self.encoder = nn.Embedding(vocab_size, c.emsize)
        self.drop = nn.Dropout(c.dropout)
        # Dropout between recurrent layers; one layer has none there (only around it).
        between = c.dropout if c.nlayers > 1 else 0.0
        self.rnn = _LAYERS[model](c.emsize, c.nhid, c.nlayers, dropout=between)
        self.decoder = nn.Linear(c.nhid, vocab_size)
        if c.tied:
            self.decoder.weight = self.encoder.weight
        for p in self.parameters():
            nn.init.uniform_(p, -c.init_range, c.init_range)

    def init_hidden(self, batch_size: int) -> Hidden:
        w = self.decoder.weight
        shape = (self.shape.nlayers, batch_size, self.shape.nhid)
        h = w.new_zeros(shape)
        return (h, w.new_zeros(shape)) if self.kind == "lstm" else h

    def forward(self, ids: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        x = self.drop(self.encoder(ids))
        if x.is_cpu and self.kind != "lstm":
            out, hidden = run_cpu(self.rnn, x, hidden)  # type: ignore[arg-type]
        else:
            out, hidden = self.rnn(x, hidden)
        return self.drop(out), hidden


def detach(hidden: Hidden) -> Hidden:
    """Cut the graph at a window's edge: the state carries on, its past is not back-propagated."""
    return (
        hidden.detach() if isinstance(hidden, torch.Tensor) else tuple(h.detach() for h in hidden)
    )
