"""Training with truncated back-propagation through time (the word-language-model recipe).

The training stream (a ``</s>`` first, so that its first token is a target too) is cut into
``batch_size`` columns that live on the device. Each step reads a window of ``bptt`` rows, carries
the hidden state in from the previous window but detaches it, clips the gradient norm and updates.
After every epoch: the validation perplexity, the learning-rate schedule, a checkpoint (``last.pt``;
``best.pt`` when validation improved), the ``on_epoch`` callback, and early stopping.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqlm.errors import SeqlmError
from seqlm.rnn.checkpoint import read_checkpoint, save_checkpoint
from seqlm.rnn.config import BUDGET_FIELDS, TrainConfig
from seqlm.rnn.head import SoftmaxHead
from seqlm.rnn.model import RNNLM, Hidden, detach
from seqlm.rnn.score import score_stream
from seqlm.vocab import EOS_ID

log = logging.getLogger("seqlm.rnn")


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


def _prepare_cpu() -> None:
    """Use every core we may run on, and keep freed memory in glibc's heap: otherwise the large
    logits and gradient blocks are unmapped and page-faulted back in at every step."""
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold, m_mmap_max = -1, -2, -3, -4
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, (1 << 31) - 1)
        libc.mallopt(m_top_pad, 64 << 20)


def batchify(stream: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
    """``(rows, batch_size)`` ids on ``device``: ``</s>`` + stream, cut into contiguous columns
    (the tail that fills no row is dropped). Row ``i`` is the input of target row ``i + 1``."""
    data = torch.from_numpy(np.concatenate([[EOS_ID], stream]).astype(np.int64))
    rows = len(data) // batch_size
    return data[: rows * batch_size].view(batch_size, rows).t().contiguous().to(device)


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
) -> tuple[torch.Tensor, Hidden]:
    """One truncated-BPTT update on the window ``x`` → ``y``: the state comes in detached, the
    gradient norm is clipped. Returns the window's mean loss (a device scalar) and the new state."""
    hidden = detach(hidden)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out, hidden = model(x, hidden)
    dtype = torch.bfloat16 if bf16 else torch.float32
    loss = head(out.reshape(-1, out.shape[-1]), model.decoder, y.reshape(-1), dtype)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.detach(), hidden


def _resume_config(state: dict[str, Any], config: TrainConfig, path: Path) -> TrainConfig:
    stored = TrainConfig.from_dict(state["config"])
    changed = [
        k
        for k in asdict(config)
        if k not in BUDGET_FIELDS and asdict(config)[k] != asdict(stored)[k]
    ]
    if changed:
        raise SeqlmError(
            f"{path}: cannot resume with a different {', '.join(changed)} "
            f"(only {', '.join(BUDGET_FIELDS)} may change)"
        )
    return replace(stored, **{k: getattr(config, k) for k in BUDGET_FIELDS})


def train(
    train_stream: np.ndarray,
    valid_stream: np.ndarray,
    vocab_size: int,
    config: TrainConfig = TrainConfig(),
    out_dir: Path | None = None,
    *,
    vocab_key: str = "",
    resume: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_progress: Callable[[dict[str, float]], None] | None = None,
    progress_every_s: float = 0.5,
    extra: dict[str, str] | None = None,
) -> TrainResult:
    """Train a model on ``train_stream``, validate on ``valid_stream``, checkpoint into ``out_dir``.

    ``resume`` continues from ``out_dir/last.pt`` exactly where it stopped (same weights as an
    uninterrupted run); ``vocab_key`` must then match the checkpoint's. ``on_epoch`` receives
    ``epoch, train_ppl, valid_ppl, tokens_per_second, lr`` after each epoch; ``on_progress``
    receives ``epoch, windows_done, windows, train_ppl, tokens_per_second`` at most every
    ``progress_every_s`` seconds. A time budget ends the epoch early; that epoch then counts.
    """
    started = time.monotonic()
    device = resolve_device(config.device)
    last_path = out_dir / "last.pt" if out_dir else None
    best_path = out_dir / "best.pt" if out_dir else None
    state: dict[str, Any] = {}
    if resume:
        if last_path is None:
            raise SeqlmError("resume needs the output folder that holds last.pt")
        state = read_checkpoint(last_path, device)
        if state["vocab_key"] != vocab_key or state["vocab_size"] != vocab_size:
            raise SeqlmError(
                f"{last_path}: trained on vocabulary {state['vocab_key']!r} "
                f"({state['vocab_size']} types); the data's is {vocab_key!r} ({vocab_size} types)"
            )
        config = _resume_config(state, config, last_path)
    _check_data(train_stream, config, vocab_size, "train")
    _check_data(valid_stream, replace(config, bptt=1, batch_size=1), vocab_size, "valid")
    if device.type == "cpu":
        _prepare_cpu()
    bf16 = use_bf16(config.precision, device)

    torch.manual_seed(config.seed)
    model = RNNLM(config.model, vocab_size).to(device)
    optimizer = _make_optimizer(model, config)
    lr, best_loss, bad_epochs, epoch, step, elapsed_before = config.lr, math.inf, 0, 0, 0, 0.0
    history: list[dict[str, float]] = []
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if resume:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr, best_loss, bad_epochs = state["lr"], state["best_valid_loss"], state["bad_epochs"]
        epoch, step, elapsed_before = state["epoch"], state["step"], state["elapsed_s"]
        history = state["history"]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if device.type == "cuda" and state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu())
        if best_path is not None and best_path.exists():
            best_state = read_checkpoint(best_path, device)["model"]

    data = batchify(train_stream, config.batch_size, device)
    rows, batch_size, bptt = data.shape[0], config.batch_size, config.bptt
    windows = math.ceil((rows - 1) / bptt)
    budget_s = config.max_minutes * 60 - elapsed_before if config.max_minutes else math.inf
    head = SoftmaxHead()
    stopped, train_s, train_tokens = "epochs", 0.0, 0
    diverged = DIVERGED_FACTOR * math.log(vocab_size)
    # The checkpoint a divergence points back to: this run's (or the one it resumed from).
    good_checkpoint = last_path if resume else None
    log.info(
        "training %s %d×%d on %s (%s), %d tokens, %d windows of %d × %d per epoch",
        config.model.model, config.model.nlayers, config.model.nhid, device,
        "bf16" if bf16 else "fp32", len(train_stream), windows, bptt, batch_size,
    )  # fmt: skip

    while epoch < config.epochs and stopped == "epochs":
        epoch += 1
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        hidden = model.init_hidden(batch_size)
        loss_sum = torch.zeros((), device=device)
        bad_step = torch.full((), -1, dtype=torch.long, device=device)
        bad_loss = torch.zeros((), device=device)
        epoch_start = last_report = last_log = time.monotonic()
        tokens = 0
        for done, i in enumerate(range(0, rows - 1, bptt), 1):
            # A model has at least one window and one validation behind it, whatever the budget.
            if time.monotonic() - started > budget_s and (tokens or history):
                stopped = "time"
                break
            seq = min(bptt, rows - 1 - i)
            y = data[i + 1 : i + 1 + seq]
            loss, hidden = train_step(model, optimizer, head, data[i : i + seq], y, hidden,
                                      config.clip, bf16)  # fmt: skip
            step += 1
            tokens += y.numel()
            # Kept on the device: no host sync per step, yet the first bad step is known
            # (NaN fails the comparison too).
            loss_sum += loss * y.numel()
            first_bad = (bad_step < 0) & ~(loss <= diverged)
            bad_step = torch.where(first_bad, step, bad_step)
            bad_loss = torch.where(first_bad, loss.to(bad_loss.dtype), bad_loss)
            now = time.monotonic()
            report = on_progress is not None and now - last_report >= progress_every_s
            if report or now - last_log >= config.log_every_s:
                if int(bad_step) >= 0:  # synced here anyway
                    raise _diverged(epoch, int(bad_step), lr, "loss", float(bad_loss),
                                    good_checkpoint)  # fmt: skip
                ppl = _ppl(loss_sum.item() / tokens)
                tps = tokens / (now - epoch_start)
                if report:
                    last_report = now
                    on_progress(dict(epoch=epoch, windows_done=done, windows=windows,
                                     train_ppl=ppl, tokens_per_second=tps))  # fmt: skip
                if now - last_log >= config.log_every_s:
                    last_log = now
                    log.info("epoch %d %d/%d windows, train ppl %.2f, %.0f tokens/s",
                             epoch, done, windows, ppl, tps)  # fmt: skip
        if tokens == 0:  # the budget ran out before this epoch began
            epoch -= 1
            break
        loss_total = loss_sum.item()  # syncs the device, so the clock below is true
        epoch_s = time.monotonic() - epoch_start
        train_s, train_tokens = train_s + epoch_s, train_tokens + tokens
        if int(bad_step) >= 0:
            raise _diverged(epoch, int(bad_step), lr, "loss", float(bad_loss), good_checkpoint)
        if on_progress is not None:
            on_progress(dict(epoch=epoch, windows_done=windows, windows=windows,
                             train_ppl=_ppl(loss_total / tokens),
                             tokens_per_second=tokens / epoch_s))  # fmt: skip
        valid_lp = score_stream(model, valid_stream, columns=config.eval_columns)
        valid_loss = float(-valid_lp.mean())
        metrics = dict(
            epoch=epoch,
            train_ppl=_ppl(loss_total / tokens),
            valid_ppl=_ppl(valid_loss),
            tokens_per_second=tokens / epoch_s,
            lr=lr,
            epoch_s=epoch_s,
        )
        if not valid_loss <= diverged:
            raise _diverged(epoch, step, lr, "validation loss", valid_loss, good_checkpoint)
        improved = valid_loss < best_loss
        if improved:
            best_loss, bad_epochs = valid_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        if (config.schedule == "plateau" and not improved) or (
            config.schedule == "fixed" and epoch >= config.decay_after
        ):
            lr *= config.lr_decay
        history.append(metrics)
        if config.patience and bad_epochs >= config.patience:
            stopped = "early_stopping"
        if last_path is not None and best_path is not None:
            checkpoint = dict(
                config=asdict(config), vocab_key=vocab_key, vocab_size=vocab_size,
                model=model.state_dict(), optimizer=optimizer.state_dict(), epoch=epoch,
                step=step, lr=lr, best_valid_loss=best_loss, bad_epochs=bad_epochs,
                elapsed_s=elapsed_before + time.monotonic() - started, history=history,
                rng=dict(torch=torch.get_rng_state(),
                         cuda=torch.cuda.get_rng_state() if device.type == "cuda" else None),
                extra=extra or {},
            )  # fmt: skip
            save_checkpoint(checkpoint, last_path)
            good_checkpoint = last_path
            if improved:
                save_checkpoint(checkpoint, best_path)
        log.info(
            "epoch %d: train ppl %.2f, valid ppl %.2f, %.0f tokens/s, lr %.4g, %.0f s",
            epoch, metrics["train_ppl"], metrics["valid_ppl"], metrics["tokens_per_second"],
            metrics["lr"], epoch_s,
        )  # fmt: skip
        if on_epoch is not None:
            on_epoch(metrics)

    if stopped == "time":
        # The one budget that depends on the machine's speed: say so where it happened.
        log.warning(
            "%s: cut short by the time cap (%g min) at epoch %d of %d: its figures depend on "
            "the machine's speed", config.model.model, config.max_minutes, epoch, config.epochs,
        )  # fmt: skip
    elif stopped != "epochs":
        log.info("stopped after epoch %d: %s", epoch, stopped.replace("_", " "))
    model.load_state_dict(best_state)
    return TrainResult(
        model=model.eval(),
        config=config,
        history=history,
        best_valid_loss=best_loss,
        epochs=epoch,
        steps=step,
        tokens_per_second=train_tokens / train_s if train_s else 0.0,
        device=str(device),
        precision="bf16" if bf16 else "fp32",
        stopped=stopped,
        wall_s=time.monotonic() - started,
        checkpoint=best_path if best_path is not None and best_path.exists() else None,
    )
