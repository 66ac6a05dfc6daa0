"""Learned subwords: a byte-pair-encoding (BPE) tokenizer trained on the train split's text.

Through Hugging Face ``tokenizers``: the reference BPE trainer (the algorithm of Sennrich et al.
as GPT-2 and RoBERTa vocabularies are learnt), written in Rust, so that training on Tiny
Shakespeare takes half a second and ``encode_batch`` splits lines on every core; it needs no
torch, is deterministic (the same lines and size give the same merges, in every process), and
saves to one plain JSON file, ``tokenizer.json`` (no pickle), that scoring re-applies.

Runs of whitespace become one space and the ends of a line are stripped (as the ``whitespace``
tokenizer reads a line); the Metaspace pre-tokenizer then marks each word's start with ``▁``, so
that joining a line's subwords and turning ``▁`` into spaces gives the line back. A character
never seen in training becomes ``<unk>`` (one for a run of them), the vocabulary's own ``<unk>``;
so does ``<unk>`` spelt in the text.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from seqlm.corpus import SPACE
from seqlm.errors import SeqlmError
from seqlm.files import atomic_write_text
from seqlm.samples import detokenize
from seqlm.vocab import UNK

BPE = "bpe"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_SIZE = 2000  # entries learnt by default (corpus.bpe_vocab_size, --bpe-vocab-size)
WORD_MARK = SPACE  # ▁, the Metaspace mark a word's first subword carries (char's space too)


def _untrained() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=UNK, fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_MARK)
    tokenizer.decoder = decoders.Metaspace(replacement=WORD_MARK)
    return tokenizer


def train(lines: pl.Series, vocab_size: int, setting: str = "corpus.bpe_vocab_size") -> Tokenizer:
    """A BPE tokenizer of ``vocab_size`` entries (``<unk>``, the characters, then merges) learnt
    from ``lines``. A size the text cannot give is refused naming ``setting``: below its
    characters, or above what merging every word whole reaches."""
    tokenizer = _untrained()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[UNK], show_progress=False)
    tokenizer.train_from_iterator(lines.drop_nulls().to_list(), trainer)
    size = tokenizer.get_vocab_size()
    if size > vocab_size:  # the trainer keeps every character, whatever the size
        raise SeqlmError(f"{setting}: at least {size} for this corpus, not {vocab_size}")
    if size < vocab_size:  # no pair left to merge
        raise SeqlmError(f"{setting}: at most {size} for this corpus, not {vocab_size}")
    return tokenizer


def encode(tokenizer: Tokenizer, lines: pl.Series) -> pl.DataFrame:
    """One row per line, its subwords in a ``tokens: list[str]`` column (empty for a blank
    line), as ``seqlm.corpus.tokenize`` gives a named tokenizer's tokens."""
    encodings = tokenizer.encode_batch(lines.to_list(), add_special_tokens=False)
    tokens = [e.tokens for e in encodings]
    return pl.Series("tokens", tokens, dtype=pl.List(pl.String)).to_frame()


def decode(tokens: list[str]) -> str:
    """A line from its subwords: joined, each word mark a space, the leading one dropped."""
    return detokenize(tokens, BPE).strip()


def tokenized(
    splits: dict[str, pl.DataFrame], tokenizer: str, vocab_size: int, setting: str
) -> tuple[dict[str, pl.DataFrame], Tokenizer | None]:
    """The splits ``seqlm.corpus.load_corpus`` read with ``tokenizer``, as tokens: for ``bpe``
    (text), the subwords of a tokenizer learnt from the train split, which comes back too."""
    if tokenizer != BPE:
        return splits, None
    learnt = train(splits["train"]["text"], vocab_size, setting)
    return {split: encode(learnt, lines["text"]) for split, lines in splits.items()}, learnt


def save(tokenizer: Tokenizer, path: Path) -> None:
    atomic_write_text(path, tokenizer.to_str(pretty=True))


def load(path: Path) -> Tokenizer:
    """A saved tokenizer; a missing or unreadable file is one line naming it."""
    if not path.is_file():
        raise SeqlmError(f"{path}: missing (the bpe tokenizer the model was trained with)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises a plain Exception for a malformed file
        raise SeqlmError(f"{path}: not a tokenizer file ({str(e).splitlines()[0]})") from None
