"""The ``seqlm`` command: one parser for the orchestrated pipeline and the library's tools.

Command groups, each a module with ``add_commands(subparsers)``: ``pipeline`` (run, serve,
compare), ``ngram`` and ``rnn`` (the library's tools, as KenLM's and the PyTorch example's), and
``store`` (browsing the artifact store). Every command is a function ``(args) -> exit status`` set
as ``func`` on its sub-parser. No module the parser imports imports Prefect or MLflow (the commands
that need them import them when they run), so ``main`` applies the project's environment defaults
before either reads its settings, and ``seqlm ngram`` starts without them.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from importlib import import_module

from flows.settings import apply_defaults
from seqlm.errors import SeqlmError


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


# Each command's group (a module of flows.cli), in the order of ``--help``. A command line imports
# only the group it names: the others' imports took a tenth of a second of every start.
GROUPS = {
    "run": "pipeline",
    "serve": "pipeline",
    "compare": "pipeline",
    "ngram": "ngram",
    "rnn": "rnn",
    "store": "store",
    "service": "service",
}

# Groups whose commands multiply no matrices with NumPy (the networks run on torch): NumPy's BLAS
# threads, started when it is imported, would spin on a core for a while (about 0.1 s of CPU of
# scoring a 2M-token text, on 2 cores).
NO_BLAS = {"ngram", "store"}


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # only for --version

    try:
        return version("seqlm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class VersionAction(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"{parser.prog} {package_version()}")
        parser.exit()


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of the group of the command ``argv`` names alone."""
    named = next((word for word in argv or () if not word.startswith("-")), None)
    groups = [GROUPS[named]] if named in GROUPS else list(dict.fromkeys(GROUPS.values()))
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
        "--version", action=VersionAction, nargs=0, help="print the version and exit"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if set(groups) <= NO_BLAS and "numpy" not in sys.modules:  # read when NumPy is imported
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    for group in groups:  # they import this module's helpers: imported once it is complete
        import_module(f"flows.cli.{group}").add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run the chosen command, and turn bad input or a failed file operation into one
    clear line and exit status 1. A bug keeps its traceback."""
    apply_defaults()
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    # What the imports made lives as long as the process: kept out of the collector's passes
    # (scoring 2M tokens from a saved model took 1.17 s with them, 1.08 s without).
    gc.freeze()
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


def add_score_options(parser: argparse.ArgumentParser) -> None:
    """What both ``score`` commands take beside the model and the text: the text's tokenizer and
    the report's form (``seqlm.scoring``)."""
    from seqlm.corpus import TOKENIZERS
    from seqlm.scoring import UNRECORDED

    parser.add_argument(
        "--tokenizer",
        choices=TOKENIZERS,
        help="how to split the text into tokens (default: the tokenizer the model records; "
        f"{UNRECORDED} for a model that records none, as an ARPA file, as KenLM does); a "
        "tokenizer other than the recorded one is refused",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (perplexity, perplexity_no_unk, oov, targets)",
    )
