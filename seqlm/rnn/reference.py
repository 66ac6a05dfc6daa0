"""The vanilla RNN and its back-propagation through time, written from the equations in NumPy.

Forward, for t = 1..T over a batch (rows are batch members, so ``x_t W_xᵀ`` is ``W_x x_t``)::

    a_t = W_x x_t + W_h h_{t-1} + b_h        h_t = tanh(a_t)
    y_t = W_y h_t + b_y                      p_t = softmax(y_t)
    L   = Σ_t L_t,   L_t = −Σ_b ln p_t[b, target_t[b]] / (T·B)      (the mean over all targets)

Backward: a weight reaches L_t through every earlier step, so

    ∂L/∂W_h = Σ_t Σ_{k≤t} ∂L_t/∂h_t · ∂h_t/∂h_k · ∂h_k/∂W_h       (and the same for W_x, b_h)

with ∂L_t/∂h_t = (p_t − onehot(target_t)) W_y / (T·B), the chain of Jacobians
∂h_j/∂h_{j−1} = diag(1 − h_j²) W_h, and the immediate ∂h_k/∂W_h = diag(1 − h_k²) ⊗ h_{k−1}.
W_y and b_y act at each step alone: ∂L/∂W_y = Σ_t (p_t − onehot)ᵀ h_t / (T·B).

``bptt`` evaluates the double sum literally (O(T²)); the usual backward recursion
δ_{k−1} = δ_k · ∂h_k/∂h_{k−1} + ∂L_{k−1}/∂h_{k−1} is the same sum, regrouped by k.
This module is the executable derivation that the tests hold torch's autograd to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RNNWeights:
    W_x: np.ndarray  # (H, E)
    W_h: np.ndarray  # (H, H)
    b_h: np.ndarray  # (H,)
    W_y: np.ndarray  # (V, H)
    b_y: np.ndarray  # (V,)


def forward(
    w: RNNWeights, x: np.ndarray, h0: np.ndarray, targets: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss, hidden states ``h`` (T+1, B, H) with ``h[0] = h0``, and softmax outputs ``p`` (T, B, V)
    for inputs ``x`` (T, B, E) and integer ``targets`` (T, B)."""
    T, B, _ = x.shape
    h = np.empty((T + 1, B, w.W_h.shape[0]))
    h[0] = h0
    for t in range(T):
        h[t + 1] = np.tanh(x[t] @ w.W_x.T + h[t] @ w.W_h.T + w.b_h)
    y = h[1:] @ w.W_y.T + w.b_y
    p = np.exp(y - y.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    picked = np.take_along_axis(p, targets[..., None], axis=-1)
    return float(-np.log(picked).sum() / (T * B)), h, p


def bptt(
    w: RNNWeights, x: np.ndarray, h0: np.ndarray, targets: np.ndarray
) -> tuple[float, dict[str, np.ndarray]]:
    """The loss and its gradient with respect to every weight, the inputs ``x`` and ``h0``."""
    T, B, _ = x.shape
    loss, h, p = forward(w, x, h0, targets)
    dy = p.copy()  # ∂L/∂y_t = (p_t − onehot(target_t)) / (T·B)
    np.put_along_axis(
        dy, targets[..., None], np.take_along_axis(dy, targets[..., None], -1) - 1, -1
    )
    dy /= T * B
    grads = {name: np.zeros_like(value) for name, value in vars(w).items()}
    grads["x"], grads["h0"] = np.zeros_like(x), np.zeros_like(h0)
    for t in range(T):
        grads["W_y"] += dy[t].T @ h[t + 1]
        grads["b_y"] += dy[t].sum(axis=0)
        g = dy[t] @ w.W_y  # ∂L_t/∂h_t
        for k in range(t, -1, -1):  # g = ∂L_t/∂h_k, walking back from k = t
            da = g * (1.0 - h[k + 1] ** 2)  # through tanh: ∂L_t/∂a_k
            grads["W_h"] += da.T @ h[k]  # the immediate ∂h_k/∂W_h
            grads["W_x"] += da.T @ x[k]
            grads["b_h"] += da.sum(axis=0)
            grads["x"][k] += da @ w.W_x
            g = da @ w.W_h  # ∂L_t/∂h_{k−1} = ∂L_t/∂h_k · ∂h_k/∂h_{k−1}
        grads["h0"] += g
    return loss, grads
