"""``seqlm ngram count | estimate | score``: the n-gram rung on the command line, like KenLM's.

CORPUS is a file or a directory as in ingestion; for a directory of split files the train split is
read, otherwise every file whole (as ``lmplz`` counts its whole input).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from flows.cli import add_score_options
from flows.cli.store import add_tables_command
from seqlm import subwords
from seqlm.allocator import keep_freed_pages
from seqlm.corpus import STDIN, TOKENIZERS, train_chunks
from seqlm.errors import SeqlmError
from seqlm.files import atomic_path
from seqlm.ngram.arpa import read_arpa, write_arpa
from seqlm.ngram.budget import DEFAULT_MEMORY, parse_memory, working_set
from seqlm.ngram.lines import MAX_ORDER
from seqlm.ngram.model import MODEL, SMOOTHINGS, NgramModel
from seqlm.ngram.prune import thresholds
from seqlm.ngram.sample import write_sample
from seqlm.scoring import LEVELS, SUMMARY, ngram_lengths, score_text, splitter, text_tokenizer

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from seqlm.ngram.spill import Counted

log = logging.getLogger("seqlm.cli.ngram")  # seqlm's loggers reach the terminal


def _count_train(
    args: argparse.Namespace, out: Path, scratch: Path
) -> tuple[Counted, Tokenizer | None]:
    """Count the training text into the tables folder ``out`` within the memory budget,
    spilling under ``scratch``, reading the text in chunks; also the bpe tokenizer learnt from
    it (None for a named tokenizer: bpe learns from the whole text, so that is read whole).
    Counting (and pyarrow) is imported here: ``score`` and ``sample`` start without it."""
    import polars as pl

    from seqlm.ngram.spill import MIN_WORKING, chunk_bytes, count_chunks

    memory = working_set(parse_memory(args.memory), "--memory", MIN_WORKING)
    if args.tokenizer == subwords.BPE:
        text = {"train": pl.concat(train_chunks(args.corpus, args.tokenizer))}
        splits, learnt = subwords.tokenized(
            text, args.tokenizer, args.bpe_vocab_size, "--bpe-vocab-size"
        )
        chunks = [splits["train"]]
    else:
        chunks = train_chunks(args.corpus, args.tokenizer, chunk_bytes=chunk_bytes(memory))
        learnt = None
    return count_chunks(chunks, args.order, memory, scratch, out), learnt


def _keep_subwords(learnt: Tokenizer | None, folder: Path) -> None:
    """The bpe tokenizer beside the model it split the text of (score re-applies it)."""
    if learnt is not None:
        subwords.save(learnt, folder / subwords.TOKENIZER_FILE)


def count_command(args: argparse.Namespace) -> int:
    from seqlm.ngram.spill import scratch_folder

    started = time.perf_counter()
    with scratch_folder(args.temp_prefix) as scratch:
        counted, learnt = _count_train(args, Path(args.out), scratch)
    _keep_subwords(learnt, Path(args.out))
    sizes = " / ".join(f"{size:,}" for size in counted.sizes)
    log.info(
        "counted %s n-grams in %.2f s into %s (%d sorted runs spilled)",
        sizes,
        time.perf_counter() - started,
        args.out,
        counted.runs,
    )
    return 0


def estimate_command(args: argparse.Namespace) -> int:
    from seqlm.ngram.estimate import fit
    from seqlm.ngram.spill import first_seen_ids, scratch_folder

    started = time.perf_counter()
    if args.tokenizer == subwords.BPE and not args.save:
        raise SeqlmError(
            "--tokenizer bpe: give --save DIR, the folder that keeps the tokenizer with the model "
            "(an ARPA file cannot carry it)"
        )
    prune = thresholds(args.prune or (), args.order)  # refused before the corpus is read
    with scratch_folder(args.temp_prefix) as scratch:  # counts, runs and the model's arrays
        counted, learnt = _count_train(args, scratch / "tables", scratch)
        model = fit(
            scratch / "tables",
            counted.vocab,
            args.smoothing,
            add_k=args.add_k,
            discount_fallback=args.discount_fallback,
            first_seen=first_seen_ids(counted.vocab.size),
            prune=prune,
            memory=args.memory,
            scratch=scratch,
            setting="--memory",
        )
        if args.arpa:
            write_arpa(model, Path(args.arpa))
        else:  # as lmplz: the model on standard output, the log on standard error
            sys.stdout.flush()
            write_arpa(model, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        if args.save:
            model.info["tokenizer"] = args.tokenizer  # ARPA has no place for it; the folder has
            model.save(Path(args.save))
            _keep_subwords(learnt, Path(args.save))
    if "discounts" in model.info:
        for n, d in enumerate(model.info["discounts"], start=1):
            log.info("order %d discounts D1, D2, D3+: %s", n, " ".join(f"{x:.6g}" for x in d))
    if model.info.get("prune"):
        log.info("kept %s n-grams after pruning", " / ".join(f"{s:,}" for s in model.sizes))
    log.info("wrote %s in %.2f s", args.arpa or "the model", time.perf_counter() - started)
    return 0


def model_folder(path: Path) -> Path:
    """The saved model a path names: a saved model folder or a pipeline's n-gram folder (the
    saved model in ``model/``); any other path is an ARPA file."""
    return path / MODEL if (path / MODEL).is_dir() else path


def load_model(path: Path) -> NgramModel:
    """A saved model folder, a pipeline's n-gram folder, or an ARPA file."""
    return NgramModel.load(model_folder(path)) if path.is_dir() else read_arpa(path)


def score_command(args: argparse.Namespace) -> int:
    keep_freed_pages()
    path = Path(args.model)
    model = load_model(path)
    tokenizer = text_tokenizer(path, model.info.get("tokenizer"), args.tokenizer)
    split = splitter(tokenizer, model_folder(path))
    levels = args.levels or [SUMMARY]
    lengths = partial(ngram_lengths, model)
    return score_text(
        args.text, split, model.vocab, model.score_stream, args.json, levels, lengths, by_line=True
    )


def sample_command(args: argparse.Namespace) -> int:
    if args.words <= 0:
        raise SeqlmError(f"--words must be a positive number of tokens, not {args.words}")
    started = time.perf_counter()
    model = load_model(Path(args.model))
    blocks = model.sampler.blocks(args.words, args.seed)
    if args.out:
        with atomic_path(Path(args.out)) as tmp, tmp.open("wb") as out:
            written = write_sample(blocks, model.vocab, out)
    else:
        sys.stdout.flush()
        written = write_sample(blocks, model.vocab, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    seconds = time.perf_counter() - started
    log.info("sampled %d tokens in %.2f s (%.0f a second)", written, seconds, written / seconds)
    return 0


def _corpus(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "corpus",
        metavar="CORPUS",
        nargs="?",
        default=str(STDIN),
        help="a text file or a corpus directory; - or none: standard input, read as a .txt file",
    )
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
    parser.add_argument(
        "--temp_prefix",
        "-T",
        metavar="PATH",
        help="where to spill sorted runs, as lmplz -T: a folder, or a path whose name starts "
        "the scratch folder's (default: the system's temporary folder; removed at the end)",
    )


def add_bpe_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bpe-vocab-size",
        type=int,
        default=subwords.VOCAB_SIZE,
        help="entries of the bpe tokenizer (with --tokenizer bpe)",
    )


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("ngram", help="n-gram models, as KenLM")
    commands = group.add_subparsers(dest="ngram_command", metavar="COMMAND", required=True)

    count = commands.add_parser("count", help="write Parquet count tables of orders 1..N")
    _corpus(count)
    count.add_argument("--out", required=True, help="folder for order<n>.parquet and vocab.parquet")
    count.set_defaults(func=count_command)
    _add_estimate(commands)
    _add_score(commands)
    _add_sample(commands)
    add_tables_command(commands)  # the store's count tables, also `seqlm store tables`


def _model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="an ARPA file, a folder written by estimate --save, or a pipeline's n-gram folder "
        "(data/store/ngram/KEY)",
    )


def _add_estimate(commands: argparse._SubParsersAction) -> None:
    estimate = commands.add_parser("estimate", help="estimate a model and write it as ARPA")
    _corpus(estimate)
    estimate.add_argument(
        "--arpa", help="the ARPA file to write (default: standard output, as lmplz writes it)"
    )
    estimate.add_argument(
        "--smoothing",
        choices=SMOOTHINGS,
        default="kn",
        help="kn: interpolated modified Kneser-Ney (as lmplz); addk: add-k; mle: no smoothing",
    )
    estimate.add_argument("--add-k", type=float, default=1.0, help="k for --smoothing addk")
    estimate.add_argument(
        "--discount-fallback",
        "--discount_fallback",
        action="store_true",
        help="when counts-of-counts give no valid Kneser-Ney discount, use lmplz's 0.5 1 1.5",
    )
    estimate.add_argument(
        "--prune",
        nargs="+",
        metavar="N",
        help="as lmplz --prune: drop the n-grams of order k seen at most the k-th count (0 0 1 "
        "drops singleton trigrams and above); non-decreasing, the last applies to the orders "
        "beyond; the first must be 0 (unigrams stay); --smoothing kn only (default: no pruning)",
    )
    estimate.add_argument(
        "--save",
        metavar="DIR",
        help="also save the model as a binary folder (fast to load; records the tokenizer)",
    )
    estimate.set_defaults(func=estimate_command)


def _add_score(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser("score", help="perplexity of a text under a model")
    _model_argument(score)
    score.add_argument(
        "text",
        metavar="TEXT",
        nargs="?",
        help="a text file, one sentence per line; omitted or - : standard input, as query reads",
    )
    add_score_options(score)
    score.add_argument(
        "-v",
        dest="levels",
        action="append",
        choices=LEVELS,
        help="as query -v, repeatable: word prints each target as word=id n log10p and a tab "
        "(id: the model's seqlm id, not KenLM's; n: the length of the n-gram matched), "
        "sentence each line's 'Total: log10p OOV: k', summary the perplexity lines (default: "
        "summary only; query's default is all three)",
    )
    score.set_defaults(func=score_command)


def _add_sample(commands: argparse._SubParsersAction) -> None:
    sample = commands.add_parser("sample", help="draw text from a model, one line per sentence")
    _model_argument(sample)
    sample.add_argument(
        "--words",
        type=int,
        required=True,
        metavar="N",
        help="tokens to draw, each line's </s> counted as one (the last line is cut where they "
        "run out); the lines are independent, each from <s> to </s>, tokens joined by spaces",
    )
    sample.add_argument("--seed", type=int, default=0, help="the same seed gives the same text")
    sample.add_argument("--out", metavar="FILE", help="the text file to write (default: stdout)")
    sample.set_defaults(func=sample_command)
