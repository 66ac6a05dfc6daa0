"""The comparison table: one row per model, the same columns for every family."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from seqlm.store import Artifact


@dataclass(frozen=True)
class Identity:
    """How the comparison names a model: recorded in its artifact's manifest by its stage."""

    name: str  # kn5, lstm, lstm+kn5
    family: str  # unigram, ngram, rnn or interpolated
    size: str  # 5-gram, 1x128, λ=0.412

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "family": self.family, "size": self.size}


def row_name(name: str, tokenizer: str, several: bool) -> str:
    """A model's name in a comparison: its own (``kn5``), prefixed by its tokenizer when the
    comparison holds several tokenizations (``char/kn5``)."""
    return f"{tokenizer}/{name}" if several else name


def identity(model: Artifact) -> Identity:
    return Identity(**model.manifest["rows"]["model"])


@dataclass(frozen=True)
class ModelResult:
    model: str
    family: str
    tokenizer: str
    size: str
    parameters: int
    test_ppl: float
    # Bits per character: −Σ log₂ p over the split's targets / (its characters + line ends),
    # comparable across tokenizations of one text (per residue for sequences).
    test_bpc: float
    test_ppl_no_unk: float
    test_ppl_line_reset: float | None  # state restarted at each line (n-grams: always so)
    valid_ppl: float
    valid_bpc: float
    oov: int
    targets: int
    oov_rate: float
    train_seconds: float
    # Recurrent models: epochs trained, and what ended training (epochs, early_stopping, or
    # time: the wall-clock cap cut it short, so its figures depend on the machine's speed).
    epochs: int | None
    stopped: str | None
    score_tokens_per_second: float

    @classmethod
    def from_metrics(
        cls,
        model: Identity,
        metrics: Mapping[str, Any],
        trained: Mapping[str, Any],
        train_seconds: float,
        line_reset: Mapping[str, Any] | None = None,
    ) -> ModelResult:
        """``trained``: what the model's stage recorded (a recurrent model's epochs and why it
        stopped); ``line_reset``: the metrics of a recurrent model scored with its state
        restarted at every line (an n-gram model's own context always restarts there)."""
        test, valid = metrics["test"], metrics["valid"]
        if line_reset is not None:
            reset_ppl = line_reset["test"]["ppl"]
        else:
            reset_ppl = test["ppl"] if model.family in ("unigram", "ngram") else None
        return cls(
            model=model.name,
            family=model.family,
            tokenizer=trained["tokenizer"],
            size=model.size,
            parameters=int(metrics["num_parameters"]),
            test_ppl=test["ppl"],
            test_bpc=test["bits_per_char"],
            test_ppl_no_unk=test["ppl_no_unk"],
            test_ppl_line_reset=reset_ppl,
            valid_ppl=valid["ppl"],
            valid_bpc=valid["bits_per_char"],
            oov=test["oov"],
            targets=test["targets"],
            oov_rate=test["oov_rate"],
            train_seconds=train_seconds,
            epochs=trained.get("epochs"),
            stopped=trained.get("stopped"),
            score_tokens_per_second=test["tokens_per_second"],
        )

    def metrics(self) -> dict[str, float]:
        """The metrics every model family logs under the same names."""
        return {
            "test_ppl": self.test_ppl,
            "test_bpc": self.test_bpc,
            "test_ppl_no_unk": self.test_ppl_no_unk,
            "valid_ppl": self.valid_ppl,
            "valid_bpc": self.valid_bpc,
            "oov_rate": self.oov_rate,
            "train_seconds": self.train_seconds,
        }


# The one asymmetry of the conventions, stated wherever the table is shown.
LIKE_FOR_LIKE = (
    "All models predict the same targets (every token and one </s> per line). N-gram contexts "
    "restart at every line; recurrent models carry their state across lines (test_ppl), and "
    "test_ppl_line_reset restarts it at every line too, for a like-for-like figure."
)


# Seconds and speeds change from run to run; every other column is fixed by the config and data.
TIMINGS = ("train_seconds", "score_tokens_per_second")


def comparison_frame(results: Sequence[ModelResult]) -> pl.DataFrame:
    return pl.DataFrame([asdict(r) for r in results])


def figures(frame: pl.DataFrame) -> pl.DataFrame:
    """The comparison without its timings: what two runs of one config print alike."""
    return frame.drop(TIMINGS, strict=False)


def to_markdown(frame: pl.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned, floats to 2 decimals)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            if value >= 1000:
                return f"{value:,.0f}"
            return f"{value:,.2f}" if value >= 0.01 or value == 0 else f"{value:.2e}"
        if value is None:
            return "–"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    numeric = [dtype.is_numeric() for dtype in frame.dtypes]
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *rows]) + "\n"
