"""Paths and small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PTB = SHARED / "ptb"
BUNDLED = Path(__file__).resolve().parents[1] / "data" / "tinyshakespeare" / "input.txt"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path
