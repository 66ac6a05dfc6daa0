"""The ``seqlm`` command: the library's tools plus the orchestrated pipeline (``seqlm run``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from seqlm.cli import build_parser, run_command
from seqlm.config import load_config
from seqlm.corpus import DEFAULT_CORPUS, discover
from seqlm.report import to_markdown


def add_run_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="run the whole pipeline (Prefect flow corpus-to-model) and print the comparison",
        description="Ingest a corpus, build the vocabulary, train every model, score each on the "
        "same held-out text and print the perplexity table. Runs are tracked in MLflow "
        "(sqlite:///mlruns/mlflow.db unless MLFLOW_TRACKING_URI is set); outputs are reused "
        "from the artifact store when their inputs have not changed.",
    )
    run.add_argument(
        "--corpus",
        default=DEFAULT_CORPUS,
        help="a text file (.txt, .txt.gz, .jsonl, .parquet), a directory of such files, or a "
        "directory of split files (train.txt/valid.txt/test.txt, ptb.train.txt, ...) "
        f"(default: {DEFAULT_CORPUS})",
    )
    run.add_argument("--config", metavar="FILE.toml", help="a TOML file of config sections")
    run.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config key, as section.key or a unique bare key "
        "(e.g. --set tokenizer=whitespace --set vocab.min_count=1); repeatable",
    )
    run.add_argument("--report", metavar="FILE.json", help="also write the table as JSON")
    run.set_defaults(func=run_pipeline)


def run_pipeline(args: argparse.Namespace) -> int:
    # Bad input is caught here, before Prefect starts a server.
    config = load_config(args.config, args.set)
    discover(args.corpus)
    from flows.corpus_to_model import corpus_to_model

    rows = corpus_to_model(corpus=args.corpus, config=config.to_dict())
    print(to_markdown(pl.DataFrame(rows)))
    if args.report:
        report = Path(args.report)
        tmp = report.with_name(report.name + ".tmp")
        tmp.write_text(json.dumps(rows, indent=2))
        tmp.replace(report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = build_parser()
    add_run_command(commands)
    return run_command(parser, argv)
