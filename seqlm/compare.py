"""Models side by side: identical targets checked, per-token log-probabilities in one table."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import polars as pl

from seqlm.errors import SeqlmError
from seqlm.vocab import UNK_ID


def load_scores(evaluation: Path, split: str) -> pl.DataFrame:
    """An evaluation's ``target, logprob`` columns for one split."""
    return pl.read_parquet(evaluation / f"{split}.parquet")


def per_token_frame(evaluations: Mapping[str, Path], split: str = "test") -> pl.DataFrame:
    """``position, target, is_unk`` and one natural-log-probability column per model.

    Refuses to line models up unless they were scored on the same targets (same number, same ids,
    so the same ``<unk>`` positions): a perplexity over other targets is not comparable.
    """
    frames = {name: load_scores(path, split) for name, path in evaluations.items()}
    if not frames:
        raise SeqlmError("no model to compare")
    (first, reference), *others = frames.items()
    for name, frame in others:
        if frame.height != reference.height:
            raise SeqlmError(
                f"{name} was scored on {frame.height:,} {split} targets, {first} on "
                f"{reference.height:,}: not the same test text"
            )
        if not frame["target"].equals(reference["target"]):
            raise SeqlmError(f"{name} and {first} were scored on different {split} targets")
    return pl.DataFrame(
        {
            "position": pl.int_range(reference.height, eager=True, dtype=pl.UInt32),
            "target": reference["target"],
            "is_unk": reference["target"] == UNK_ID,
        }
    ).with_columns(**{name: frame["logprob"] for name, frame in frames.items()})
