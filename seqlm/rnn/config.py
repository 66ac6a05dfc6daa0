"""The recurrent models' settings: plain dataclasses, importable without torch (so that the
command line and the pipeline's config start fast)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from seqlm.errors import SeqlmError

MODELS = ("rnn_tanh", "lstm", "gru")
# Multiply-accumulates per hidden unit per input: gates stacked in the recurrent weight matrices.
GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3}
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("plateau", "fixed")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
# What a resumed run may change: how long and where it runs, not what it computes.
BUDGET_FIELDS = ("epochs", "max_minutes", "device", "patience", "log_every_s")


def _one_of(choices: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), f"be one of {', '.join(choices)}"


_AT_LEAST_1 = (lambda v: v >= 1), "be at least 1"
_POSITIVE = (lambda v: v > 0), "be positive"
_NOT_NEGATIVE = (lambda v: v >= 0), "not be negative"
# Every recurrent setting's rule, in one place: ModelConfig, TrainConfig, the pipeline's [rnn]
# section and the command line all check with it, each naming a setting as its user spells it.
# (A float must also be finite; NaN fails every comparison.)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model": _one_of(MODELS),
    "emsize": _AT_LEAST_1,
    "nhid": _AT_LEAST_1,
    "nlayers": _AT_LEAST_1,
    "dropout": ((lambda v: 0 <= v < 1), "be in [0, 1)"),
    "init_range": _POSITIVE,
    "bptt": _AT_LEAST_1,
    "batch_size": _AT_LEAST_1,
    "optimizer": _one_of(OPTIMIZERS),
    "lr": _POSITIVE,
    "weight_decay": _NOT_NEGATIVE,
    "clip": _POSITIVE,  # clipping is always on: a norm of 0 would zero every gradient
    "schedule": _one_of(SCHEDULES),
    "lr_decay": ((lambda v: 0 < v <= 1), "be in (0, 1]"),
    "decay_after": _NOT_NEGATIVE,
    "patience": ((lambda v: v >= 0), "not be negative (0: never stop early)"),
    "epochs": _AT_LEAST_1,
    "max_minutes": ((lambda v: v >= 0), "not be negative (0: no time budget)"),
    "device": _one_of(DEVICES),
    "precision": _one_of(PRECISIONS),
    "seed": ((lambda v: 0 <= v < 2**63), "be between 0 and 2**63 - 1"),
    "eval_columns": _AT_LEAST_1,
    "log_every_s": _NOT_NEGATIVE,
}


def check_settings(values: Mapping[str, Any], spell: Callable[[str], str] = str) -> None:
    """Refuse the first value that breaks its rule (keys without a rule and ``None`` values, not
    given, pass), naming the setting as ``spell`` writes it: ``rnn.lr``, ``--lr``."""
    for name, (ok, what) in RULES.items():
        value = values.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            raise SeqlmError(f"{spell(name)} must be a finite number, not {value}")
        if value is not None and not ok(value):
            shown = f"{value:g}" if isinstance(value, float) else repr(value)
            raise SeqlmError(f"{spell(name)} must {what}, not {shown}")
    if values.get("tied") and values.get("emsize") != values.get("nhid"):
        raise SeqlmError(
            f"{spell('tied')} needs {spell('emsize')} == {spell('nhid')}, "
            f"not {values.get('emsize')} and {values.get('nhid')}"
        )


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
        check_settings(vars(self))

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
        check_settings({k: v for k, v in vars(self).items() if k != "model"})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{**d, "model": ModelConfig(**d["model"])})
