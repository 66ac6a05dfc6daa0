"""The tanh RNN and the GRU on the CPU, with back-propagation through time written out.

On the GPU both run in cuDNN, and the LSTM runs in one oneDNN call on the CPU too; torch's CPU tanh
RNN and GRU instead record a dozen autograd nodes per time step (each re-cast to bf16 under
autocast). Here a layer is one autograd node: the input projection for all steps is one matrix
product, the loop does only what the recurrence needs (one small product and a few element-wise
ops per step, into preallocated buffers), and the backward loop carries ∂L/∂h_t down the steps
while the weight gradients are left to one large product per weight after the loop. Products over
all steps run in ``low`` precision (bf16 under autocast); the recurrence itself stays in fp32.

Same equations and parameters as ``nn.RNN`` and ``nn.GRU`` (gates r, z, n;
``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}``, ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``);
``tests/test_rnn.py`` holds the gradients to autograd's through those layers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _project(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, low: torch.dtype
) -> torch.Tensor:
    """``x Wᵀ + b`` for all steps at once: (T, B, E) → (T, B, rows of W), in ``x``'s dtype."""
    t, b, e = x.shape
    out = torch.addmm(bias.to(low), x.reshape(t * b, e).to(low), weight.t().to(low))
    return out.view(t, b, -1).to(x.dtype)


def _input_grads(
    x: torch.Tensor,
    h_prev: torch.Tensor,
    d_in: torch.Tensor,
    d_hid: torch.Tensor,
    w_ih: torch.Tensor,
    low: torch.dtype,
) -> tuple[torch.Tensor, ...]:
    """Gradients of ``x``, ``W_ih``, ``W_hh``, ``b_ih``, ``b_hh`` from those of the input and the
    hidden projections at every step (``d_in``, ``d_hid``: (T, B, gates·H)), summed over steps."""
    t, b, _ = x.shape
    d_in, d_hid = d_in.reshape(t * b, -1), d_hid.reshape(t * b, -1)
    d_in_low = d_in.to(low)
    dx = (d_in_low @ w_ih.to(low)).to(x.dtype).view_as(x)
    dw_ih = (d_in_low.t() @ x.reshape(t * b, -1).to(low)).to(x.dtype)
    dw_hh = (d_hid.t().to(low) @ h_prev.reshape(t * b, -1).to(low)).to(x.dtype)
    return dx, dw_ih, dw_hh, d_in.sum(0), d_hid.sum(0)


class _TanhLayer(torch.autograd.Function):
    """``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh)`` over (T, B, E) from ``h0`` (B, H)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx: Any, x, h0, w_ih, w_hh, b_ih, b_hh, low):  # type: ignore[override]
        hs = x.new_empty(len(x) + 1, *h0.shape)  # h_0 … h_T
        hs[0] = h0
        pre = _project(x, w_ih, b_ih + b_hh, low)
        w_hh_t = w_hh.t()
        for t in range(len(x)):
            torch.addmm(pre[t], hs[t], w_hh_t, out=hs[t + 1]).tanh_()
        ctx.save_for_backward(x, hs, w_ih, w_hh)
        ctx.low = low
        return hs[1:], hs[-1]

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, d_out, d_last):  # type: ignore[override]
        x, hs, w_ih, w_hh = ctx.saved_tensors
        slope = 1 - hs[1:] ** 2  # tanh′ at every step
        d_pre = torch.empty_like(slope)
        dh = d_out[-1] + d_last
        for t in range(len(x) - 1, -1, -1):
            torch.mul(dh, slope[t], out=d_pre[t])
            dh = torch.addmm(d_out[t - 1], d_pre[t], w_hh) if t else d_pre[t] @ w_hh
        dx, *weights = _input_grads(x, hs[:-1], d_pre, d_pre, w_ih, ctx.low)
        return dx, dh, *weights, None


class _GRULayer(torch.autograd.Function):
    """``nn.GRU``'s layer over (T, B, E) from ``h0`` (B, H)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx: Any, x, h0, w_ih, w_hh, b_ih, b_hh, low):  # type: ignore[override]
        steps, size = len(x), h0.shape[-1]
        hs = x.new_empty(steps + 1, *h0.shape)
        hs[0] = h0
        gi = _project(x, w_ih, b_ih, low)  # W_i{r,z,n} x_t + b_i{r,z,n}
        gh = torch.empty_like(gi)  # W_h{r,z,n} h_{t−1} + b_h{r,z,n}
        rz = x.new_empty(steps, *h0.shape[:-1], 2 * size)
        n = torch.empty_like(hs[1:])
        w_hh_t = w_hh.t()
        for t in range(steps):
            torch.addmm(b_hh, hs[t], w_hh_t, out=gh[t])
            torch.add(gi[t, :, : 2 * size], gh[t, :, : 2 * size], out=rz[t]).sigmoid_()
            r, z = rz[t, :, :size], rz[t, :, size:]
            torch.addcmul(gi[t, :, 2 * size :], r, gh[t, :, 2 * size :], out=n[t]).tanh_()
            torch.lerp(n[t], hs[t], z, out=hs[t + 1])  # (1 − z) n + z h_{t−1}
        ctx.save_for_backward(x, hs, gh, rz, n, w_ih, w_hh)
        ctx.low = low
        return hs[1:], hs[-1]

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, d_out, d_last):  # type: ignore[override]
        x, hs, gh, rz, n, w_ih, w_hh = ctx.saved_tensors
        size = n.shape[-1]
        r, z = rz[..., :size], rz[..., size:]
        # What multiplies ∂L/∂h_t on its way to each pre-activation, for all steps at once.
        to_n = (1 - z) * (1 - n * n)
        to_z = (hs[:-1] - n) * z * (1 - z)
        to_r = gh[..., 2 * size :] * r * (1 - r)
        d_hid = torch.empty_like(gh)  # ∂L/∂(W_h{r,z,n} h_{t−1} + b_h{r,z,n})
        d_n = torch.empty_like(n)  # ∂L/∂(W_in x_t + b_in)
        dh = d_out[-1] + d_last
        for t in range(len(x) - 1, -1, -1):
            torch.mul(dh, to_n[t], out=d_n[t])
            torch.mul(d_n[t], to_r[t], out=d_hid[t, :, :size])
            torch.mul(dh, to_z[t], out=d_hid[t, :, size : 2 * size])
            torch.mul(d_n[t], r[t], out=d_hid[t, :, 2 * size :])
            carried = torch.addcmul(d_out[t - 1], dh, z[t]) if t else dh * z[t]
            dh = carried.addmm_(d_hid[t], w_hh)
        d_in = torch.cat([d_hid[..., : 2 * size], d_n], dim=-1)
        dx, *weights = _input_grads(x, hs[:-1], d_in, d_hid, w_ih, ctx.low)
        return dx, dh, *weights, None


_LAYERS = {nn.RNN: _TanhLayer, nn.GRU: _GRULayer}
_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def run_cpu(rnn: nn.RNN | nn.GRU, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``rnn(x, h0)`` for a tanh ``nn.RNN`` or an ``nn.GRU`` on the CPU, its weights and dropout
    between layers included; products over all steps in bf16 under autocast."""
    layer = _LAYERS[type(rnn)]
    low = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    out, last = x, []
    for k in range(rnn.num_layers):
        if k:
            out = F.dropout(out, rnn.dropout, rnn.training)
        weights = (getattr(rnn, f"{name}_l{k}") for name in _WEIGHTS)
        out, h = layer.apply(out, h0[k], *weights, low)
        last.append(h)
    return out, torch.stack(last)
