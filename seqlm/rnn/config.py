"""The recurrent models' settings: plain dataclasses, importable without torch (so that the
command line and the pipeline's config start fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seqlm.errors import SeqlmError

MODELS = ("rnn_tanh", "lstm", "gru")
# Multiply-accumulates per hidden unit per input: gates stacked in the recurrent weight matrices.
GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3}
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("plateau", "fixed")
PRECISIONS = ("auto", "fp32", "bf16")
# What a resumed run may change: how long and where it runs, not what it computes.
BUDGET_FIELDS = ("epochs", "max_minutes", "device", "patience", "log_every_s")


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape (Zaremba et al. 2014 "small" by default)."""

    model: str = "lstm"
    emsize: int = 200
    nhid: int = 200
    nlayers: int = 2
    dropout: float = 0.0
    tied: bool = False
    # Every weight starts uniform in ±init_range (Zaremba: 0.1 small, 0.05 medium/large).
    init_range: float = 0.1

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise SeqlmError(f"unknown model {self.model!r} (choose from {', '.join(MODELS)})")
        if min(self.emsize, self.nhid, self.nlayers) < 1:
            raise SeqlmError(f"emsize, nhid and nlayers must be positive: {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise SeqlmError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.tied and self.emsize != self.nhid:
            raise SeqlmError(
                f"tied embeddings need emsize == nhid (emsize {self.emsize}, nhid {self.nhid})"
            )

    def forward_flops_per_token(self, vocab_size: int) -> int:
        """Matrix-multiply FLOPs of one token's forward pass (training costs about 3 times this)."""
        g, h = GATES[self.model], self.nhid
        layers = sum(2 * g * h * ((self.emsize if k == 0 else h) + h) for k in range(self.nlayers))
        return layers + 2 * h * vocab_size


@dataclass(frozen=True)
class TrainConfig:
    """Every training hyperparameter; the defaults are Zaremba et al.'s small LSTM on PTB.

    The loss is the mean over a window's tokens. Zaremba et al. sum over the ``bptt`` steps (and
    average over the batch), so their lr 1 and clip 5 are lr ``bptt`` and clip ``5 / bptt`` here.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    bptt: int = 35
    batch_size: int = 20
    optimizer: str = "sgd"  # or "adamw"
    lr: float = 35.0
    weight_decay: float = 0.0  # AdamW's decoupled decay
    clip: float = 5 / 35  # max gradient norm
    # "plateau": lr *= lr_decay after an epoch whose validation loss did not improve;
    # "fixed": lr *= lr_decay after every epoch past the first ``decay_after`` (Zaremba).
    schedule: str = "fixed"
    lr_decay: float = 0.5
    decay_after: int = 4
    patience: int = 3  # stop after this many epochs without a better validation loss (0: never)
    epochs: int = 13
    max_minutes: float = 0.0  # wall-clock budget over all (resumed) runs; 0: none
    device: str = "auto"  # auto: CUDA when available, else CPU
    precision: str = "auto"  # auto: bf16 autocast on CUDA and on CPUs with bf16 hardware
    seed: int = 1111
    eval_columns: int = 10  # validation scored in this many side-by-side segments
    log_every_s: float = 30.0

    def __post_init__(self) -> None:
        checks = {
            "optimizer": (self.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
            "schedule": (self.schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
            "precision": (self.precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
            "bptt": (self.bptt >= 1, "at least 1"),
            "batch_size": (self.batch_size >= 1, "at least 1"),
            "lr": (self.lr > 0, "positive"),
            "clip": (self.clip > 0, "positive"),
            "lr_decay": (0 < self.lr_decay <= 1, "in (0, 1]"),
            "epochs": (self.epochs >= 1, "at least 1"),
            "max_minutes": (self.max_minutes >= 0, "not negative"),
            "eval_columns": (self.eval_columns >= 1, "at least 1"),
        }
        for name, (ok, what) in checks.items():
            if not ok:
                raise SeqlmError(
                    f"training config: {name} must be {what}, not {getattr(self, name)!r}"
                )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{**d, "model": ModelConfig(**d["model"])})
