"""The learning curve of a training run, drawn from its epoch history."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def plot_learning_curve(history: Sequence[dict[str, float]], path: Path, title: str = "") -> Path:
    """Train and validation perplexity per epoch (log scale), the learning rate beside; a PNG.

    Drawn on a bare ``Figure`` (the Agg canvas): no pyplot state, no window, no global backend."""
    from matplotlib.figure import Figure  # imported here: only plotting pays for matplotlib

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    ax.plot(epochs, [h["train_ppl"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["valid_ppl"] for h in history], "s-", label="valid")
    ax.set(xlabel="epoch", ylabel="perplexity", yscale="log", title=title or "learning curve")
    ax.grid(True, which="both", alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot(epochs, [h["lr"] for h in history], ":", color="gray", label="lr")
    lr_ax.set(ylabel="learning rate", yscale="log")
    handles = ax.get_legend_handles_labels()[0] + lr_ax.get_legend_handles_labels()[0]
    ax.legend(handles, [str(h.get_label()) for h in handles], loc="upper right")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)
