"""A training progress bar for a terminal: one stderr line, rewritten in place.

Only on a terminal (never in a log file or a Prefect run log, where training logs throttled lines
instead); a log line written meanwhile clears it first (``flows.cli.TerminalFormatter``).
"""

from __future__ import annotations

import sys

WIDTH = 30


class ProgressBar:
    """``lstm epoch 2 [#######.......] 310/900  ppl 212.4  14,210 tok/s``; gone when an epoch
    ends. Called with training's progress reports."""

    def __init__(self, label: str = "") -> None:
        self.label = f"{label} " if label else ""
        self.enabled = sys.stderr.isatty()

    def __call__(self, p: dict[str, float]) -> None:
        if not self.enabled:
            return
        if p["windows_done"] >= p["windows"]:
            sys.stderr.write("\r\033[K")
        else:
            filled = int(WIDTH * p["windows_done"] / p["windows"])
            sys.stderr.write(
                f"\r{self.label}epoch {p['epoch']} [{'#' * filled}{'.' * (WIDTH - filled)}] "
                f"{p['windows_done']}/{p['windows']}  ppl {p['train_ppl']:.1f}  "
                f"{p['tokens_per_second']:,.0f} tok/s\033[K"
            )
        sys.stderr.flush()
