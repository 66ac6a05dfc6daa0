"""The library's command line: tools that need neither Prefect nor MLflow.

``seqlm ngram`` and ``seqlm rnn`` live here; ``flows.cli`` adds the orchestrated commands
(``seqlm run`` and friends) to this same parser.
Every command is a function ``(args) -> exit status`` set as ``func`` on its sub-parser.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from seqlm.errors import SeqlmError
from seqlm.ngram.cli import add_commands as add_ngram_commands
from seqlm.rnn.cli import add_commands as add_rnn_commands


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog="seqlm",
        description="Corpus-to-model language models: unigram, Kneser-Ney n-gram and recurrent "
        "networks, compared by perplexity on the same held-out text.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_ngram_commands(commands)
    add_rnn_commands(commands)
    return parser, commands


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, run the chosen command, and turn bad input into one clear line and exit status 1."""
    args = parser.parse_args(argv)
    # Our own progress at INFO; other libraries (HTTP clients...) only when they warn.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("seqlm").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except SeqlmError as e:
        print(f"seqlm: error: {e}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser, _ = build_parser()
    return run_command(parser, argv)
