"""The library's command line: tools that need neither Prefect nor MLflow.

``seqlm ngram`` and ``seqlm rnn`` live here; ``flows.cli`` adds the orchestrated commands
(``seqlm run`` and friends) to this same parser.
Every command is a function ``(args) -> exit status`` set as ``func`` on its sub-parser.
"""

from __future__ import annotations

import argparse
import logging
import os
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
    """Parse, run the chosen command, and turn bad input or a failed file operation into one
    clear line and exit status 1. A bug keeps its traceback."""
    args = parser.parse_args(argv)
    # Our own progress at INFO; other libraries (HTTP clients...) only when they warn. ``force``:
    # a second call in one process (a notebook, the tests) logs to the stderr of now.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    logging.getLogger("seqlm").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return status
    except BrokenPipeError:
        # The reader went away (`seqlm ... | head -1`): stop quietly, as `yes | head` does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # SIGPIPE
    except Exception as e:
        message = error_line(e)
        if message is None:
            raise
        print(f"seqlm: error: {message}", file=sys.stderr)
        return 1


def error_line(error: BaseException) -> str | None:
    """The one line for bad input (``SeqlmError``) or a failed file operation (``OSError``:
    ``path: reason``), also when another error wraps it (``raise ... from``); None for a bug."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, SeqlmError):
            return str(cause)
        if isinstance(cause, OSError):
            reason = cause.strerror or str(cause)
            return f"{cause.filename}: {reason}" if cause.filename is not None else reason
        cause = cause.__cause__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser, _ = build_parser()
    return run_command(parser, argv)
