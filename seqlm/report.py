"""The comparison table: one row per model, the same columns for every family."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl


@dataclass(frozen=True)
class ModelResult:
    model: str
    family: str
    parameters: int
    test_ppl: float
    test_ppl_no_unk: float
    valid_ppl: float
    oov: int
    targets: int
    oov_rate: float
    train_seconds: float
    score_tokens_per_second: float

    @classmethod
    def from_metrics(
        cls, model: str, family: str, metrics: Mapping[str, Any], train_seconds: float
    ) -> ModelResult:
        test, valid = metrics["test"], metrics["valid"]
        return cls(
            model=model,
            family=family,
            parameters=int(metrics["num_parameters"]),
            test_ppl=test["ppl"],
            test_ppl_no_unk=test["ppl_no_unk"],
            valid_ppl=valid["ppl"],
            oov=test["oov"],
            targets=test["targets"],
            oov_rate=test["oov_rate"],
            train_seconds=train_seconds,
            score_tokens_per_second=test["tokens_per_second"],
        )

    def metrics(self) -> dict[str, float]:
        """The metrics every model family logs under the same names."""
        return {
            "test_ppl": self.test_ppl,
            "test_ppl_no_unk": self.test_ppl_no_unk,
            "valid_ppl": self.valid_ppl,
            "oov_rate": self.oov_rate,
            "train_seconds": self.train_seconds,
        }


def comparison_frame(results: Sequence[ModelResult]) -> pl.DataFrame:
    return pl.DataFrame([asdict(r) for r in results])


def to_markdown(frame: pl.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned, floats to 2 decimals)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if value >= 0.01 or value == 0 else f"{value:.2e}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    numeric = [dtype.is_numeric() for dtype in frame.dtypes]
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *rows]) + "\n"
