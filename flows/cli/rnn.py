"""``seqlm rnn train | sample | score``: recurrent language models from the command line.

torch is imported by the commands when they run, not with the parser."""

from __future__ import annotations

import argparse
import json
import typing
from dataclasses import asdict, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flows.cli import add_score_options
from flows.cli.ngram import add_bpe_option
from seqlm import subwords
from seqlm.corpus import TOKENIZERS, load_corpus
from seqlm.errors import SeqlmError
from seqlm.evaluate import Perplexity, perplexity
from seqlm.progress import ProgressBar
from seqlm.rnn.config import (
    BUDGET_FIELDS,
    DEFAULT_MODEL,
    DEVICES,
    MODELS,
    TrainConfig,
    check_settings,
)
from seqlm.samples import detokenize
from seqlm.scoring import score_text, splitter, text_tokenizer
from seqlm.vocab import EOS, EOS_ID, VOCAB_FILE, Vocabulary, build_vocabulary

if TYPE_CHECKING:  # torch is imported when a command runs
    from seqlm.rnn.training import TrainResult


CHECKPOINT = "best.pt"  # what a folder given to sample or score stands for
CHECKPOINT_HELP = (
    f"a checkpoint, the --out folder of seqlm rnn train ({CHECKPOINT}), or a pipeline's "
    "recurrent model folder (data/store/rnn/KEY)"
)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("rnn", help="recurrent language models (tanh RNN, LSTM, GRU)")
    commands = group.add_subparsers(dest="rnn_command", metavar="COMMAND", required=True)

    t = commands.add_parser("train", help="train a recurrent model on a corpus")
    t.add_argument("data", help="corpus: a file, a folder of train/valid/test files, or a folder")
    t.add_argument("--out", required=True, type=Path, help="folder for checkpoints and vocabulary")
    t.add_argument(
        "--tokenizer",
        default="whitespace",
        choices=TOKENIZERS,
        help="whitespace: the text as it is; punct: lower-cased, every punctuation mark a token; "
        "char: every character a token; bpe: subwords learnt from the train split, saved as "
        "OUT/tokenizer.json (recorded in the checkpoint: score splits text the same way)",
    )
    add_bpe_option(t)
    t.add_argument("--min-count", type=int, default=1, help="rarer training types become <unk>")
    add_setting_flags(t)
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    t.set_defaults(func=train_command)

    device_help = "auto (CUDA if present), cpu or cuda"
    s = commands.add_parser("sample", help="generate text from a checkpoint")
    s.add_argument("checkpoint", type=Path, help=CHECKPOINT_HELP)
    s.add_argument("--words", type=int, default=100, help="how many tokens to draw")
    s.add_argument(
        "--temperature", type=float, default=1.0, help="below 1 sharper, above 1 flatter"
    )
    s.add_argument("--top-k", type=int, default=0, help="draw from the k likeliest (0: all)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the draw")
    s.add_argument("--device", default="auto", choices=DEVICES, help=device_help)
    s.set_defaults(func=sample_command)

    c = commands.add_parser("score", help="perplexity of a text file under a checkpoint")
    c.add_argument("checkpoint", type=Path, help=CHECKPOINT_HELP)
    c.add_argument("text", type=Path, help="a text file, one sentence per line")
    c.add_argument(
        "--line-reset",
        action="store_true",
        help="start every line from a zero state (like-for-like with n-grams)",
    )
    c.add_argument("--device", default="auto", choices=DEVICES, help=device_help)
    add_score_options(c)
    c.set_defaults(func=score_command)


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """``--model`` and one flag per ``TrainConfig`` field (``batch_size`` → ``--batch-size``),
    its type, help and choices from the field. A flag left out is None: the config's default,
    or with --resume the checkpoint's value."""
    parser.add_argument(
        "--model", choices=MODELS, default=None, help=f"the network (default {DEFAULT_MODEL})"
    )
    defaults, hints = TrainConfig(), typing.get_type_hints(TrainConfig)
    for setting in fields(TrainConfig):
        default = getattr(defaults, setting.name)
        shown = f"{default:.4g}" if isinstance(default, float) else default
        text = f"{setting.metadata['help']} (default {shown})"
        if hints[setting.name] is bool:
            parser.add_argument(_flag(setting.name), action="store_true", default=None, help=text)
            continue
        parser.add_argument(
            _flag(setting.name),
            dest=setting.name,
            type=hints[setting.name],
            default=None,
            choices=setting.metadata.get("choices"),
            help=text,
        )


def _flag(name: str) -> str:
    """A setting as the command line spells it: ``batch_size`` → ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    check_settings(vars(TrainConfig()) | given, spell=_flag)
    return TrainConfig(**given)


def _resumed_config(args: argparse.Namespace, state: dict[str, Any]) -> TrainConfig:
    """The checkpoint's config with the budget flags given on this command line."""
    stored = TrainConfig(**state["config"])
    budget = {k: getattr(args, k) for k in BUDGET_FIELDS if getattr(args, k, None) is not None}
    check_settings(budget, spell=_flag)
    return replace(stored, **budget)


def _check_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SeqlmError(f"{out}: not a folder (--out names the folder for checkpoints)")
    if resume and not (out / "last.pt").is_file():
        raise SeqlmError(f"{out / 'last.pt'}: no checkpoint to resume from")


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SeqlmError(f"{path}: cannot create the folder ({e.strerror})") from None


def train_command(args: argparse.Namespace) -> int:
    from seqlm.rnn import (
        Callbacks,
        check_processes,
        plot_learning_curve,
        read_checkpoint,
        resolve_device,
        score_stream,
        train,
    )

    out: Path = args.out
    _check_out(out, args.resume)
    # Nothing is written before the settings, the device and the data have passed.
    resumed = read_checkpoint(out / "last.pt") if args.resume else None
    config = _resumed_config(args, resumed) if resumed else _config_from_args(args)
    model = resumed["model"] if resumed else args.model or DEFAULT_MODEL
    check_processes(config.nproc, resolve_device(config.device), spell=_flag)
    text = load_corpus(args.data, args.tokenizer)
    splits, learnt = subwords.tokenized(
        text, args.tokenizer, args.bpe_vocab_size, "--bpe-vocab-size"
    )
    vocab = build_vocabulary(splits["train"], args.min_count)
    digest = vocab.digest()
    if resumed and (digest, vocab.size) != (resumed["vocab_digest"], resumed["vocab_size"]):
        raise SeqlmError(
            f"{out / 'last.pt'}: trained on another vocabulary ({resumed['vocab_size']} types, "
            f"digest {resumed['vocab_digest']}) than {args.data} gives with --tokenizer "
            f"{args.tokenizer} --min-count {args.min_count} ({vocab.size} types, digest {digest})"
        )
    _make_folder(out)
    vocab.save(out / VOCAB_FILE)
    if learnt is not None:  # score re-applies it
        subwords.save(learnt, out / subwords.TOKENIZER_FILE)
    streams = {s: vocab.stream(df) for s, df in splits.items()}
    result = train(
        *(streams["train"], streams["valid"], vocab.size, model, config, out),
        vocab_digest=digest,
        resume=args.resume,
        callbacks=Callbacks(on_progress=ProgressBar()),
        extra={"tokenizer": args.tokenizer},
    )
    test = perplexity(score_stream(result.model, streams["test"]), streams["test"])
    if result.history:
        plot_learning_curve(result.history, out / "learning_curve.png", model)
    print_training(result, test, model, config, vocab.size, args.json)
    return 0


def print_training(
    result: TrainResult,
    test: Perplexity,
    model: str,
    config: TrainConfig,
    vocab_size: int,
    as_json: bool,
) -> None:
    """One line, or with ``as_json`` the whole summary: the figures, the run, the settings."""
    if not as_json:
        print(
            f"{model}: valid ppl {result.valid_ppl:.2f}, test ppl {test.ppl:.2f} "
            f"({test.ppl_no_unk:.2f} without <unk>), {result.epochs} epochs, "
            f"{result.tokens_per_second:,.0f} tokens/s on {result.device}; {result.checkpoint}"
        )
        return
    summary = {
        "valid_ppl": result.valid_ppl,
        "test_ppl": test.ppl,
        "test_ppl_no_unk": test.ppl_no_unk,
        "test_oov": test.oov,
        "tokens_per_second": result.tokens_per_second,
        "epochs": result.epochs,
        "steps": result.steps,
        "stopped": result.stopped,
        "wall_s": result.wall_s,
        "device": result.device,
        "precision": result.precision,
        "vocab_size": vocab_size,
        "checkpoint": str(result.checkpoint),
        "model": model,
        "config": asdict(config),
    }
    print(json.dumps(summary, indent=2))


def checkpoint_file(path: Path) -> Path:
    """The checkpoint a path names: a file, the --out folder of ``seqlm rnn train`` (its
    ``best.pt``), or a pipeline's recurrent model folder (``checkpoint/best.pt``) or its
    ``checkpoint`` folder."""
    from seqlm.stages import CHECKPOINTS  # where a pipeline's model folder keeps best.pt

    if not path.is_dir():
        return path
    for candidate in (path / CHECKPOINT, path / CHECKPOINTS / CHECKPOINT):
        if candidate.is_file():
            return candidate
    raise SeqlmError(
        f"{path}: a folder without {CHECKPOINT} (give a checkpoint file, the --out folder of "
        f"seqlm rnn train or a pipeline's model folder, data/store/rnn/KEY)"
    )


def checkpoint_vocabulary(checkpoint: Path, state: dict[str, Any]) -> Vocabulary:
    """The vocabulary a checkpoint's ids mean: saved beside it (by ``seqlm rnn train`` and by
    the pipeline), and checked against the digest the checkpoint records."""
    path = checkpoint.parent / VOCAB_FILE
    if not path.is_file():
        raise SeqlmError(f"{path}: missing (the vocabulary saved beside the checkpoint)")
    vocab = Vocabulary.load(path)
    if (vocab.digest(), vocab.size) != (state["vocab_digest"], state["vocab_size"]):
        raise SeqlmError(f"{path}: not the vocabulary {checkpoint} was trained with")
    return vocab


def _load(path: Path, device: str) -> tuple[Any, dict[str, Any], Vocabulary, Path]:
    """The model, its checkpoint's state, its vocabulary and the folder that keeps them."""
    from seqlm.rnn import load_model, resolve_device

    checkpoint = checkpoint_file(path)
    model, state = load_model(checkpoint, resolve_device(device))
    return model, state, checkpoint_vocabulary(checkpoint, state), checkpoint.parent


def sample_command(args: argparse.Namespace) -> int:
    from seqlm.rnn import sample

    model, state, vocab, _ = _load(args.checkpoint, args.device)
    tokenizer = state.get("extra", {}).get("tokenizer", "whitespace")
    ids = sample(model, args.words, temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    lines = np.split(np.array(vocab.decode(ids), dtype=object), np.flatnonzero(ids == EOS_ID) + 1)
    text = (detokenize([w for w in line if w != EOS], tokenizer).strip() for line in lines)
    print("\n".join(text).strip())
    return 0


def score_command(args: argparse.Namespace) -> int:
    from seqlm.rnn import score_stream

    model, state, vocab, folder = _load(args.checkpoint, args.device)
    recorded = state.get("extra", {}).get("tokenizer")
    tokenizer = text_tokenizer(args.checkpoint, recorded, args.tokenizer)
    score = partial(score_stream, model, line_reset=args.line_reset)
    return score_text(args.text, splitter(tokenizer, folder), vocab, score, args.json)
