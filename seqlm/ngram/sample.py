"""Drawing text from a back-off n-gram model: thousands of lines side by side, one NumPy pass per
position.

For a history h, p(w | h) is the listed p of the longest listed n-gram ``h' w``, else
bo(h') · p(w | h' less its first word). Each stream keeps the longest listed context c of its line
(its length and row) and draws u uniform over the mass p(· | c) gives every word but ``<s>``
(``total``, 1 for a normalised model): below the mass of c's listed continuations, u picks the one
whose cumulative span holds it (one search over per-context running sums); above it, the stream
backs off to c's suffix s, where the words listed after c are hidden: u is drawn over the mass s
leaves them (``total`` − ``hidden``) and mapped past the hidden words' spans by a second search.
No rejection, no loop per word: the draw is the model's p(w | h) over w ≠ ``<s>``, normalised,
exactly (up to float rounding at 1e-15), whatever its back-off weights sum to. ``<s>`` is never
drawn (its unigram entry is a placeholder: log10 0 here, −99 in ARPA).

Lines are emitted in the order they start (an id is handed out at each line's start), not the
order they end: a line's place never depends on its own length, so the output is distributed as
independent lines one after another, the last cut where the word budget runs out.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np
import polars as pl

from seqlm.errors import SeqlmError
from seqlm.ngram.index import lookup
from seqlm.vocab import BOS_ID, EOS_ID, Vocabulary

STREAMS = 8192  # lines drawn side by side: enough to spread NumPy's per-call cost thin
BLOCK_WORDS = 1 << 20  # words drawn between two emissions of finished lines
MIN_STREAM_WORDS = 64  # a short sample draws with fewer streams (n_words / 64)


class _Order:
    """Order n's n-grams as continuations of their contexts, the rows of order n − 1 (the unigrams
    continue the one empty context, row 0), worked out a context at a time as the draws reach it
    (``ready``): a few hundred words read a few hundred contexts, whatever the model's size, and
    only the pages of the contexts reached are resident (``_zeros``). "Hidden": the mass the
    context's suffix gives to the words listed here, which a draw backed off from this context
    must not take."""

    def __init__(self, key: np.ndarray, contexts: int) -> None:
        self.key = key  # the model's sorted keys: context row · V + word
        self.ready = _zeros(contexts, np.bool_)
        self.mass = _zeros(contexts)  # per context: Σ p of its listed continuations
        self.total = _zeros(contexts)  # Σ p(w | context) over every word but <s> (1: normalised)
        self.hidden = _zeros(contexts)  # Σ p(w | its suffix) over its listed continuations w
        self.first = _zeros(contexts, np.int64)  # per context: its first continuation's row
        self.stop = _zeros(contexts, np.int64)  # and one past its last
        self.suffix = _zeros(len(key), np.int64)  # per row: w2..wn's row in order n − 1
        self.below = _zeros(len(key))  # per row: Σ p of its context's continuations before it
        self.gap = _zeros(len(key))  # per row: the suffix's mass before it, less the hidden part

    def span(self, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each (ready) context's first continuation's row, and one past its last."""
        return self.first[context], self.stop[context]


def _zeros(size: int, dtype: type = np.float64) -> np.ndarray:
    """Zeros whose pages the system provides on first write, 4 KiB at a time: ``np.zeros`` asks
    for huge pages, 2 MiB resident per scattered write (1.3 GB for 400 words of a 62M n-gram
    model)."""
    buffer = mmap.mmap(-1, max(size * np.dtype(dtype).itemsize, 1), flags=mmap.MAP_PRIVATE)
    buffer.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(buffer, dtype=dtype, count=size)


def _running_sums(
    p: np.ndarray, place: np.ndarray, start: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Σ p before each row within its context, and each context's whole Σ p. Summed by doubling
    (a pass per power of two up to the longest context): exact to 1e-15, where one running total
    less each context's offset would lose 1e-10 over a million contexts. A context's figures
    depend on its own rows alone, bit for bit, whatever other contexts are summed with it."""
    total = p.copy()
    step = 1
    while step <= (int(place.max()) if len(place) else 0):
        total[step:] += np.where(place[step:] >= step, total[:-step], 0.0)
        step *= 2
    below = np.where(place > 0, np.roll(total, 1), 0.0)
    whole = np.zeros(len(start) - 1)
    listed = np.flatnonzero(start[1:] > start[:-1])
    whole[listed] = total[start[listed + 1] - 1]
    return below, whole


class Sampler:
    """A model's continuation tables, filled in as draws reach its contexts; ``blocks`` draws."""

    def __init__(
        self,
        keys: list[np.ndarray],
        log10_prob: list[np.ndarray],
        log10_backoff: list[np.ndarray],
        vocab_size: int,
    ):
        self.vocab_size = vocab_size
        self.order = len(keys)
        self.log10_prob, self.log10_backoff = log10_prob, log10_backoff
        self.orders = [_Order(key, len(keys[n - 1]) if n else 1) for n, key in enumerate(keys)]
        bos = int(lookup(keys[0], np.array([BOS_ID]))[0])
        # A line starts from <s> as its context (none for a unigram model, or one without <s>).
        self.start_length = 1 if self.order > 1 and bos >= 0 else 0
        self.start_row = bos if self.start_length else 0

    def _suffix(self, level: int, rows: np.ndarray) -> np.ndarray:
        """The suffix rows (in the order below) of rows of order ``level`` + 1."""
        cont = self.orders[level]
        self._ready(level, cont.key[rows] // self.vocab_size)
        return cont.suffix[rows]

    def _ready(self, level: int, contexts: np.ndarray) -> None:
        """Work out the contexts of order ``level`` + 1 not yet reached (and, first, what they
        read of the order below)."""
        cont, size = self.orders[level], self.vocab_size
        todo = np.unique(contexts[~cont.ready[contexts]]).astype(np.int64)
        if not len(todo):
            return
        first = np.searchsorted(cont.key, todo * size)
        stop = np.searchsorted(cont.key, (todo + 1) * size)
        lengths = stop - first
        start = np.concatenate(([0], np.cumsum(lengths)))
        place = np.arange(start[-1]) - np.repeat(start[:-1], lengths)  # within its context
        rows = np.repeat(first, lengths) + place
        word = cont.key[rows] % size
        p = np.where(word == BOS_ID, 0.0, 10.0 ** self.log10_prob[level][rows])
        below, mass = _running_sums(p, place, start)
        if level == 0:
            suffix, hidden, gap, total = np.zeros(len(rows), np.int64), 0.0, 0.0, mass
        else:
            lower = self.orders[level - 1]
            shorter = self._suffix(level - 1, todo)
            self._ready(level - 1, shorter)
            suffix = lookup(lower.key, np.repeat(shorter, lengths) * size + word)
            if np.any(suffix < 0):
                raise SeqlmError(
                    f"the model lists {level + 1}-grams whose last {level} words it does not list: "
                    "sampling needs every n-gram's suffix (lmplz's and seqlm's models have them)"
                )
            p_lower = np.where(word == BOS_ID, 0.0, 10.0 ** self.log10_prob[level - 1][suffix])
            hidden_below, hidden = _running_sums(p_lower, place, start)
            gap = lower.below[suffix] - hidden_below
            # p(· | context) sums its listed words and, backed off, its suffix's other words.
            bo = 10.0 ** self.log10_backoff[level - 1][todo]
            total = mass + bo * (lower.total[shorter] - hidden)
        cont.suffix[rows], cont.below[rows], cont.gap[rows] = suffix, below, gap
        cont.mass[todo], cont.total[todo], cont.hidden[todo] = mass, total, hidden
        cont.first[todo], cont.stop[todo] = first, stop
        cont.ready[todo] = True

    def blocks(self, n_words: int, seed: int, streams: int = STREAMS) -> Iterator[np.ndarray]:
        """``n_words`` ids in all, in blocks: whole lines (each ending with ``</s>``) in the order
        they started, the last block's last line cut where ``n_words`` runs out. Deterministic
        for (model, n_words, seed)."""
        rng = np.random.default_rng(seed)
        width = int(min(streams, max(1, n_words // MIN_STREAM_WORDS)))
        length = np.full(width, self.start_length, dtype=np.int64)
        row = np.full(width, self.start_row, dtype=np.int64)
        line = np.arange(width, dtype=np.int64)  # the id of the line each stream is drawing
        at = np.zeros(width, dtype=np.int32)  # its next word's place in that line
        lines = width  # ids handed out
        drawn = 0
        done = 0  # lines emitted: every id below it
        # Words drawn and not yet emitted: the word, its line's id, its place in the line.
        pending = (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int32))
        left = n_words
        while left > 0:
            record = [pending]
            for _ in range(-(-min(left, BLOCK_WORDS) // max(len(line), 1))):
                if not len(line):
                    break
                word, length, row = self._step(length, row, rng)
                record.append((word.astype(np.int32), line, at))
                drawn += len(word)
                ends = word == EOS_ID
                if drawn >= n_words:  # the lines the output needs have all started: let the
                    keep = ~ends  # streams stop as their lines end
                    length, row, line, at = length[keep], row[keep], line[keep], at[keep] + 1
                else:
                    started = int(np.count_nonzero(ends))
                    line = line.copy()
                    line[ends] = lines + np.arange(started)
                    lines += started
                    at = np.where(ends, 0, at + 1).astype(np.int32)
            words, ids, place = (np.concatenate(parts) for parts in zip(*record, strict=True))
            frontier = int(line.min()) if len(line) else lines  # the first line still drawn
            finished = ids < frontier
            out = _in_line_order(words[finished], ids[finished] - done, place[finished])
            done = frontier
            pending = (words[~finished], ids[~finished], place[~finished])
            if len(out) >= left:
                yield out[:left]
                return
            left -= len(out)
            partial = pending[0][pending[1] == frontier]  # in drawing order
            if len(partial) >= left:  # the next line alone fills the budget
                yield np.concatenate([out, partial[:left]])
                return
            yield out

    def _step(
        self, length: np.ndarray, row: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One word for every stream, from its context (length, row); the next contexts."""
        word = np.empty(len(length), dtype=np.int64)
        new_length = np.empty_like(length)
        new_row = np.empty_like(row)
        at = row.copy()  # the row of each stream's current context
        upper = np.full(len(length), -1, dtype=np.int64)  # the context it backed off from
        by_length = np.argsort(length, kind="stable")
        starts = np.split(by_length, np.cumsum(np.bincount(length, minlength=self.order))[:-1])
        backed = np.zeros(0, dtype=np.int64)
        for level in range(self.order - 1, -1, -1):
            todo = np.concatenate([starts[level], backed])
            listed, pick = self._draw(level, at[todo], upper[todo], rng)
            backed = todo[~listed]
            upper[backed] = at[backed]
            at[backed] = self._suffix(level - 1, at[backed])
            done = todo[listed]
            word[done] = self.orders[level].key[pick] % self.vocab_size
            # The context grows by the word, unless it is already the longest kept.
            full = level + 1 == self.order
            new_length[done] = level if full else level + 1
            new_row[done] = self.orders[level].suffix[pick] if full else pick
        ends = word == EOS_ID
        new_length[ends] = self.start_length
        new_row[ends] = self.start_row
        return word, new_length, new_row

    def _draw(
        self, level: int, context: np.ndarray, upper: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """At contexts of length ``level``: whether each stream takes a listed word (else it backs
        off), and that word's row. A stream backed off from ``upper`` (≥ 0) draws from the mass
        its suffix leaves once the words listed after ``upper`` are hidden."""
        cont = self.orders[level]
        self._ready(level, context)
        hidden = np.zeros(len(context))
        above = self.orders[level + 1] if level + 1 < self.order else None
        from_above = upper >= 0
        if above is not None:
            self._ready(level + 1, upper[from_above])
            hidden[from_above] = above.hidden[upper[from_above]]
        u = rng.random(len(context)) * (cont.total[context] - hidden)
        listed = u < cont.mass[context] - hidden
        if level == 0:
            listed[:] = True  # the unigrams leave nothing to back off to
        context, u = context[listed], u[listed]
        lo, hi = cont.span(context)
        low, high = lo, hi  # the span a hidden word bounds on each side
        if above is not None and from_above.any():
            moved = np.flatnonzero(from_above[listed])
            up = upper[listed][moved]
            first, last = above.span(up)
            # The first hidden word past u (nxt), then u as a mass over every word.
            nxt = first + _count(above.gap, first, last, u[moved])
            inside = nxt < last
            hidden_before = above.hidden[up].copy()
            next_hidden = above.suffix[np.minimum(nxt, len(above.suffix) - 1)]
            hidden_before[inside] = cont.below[next_hidden[inside]] - above.gap[nxt[inside]]
            u[moved] += hidden_before
            high = hi.copy()
            high[moved] = np.where(inside, next_hidden, hi[moved])
            low = lo.copy()
            low[moved] = np.where(nxt > first, above.suffix[np.maximum(nxt - 1, 0)] + 1, lo[moved])
        pick = lo + _count(cont.below, lo, hi, u) - 1
        return listed, np.clip(pick, low, high - 1)


def _count(exact: np.ndarray, lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
    """How many of ``exact[lo:hi]`` (one context's, nondecreasing) are ≤ u, for each query: the
    spans bisected side by side, reading only rows of the contexts the draws reached."""
    low, high = lo.copy(), hi.copy()  # the first row past u lies in [low, high]
    while True:
        open_ = np.flatnonzero(low < high)
        if not len(open_):
            return low - lo
        mid = (low[open_] + high[open_]) // 2
        right = exact[mid] <= u[open_]
        low[open_] = np.where(right, mid + 1, low[open_])
        high[open_] = np.where(right, high[open_], mid)


def _in_line_order(words: np.ndarray, line: np.ndarray, place: np.ndarray) -> np.ndarray:
    """Whole lines' words, gathered by line (ids from 0) and by place within each line."""
    lengths = np.bincount(line)
    first = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    out = np.empty(len(words), dtype=np.int32)
    out[first[line] + place] = words
    return out


def sample_text(ids: np.ndarray, vocab: Vocabulary) -> bytes:
    """Lines of tokens joined by spaces, one per ``</s>``; ids that end inside a line (a cut
    sample's last) still end with a newline."""
    ids = np.asarray(ids)
    ends = ids == EOS_ID
    before_end = np.append(ends[1:], True)  # no space before a line's end
    words = vocab.tokens.clone().scatter(EOS_ID, "\n").gather(ids)
    glue = pl.when(pl.Series(ends | before_end)).then(pl.lit("")).otherwise(pl.lit(" "))
    text = pl.select(pl.concat_str([words, glue])).to_series().str.join("").item()
    return (text if len(ids) == 0 or ends[-1] else text + "\n").encode()


def write_sample(blocks: Iterable[np.ndarray], vocab: Vocabulary, out: BinaryIO) -> int:
    """Write ``Sampler.blocks`` as text block by block (never the whole sample in memory);
    the number of ids written."""
    written = 0
    for ids in blocks:
        out.write(sample_text(ids, vocab))
        written += len(ids)
    return written
