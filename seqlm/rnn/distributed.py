"""Training in ``nproc`` processes under DistributedDataParallel.

``launch`` starts them with PyTorch's elastic launcher (in-process ``elastic_launch``, a c10d
rendezvous on 127.0.0.1 at a free port): one per GPU with NCCL on CUDA, gloo on the CPU (each
with cores / nproc threads). Rank ``r`` trains columns ``[r·B/N, (r+1)·B/N)`` of ``batchify``'s
``B``, the hidden state of those columns alone; DDP averages the gradients, which, with equal
slices, are the gradients of the mean loss over the whole batch: one process's learning curve.
Rank 0 validates and writes the checkpoints (with every rank's random generators).

The launching process stays the one that reports: rank 0's log records, progress and epochs come
back on a queue to its logging and callbacks, and its result (the best weights) as the return
value. A rank that fails ends them all; its error line becomes the launcher's ``SeqlmError``.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from seqlm.errors import SeqlmError
from seqlm.net import free_port
from seqlm.rnn.checkpoint import read_checkpoint
from seqlm.rnn.model import RNNLM
from seqlm.rnn.training import Callbacks, Group, Job, TrainResult, fit

log = logging.getLogger("seqlm.rnn")


class Ranks(Group):
    """This process's place among DDP's processes (the default process group)."""

    def __init__(self, device: torch.device) -> None:
        self.rank, self.size, self.device = dist.get_rank(), dist.get_world_size(), device

    def wrap(self, model: RNNLM) -> nn.Module:
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)  # the model has no buffers

    def columns(self, data: torch.Tensor) -> torch.Tensor:
        width = data.shape[1] // self.size
        return data[:, self.rank * width : (self.rank + 1) * width].contiguous()

    def own_rng(self, seed: int) -> None:
        # Rank 0 goes on with the seed's stream; the others draw from streams of their own.
        if self.rank:
            state = np.random.SeedSequence([seed, self.rank]).generate_state(1, np.uint64)
            torch.manual_seed(int(state[0]))

    def total(self, value: torch.Tensor) -> torch.Tensor:
        value = value.clone()
        dist.all_reduce(value)
        return value

    def any(self, flag: bool) -> bool:
        return bool(self.total(torch.tensor(float(flag), device=self.device)) > 0)

    def first(self, compute: Callable[[], float]) -> float:
        value = torch.zeros((), dtype=torch.float64, device=self.device)
        if self.rank == 0:
            with _all_cores(self.device):  # the others wait meanwhile
                value.fill_(compute())
        dist.broadcast(value, 0)
        return float(value)

    def gather(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values


@contextlib.contextmanager
def _all_cores(device: torch.device) -> Iterator[None]:
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_processes(nproc: int, device: torch.device, spell: Callable[[str], str] = str) -> None:
    """On CUDA, one process per GPU: refuse more processes than GPUs before any starts."""
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and nproc > gpus:
        raise SeqlmError(f"{spell('nproc')} {nproc} is more than the {gpus} CUDA GPUs torch sees")


def launch(job: Job, callbacks: Callbacks) -> TrainResult:
    """Train ``job`` in ``job.config.nproc`` processes; rank 0's result, its weights on this
    process's device."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from seqlm.rnn.training import resolve_device

    device = resolve_device(job.config.device)
    check_processes(job.config.nproc, device)
    if multiprocessing.current_process().daemon:  # multiprocessing forbids it children
        raise SeqlmError(
            f"nproc {job.config.nproc}: this process is a daemon (a Dask worker's, say) and "
            "cannot start the training processes; train here with nproc 1, or from a process "
            "that is no daemon (Dask: distributed.worker.daemon = false)"
        )
    events = multiprocessing.get_context("spawn").Queue()
    relay = _Relay(events, callbacks)
    relay.start()
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=job.config.nproc,
        run_id=f"seqlm-{os.getpid()}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{free_port()}",
        max_restarts=0,  # a failed rank fails the run (--resume goes on from its checkpoint)
        monitor_interval=0.1,
        start_method="spawn",
    )
    wants = (callbacks.on_progress is not None, callbacks.on_epoch is not None)
    level = logging.getLogger("seqlm").getEffectiveLevel()
    failed = None
    try:
        with _launcher_scope():
            returned = elastic_launch(config, _rank_main)(job, events, level, wants)
    except ChildFailedError as e:
        failed = e
    except SignalException as e:  # the ranks were stopped with the launcher: as one process
        if e.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise SeqlmError(f"training stopped by {signal.Signals(e.sigval).name}") from None
    finally:
        events.put(None)
        relay.join()
    if failed is not None:
        rank, failure = failed.get_first_failure()
        raise SeqlmError(relay.error or f"training process {rank} failed: {failure.message}")
    return _result(returned[0], job, device)


@contextlib.contextmanager
def _launcher_scope() -> Iterator[None]:
    """Keep the launcher's own lines (its settings, a failed rank's traceback) off the terminal,
    a failure being one line, the failed rank's own; and give back the signal handlers it
    installs in the main thread (it forwards SIGINT and SIGTERM to the ranks while they run)."""
    prefixes = ("torch.distributed.elastic", "torch.multiprocessing")
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]
    levels = {logger: logger.level for logger in loggers if logger.name.startswith(prefixes)}
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in _SIGNALS} if main else {}
    for logger in levels:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)
        for number, handler in handlers.items():
            signal.signal(number, handler)


_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


class _Relay(threading.Thread):
    """Hands what rank 0 reports to this process's logging and callbacks as it comes, and keeps
    the first error line the ranks send: bad input or divergence before a crash (such as a rank
    whose peer has gone)."""

    def __init__(self, events: Any, callbacks: Callbacks) -> None:
        super().__init__(daemon=True)
        self.events, self.callbacks = events, callbacks
        self.errors: dict[str, str] = {}

    @property
    def error(self) -> str:
        return self.errors.get("error") or self.errors.get("crash", "")

    def run(self) -> None:
        while (event := self.events.get()) is not None:
            kind, value = event
            if kind == "log":
                logging.getLogger(value.name).handle(value)
            elif kind in ("error", "crash"):
                self.errors.setdefault(kind, value)
            elif (call := getattr(self.callbacks, f"on_{kind}")) is not None:
                call(value)


class _ToLauncher(logging.handlers.QueueHandler):
    def enqueue(self, record: logging.LogRecord) -> None:
        self.queue.put(("log", record))


def _rank_main(
    job: Job, events: Any, level: int, wants: tuple[bool, bool]
) -> dict[str, Any] | None:
    """One rank's training, started by the elastic agent (which sets RANK, WORLD_SIZE,
    LOCAL_RANK and the rendezvous's address in the environment)."""
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    seqlm_log = logging.getLogger("seqlm")
    seqlm_log.setLevel(level if rank == 0 else logging.CRITICAL + 1)  # rank 0 speaks for all
    seqlm_log.addHandler(_ToLauncher(events))
    seqlm_log.propagate = False
    try:
        device = _rank_device(job.config.device, local)
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: no name lookup
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        callbacks = _reporting(events, wants) if rank == 0 else Callbacks()
        stored = read_checkpoint(job.out_dir / "last.pt", device) if job.resume else None
        result = fit(job, stored, callbacks, device, Ranks(device))
        return _summary(result) if rank == 0 else None
    except SeqlmError as e:
        events.put(("error", str(e)))
        raise SystemExit(1) from None
    except Exception as e:
        line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        events.put(("crash", f"training process {rank} failed: {type(e).__name__}: {line}"))
        seqlm_log.debug("training process %d failed", rank, exc_info=True)
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _reporting(events: Any, wants: tuple[bool, bool]) -> Callbacks:
    """Rank 0's callbacks: each figure sent to the launcher, for the callbacks it was given."""

    def send(kind: str) -> Callable[[dict[str, float]], None]:
        return lambda figures: events.put((kind, figures))

    progress, epoch = wants
    return Callbacks(
        on_epoch=send("epoch") if epoch else None,
        on_progress=send("progress") if progress else None,
    )


def _rank_device(name: str, local_rank: int) -> torch.device:
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _summary(result: TrainResult) -> dict[str, Any]:
    """Rank 0's result, picklable: its fields, the model as CPU weights."""
    summary = {f.name: getattr(result, f.name) for f in fields(result) if f.name != "model"}
    return summary | {"weights": {k: v.cpu() for k, v in result.model.state_dict().items()}}


def _result(summary: dict[str, Any], job: Job, device: torch.device) -> TrainResult:
    model = RNNLM(job.model, job.config, job.vocab_size)
    model.load_state_dict(summary.pop("weights"))
    return TrainResult(model=model.to(device).eval(), **summary)
