"""Comparison figures, drawn on a bare ``Figure`` (Agg canvas: no window, no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def perplexity_bars(models: Sequence[str], perplexities: Sequence[float], path: Path) -> None:
    """A horizontal bar per model: test perplexity, lower is better."""
    # Imported here: loading a model to score text (the registry's pyfunc) needs no matplotlib.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 0.45 * len(models) + 1.2), dpi=120)
    ax = fig.add_subplot()
    bars = ax.barh(list(models), list(perplexities), color="#4c72b0")
    ax.bar_label(bars, fmt="%.1f", padding=3)
    ax.invert_yaxis()
    ax.set_xlabel("test perplexity (lower is better)")
    ax.set_xlim(0, max(perplexities) * 1.15)
    fig.tight_layout()
    fig.savefig(path, format="png")
