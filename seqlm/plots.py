"""Figures for the comparison (matplotlib's file-only Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def perplexity_bars(models: Sequence[str], perplexities: Sequence[float], path: Path) -> None:
    """A horizontal bar per model: test perplexity, lower is better."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(models) + 1.2))
    bars = ax.barh(list(models), list(perplexities), color="#4c72b0")
    ax.bar_label(bars, fmt="%.1f", padding=3)
    ax.invert_yaxis()
    ax.set_xlabel("test perplexity (lower is better)")
    ax.set_xlim(0, max(perplexities) * 1.15)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
