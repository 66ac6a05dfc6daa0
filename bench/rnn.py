"""Recurrent-model benchmarks: training throughput against the machine's limit and against the
PyTorch word_language_model example's step, and PTB quality runs.

    python bench/rnn.py throughput [--device cpu|cuda] [--precision auto|fp32|bf16] [--rounds 3]
    python bench/rnn.py quality lstm-small --data ../shared/data/ptb [--out DIR]
    python bench/rnn.py encode --data ../shared/data/ptb --out ptb.npz   # streams for machines
    python bench/rnn.py quality lstm-medium --streams ptb.npz            #   without polars
    python bench/rnn.py ddp [--preset lstm-small] [--tokens 100000] [--nproc 2] [--rounds 2]

"Fraction of the limit" = training FLOPs per token (3 × the forward matmul FLOPs) × tokens/s ÷ the
1024³ fp32 matmul rate measured in the same run. Rounds interleave ours, the peer and the probe;
each figure is the best of its rounds (on a shared machine, others only ever slow a run down).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqlm.evaluate import perplexity
from seqlm.rnn import RNNLM, ModelConfig, TrainConfig, resolve_device, score_stream, train
from seqlm.rnn.head import SoftmaxHead
from seqlm.rnn.model import detach
from seqlm.rnn.training import _prepare_cpu, train_step, use_bf16

PTB_VOCAB = 10_002  # PTB's 10k types (its own <unk> included) + <s> and </s>
# Zaremba et al. 2014's settings, written in full here (the library's defaults are the
# pipeline's small models). "small": 2 × 200 units, no dropout, weights in ±0.1, SGD at lr 1
# halved after every epoch from the 4th, 13 epochs, gradient norm clipped at 5; "medium":
# 2 × 650 units, dropout 0.5, weights in ±0.05, lr 1 divided by 1.2 from the 6th epoch, 39
# epochs. Our loss is the per-token mean (theirs sums over the bptt steps), so their lr 1 and
# clip 5 are lr 35 and clip 5/35 here (see TrainConfig).
ZAREMBA_SMALL = TrainConfig(
    emsize=200,
    nhid=200,
    nlayers=2,
    dropout=0.0,
    init_range=0.1,
    bptt=35,
    batch_size=20,
    optimizer="sgd",
    lr=35.0,
    clip=5 / 35,
    schedule="fixed",
    lr_decay=0.5,
    decay_after=4,
    patience=0,
    epochs=13,
    precision="auto",
)
ZAREMBA_MEDIUM = replace(
    ZAREMBA_SMALL,
    emsize=650,
    nhid=650,
    dropout=0.5,
    init_range=0.05,
    lr_decay=1 / 1.2,
    decay_after=6,
    epochs=39,
)
# Each preset: the architecture and its settings. The GRU on the small LSTM's recipe, and the
# tanh RNN at a rate it survives.
PRESETS: dict[str, tuple[str, TrainConfig]] = {
    "lstm-small": ("lstm", ZAREMBA_SMALL),
    "gru-small": ("gru", ZAREMBA_SMALL),
    "rnn_tanh-small": (
        "rnn_tanh",
        replace(
            ZAREMBA_SMALL, dropout=0.2, lr=5.0, clip=0.25, schedule="plateau", epochs=20, patience=3
        ),
    ),
    "lstm-medium": ("lstm", ZAREMBA_MEDIUM),
}
# The throughput benchmark's networks: the presets' shapes (dropout as the presets train).
CONFIGS: dict[str, tuple[str, ModelConfig]] = dict(PRESETS)


class Peer(nn.Module):
    """pytorch/examples word_language_model's RNNModel (untied), as written there."""

    def __init__(self, kind: str, ntoken: int, ninp: int, nhid: int, nlayers: int, p: float):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(p)
        self.encoder = nn.Embedding(ntoken, ninp)
        layer = {"lstm": nn.LSTM, "gru": nn.GRU}.get(kind)
        self.rnn = (
            layer(ninp, nhid, nlayers, dropout=p)
            if layer
            else nn.RNN(ninp, nhid, nlayers, nonlinearity="tanh", dropout=p)
        )
        self.decoder = nn.Linear(nhid, ntoken)
        self.kind, self.nhid, self.nlayers = kind, nhid, nlayers
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, x: torch.Tensor, hidden):
        emb = self.drop(self.encoder(x))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz: int):
        w = next(self.parameters())
        h = w.new_zeros(self.nlayers, bsz, self.nhid)
        return (h, w.new_zeros(self.nlayers, bsz, self.nhid)) if self.kind == "lstm" else h


def peer_step(model: Peer, x, y, hidden, lr: float, clip: float):
    """The example's train() loop body, verbatim in substance (it reads loss.item() every step)."""
    hidden = detach(hidden)
    model.zero_grad()
    output, hidden = model(x, hidden)
    loss = nn.NLLLoss()(output, y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    for p in model.parameters():
        p.data.add_(p.grad, alpha=-lr)
    return loss.item(), hidden


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device: torch.device, seconds: float = 1.0) -> float:
    """fp32 FLOP/s of a 1024³ matrix product (TF32 off, so it is fp32 on a GPU too)."""
    a = torch.randn(1024, 1024, device=device)
    b = torch.randn(1024, 1024, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10 if device.type == "cuda" else 1):
            a @ b
            n += 1
        sync(device)
    return 2 * 1024**3 * n / (time.perf_counter() - start)


def tokens_per_second(step, rows: int, bptt: int, batch: int, device, seconds: float) -> float:
    """Run ``step(i)`` over windows of a synthetic stream; tokens per second after a warm-up."""
    for i in range(3):
        step(i * bptt % (rows - bptt - 1))
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(n * bptt % (rows - bptt - 1))
        n += 1
        if device.type == "cuda" and n % 50 == 0:
            sync(device)
    sync(device)
    return n * bptt * batch / (time.perf_counter() - start)


def throughput(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    if device.type == "cpu":
        _prepare_cpu()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False  # the limit is fp32: so is the measured step
    bf16 = use_bf16(args.precision, device)
    names = args.configs.split(",")
    results: dict[str, dict[str, list[float]]] = {n: {"ours": [], "peer": []} for n in names}
    limits: list[float] = []
    g = torch.Generator().manual_seed(0)
    rows = 2000
    data = torch.randint(0, PTB_VOCAB, (rows, args.batch_size), generator=g).to(device)
    bptt, clip = args.bptt, 0.25
    for r in range(args.rounds):
        limits.append(matmul_rate(device))
        for name in names:
            kind, cfg = CONFIGS[name]
            torch.manual_seed(0)
            model = RNNLM(kind, cfg, PTB_VOCAB).to(device)
            opt = torch.optim.SGD(model.parameters(), lr=1.0)
            state = {"h": model.init_hidden(args.batch_size)}

            head = SoftmaxHead()

            def ours(i: int, model=model, opt=opt, head=head, state=state) -> None:
                x, y = data[i : i + bptt], data[i + 1 : i + 1 + bptt]
                _, state["h"] = train_step(model, opt, head, x, y, state["h"], clip, bf16)

            peer = Peer(kind, PTB_VOCAB, cfg.emsize, cfg.nhid, cfg.nlayers, cfg.dropout)
            peer = peer.to(device)
            pstate = {"h": peer.init_hidden(args.batch_size)}

            def theirs(i: int, peer=peer, pstate=pstate) -> None:
                _, pstate["h"] = peer_step(
                    peer, data[i : i + bptt], data[i + 1 : i + 1 + bptt], pstate["h"], 1.0, clip
                )

            results[name]["ours"].append(
                tokens_per_second(ours, rows, bptt, args.batch_size, device, args.seconds)
            )
            results[name]["peer"].append(
                tokens_per_second(theirs, rows, bptt, args.batch_size, device, args.seconds)
            )
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    limit = max(limits)
    print(
        f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
        f"bptt {bptt}, {'bf16 autocast' if bf16 else 'fp32'}; "
        f"1024³ fp32 matmul {limit / 1e9:.0f} GFLOP/s (rounds: "
        f"{', '.join(f'{x / 1e9:.0f}' for x in limits)})"
    )
    print(
        f"{'config':16} {'ours tok/s':>11} {'frac':>6} {'peer tok/s':>11} {'frac':>6} {'ratio':>6}"
    )
    summary = {}
    for name in names:
        kind, cfg = CONFIGS[name]
        flops = 3 * cfg.forward_flops_per_token(kind, PTB_VOCAB)
        ours_tps = max(results[name]["ours"])
        peer_tps = max(results[name]["peer"])
        summary[name] = dict(
            ours=ours_tps,
            peer=peer_tps,
            ours_fraction=flops * ours_tps / limit,
            peer_fraction=flops * peer_tps / limit,
        )
        s = summary[name]
        print(
            f"{name:16} {ours_tps:11,.0f} {s['ours_fraction']:6.2f} {peer_tps:11,.0f} "
            f"{s['peer_fraction']:6.2f} {ours_tps / peer_tps:6.2f}"
        )
    if args.json:
        print(json.dumps({"limit_flops": limit, "device": str(device), **summary}))


def load_streams(args: argparse.Namespace) -> tuple[dict[str, np.ndarray], int]:
    if args.streams:
        z = np.load(args.streams)
        return {s: z[s] for s in ("train", "valid", "test")}, int(z["vocab_size"])
    from seqlm.corpus import load_corpus  # only here: polars is needed to read text
    from seqlm.vocab import build_vocabulary

    splits = load_corpus(args.data, "whitespace")
    vocab = build_vocabulary(splits["train"])
    return {s: vocab.stream(df) for s, df in splits.items()}, vocab.size


def encode(args: argparse.Namespace) -> None:
    streams, size = load_streams(args)
    np.savez_compressed(
        args.out, vocab_size=size, **{s: a.astype(np.int16) for s, a in streams.items()}
    )


def quality(args: argparse.Namespace) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    streams, vocab_size = load_streams(args)
    streams = {s: a.astype(np.int32) for s, a in streams.items()}
    model, config = PRESETS[args.preset]
    overrides = {
        k: v
        for k, v in (
            ("device", args.device),
            ("lr", args.lr),
            ("clip", args.clip),
            ("precision", args.precision),
            ("max_minutes", args.max_minutes),
            ("epochs", args.epochs),
            ("dropout", args.dropout),
        )
        if v is not None
    }
    config = replace(config, **overrides)
    result = train(streams["train"], streams["valid"], vocab_size, model, config, args.out)
    start = time.monotonic()
    carried = perplexity(score_stream(result.model, streams["test"]), streams["test"])
    reset = perplexity(
        score_stream(result.model, streams["test"], line_reset=True), streams["test"]
    )
    valid = perplexity(score_stream(result.model, streams["valid"]), streams["valid"])
    print(
        json.dumps(
            {
                "preset": args.preset,
                "model": model,
                "device": result.device,
                "precision": result.precision,
                "epochs": result.epochs,
                "stopped": result.stopped,
                "train_wall_s": result.wall_s,
                "score_s": time.monotonic() - start,
                "tokens_per_second": result.tokens_per_second,
                "valid_ppl": valid.ppl,
                "test_ppl": carried.ppl,
                "test_ppl_no_unk": carried.ppl_no_unk,
                "test_ppl_line_reset": reset.ppl,
                "config": asdict(config),
                "history": [{k: round(v, 3) for k, v in h.items()} for h in result.history],
            }
        )
    )


def ddp(args: argparse.Namespace) -> None:
    """One epoch on the first ``--tokens`` of the train split, the same global batch in one
    process with every core, in one process pinned to one core, and in ``--nproc`` processes
    (DistributedDataParallel, cores / nproc threads each). tokens/s counts training alone;
    wall_s is the whole call (for several processes: their start, rendezvous and validation)."""
    streams, vocab_size = load_streams(args)
    train_s = streams["train"][: args.tokens].astype(np.int32)
    valid_s = streams["valid"][:5000].astype(np.int32)
    model, preset = PRESETS[args.preset]
    config = replace(preset, epochs=1, device="cpu", precision=args.precision)
    cores = os.sched_getaffinity(0)
    runs = {
        f"1 process, {len(cores)} threads": (config, cores),
        "1 process, 1 thread": (config, {min(cores)}),
        f"{args.nproc} processes": (replace(config, nproc=args.nproc), cores),
    }
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for name, (cfg, allowed) in runs.items():
            os.sched_setaffinity(0, allowed)
            start = time.monotonic()
            result = train(train_s, valid_s, vocab_size, model, cfg)
            wall = time.monotonic() - start
            os.sched_setaffinity(0, cores)
            figures = {
                "tokens_per_second": result.tokens_per_second,
                "wall_s": wall,
                "train_ppl": result.history[-1]["train_ppl"],
                "valid_ppl": result.history[-1]["valid_ppl"],
            }
            if figures["tokens_per_second"] > best.get(name, {}).get("tokens_per_second", 0):
                best[name] = figures
    print(f"{args.preset}, {len(train_s):,} tokens, batch {config.batch_size}, {args.precision}")
    print(f"{'':>24} {'tokens/s':>9} {'wall s':>7} {'train ppl':>10} {'valid ppl':>10}")
    for name, f in best.items():
        print(
            f"{name:>24} {f['tokens_per_second']:9,.0f} {f['wall_s']:7.1f} "
            f"{f['train_ppl']:10.4f} {f['valid_ppl']:10.4f}"
        )
    if args.json:
        print(json.dumps({"preset": args.preset, "tokens": len(train_s), "runs": best}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--device", default="cpu")
    t.add_argument("--configs", default=",".join(CONFIGS))
    t.add_argument("--batch-size", type=int, default=20)
    t.add_argument("--bptt", type=int, default=35)
    t.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    t.add_argument("--json", action="store_true")
    for name in ("quality", "encode", "ddp"):
        q = sub.add_parser(name)
        q.add_argument(
            "--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/ptb")
        )
        q.add_argument("--streams", help="pre-encoded streams (from `encode`) instead of --data")
        if name == "encode":
            q.add_argument("--out", required=True)
    q = sub.choices["quality"]
    q.add_argument("preset", choices=PRESETS)
    q.add_argument("--out", type=Path, help="checkpoint folder")
    q.add_argument("--device")
    q.add_argument("--lr", type=float)
    q.add_argument("--clip", type=float)
    q.add_argument("--dropout", type=float)
    q.add_argument("--precision", choices=("auto", "fp32", "bf16"))
    q.add_argument("--max-minutes", type=float)
    q.add_argument("--epochs", type=int)
    d = sub.choices["ddp"]
    d.add_argument("--preset", choices=PRESETS, default="lstm-small")
    d.add_argument("--tokens", type=int, default=100_000)
    d.add_argument("--nproc", type=int, default=2)
    d.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="fp32")
    d.add_argument("--rounds", type=int, default=2)
    d.add_argument("--json", action="store_true")
    args = parser.parse_args()
    commands = {"throughput": throughput, "quality": quality, "encode": encode, "ddp": ddp}
    commands[args.command](args)


if __name__ == "__main__":
    main()
