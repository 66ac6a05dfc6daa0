"""The recurrent language models: a tanh RNN, an LSTM and a GRU over word embeddings.

All three run through torch's fused recurrent layers (one oneDNN/cuDNN call per window).
For the vanilla RNN, ``h_t = tanh(W_x x_t + W_h h_{t-1} + b_h)`` and
``p_t = softmax(W_y h_t + b_y)`` map onto the parameters as:

- ``x_t`` = ``encoder.weight[token_t]`` (the embedding; dropout applied in training),
- ``W_x`` = ``rnn.weight_ih_l{k}``, ``W_h`` = ``rnn.weight_hh_l{k}`` for layer ``k``,
  ``b_h`` = ``rnn.bias_ih_l{k} + rnn.bias_hh_l{k}``,
- ``W_y`` = ``decoder.weight``, ``b_y`` = ``decoder.bias``.

``seqlm.rnn.reference`` computes this same model, and its gradients, from the equations in NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqlm.errors import SeqlmError

MODELS = ("rnn_tanh", "lstm", "gru")
_LAYERS: dict[str, type[nn.RNNBase]] = {"rnn_tanh": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
# Multiply-accumulates per hidden unit per input: gates stacked in the recurrent weight matrices.
GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3}

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape (Zaremba et al. 2014 "small" by default)."""

    model: str = "lstm"
    emsize: int = 200
    nhid: int = 200
    nlayers: int = 2
    dropout: float = 0.0
    tied: bool = False
    # Every weight starts uniform in ±init_range (Zaremba: 0.1 small, 0.05 medium/large).
    init_range: float = 0.1

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise SeqlmError(f"unknown model {self.model!r} (choose from {', '.join(MODELS)})")
        if min(self.emsize, self.nhid, self.nlayers) < 1:
            raise SeqlmError(f"emsize, nhid and nlayers must be positive: {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise SeqlmError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.tied and self.emsize != self.nhid:
            raise SeqlmError(
                f"tied embeddings need emsize == nhid (emsize {self.emsize}, nhid {self.nhid})"
            )

    def forward_flops_per_token(self, vocab_size: int) -> int:
        """Matrix-multiply FLOPs of one token's forward pass (training costs about 3 times this)."""
        g, h = GATES[self.model], self.nhid
        layers = sum(2 * g * h * ((self.emsize if k == 0 else h) + h) for k in range(self.nlayers))
        return layers + 2 * h * vocab_size


class RNNLM(nn.Module):
    """Embedding → dropout → recurrent layers (dropout between them) → dropout → linear decoder.

    ``forward`` takes ids ``(T, B)`` and returns the top layer's outputs ``(T, B, nhid)``;
    ``decoder`` turns them into logits, so the loss can be computed as the caller needs.
    """

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        c = config
        self.encoder = nn.Embedding(vocab_size, c.emsize)
        self.drop = nn.Dropout(c.dropout)
        # Dropout between recurrent layers; one layer has none there (only around it).
        between = c.dropout if c.nlayers > 1 else 0.0
        self.rnn = _LAYERS[c.model](c.emsize, c.nhid, c.nlayers, dropout=between)
        self.decoder = nn.Linear(c.nhid, vocab_size)
        if c.tied:
            self.decoder.weight = self.encoder.weight
        for p in self.parameters():
            nn.init.uniform_(p, -c.init_range, c.init_range)

    def init_hidden(self, batch_size: int) -> Hidden:
        w = self.decoder.weight
        shape = (self.config.nlayers, batch_size, self.config.nhid)
        h = w.new_zeros(shape)
        return (h, w.new_zeros(shape)) if self.config.model == "lstm" else h

    def forward(self, ids: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        out, hidden = self.rnn(self.drop(self.encoder(ids)), hidden)
        return self.drop(out), hidden


def detach(hidden: Hidden) -> Hidden:
    """Cut the graph at a window's edge: the state carries on, its past is not back-propagated."""
    return (
        hidden.detach() if isinstance(hidden, torch.Tensor) else tuple(h.detach() for h in hidden)
    )
