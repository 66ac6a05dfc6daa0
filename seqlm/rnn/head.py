"""The training loss head: decoder (``W_y h + b_y``) and mean cross-entropy, fused.

Autograd's ``linear → log_softmax → nll`` chain allocates three (N, V) blocks a step (logits,
log-probabilities, their gradient) — 28 MB each at bptt 35 × batch 20 × 10k types — and reads and
writes them several times. Here two buffers are kept between steps: the logits, and the
log-probabilities that become the gradient in place (``softmax − onehot``, the ``1/N`` folded into
the small backward products). The gradient is formed in the forward pass, as training always
back-propagates. ``tests/test_rnn.py`` holds it to autograd's chain.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _SoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        h: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        targets: torch.Tensor,
        logits: torch.Tensor,
        grad: torch.Tensor,
    ) -> torch.Tensor:
        dtype = logits.dtype
        hd, wd = h.to(dtype), weight.to(dtype)
        torch.addmm(bias.to(dtype), hd, wd.t(), out=logits)
        torch._log_softmax(logits, 1, False, out=grad)
        rows = torch.arange(len(targets), device=targets.device)
        loss = -grad[rows, targets].mean(dtype=torch.promote_types(dtype, torch.float32))
        grad.exp_()  # softmax
        grad[rows, targets] -= 1
        ctx.save_for_backward(hd, wd)
        ctx.grad, ctx.dtypes = grad, (h.dtype, weight.dtype, bias.dtype)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hd, wd = ctx.saved_tensors
        g, (h_type, w_type, b_type) = ctx.grad, ctx.dtypes
        scale = grad_loss / len(g)
        grad_h = (g @ wd).mul_(scale).to(h_type)
        grad_w = (g.t() @ hd).mul_(scale).to(w_type)
        grad_b = g.sum(0, dtype=torch.promote_types(g.dtype, torch.float32)).mul_(scale).to(b_type)
        return grad_h, grad_w, grad_b, None, None, None


class SoftmaxHead:
    """``loss = head(h, decoder, targets)``: mean cross-entropy of ``decoder(h)`` against
    ``targets``, computed in ``dtype`` (bf16 under autocast), its (N, V) buffers reused."""

    def __init__(self) -> None:
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(
        self, h: torch.Tensor, decoder: nn.Linear, targets: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        n, v = len(targets), decoder.out_features
        if self._buffers is None or len(self._buffers[0]) < n or self._buffers[0].dtype != dtype:
            shape = (n, v)
            self._buffers = (
                torch.empty(shape, dtype=dtype, device=h.device),
                torch.empty(shape, dtype=dtype, device=h.device),
            )
        logits, grad = self._buffers
        return _SoftmaxCrossEntropy.apply(
            h, decoder.weight, decoder.bias, targets, logits[:n], grad[:n]
        )
