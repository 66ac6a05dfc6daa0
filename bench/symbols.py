"""Symbol-level benchmarks: the ladder's bits per character on characters, nucleotides and
three tokenizations of one text side by side, each experiment one ``seqlm.run`` printed as a
Markdown table with its wall time.

    python bench/symbols.py shakespeare   # Tiny Shakespeare, char: unigram, KN 2..9, an LSTM
    python bench/symbols.py dna           # the chloroplast genome: unigram, k-mers 2..12, an LSTM
    python bench/symbols.py tokenizers    # Tiny Shakespeare as punct, bpe and char words
    python bench/symbols.py dna --set epochs=1 --set nhid=128 --store /tmp/symbols

``--set key=value`` overrides a pipeline setting after the experiment's own (as ``seqlm run
--set``). The store is a fresh temporary folder unless ``--store`` names one to keep and reuse
(a reused store finds what it built before, so its wall time is not the experiment's).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqlm.config import PipelineConfig  # noqa: E402
from seqlm.pipeline import run  # noqa: E402

SHAKESPEARE = ROOT / "data/tinyshakespeare/input.txt"
GENOME = ROOT / "data/dna/NC_000932.fna"
# nanoGPT's character-level Tiny Shakespeare model (6 layers × 384, 10.7M parameters, a GPU):
# validation loss 1.4697 nats per character on its own 10 % split.
PUBLISHED_NATS = 1.4697


@dataclass(frozen=True)
class Experiment:
    corpus: Path
    settings: dict[str, Any]
    columns: list[str]
    note: str = ""
    uniform_bits: float | None = None  # a uniform model's bits per symbol, where there is one


# An LSTM of 1 × 512 units over 64-dimensional character embeddings, read in windows of 100,
# trained with AdamW at a rate higher than the word-level default (a character vocabulary has
# no large softmax to keep calm).
CHAR_LSTM = {
    "models": ["lstm"],
    "emsize": 64,
    "nhid": 512,
    "bptt": 100,
    "batch_size": 64,
    "lr": 0.005,
    "clip": 1.0,
    "dropout": 0.1,
}
COLUMNS = ["model", "size", "parameters", "test_bpc", "valid_bpc", "epochs", "train_seconds"]

EXPERIMENTS = {
    "shakespeare": Experiment(
        SHAKESPEARE,
        {"tokenizer": "char", "orders": [2, 3, 5, 7, 9], **CHAR_LSTM, "epochs": 8},
        COLUMNS,
        note=f"published: {PUBLISHED_NATS} nats/char = {PUBLISHED_NATS / math.log(2):.3f} bits "
        "(nanoGPT, character-level transformer, 10.7M parameters, a GPU, its own 90/10 split)",
    ),
    "dna": Experiment(
        GENOME,
        {
            "tokenizer": "char",
            # Lines of 1000 residues (the default): each line's </s> is a target the cut
            # invents, worth about log2(window) / window bits per residue (0.01 here).
            "window": 1000,
            "orders": list(range(2, 13)),
            **CHAR_LSTM,
            "batch_size": 16,
            "epochs": 10,
        },
        COLUMNS,
        uniform_bits=2.0,  # A, C, G, T equally likely
    ),
    "tokenizers": Experiment(
        SHAKESPEARE,
        {
            "tokenizer": ["punct", "bpe", "char"],
            "orders": [2, 3, 5, 7],
            # One small LSTM per tokenization: 6 epochs keep the three within 10 minutes.
            "models": ["lstm"],
            "nhid": 256,
            "bptt": 50,
            "batch_size": 32,
            "lr": 0.005,
            "clip": 1.0,
            "epochs": 6,
        },
        ["model", "tokenizer", "size", "parameters", "test_bpc", "valid_bpc", "test_ppl"],
    ),
}


def table(frame: pl.DataFrame, columns: list[str]) -> str:
    """A Markdown table: numbers right-aligned, bits to 3 decimals, counts with separators."""

    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    frame = frame.select(columns)
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if t.is_numeric() else "---" for t in frame.dtypes) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *rows])


def machine() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, {gpu}"


def run_experiment(name: str, store: Path, overrides: list[str]) -> None:
    experiment = EXPERIMENTS[name]
    config = PipelineConfig().with_values(experiment.settings | {"store": str(store)})
    config = config.with_overrides(overrides)
    start = time.perf_counter()
    comparison = run(experiment.corpus, config)
    wall = time.perf_counter() - start
    columns = list(experiment.columns)
    if experiment.uniform_bits is not None:
        comparison = comparison.with_columns(
            below_uniform=pl.lit(experiment.uniform_bits) - pl.col("test_bpc")
        )
        columns.insert(columns.index("test_bpc") + 1, "below_uniform")
    print(f"## {name}: {experiment.corpus.relative_to(ROOT)}\n")
    print(table(comparison, columns))
    print(f"\nwall time {wall:.0f} s on {machine()}")
    if experiment.note:
        print(experiment.note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--store", type=Path, help="a store folder to keep (default: temporary)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--verbose", action="store_true", help="log each stage and epoch")
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(format="%(asctime)s %(message)s")
        logging.getLogger("seqlm").setLevel(logging.INFO)
    if args.store is not None:
        run_experiment(args.experiment, args.store, args.overrides)
        return
    with tempfile.TemporaryDirectory(prefix="seqlm-symbols-") as scratch:
        run_experiment(args.experiment, Path(scratch) / "store", args.overrides)


if __name__ == "__main__":
    main()
