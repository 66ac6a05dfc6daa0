"""Comparison figures, drawn on a bare ``Figure`` (Agg canvas: no window, no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seqlm.report import ModelResult


def comparison_bars(results: Sequence[ModelResult], bits: bool, path: Path) -> None:
    """A horizontal bar per model, lower is better: test perplexity, or with ``bits`` (models of
    several tokenizations, whose perplexities do not compare) test bits per character, sorted."""
    # Imported here: loading a model to score text (the registry's pyfunc) needs no matplotlib.
    from matplotlib.figure import Figure

    if bits:
        results = sorted(results, key=lambda r: r.test_bpc)
    values = [r.test_bpc if bits else r.test_ppl for r in results]
    fig = Figure(figsize=(7, 0.45 * len(results) + 1.2), dpi=120)
    ax = fig.add_subplot()
    bars = ax.barh([r.model for r in results], values, color="#4c72b0")
    ax.bar_label(bars, fmt="%.3f" if bits else "%.1f", padding=3)
    ax.invert_yaxis()
    what = "test bits per character" if bits else "test perplexity"
    ax.set_xlabel(f"{what} (lower is better)")
    ax.set_xlim(0, max(values) * 1.15)
    fig.tight_layout()
    fig.savefig(path, format="png")
