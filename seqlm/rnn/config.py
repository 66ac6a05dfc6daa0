"""The recurrent models' settings: plain dataclasses, importable without torch (so that the
command line and the pipeline's config start fast)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
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
    "nproc": _AT_LEAST_1,
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
    nproc, batch = values.get("nproc"), values.get("batch_size")
    if nproc and batch and batch % nproc:  # each process trains an equal slice of the columns
        raise SeqlmError(
            f"{spell('nproc')} {nproc} must divide {spell('batch_size')} {batch} "
            "(each process trains batch_size / nproc columns)"
        )


def _setting(default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:
    """A field whose metadata holds its help text (and choices): the pipeline's form and the
    command line's flags are generated from it."""
    return field(
        default=default, metadata={"help": help} | ({"choices": choices} if choices else {})
    )


# The recurrent models' epochs. On the bundled corpus (266k training tokens) each 128-unit model
# beats the 5-gram's valid perplexity (88.5) from its first epoch; after 3, rnn_tanh 72.0 and
# lstm 64.8 (a 4th: 72.8, no better, and 63.6). 3 epochs take about 30-50 s per model on two idle
# CPU cores in fp32, so that the whole pipeline fits in about 3 minutes.
EPOCHS = 3
# The network ``seqlm rnn train`` trains when no --model is given.
DEFAULT_MODEL = "lstm"


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape; the architecture (``MODELS``) is named beside it."""

    emsize: int = _setting(128, "Embedding size.")
    nhid: int = _setting(128, "Hidden units per layer.")
    nlayers: int = _setting(1, "Recurrent layers.")
    dropout: float = _setting(0.1, "Dropout probability, in [0, 1).")
    tied: bool = _setting(False, "Tie the input and output embeddings (needs emsize = nhid).")
    init_range: float = _setting(
        0.1,
        "Every weight starts uniform in ±init_range (Zaremba et al.: 0.1 for their small "
        "models, 0.05 for the larger).",
    )

    def __post_init__(self) -> None:
        check_settings(vars(self))

    def forward_flops_per_token(self, model: str, vocab_size: int) -> int:
        """Matrix-multiply FLOPs of one token's forward pass (training costs about 3 times this)."""
        g, h = GATES[model], self.nhid
        layers = sum(2 * g * h * ((self.emsize if k == 0 else h) + h) for k in range(self.nlayers))
        return layers + 2 * h * vocab_size


@dataclass(frozen=True)
class TrainConfig(ModelConfig):
    """The network's shape and every training setting. The defaults are the pipeline's: small
    models that train in seconds per epoch on a CPU (``bench/rnn.py`` holds Zaremba et al.'s).

    The loss is the mean over a window's tokens. Zaremba et al. sum over the ``bptt`` steps (and
    average over the batch), so their lr 1 and clip 5 are lr ``bptt`` and clip ``5 / bptt`` here.
    """

    bptt: int = _setting(35, "Truncated-BPTT window: tokens per step of each column.")
    batch_size: int = _setting(20, "Columns trained side by side.")
    optimizer: str = _setting(
        "adamw", "adamw (decoupled weight decay), or sgd (with lr ~1).", OPTIMIZERS
    )
    lr: float = _setting(0.003, "Learning rate at the start (the schedule lowers it).")
    weight_decay: float = _setting(0.0, "AdamW's decoupled weight decay.")
    clip: float = _setting(0.25, "Largest gradient norm (of the per-token mean loss's gradient).")
    schedule: str = _setting(
        "plateau",
        "plateau: lr × lr_decay after an epoch whose validation loss did not improve; fixed: "
        "after every epoch from epoch decay_after on (Zaremba et al.).",
        SCHEDULES,
    )
    lr_decay: float = _setting(0.5, "What the schedule multiplies the learning rate by, in (0, 1].")
    decay_after: int = _setting(4, "The fixed schedule's first epoch to end with a decay.")
    patience: int = _setting(
        3, "Stop after this many epochs without a better validation loss (0: never stop early)."
    )
    epochs: int = _setting(
        EPOCHS,
        "Training budget per model, in passes over the training split (fewer when validation "
        "stops improving): the same figures on any machine.",
    )
    max_minutes: float = _setting(
        0.0,
        "Optional wall-clock cap per model, over all its resumed runs (0: none). A model it cuts "
        "short is marked so, and its figures then depend on the machine's speed.",
    )
    device: str = _setting("auto", "auto (CUDA when there is one, else the CPU).", DEVICES)
    # fp32, not auto: bf16 autocast (auto's choice on CPUs with AVX512-BF16 or AMX) trains up
    # to twice as fast there, but gives other figures than CPUs without it; fp32 gives the same
    # figures on every machine of a kind (and bf16's effect on convergence was never checked).
    precision: str = _setting(
        "fp32",
        "fp32 gives the same figures on every CPU; bf16 autocasts; auto: bf16 on CUDA and on "
        "CPUs with bf16 hardware (AVX512-BF16, AMX), else fp32.",
        PRECISIONS,
    )
    seed: int = _setting(1111, "Random seed (weights and dropout).")
    eval_columns: int = _setting(
        10, "Validation reads the stream in this many side-by-side columns (cut at line ends)."
    )
    log_every_s: float = _setting(
        30.0, "Seconds between progress lines in the log during an epoch (0: every window)."
    )
    nproc: int = _setting(
        1,
        "Training processes (DistributedDataParallel: one per GPU on CUDA, the cores shared "
        "on the CPU), each on batch_size / nproc of the columns; 1: no extra process.",
    )

    @classmethod
    def of(cls, config: TrainConfig) -> TrainConfig:
        """The training settings of ``config`` alone (a subclass's own fields left out)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})
