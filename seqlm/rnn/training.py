"""Training with truncated back-propagation through time (the word-language-model recipe).

``train`` is the loop: ``restore`` (when resuming), then per epoch ``run_epoch`` (the BPTT
windows over the training columns), ``end_epoch`` (validation, the learning-rate schedule, the
best model, early stopping) and ``save`` (``last.pt``; ``best.pt`` too when validation improved).
A checkpoint holds a ``TrainState`` beside the weights and the optimizer's and random generators'
states, so that a resumed run goes on exactly as an uninterrupted one.

With ``nproc`` > 1, ``seqlm.rnn.distributed`` runs ``fit`` in that many processes, each on its
slice of the columns; a ``Group`` is what the loop asks of the others (sums, rank 0's figures).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from seqlm.allocator import (
    M_MMAP_MAX,
    M_MMAP_THRESHOLD,
    M_TOP_PAD,
    M_TRIM_THRESHOLD,
    TOP_PAD,
    c_function,
)
from seqlm.errors import SeqlmError
from seqlm.rnn.checkpoint import read_checkpoint, save_checkpoint
from seqlm.rnn.config import BUDGET_FIELDS, TrainConfig, check_settings
from seqlm.rnn.head import SoftmaxHead
from seqlm.rnn.model import RNNLM, Hidden, detach
from seqlm.rnn.score import score_stream
from seqlm.vocab import EOS_ID

log = logging.getLogger("seqlm.rnn")

Figures = Callable[[dict[str, float]], None]


@dataclass(frozen=True)
class Callbacks:
    """What training reports as it goes. ``on_epoch`` gets each epoch's figures: ``epoch,
    train_ppl, valid_ppl, tokens_per_second, lr, epoch_s``; ``on_progress`` the progress within an
    epoch, ``epoch, windows_done, windows, train_ppl, tokens_per_second`` (a progress bar)."""

    on_epoch: Figures | None = None
    on_progress: Figures | None = None


@dataclass
class TrainState:
    """Where training stands after an epoch; a checkpoint holds it beside the weights."""

    lr: float
    epoch: int = 0
    step: int = 0
    best_valid_loss: float = math.inf
    bad_epochs: int = 0  # epochs since the best validation loss (early stopping counts them)
    elapsed_s: float = 0.0  # wall-clock seconds of every run up to the checkpoint
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class TrainResult:
    model: RNNLM  # holding the best validation weights
    config: TrainConfig
    history: list[dict[str, float]]
    best_valid_loss: float
    epochs: int
    steps: int
    tokens_per_second: float
    device: str
    precision: str  # "bf16" (autocast) or "fp32"
    stopped: str  # "epochs", "time" or "early_stopping"
    wall_s: float
    checkpoint: Path | None  # best.pt

    @property
    def valid_ppl(self) -> float:
        return _ppl(self.best_valid_loss)


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # a diverging run reports a huge perplexity, not a crash


# A mean loss this many times the uniform guess's (ln V nats) means training diverged, even while
# it stays finite: no model that learns anything is that far off.
DIVERGED_FACTOR = 10.0


def _diverged(
    epoch: int, step: int, lr: float, what: str, loss: float, checkpoint: Path | None
) -> SeqlmError:
    where = f"last good checkpoint: {checkpoint}" if checkpoint else "no checkpoint was written"
    return SeqlmError(
        f"training diverged at epoch {epoch}, step {step} (lr {lr:g}): {what} {loss:.3g}; "
        f"{where}. Lower the learning rate or the gradient clip"
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SeqlmError("device 'cuda' asked for, but torch sees no CUDA GPU")
    if name not in ("cpu", "cuda"):
        raise SeqlmError(f"unknown device {name!r} (choose from auto, cpu, cuda)")
    return torch.device(name)


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), which doubles the rate
    of fp32 products; elsewhere bf16 would be emulated, and fp32 is the faster choice."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", info) is not None


def use_bf16(precision: str, device: torch.device) -> bool:
    """``auto``: bf16 autocast on CUDA and on CPUs with bf16 hardware, else fp32."""
    if precision == "auto":
        return device.type == "cuda" or cpu_has_bf16()
    return precision == "bf16"


def _prepare_cpu(processes: int = 1) -> None:
    """Share the cores we may run on among the training processes, and keep freed memory in
    glibc's heap: otherwise the large logits and gradient blocks are unmapped and page-faulted
    back in at every step."""
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // processes))
    mallopt = c_function("mallopt")
    if mallopt is not None:
        mallopt(M_MMAP_MAX, 0)
        mallopt(M_MMAP_THRESHOLD, 1 << 30)
        mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)
        mallopt(M_TOP_PAD, TOP_PAD)


def batchify(stream: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
    """``(rows, batch_size)`` ids on ``device``: ``</s>`` + stream, cut into contiguous columns
    (the tail that fills no row is dropped). Row ``i`` is the input of target row ``i + 1``.

    The stream ``a b c ... x`` in 4 columns, and the first window of ``bptt`` 2 rows (the next
    starts at row ``c``; each column's hidden state carries over from one window to the next)::

        +---------+       input x    targets y
        | a g m s |     +---------+ +---------+
        | b h n t |     | a g m s | | b h n t |
        | c i o u |     | b h n t | | c i o u |
        | d j p v |     +---------+ +---------+
        | e k q w |
        | f l r x |
        +---------+
    """
    data = torch.from_numpy(np.concatenate([[EOS_ID], stream]).astype(np.int64))
    rows = len(data) // batch_size
    return data[: rows * batch_size].view(batch_size, rows).t().contiguous().to(device)


class Group:
    """The processes that train one model together; here one alone. ``seqlm.rnn.distributed``'s
    ``Ranks`` is the same with DistributedDataParallel's processes."""

    rank, size = 0, 1

    def wrap(self, model: RNNLM) -> nn.Module:
        """What the training forward pass goes through (DDP's wrapper syncs the gradients)."""
        return model

    def columns(self, data: torch.Tensor) -> torch.Tensor:
        """This process's slice of the training columns."""
        return data

    def own_rng(self, seed: int) -> None:
        """Give each process its own dropout stream (once the weights are drawn alike)."""

    def total(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def any(self, flag: bool) -> bool:
        return flag

    def first(self, compute: Callable[[], float]) -> float:
        """Rank 0's ``compute()``, on every rank (the others wait instead of computing it)."""
        return compute()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order."""
        return [value]


def _check_data(stream: np.ndarray, config: TrainConfig, vocab_size: int, name: str) -> None:
    if len(stream) == 0:
        raise SeqlmError(f"the {name} stream is empty")
    if stream.min() < 0 or stream.max() >= vocab_size:
        raise SeqlmError(f"the {name} stream has ids outside the vocabulary of {vocab_size}")
    rows = (len(stream) + 1) // config.batch_size
    if rows - 1 < config.bptt:
        raise SeqlmError(
            f"bptt {config.bptt} × batch size {config.batch_size} needs more than "
            f"{config.bptt * config.batch_size} training tokens; the {name} stream has "
            f"{len(stream)} (batch size {config.batch_size} allows bptt ≤ {max(rows - 1, 0)})"
        )


def _make_optimizer(model: RNNLM, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr)


def train_step(
    model: RNNLM,
    optimizer: torch.optim.Optimizer,
    head: SoftmaxHead,
    x: torch.Tensor,
    y: torch.Tensor,
    hidden: Hidden,
    clip: float,
    bf16: bool,
    forward: nn.Module | None = None,
) -> tuple[torch.Tensor, Hidden]:
    """One truncated-BPTT update on the window ``x`` → ``y``: the state comes in detached, the
    gradient norm is clipped. Returns the window's mean loss (a device scalar) and the new state.
    ``forward``: the module the forward pass goes through, if not ``model`` (DDP's wrapper, which
    averages the gradients over the processes during ``backward``: clipping sees the global norm).
    """
    hidden = detach(hidden)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out, hidden = (forward or model)(x, hidden)
    dtype = torch.bfloat16 if bf16 else torch.float32
    loss = head(out.reshape(-1, out.shape[-1]), model.decoder, y.reshape(-1), dtype)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.detach(), hidden


@dataclass
class Run:
    """What one call of ``train`` works with, beside the ``TrainState``."""

    model: RNNLM
    config: TrainConfig
    optimizer: torch.optim.Optimizer
    data: torch.Tensor  # the training stream's columns (``batchify``)
    bf16: bool
    identity: dict[str, Any]  # what every checkpoint records: model, config, vocabulary, extra
    diverged: float  # a mean loss above this means training diverged
    group: Group = field(default_factory=Group)
    forward: nn.Module | None = None  # the group's wrapper of ``model``, if any
    out_dir: Path | None = None
    callbacks: Callbacks = Callbacks()
    progress_every_s: float = 0.5
    started: float = field(default_factory=time.monotonic)
    origin: float = 0.0  # when the first of the resumed runs started, on this run's clock
    head: SoftmaxHead = field(default_factory=SoftmaxHead)
    best: dict[str, torch.Tensor] = field(default_factory=dict)  # the best validated weights
    good_checkpoint: Path | None = None  # the checkpoint a divergence points back to
    stopped: str = "epochs"
    train_s: float = 0.0
    train_tokens: int = 0

    @property
    def deadline(self) -> float:
        """When the time cap ends training (inf: no cap)."""
        cap = self.config.max_minutes * 60
        return self.origin + cap if cap else math.inf

    def past_deadline(self) -> bool:
        """Whether the time cap has run out, agreed by every process (they stop together)."""
        return self.deadline < math.inf and self.group.any(time.monotonic() > self.deadline)

    def keep_best(self) -> None:
        self.best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}


class Trained(NamedTuple):
    train_ppl: float
    tokens_per_second: float
    seconds: float


class _Tally:
    """One epoch's running figures, kept on the device between looks (no host sync per step):
    the summed loss, and the first step whose loss is not finite or above the run's limit (NaN
    fails ``<=`` too)."""

    def __init__(self, run: Run, state: TrainState) -> None:
        self.run, self.epoch, self.lr = run, state.epoch + 1, state.lr
        self.windows = math.ceil((run.data.shape[0] - 1) / run.config.bptt)
        device = run.data.device
        self.loss_sum = torch.zeros((), device=device)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), device=device)
        self.tokens = 0
        self.start = self.last_report = self.last_log = time.monotonic()

    def add(self, step: int, loss: torch.Tensor, tokens: int) -> None:
        self.tokens += tokens
        self.loss_sum += loss * tokens
        first = (self.bad_step < 0) & ~(loss <= self.run.diverged)
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_loss = torch.where(first, loss.to(self.bad_loss.dtype), self.bad_loss)

    def _check(self) -> None:
        if int(self.bad_step) >= 0:
            step, loss = int(self.bad_step), float(self.bad_loss)
            raise _diverged(self.epoch, step, self.lr, "loss", loss, self.run.good_checkpoint)

    def _progress(self, done: int, train_ppl: float, tokens_per_second: float) -> dict[str, float]:
        return dict(
            epoch=self.epoch,
            windows_done=done,
            windows=self.windows,
            train_ppl=train_ppl,
            tokens_per_second=tokens_per_second,
        )

    def report(self, done: int) -> None:
        """The progress callback and the log line, each at its own pace (both sync the device,
        so the divergence check comes with them)."""
        run, now = self.run, time.monotonic()
        on_progress = run.callbacks.on_progress
        report = on_progress is not None and now - self.last_report >= run.progress_every_s
        log_now = now - self.last_log >= run.config.log_every_s
        if not (report or log_now):
            return
        self._check()
        # This process's running loss; every process trains as many tokens.
        ppl = _ppl(self.loss_sum.item() / self.tokens)
        tps = self.tokens * run.group.size / (now - self.start)
        if on_progress is not None and report:
            self.last_report = now
            on_progress(self._progress(done, ppl, tps))
        if log_now:
            self.last_log = now
            msg = "epoch %d %d/%d windows, train ppl %.2f, %.0f tokens/s"
            log.info(msg, self.epoch, done, self.windows, ppl, tps)

    def end(self) -> Trained:
        """The epoch's figures over every process's columns (equal slices: a global mean)."""
        group = self.run.group
        loss_total = group.total(self.loss_sum).item()  # syncs the device: the clock is true
        seconds = time.monotonic() - self.start
        self._check()
        tokens = self.tokens * group.size
        self.run.train_s += seconds
        self.run.train_tokens += tokens
        trained = Trained(_ppl(loss_total / tokens), tokens / seconds, seconds)
        if self.run.callbacks.on_progress is not None:
            figures = self._progress(self.windows, trained.train_ppl, trained.tokens_per_second)
            self.run.callbacks.on_progress(figures)
        return trained


def run_epoch(run: Run, state: TrainState) -> Trained | None:
    """One pass over the training columns, ``bptt`` rows a step, the hidden state carried from
    window to window; None when the time cap ran out before it began."""
    config, data = run.config, run.data
    for group in run.optimizer.param_groups:
        group["lr"] = state.lr
    run.model.train()
    hidden = run.model.init_hidden(data.shape[1])
    tally = _Tally(run, state)
    rows, bptt = data.shape[0], config.bptt
    for done, i in enumerate(range(0, rows - 1, bptt), 1):
        # A model has at least one window and one validation behind it, whatever the budget.
        if run.past_deadline() and (tally.tokens or state.history):
            run.stopped = "time"
            break
        seq = min(bptt, rows - 1 - i)
        x, y = data[i : i + seq], data[i + 1 : i + 1 + seq]
        loss, hidden = train_step(
            run.model, run.optimizer, run.head, x, y, hidden, config.clip, run.bf16, run.forward
        )
        state.step += 1
        tally.add(state.step, loss, y.numel())
        tally.report(done)
    return tally.end() if tally.tokens else None


def end_epoch(run: Run, state: TrainState, trained: Trained, valid_stream: np.ndarray) -> bool:
    """Validate, keep the best weights, apply the learning-rate schedule and early stopping;
    whether validation improved."""
    config, epoch = run.config, state.epoch + 1
    valid_loss = run.group.first(
        lambda: float(-score_stream(run.model, valid_stream, columns=config.eval_columns).mean())
    )
    if not valid_loss <= run.diverged:
        raise _diverged(
            epoch, state.step, state.lr, "validation loss", valid_loss, run.good_checkpoint
        )
    state.history.append(
        dict(
            epoch=epoch,
            train_ppl=trained.train_ppl,
            valid_ppl=_ppl(valid_loss),
            tokens_per_second=trained.tokens_per_second,
            lr=state.lr,
            epoch_s=trained.seconds,
        )
    )
    state.epoch = epoch
    improved = valid_loss < state.best_valid_loss
    if improved:
        state.best_valid_loss, state.bad_epochs = valid_loss, 0
        run.keep_best()
    else:
        state.bad_epochs += 1
    if (config.schedule == "plateau" and not improved) or (
        config.schedule == "fixed" and epoch >= config.decay_after
    ):
        state.lr *= config.lr_decay
    if config.patience and state.bad_epochs >= config.patience:
        run.stopped = "early_stopping"
    return improved


def _rng_state(cuda: bool) -> dict[str, torch.Tensor | None]:
    return dict(torch=torch.get_rng_state(), cuda=torch.cuda.get_rng_state() if cuda else None)


def save(run: Run, state: TrainState, improved: bool) -> None:
    """``last.pt`` after every epoch, and ``best.pt`` when validation improved; written by rank 0,
    with every rank's random generators when there are several (``rng["ranks"]``)."""
    if run.out_dir is None:
        return
    state.elapsed_s = time.monotonic() - run.origin
    rng = run.group.gather(_rng_state(run.data.device.type == "cuda"))
    if run.group.rank:
        return
    checkpoint = (
        run.identity
        | asdict(state)
        | dict(
            weights=run.model.state_dict(),
            optimizer=run.optimizer.state_dict(),
            rng=rng[0] | (dict(ranks=rng) if len(rng) > 1 else {}),
        )
    )
    save_checkpoint(checkpoint, run.out_dir / "last.pt")
    run.good_checkpoint = run.out_dir / "last.pt"
    if improved:
        save_checkpoint(checkpoint, run.out_dir / "best.pt")


def restore(run: Run, stored: dict[str, Any]) -> TrainState:
    """The weights, optimizer and random generators of a checkpoint read back into ``run``, and
    its training state; the best weights are ``best.pt``'s."""
    device = run.data.device
    run.model.load_state_dict(stored["weights"])
    run.optimizer.load_state_dict(stored["optimizer"])
    rng = stored["rng"]["ranks"][run.group.rank] if run.group.size > 1 else stored["rng"]
    torch.set_rng_state(rng["torch"].cpu())
    if device.type == "cuda" and rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"].cpu())
    folder = Path(run.out_dir or ".")  # where the checkpoint was read
    if (folder / "best.pt").exists():
        run.best = read_checkpoint(folder / "best.pt", device)["weights"]
    run.good_checkpoint = folder / "last.pt"
    return TrainState(**{f.name: stored[f.name] for f in fields(TrainState)})


def _resumable(
    out_dir: Path | None,
    model: str,
    config: TrainConfig,
    vocab: tuple[str, int],
    device: torch.device,
) -> tuple[dict[str, Any], TrainConfig]:
    """``out_dir/last.pt`` and the config to go on with: the stored one, with this call's
    budget (``BUDGET_FIELDS``); anything else that differs is refused."""
    if out_dir is None:
        raise SeqlmError("resume needs the output folder that holds last.pt")
    path = out_dir / "last.pt"
    stored = read_checkpoint(path, device)
    if (stored["vocab_digest"], stored["vocab_size"]) != vocab:
        raise SeqlmError(
            f"{path}: trained on vocabulary {stored['vocab_digest']!r} ({stored['vocab_size']} "
            f"types); the data's is {vocab[0]!r} ({vocab[1]} types)"
        )
    # A setting the checkpoint predates is its default.
    then = {"model": stored["model"], **asdict(TrainConfig(**stored["config"]))}
    now = {"model": model, **asdict(config)}
    changed = [k for k in now if k not in BUDGET_FIELDS and now[k] != then[k]]
    if changed:
        raise SeqlmError(
            f"{path}: cannot resume with a different {', '.join(changed)} "
            f"(only {', '.join(BUDGET_FIELDS)} may change)"
        )
    budget = {k: getattr(config, k) for k in BUDGET_FIELDS}
    return stored, replace(TrainConfig(**stored["config"]), **budget)


def train(
    train_stream: np.ndarray,
    valid_stream: np.ndarray,
    vocab_size: int,
    model: str,
    config: TrainConfig = TrainConfig(),
    out_dir: Path | None = None,
    *,
    vocab_digest: str = "",
    resume: bool = False,
    callbacks: Callbacks = Callbacks(),
    progress_every_s: float = 0.5,
    extra: dict[str, str] | None = None,
) -> TrainResult:
    """Train a ``model`` (``rnn_tanh``, ``lstm`` or ``gru``) on ``train_stream``, validate on
    ``valid_stream``, checkpoint into ``out_dir``.

    ``resume`` continues from ``out_dir/last.pt`` exactly where it stopped (same weights as an
    uninterrupted run); ``vocab_digest`` must then match the checkpoint's. ``on_progress`` is called
    at most every ``progress_every_s`` seconds. A time budget ends the epoch early; that epoch
    then counts.
    """
    check_settings({"model": model})
    config = TrainConfig.of(config)  # the pipeline's config also lists its models
    device = resolve_device(config.device)
    stored = None
    if resume:
        stored, config = _resumable(out_dir, model, config, (vocab_digest, vocab_size), device)
    _check_data(train_stream, config, vocab_size, "train")
    _check_data(valid_stream, replace(config, bptt=1, batch_size=1, nproc=1), vocab_size, "valid")
    job = Job(
        *(train_stream, valid_stream, vocab_size, model, config, out_dir, resume),
        identity=dict(vocab_digest=vocab_digest, vocab_size=vocab_size, extra=extra or {}),
        progress_every_s=progress_every_s,
    )
    if config.nproc > 1:
        from seqlm.rnn.distributed import launch

        return launch(job, callbacks)
    return fit(job, stored, callbacks, device)


@dataclass(frozen=True)
class Job:
    """One model's training as ``train`` checked it: what each of its processes runs."""

    train_stream: np.ndarray
    valid_stream: np.ndarray
    vocab_size: int
    model: str
    config: TrainConfig
    out_dir: Path | None
    resume: bool
    identity: dict[str, Any]  # the vocabulary and extra strings every checkpoint records
    progress_every_s: float


def fit(
    job: Job,
    stored: dict[str, Any] | None,
    callbacks: Callbacks,
    device: torch.device,
    group: Group | None = None,
) -> TrainResult:
    """The training loop of one process (of ``group``), from ``stored`` when resuming."""
    run = _start(job, device, group or Group())
    run.callbacks = callbacks
    state = restore(run, stored) if stored else TrainState(lr=job.config.lr)
    run.origin = run.started - state.elapsed_s
    _log_start(run, len(job.train_stream))
    while state.epoch < job.config.epochs and run.stopped == "epochs":
        trained = run_epoch(run, state)
        if trained is None:  # the time cap ran out before this epoch began
            break
        improved = end_epoch(run, state, trained, job.valid_stream)
        save(run, state, improved)
        _log_epoch(state.history[-1])
        if callbacks.on_epoch is not None:
            callbacks.on_epoch(state.history[-1])
    return _finish(run, state)


def _start(job: Job, device: torch.device, group: Group) -> Run:
    """A freshly initialised network (seeded), its optimizer and the training columns."""
    config = job.config
    if device.type == "cpu":
        _prepare_cpu(group.size)
    torch.manual_seed(config.seed)
    net = RNNLM(job.model, config, job.vocab_size).to(device)
    group.own_rng(config.seed)
    run = Run(
        model=net,
        config=config,
        optimizer=_make_optimizer(net, config),
        data=group.columns(batchify(job.train_stream, config.batch_size, device)),
        bf16=use_bf16(config.precision, device),
        identity=dict(model=job.model, config=asdict(config)) | job.identity,
        diverged=DIVERGED_FACTOR * math.log(job.vocab_size),
        group=group,
        forward=group.wrap(net),
        out_dir=job.out_dir,
        progress_every_s=job.progress_every_s,
    )
    run.keep_best()
    return run


def _log_start(run: Run, tokens: int) -> None:
    c, n = run.config, run.group.size
    log.info(
        "training %s %d×%d on %s (%s)%s, %d tokens, %d windows of %d × %d per epoch",
        *(run.model.kind, c.nlayers, c.nhid, run.data.device, "bf16" if run.bf16 else "fp32"),
        f" in {n} processes of {c.batch_size // n} columns" if n > 1 else "",
        *(tokens, math.ceil((len(run.data) - 1) / c.bptt), c.bptt, c.batch_size),
    )


def _log_epoch(m: dict[str, float]) -> None:
    log.info(
        "epoch %d: train ppl %.2f, valid ppl %.2f, %.0f tokens/s, lr %.4g, %.0f s",
        *(m["epoch"], m["train_ppl"], m["valid_ppl"], m["tokens_per_second"], m["lr"]),
        m["epoch_s"],
    )


def _finish(run: Run, state: TrainState) -> TrainResult:
    """The best weights back in the model, and how training went."""
    config = run.config
    if run.stopped == "time":
        # The one budget that depends on the machine's speed: say so where it happened.
        log.warning(
            "%s: cut short by the time cap (%g min) at epoch %d of %d: its figures depend on "
            "the machine's speed",
            *(run.model.kind, config.max_minutes, state.epoch, config.epochs),
        )
    elif run.stopped != "epochs":
        log.info("stopped after epoch %d: %s", state.epoch, run.stopped.replace("_", " "))
    run.model.load_state_dict(run.best)
    best = run.out_dir / "best.pt" if run.out_dir is not None else None
    return TrainResult(
        model=run.model.eval(),
        config=config,
        history=state.history,
        best_valid_loss=state.best_valid_loss,
        epochs=state.epoch,
        steps=state.step,
        tokens_per_second=run.train_tokens / run.train_s if run.train_s else 0.0,
        device=str(run.data.device),
        precision="bf16" if run.bf16 else "fp32",
        stopped=run.stopped,
        wall_s=time.monotonic() - run.started,
        checkpoint=best if best is not None and best.exists() else None,
    )
