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
from importlib.metadata import PackageNotFoundError, version

from seqlm.errors import SeqlmError
from seqlm.ngram.cli import add_commands as add_ngram_commands
from seqlm.rnn.cli import add_commands as add_rnn_commands


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless the text already names it; a flag
    (off by default) or an option with no default shows none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.option_strings
            and "default" not in text
            and action.default not in (None, False, argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """The seqlm parser: its sub-commands' parsers are of this class too, so all show defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def package_version() -> str:
    try:
        return version("seqlm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = Parser(
        prog="seqlm",
        description="Corpus-to-model language models: unigram, Kneser-Ney n-gram and recurrent "
        "networks, compared by perplexity on the same held-out text.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log everything: debug messages, each stage's store key, Prefect's and MLflow's own "
        "lines, failure reports in full",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {package_version()}",
        help="print the version and exit",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_ngram_commands(commands)
    add_rnn_commands(commands)
    return parser, commands


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, run the chosen command, and turn bad input or a failed file operation into one
    clear line and exit status 1. A bug keeps its traceback."""
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit:  # --help, --version, a usage error: printed, now out (or a closed pipe)
            sys.stdout.flush()
            raise
        log_to_terminal(args.verbose)
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


def log_to_terminal(verbose: bool) -> None:
    """seqlm's own lines at INFO (DEBUG with ``verbose``), one timestamp format for every logger;
    other libraries' lines only when they warn, unless ``verbose``. ``force``: a second call in
    one process (a notebook, the tests) logs to the stderr of now."""
    handler = logging.StreamHandler()
    handler.setFormatter(TerminalFormatter(verbose))
    if not verbose:
        handler.addFilter(_worth_showing)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("seqlm").setLevel(logging.DEBUG if verbose else logging.INFO)


# Loggers whose INFO lines are detail (each stage's store key and path): shown with --verbose.
_DETAIL = ("seqlm.store",)


def _worth_showing(record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING:
        return True
    name = record.name
    return (name == "seqlm" or name.startswith("seqlm.")) and not name.startswith(_DETAIL)


class TerminalFormatter(logging.Formatter):
    """``12:03:04 message`` for seqlm's progress, ``12:03:04 WARNING logger: message`` for what
    needs a second look (and for every line with ``verbose``). On a terminal a line first clears
    what a progress bar left on it."""

    def __init__(self, verbose: bool) -> None:
        super().__init__(datefmt="%H:%M:%S")
        self.verbose = verbose
        self.clear = "\r\033[K" if sys.stderr.isatty() else ""

    def format(self, record: logging.LogRecord) -> str:
        plain = record.levelno == logging.INFO and not self.verbose
        self._style._fmt = (
            "%(asctime)s %(message)s"
            if plain
            else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        return self.clear + super().format(record)


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
