"""A back-off n-gram model in ARPA form, scored over whole streams with sorted-key searches.

Every smoothing (maximum likelihood, add-k, modified Kneser–Ney, or a model read from ARPA) ends
as per-order arrays: the n-gram's context row in the order below, its last word, log10 p and
log10 back-off. For a target w after history h the longest listed n-gram ``h' w`` gives
log10 p(w | h') and the back-offs of the listed contexts of lengths |h'| … N−1 are added on; a
context never reaches past the line's ``<s>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqlm.errors import SeqlmError
from seqlm.files import atomic_dir
from seqlm.ngram.index import lookup
from seqlm.ngram.mapped import release
from seqlm.ngram.sample import Sampler
from seqlm.overlap import CORES  # batches scored side by side
from seqlm.vocab import BOS_ID, EOS_ID, VOCAB_FILE, Vocabulary

SMOOTHINGS = ("kn", "addk", "mle")  # what ``seqlm.ngram.estimate.fit`` estimates
LN10 = float(np.log(10.0))
META_FILE = "model.json"
MODEL = "model"  # the saved model's folder inside the pipeline's n-gram stage folder
# 3: a NumPy file per order and column: sorted keys (int64), log10 p and back-off (float64),
# mapped on load. (2: an Arrow IPC file per order, whose reader, pyarrow, takes 0.1 s to import.)
FORMAT = 3
COLUMNS = ("key", "log10_prob", "log10_backoff")
DTYPES = (np.int64, np.float64, np.float64)
SAVE_BATCH = 1 << 20  # rows written at once when a model is saved
SCORE_BATCH = 1 << 20  # targets scored at once (whole lines): ~0.1 GB of temporaries
# A model up to this size keeps its mapped pages while it scores (as query holds its whole model):
# letting them go after each batch and faulting them in again costs more than they take.
HELD_MODEL_BYTES = 256 << 20


@dataclass(frozen=True)
class TokenScores:
    """Per target: log10 p, the length of the n-gram that gave it (query's ``ngram_length``),
    and where each line ends."""

    log10_prob: np.ndarray
    ngram_length: np.ndarray
    line_end: np.ndarray  # True at each line's </s>

    def sentence_log10(self) -> np.ndarray:
        """log10 p of each whole line (its tokens and its </s>)."""
        ends = np.flatnonzero(self.line_end)
        starts = np.concatenate(([0], ends[:-1] + 1))
        return np.add.reduceat(self.log10_prob, starts) if len(ends) else np.zeros(0)


class _FromKeys(Sequence[np.ndarray]):
    """Per order, a loaded model's context rows (``key // V``) or last words (``key % V``),
    derived on first use: scoring and sampling read the mapped keys alone, ARPA writing these."""

    def __init__(self, keys: list[np.ndarray], vocab_size: int, part: str) -> None:
        self._keys, self._size, self._part = keys, vocab_size, part
        self._derived: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, n: int) -> np.ndarray:  # type: ignore[override]
        if n not in self._derived:
            key = self._keys[n]
            self._derived[n] = key // self._size if self._part == "context" else key % self._size
        return self._derived[n]


@dataclass(frozen=True)
class NgramModel:
    vocab: Vocabulary
    context: Sequence[np.ndarray]  # per order: row of w1..w(n−1) in the order below (0: unigrams)
    word: Sequence[np.ndarray]  # per order: the last word's id
    log10_prob: list[np.ndarray]
    log10_backoff: list[np.ndarray]  # 0 where the n-gram is never a context, and at the top order
    info: dict[str, Any] = field(default_factory=dict)  # smoothing, discounts, ...
    # Keys at hand: a loaded model's, mapped from its folder (context and word are derived from
    # them), or an ARPA file's, as its orders were linked.
    stored_keys: list[np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def order(self) -> int:
        return len(self.log10_prob)

    @property
    def sizes(self) -> list[int]:
        return [len(p) for p in self.log10_prob]

    @cached_property
    def keys(self) -> list[np.ndarray]:
        """Per order the sorted search keys ``context · V + word`` (int64, whatever the rows'
        width): a loaded model's as stored, without a copy."""
        if self.stored_keys is not None:
            return self.stored_keys
        size = self.vocab.size
        return [c.astype(np.int64) * size + w for c, w in zip(self.context, self.word, strict=True)]

    def score_tokens(self, stream: np.ndarray, cores: int = CORES) -> TokenScores:
        """log10 p of every target of a vocabulary stream, each line from a one-``<s>`` context.

        Order by order, only the targets whose context of that length is listed are searched
        for: those after a target whose n-gram of the order below was found (in its line), on
        ``cores`` cores."""
        stream = _checked(np.asarray(stream), self.vocab.size)
        if len(stream) == 0:
            return TokenScores(np.zeros(0), np.zeros(0, dtype=np.int8), np.zeros(0, dtype=bool))
        size, probs, backoffs = self.vocab.size, self.log10_prob, self.log10_backoff
        row = self._unigram_rows(stream)
        best = np.where(row >= 0, probs[0][np.maximum(row, 0)], -np.inf)
        length = (row >= 0).astype(np.int8)
        backoff = np.zeros(len(stream))  # Σ back-offs of contexts from the match's length up
        context = np.empty_like(row)  # each target's one-word context: <s> at a line's start
        context[1:] = row[:-1]
        context[0] = bos = int(self._unigram_rows(np.array([BOS_ID]))[0])
        context[1:][stream[:-1] == EOS_ID] = bos
        at = np.flatnonzero(context >= 0)
        context = context[at]
        for n in range(2, self.order + 1):
            # Order n − 1 was last read at step n − 1 (but its back-offs, just below): a batch
            # then holds about one order's mapped pages of a large model, not the whole model's.
            self._let_go(self.keys[n - 2], probs[n - 2])
            found = lookup(self.keys[n - 1], context.astype(np.int64) * size + stream[at], cores)
            hit = found >= 0
            missed = ~hit
            backoff[at[missed]] += backoffs[n - 2][context[missed]]
            self._let_go(backoffs[n - 2])
            at, found = at[hit], found[hit]
            best[at] = probs[n - 1][found]
            length[at] = n
            backoff[at] = 0.0
            inside = stream[at] != EOS_ID  # the n-gram is the next target's context
            at, context = at[inside] + 1, found[inside]
        return TokenScores(
            log10_prob=best + backoff, ngram_length=length, line_end=stream == EOS_ID
        )

    def _unigram_rows(self, words: np.ndarray) -> np.ndarray:
        """Each word's unigram row (−1 if unlisted): the word itself where every word is listed."""
        if len(self.keys[0]) == self.vocab.size:  # sorted, distinct, below V: 0..V−1
            return words
        return lookup(self.keys[0], words)

    def score_stream(self, stream: np.ndarray) -> np.ndarray:
        """Natural-log probability of each target (the interface every seqlm model shares),
        scored a batch of whole lines at a time (each line is scored on its own), a large model's
        mapped pages let go after each: memory stays bounded whatever the text's length. A batch
        a core is scored at once, each on its core (NumPy's sorts, searches and gathers release
        the GIL; searches of their own on every core would only contend)."""
        parts = np.split(np.asarray(stream), _line_cuts(np.asarray(stream)))
        scores: list[np.ndarray] = []
        with ThreadPoolExecutor(CORES) as pool:
            for start in range(0, len(parts), CORES):
                batches = parts[start : start + CORES]
                scores.extend(pool.map(lambda part: self.score_tokens(part, 1).log10_prob, batches))
                self._let_go(*self.keys, *self.log10_prob, *self.log10_backoff)
        return np.concatenate(scores) * LN10

    def _let_go(self, *arrays: np.ndarray) -> None:
        """Let the pages of mapped ``arrays`` go, unless the model is small enough to hold."""
        if not self._held:
            for array in arrays:
                release(array)

    @cached_property
    def _held(self) -> bool:
        arrays = (*self.keys, *self.log10_prob, *self.log10_backoff)
        return sum(array.nbytes for array in arrays) <= HELD_MODEL_BYTES

    def next_log10(self, history: np.ndarray) -> np.ndarray:
        """log10 p(w | history) for every word w: the listed n-gram of the longest context if
        there is one, else the context's back-off plus the next shorter context's estimate."""
        size = self.vocab.size
        rows = lookup(self.keys[0], np.arange(size))
        dist = np.where(rows >= 0, self.log10_prob[0][np.maximum(rows, 0)], -np.inf)
        history = np.asarray(history)[len(history) - (self.order - 1) :]
        for k in range(1, len(history) + 1):
            row = self._context_row(history[-k:])
            if row < 0:  # an unlisted context adds nothing, nor do longer ones
                break
            dist += self.log10_backoff[k - 1][row]
            keys = self.keys[k]
            lo, hi = np.searchsorted(keys, [row * size, (row + 1) * size])
            dist[keys[lo:hi] % size] = self.log10_prob[k][lo:hi]
        return dist

    def _context_row(self, words: np.ndarray) -> int:
        """Row of the n-gram ``words`` in its order, −1 if unlisted."""
        row = 0
        for n, w in enumerate(words):
            row = int(lookup(self.keys[n], np.array([row * self.vocab.size + int(w)]))[0])
            if row < 0:
                break
        return row

    @cached_property
    def sampler(self) -> Sampler:
        """The continuation tables ``sample`` draws from (built once per model)."""
        return Sampler(self.keys, self.log10_prob, self.log10_backoff, self.vocab.size)

    def sample(self, n_words: int, seed: int = 0) -> np.ndarray:
        """``n_words`` ids: independent lines, each from ``<s>`` to ``</s>``, the last one cut
        where the budget runs out (thousands drawn side by side: ``seqlm.ngram.sample``)."""
        blocks = list(self.sampler.blocks(n_words, seed)) if n_words > 0 else []
        return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int32)

    def save(self, folder: Path) -> None:
        """A NumPy file per order and column (its keys, log10 p and back-off) plus the
        vocabulary: ``load`` maps them rather than reading them. A model whose arrays are mapped
        (estimated, loaded) is written a batch at a time without being held: each order's pages
        are let go once written."""
        with atomic_dir(Path(folder)) as tmp:
            self.vocab.save(tmp / VOCAB_FILE)
            meta = self.info | {"order": self.order, "format": FORMAT}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
            for n in range(1, self.order + 1):
                keys = self._key_batches(n - 1)
                columns = (keys, self.log10_prob[n - 1], self.log10_backoff[n - 1])
                for name, dtype, values in zip(COLUMNS, DTYPES, columns, strict=True):
                    _write_npy(column_file(tmp, n, name), dtype, self.sizes[n - 1], values)
                rows = (self.context[n - 1], self.word[n - 1]) if self.stored_keys is None else ()
                for array in (*columns, *rows):
                    if isinstance(array, np.ndarray):  # not keys worked out batch by batch
                        release(array)

    def _key_batches(self, i: int) -> np.ndarray | Iterator[np.ndarray]:
        """Order i + 1's keys: a loaded model's as stored, or worked out a batch at a time (the
        whole column is never in memory)."""
        if self.stored_keys is not None or "keys" in self.__dict__:  # already at hand
            return self.keys[i]
        context, word = self.context[i], self.word[i]
        return (
            context[start : start + SAVE_BATCH].astype(np.int64) * self.vocab.size
            + word[start : start + SAVE_BATCH]
            for start in range(0, len(word), SAVE_BATCH)
        )

    @classmethod
    def load(cls, folder: Path) -> NgramModel:
        """A saved model whose arrays are views of its memory-mapped files: loading reads the
        vocabulary and the files' headers, and the pages a search touches are read on demand
        (and shared between processes that load the same folder)."""
        folder = Path(folder)
        if not (folder / META_FILE).exists():
            raise SeqlmError(f"{folder}: not a saved n-gram model (no {META_FILE})")
        try:
            info = json.loads((folder / META_FILE).read_text())
            order, version = info.pop("order"), info.pop("format", 1)
            if version != FORMAT:
                raise SeqlmError(
                    f"{folder}: a saved n-gram model of format {version}, not {FORMAT}; re-save "
                    f"it: seqlm ngram estimate CORPUS --order {order} --save {folder}"
                )
            files = [column_file(folder, n, name) for n in range(1, order + 1) for name in COLUMNS]
            for path in (folder / VOCAB_FILE, *files):
                if not path.is_file():
                    raise SeqlmError(f"{path}: missing from the saved n-gram model")
            vocab = Vocabulary(pl.read_parquet(folder / VOCAB_FILE))
            levels = [_mapped(folder, n) for n in range(1, order + 1)]
        except (ValueError, KeyError, TypeError, pl.exceptions.PolarsError) as e:
            # JSONDecodeError is a ValueError; a file cut short or overwritten ends up here.
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SeqlmError(f"{folder}: damaged saved n-gram model ({reason})") from None
        keys = [level["key"] for level in levels]
        return cls(
            vocab=vocab,
            context=_FromKeys(keys, vocab.size, "context"),
            word=_FromKeys(keys, vocab.size, "word"),
            log10_prob=[level["log10_prob"] for level in levels],
            log10_backoff=[level["log10_backoff"] for level in levels],
            info=info,
            stored_keys=keys,
        )


def _checked(stream: np.ndarray, vocab_size: int) -> np.ndarray:
    """A stream of whole lines over ``vocab_size`` ids, ``<s>`` (context only) in none of them."""
    if len(stream) and (int(stream.min()) < 0 or int(stream.max()) >= vocab_size):
        raise SeqlmError(f"the stream holds ids outside the model's {vocab_size} words")
    if len(stream) and stream[-1] != EOS_ID:
        raise SeqlmError("the id stream must end with </s> (id 2): its last line is unterminated")
    if np.any(stream == BOS_ID):
        raise SeqlmError("the id stream holds <s> (id 1), which is context only and never a target")
    return stream


def _line_cuts(stream: np.ndarray) -> np.ndarray:
    """Where to cut a stream into batches of whole lines of about ``SCORE_BATCH`` targets, or into
    a batch a core where that is less: at the first line end past each multiple of the size."""
    ends = np.flatnonzero(stream == EOS_ID) + 1
    size = max(1, min(SCORE_BATCH, -(-len(stream) // CORES)))
    marks = np.searchsorted(ends, np.arange(size, len(stream), size))
    cuts = np.unique(ends[marks[marks < len(ends)]])
    return cuts[cuts < len(stream)]


def column_file(folder: Path, n: int, column: str) -> Path:
    return Path(folder) / f"order{n}.{column}.npy"


def _write_npy(
    path: Path, dtype: type, length: int, values: np.ndarray | Iterator[np.ndarray]
) -> None:
    """A NumPy file of ``length`` values of ``dtype``, from an array or its batches, written
    with plain writes a batch at a time (the page cache holds them, not the process)."""
    batches = (
        (values[start : start + SAVE_BATCH] for start in range(0, len(values), SAVE_BATCH))
        if isinstance(values, np.ndarray)
        else values
    )
    with path.open("wb") as out:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False}
        np.lib.format.write_array_header_1_0(out, header | {"shape": (length,)})
        for batch in batches:
            np.ascontiguousarray(batch, dtype=dtype).tofile(out)


def _mapped(folder: Path, n: int) -> dict[str, np.ndarray]:
    """The columns of order ``n`` mapped from their files (no copy: ``release`` reaches each
    array's map to let its pages go)."""
    columns = {}
    for name, dtype in zip(COLUMNS, DTYPES, strict=True):
        path = column_file(folder, n, name)
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if array.dtype != dtype or array.ndim != 1:
            raise ValueError(f"{path.name} holds {array.dtype} of {array.ndim} dimensions")
        columns[name] = array
    if len({len(column) for column in columns.values()}) != 1:
        raise ValueError(f"order {n}'s columns differ in length")
    return columns
