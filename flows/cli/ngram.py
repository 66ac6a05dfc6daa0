"""``seqlm ngram count | estimate | score``: the n-gram rung on the command line, like KenLM's.

CORPUS is a file or a directory as in ingestion; for a directory of split files the train split is
read, otherwise every file whole (as ``lmplz`` counts its whole input).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from flows.cli import add_score_options
from flows.cli.store import add_tables_command
from seqlm import subwords
from seqlm.config import CorpusConfig
from seqlm.corpus import TOKENIZERS, load_corpus
from seqlm.errors import SeqlmError
from seqlm.ngram.arpa import read_arpa, write_arpa
from seqlm.ngram.budget import DEFAULT_MEMORY, parse_memory
from seqlm.ngram.counts import count_ngrams, write_tables
from seqlm.ngram.estimate import SMOOTHINGS, first_seen, fit
from seqlm.ngram.lines import MAX_ORDER
from seqlm.ngram.model import NgramModel
from seqlm.scoring import score_text, splitter, text_tokenizer
from seqlm.vocab import Vocabulary, build_vocabulary

log = logging.getLogger(__name__)


def _train_stream(args: argparse.Namespace) -> tuple[Vocabulary, np.ndarray, Tokenizer | None]:
    """The training text's vocabulary and stream, and the bpe tokenizer learnt from it (None
    for a named tokenizer)."""
    text = load_corpus(args.corpus, args.tokenizer, splits=["train"], fractions=None)
    splits, learnt = subwords.tokenized(
        text, args.tokenizer, args.bpe_vocab_size, "--bpe-vocab-size"
    )
    vocab = build_vocabulary(splits["train"])
    return vocab, vocab.stream(splits["train"]), learnt


def _keep_subwords(learnt: Tokenizer | None, folder: Path) -> None:
    """The bpe tokenizer beside the model it split the text of (score re-applies it)."""
    if learnt is not None:
        subwords.save(learnt, folder / subwords.TOKENIZER_FILE)


def count_command(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    parse_memory(args.memory)
    vocab, stream, learnt = _train_stream(args)
    tables = count_ngrams(stream, args.order, vocab.size)
    write_tables(tables, Path(args.out), vocab)
    _keep_subwords(learnt, Path(args.out))
    sizes = " / ".join(f"{t.height:,}" for t in tables)
    log.info("counted %s n-grams in %.2f s into %s", sizes, time.perf_counter() - started, args.out)
    return 0


def estimate_command(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.tokenizer == subwords.BPE and not args.save:
        raise SeqlmError(
            "--tokenizer bpe: give --save DIR, the folder that keeps the tokenizer with the model "
            "(an ARPA file cannot carry it)"
        )
    parse_memory(args.memory)
    vocab, stream, learnt = _train_stream(args)
    tables = count_ngrams(stream, args.order, vocab.size)
    model = fit(
        tables,
        vocab,
        args.smoothing,
        add_k=args.add_k,
        discount_fallback=args.discount_fallback,
        first_seen=first_seen(stream, vocab.size),
    )
    write_arpa(model, Path(args.arpa))
    if args.save:
        model.info["tokenizer"] = args.tokenizer  # ARPA has no place for it; the folder has
        model.save(Path(args.save))
        _keep_subwords(learnt, Path(args.save))
    if "discounts" in model.info:
        for n, d in enumerate(model.info["discounts"], start=1):
            log.info("order %d discounts D1, D2, D3+: %s", n, " ".join(f"{x:.6g}" for x in d))
    log.info("wrote %s in %.2f s", args.arpa, time.perf_counter() - started)
    return 0


def model_folder(path: Path) -> Path:
    """The saved model a path names: a saved model folder or a pipeline's n-gram folder (the
    saved model in ``model/``); any other path is an ARPA file."""
    from seqlm.stages import MODEL  # the saved model inside a pipeline's folder

    return path / MODEL if (path / MODEL).is_dir() else path


def load_model(path: Path) -> NgramModel:
    """A saved model folder, a pipeline's n-gram folder, or an ARPA file."""
    return NgramModel.load(model_folder(path)) if path.is_dir() else read_arpa(path)


def score_command(args: argparse.Namespace) -> int:
    path, text = Path(args.model), Path(args.text)
    model = load_model(path)
    tokenizer = text_tokenizer(path, model.info.get("tokenizer"), args.tokenizer)
    split = splitter(tokenizer, model_folder(path))
    return score_text(text, split, model.vocab, model.score_stream, args.json)


def _corpus(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", metavar="CORPUS", help="a text file or a corpus directory")
    parser.add_argument(
        "--order", "-o", type=int, required=True, help=f"n-gram order (1-{MAX_ORDER})"
    )
    parser.add_argument(
        "--tokenizer",
        choices=TOKENIZERS,
        default="whitespace",
        help="whitespace: the text as it is (as KenLM reads it); punct: lower-cased, every "
        "punctuation mark a token; char: every character a token; bpe: subwords learnt from "
        "the training text (saved as tokenizer.json beside the model)",
    )
    add_bpe_option(parser)
    parser.add_argument(
        "--memory",
        "-S",
        default=DEFAULT_MEMORY,
        metavar="SIZE",
        help="memory budget for counting and estimation, as lmplz -S: 4G, 512M or a percentage "
        "of physical memory; what does not fit is spilled to sorted runs on disk",
    )


def add_bpe_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bpe-vocab-size",
        type=int,
        default=CorpusConfig().bpe_vocab_size,
        help="entries of the bpe tokenizer (with --tokenizer bpe)",
    )


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("ngram", help="n-gram models, as KenLM")
    commands = group.add_subparsers(dest="ngram_command", metavar="COMMAND", required=True)

    count = commands.add_parser("count", help="write Parquet count tables of orders 1..N")
    _corpus(count)
    count.add_argument("--out", required=True, help="folder for order<n>.parquet and vocab.parquet")
    count.set_defaults(func=count_command)

    estimate = commands.add_parser("estimate", help="estimate a model and write it as ARPA")
    _corpus(estimate)
    estimate.add_argument("--arpa", required=True, help="the ARPA file to write")
    estimate.add_argument(
        "--smoothing",
        choices=SMOOTHINGS,
        default="kn",
        help="kn: interpolated modified Kneser-Ney (as lmplz); addk: add-k; mle: no smoothing",
    )
    estimate.add_argument("--add-k", type=float, default=1.0, help="k for --smoothing addk")
    estimate.add_argument(
        "--discount-fallback",
        action="store_true",
        help="when counts-of-counts give no valid Kneser-Ney discount, use lmplz's 0.5 1 1.5",
    )
    estimate.add_argument(
        "--save",
        metavar="DIR",
        help="also save the model as a binary folder (fast to load; records the tokenizer)",
    )
    estimate.set_defaults(func=estimate_command)

    score = commands.add_parser("score", help="perplexity of a text under a model")
    score.add_argument(
        "model",
        metavar="MODEL",
        help="an ARPA file, a folder written by estimate --save, or a pipeline's n-gram folder "
        "(data/store/ngram/KEY)",
    )
    score.add_argument("text", metavar="TEXT", help="a text file, one sentence per line")
    add_score_options(score)
    score.set_defaults(func=score_command)

    add_tables_command(commands)  # the store's count tables, also `seqlm store tables`
