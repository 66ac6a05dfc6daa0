"""Drawing text from a back-off n-gram model: thousands of lines side by side, one NumPy pass per
position.

For a history h, p(w | h) is the listed p of the longest listed n-gram ``h' w``, else
bo(h') · p(w | h' less its first word). Each stream keeps the longest listed context c of its line
(its length and row) and draws u uniform over the mass p(· | c) gives every word but ``<s>``
(``total``, 1 for a normalised model): below the mass of c's listed continuations, u picks the one
whose cumulative span holds it (a search over per-context running sums); above it, the stream
backs off to c's suffix s, where the words listed after c are hidden: u is drawn over the mass s
leaves them (``total`` − ``hidden``) and mapped past the hidden words' spans by another search.
A step decides every stream's order first, then runs these two searches once for all orders.
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
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import numpy as np
import polars as pl

from seqlm.errors import SeqlmError
from seqlm.ngram.index import lookup
from seqlm.vocab import BOS_ID, EOS_ID, Vocabulary

STREAMS = 8192  # lines drawn side by side: enough to spread NumPy's per-call cost thin
BLOCK_WORDS = 1 << 20  # words drawn between two emissions of finished lines
MIN_STREAM_WORDS = 64  # a short sample draws with fewer streams (n_words / 64)
THREADS = 2  # an order worked out whole is worked out in two shares side by side
STRIDE = 16  # a search runs first over every 16th value, which stays in the processor's cache


def _zeros(size: int, dtype: type = np.float64, huge: bool = False) -> np.ndarray:
    """Zeros whose pages the system provides on first write, 4 KiB at a time: ``np.zeros`` asks
    for huge pages, 2 MiB resident per scattered write (1.3 GB for 400 words of a 62M n-gram
    model). ``huge``: 2 MiB pages all the same, for an array written from its start."""
    buffer = mmap.mmap(-1, max(size * np.dtype(dtype).itemsize, 1), flags=mmap.MAP_PRIVATE)
    buffer.madvise(mmap.MADV_HUGEPAGE if huge else mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(buffer, dtype=dtype, count=size)


def _distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted (as they come when strictly ascending already, as a whole
    order's contexts are): ``np.unique``'s hashing takes 70× longer than a sort on ascending runs
    of nodes."""
    if np.all(values[1:] > values[:-1]):
        return values
    values = np.sort(values)
    return values[np.append(True, values[1:] != values[:-1])] if len(values) else values


class _Increasing:
    """An increasing array filled from its start, with every ``STRIDE``-th value kept apart: a
    sorted search over those stays in cache, where one over the whole array misses it at nearly
    every halving (2× slower for a million values)."""

    def __init__(self, size: int) -> None:
        self.values = _zeros(size, huge=True)
        self.strided = _zeros(-(-size // STRIDE), huge=True)
        self.filled = 0

    def extend(self, values: np.ndarray) -> None:
        start, self.filled = self.filled, self.filled + len(values)
        self.values[start : self.filled] = values
        first = -(-start // STRIDE)
        self.strided[first : -(-self.filled // STRIDE)] = self.values[
            first * STRIDE : self.filled : STRIDE
        ]

    def count_at_most(self, targets: np.ndarray) -> np.ndarray:
        """How many values are ≤ each target (ascending): ``np.searchsorted(..., "right")``."""
        past = np.searchsorted(self.strided[: -(-self.filled // STRIDE)], targets, side="right")
        at = np.maximum(past * STRIDE - STRIDE, -1)  # the last value ≤ target: at or after it
        half = STRIDE // 2
        while half:
            ahead = np.minimum(at + half, self.filled - 1)
            at = np.where(self.values[ahead] <= targets, ahead, at)
            half //= 2
        return at + 1


def _running_sums(
    p: np.ndarray, place: np.ndarray, start: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Σ p before each row within its context, and each context's whole Σ p. Summed by doubling
    (a pass per power of two up to the longest context): exact to 1e-15, where one running total
    less each context's offset would lose 1e-10 over a million contexts. A context's figures
    depend on its own rows alone, bit for bit, whatever other contexts are summed with it."""
    total = p.copy()
    before = np.cumsum(np.bincount(place))  # before[k]: the rows at most k into their context
    step, rows = 1, None
    while step < len(before):  # a pass adds to the rows at least ``step`` into their context
        if rows is None and 4 * (len(total) - before[step - 1]) > len(total):
            total[step:] += np.where(place[step:] >= step, total[:-step], 0.0)  # adding 0 to some
        else:  # few rows left (short contexts): those alone, by index
            rows = np.flatnonzero(place >= step) if rows is None else rows[place[rows] >= step]
            total[rows] += total[rows - step]
        step *= 2
    below = np.where(place > 0, np.roll(total, 1), 0.0)
    whole = np.zeros(len(start) - 1)
    listed = np.flatnonzero(start[1:] > start[:-1])
    whole[listed] = total[start[listed + 1] - 1]
    return below, whole


class Sampler:
    """A model's continuation tables, filled in as draws reach its contexts; ``blocks`` draws.

    A context's tables are worked out when a draw first reaches it: a few hundred words read a
    few hundred contexts, whatever the model's size, and only their pages are resident
    (``_zeros``). An order with no more n-grams than the words asked for is worked out whole
    before drawing (most of its contexts would be reached, one small batch per step, at several
    times the cost). The words drawn never depend on which contexts were worked out before.

    Every n-gram is a node, numbered across the orders (0: the empty context, then the unigrams'
    rows, the bigrams', ...), so that one step's draws at every order meet in one search. A node
    holds its figures as a continuation of its context (``word``, ``suffix``, ``below``, ``gap``)
    and, once draws reach it as a context, its continuations' (``first``/``stop``: their nodes,
    ``mass``, ``total``, ``hidden``). A context reached is also appended to two increasing arrays,
    ``lift`` + ``below`` and ``lift`` + ``gap`` of its continuations, ``lift`` twice its place
    among the contexts reached: one sorted search over them lands each draw near its row in its
    own context, whichever context or order it is (then stepped to the exact row)."""

    def __init__(
        self,
        keys: list[np.ndarray],
        log10_prob: list[np.ndarray],
        log10_backoff: list[np.ndarray],
        vocab_size: int,
    ):
        self.vocab_size = vocab_size
        self.order = len(keys)
        self.keys, self.log10_prob, self.log10_backoff = keys, log10_prob, log10_backoff
        # The nodes of order n's rows start at base[n - 1]; base[-1] is past the last.
        self.base = np.cumsum([1] + [len(key) for key in keys])
        nodes = int(self.base[-1])
        self.word = _zeros(nodes, np.int32)
        self.suffix = _zeros(nodes, np.int64)  # w2..wn's node (the empty context for unigrams)
        self.below = _zeros(nodes)  # Σ p of its context's continuations before it
        self.gap = _zeros(nodes)  # its suffix's context's mass before the suffix, less the hidden
        self.first = _zeros(nodes, np.int64)  # as a context: its first continuation's node,
        self.stop = _zeros(nodes, np.int64)  # one past its last (> 0: the context is ready)
        self.mass = _zeros(nodes)  # Σ p of its listed continuations
        self.total = _zeros(nodes)  # Σ p(w | context) over every word but <s> (1: normalised)
        self.hidden = _zeros(nodes)  # Σ p(w | its suffix) over its listed continuations w
        self.lift = _zeros(nodes)  # twice its place among the contexts reached
        self.shift = _zeros(nodes, np.int64)  # its continuations' place in near less their node
        self.near = _Increasing(nodes)  # per context reached, per continuation: lift + below
        self.near_gap = _Increasing(nodes)  # and lift + gap
        self.reached = 0  # contexts reached
        self.complete = [False] * self.order  # per order: every context reached
        bos = int(lookup(keys[0], np.array([BOS_ID]))[0])
        # A line starts from <s> as its context (none for a unigram model, or one without <s>).
        self.start_length = 1 if self.order > 1 and bos >= 0 else 0
        self.start_node = int(self.base[0]) + bos if self.start_length else 0

    def _rows(self, level: int, nodes: np.ndarray) -> np.ndarray:
        """The rows in order ``level`` + 1 of its nodes (the empty context for level −1)."""
        return nodes - self.base[level] if level >= 0 else np.zeros(len(nodes), np.int64)

    def _suffixes(self, level: int, nodes: np.ndarray) -> np.ndarray:
        """The suffix nodes of nodes of order ``level`` + 1, their own contexts made ready."""
        if not self.complete[level]:
            context = np.zeros(1, np.int64)  # the empty one, for unigrams
            if level > 0:
                rows = self.keys[level][self._rows(level, nodes)]
                context = rows // self.vocab_size + self.base[level - 1]
            self._ready(level, context)
        return self.suffix[nodes]

    def _ready(self, level: int, contexts: np.ndarray, parts: int = 1) -> None:
        """Work out the contexts (nodes) whose continuations are order ``level`` + 1's rows, those
        not yet reached: first what they read of the order below, then their tables, in ``parts``
        shares side by side (NumPy lets other threads run inside its loops)."""
        if self.complete[level]:
            return
        todo = _distinct(contexts[self.stop[contexts] == 0])
        if not len(todo):
            return
        shorter = todo  # unused for the unigrams' one context
        if level:
            shorter = self._suffixes(level - 1, todo)
            self._ready(level - 1, shorter)
        shares = [(todo, shorter)]
        if parts > 1 and len(todo) > 1:
            cuts = np.array_split(np.arange(len(todo)), min(parts, len(todo)))
            shares = [(todo[cut], shorter[cut]) for cut in cuts]
            with ThreadPoolExecutor(len(shares)) as pool:
                tables = list(pool.map(lambda share: self._tables(level, *share), shares))
        else:
            tables = [self._tables(level, todo, shorter)]
        for share, table in zip(shares, tables, strict=True):  # in order: the same lifts
            self._fill(level, share[0], *table)

    def _tables(self, level: int, todo: np.ndarray, shorter: np.ndarray) -> tuple[np.ndarray, ...]:
        """Contexts' continuations and their figures, from the model and the order below's
        tables (``shorter``: the contexts' suffixes, ready)."""
        size = self.vocab_size
        key = self.keys[level]
        context = self._rows(level - 1, todo)
        first = np.searchsorted(key, context * size)
        stop = np.searchsorted(key, (context + 1) * size)
        lengths = stop - first
        start = np.concatenate(([0], np.cumsum(lengths)))
        place = np.arange(start[-1]) - np.repeat(start[:-1], lengths)  # within its context
        rows = np.repeat(first, lengths) + place
        word = key[rows] % size
        p = np.where(word == BOS_ID, 0.0, 10.0 ** self.log10_prob[level][rows])
        below, mass = _running_sums(p, place, start)
        if level == 0:  # the empty context: no suffix, nothing hidden, its listed mass is all
            none = np.zeros(len(rows))
            return first, stop, rows, word, none.astype(np.int64), below, none, mass, mass, mass * 0
        lower = lookup(
            self.keys[level - 1],
            np.repeat(self._rows(level - 2, shorter), lengths) * size + word,
        )
        if np.any(lower < 0):
            raise SeqlmError(
                f"the model lists {level + 1}-grams whose last {level} words it does not list: "
                "sampling needs every n-gram's suffix (lmplz's and seqlm's models have them)"
            )
        suffix = lower + self.base[level - 1]
        p_lower = np.where(word == BOS_ID, 0.0, 10.0 ** self.log10_prob[level - 1][lower])
        hidden_below, hidden = _running_sums(p_lower, place, start)
        gap = self.below[suffix] - hidden_below
        # p(· | context) sums its listed words and, backed off, its suffix's other words.
        bo = 10.0 ** self.log10_backoff[level - 1][context]
        total = mass + bo * (self.total[shorter] - hidden)
        return first, stop, rows, word, suffix, below, gap, mass, total, hidden

    def _fill(
        self,
        level: int,
        todo: np.ndarray,
        first: np.ndarray,
        stop: np.ndarray,
        rows: np.ndarray,
        word: np.ndarray,
        suffix: np.ndarray,
        below: np.ndarray,
        gap: np.ndarray,
        mass: np.ndarray,
        total: np.ndarray,
        hidden: np.ndarray,
    ) -> None:
        """Write contexts' tables, and append them to the searched arrays."""
        nodes = rows + self.base[level]
        self.word[nodes], self.suffix[nodes] = word, suffix
        self.below[nodes], self.gap[nodes] = below, gap
        lengths = stop - first
        lift = 2.0 * (self.reached + np.arange(len(todo)))
        self.shift[todo] = (
            self.near.filled + np.cumsum(lengths) - lengths - first - self.base[level]
        )
        self.near.extend(np.repeat(lift, lengths) + below)
        self.near_gap.extend(np.repeat(lift, lengths) + gap)
        self.lift[todo], self.mass[todo], self.total[todo] = lift, mass, total
        self.hidden[todo] = hidden
        self.first[todo], self.stop[todo] = first + self.base[level], stop + self.base[level]
        self.reached += len(todo)

    def _whole(self, level: int) -> None:
        """Work out every context of order ``level`` + 1 at once (most would be reached, one small
        batch per step, at several times the cost). Its tables stay on small pages: asking for
        huge ones cost more in faults than it saved in the draws (PTB's 5-gram, 2M tokens: 1.73 s
        against 2.00 s; 20M: 10.84 s against 10.76 s)."""
        contexts = int(self.base[level - 1]) if level else 0
        whole = np.arange(contexts, self.base[level]) if level else np.zeros(1, np.int64)
        self._ready(level, whole, parts=THREADS)
        self.complete[level] = True

    def blocks(self, n_words: int, seed: int, streams: int = STREAMS) -> Iterator[np.ndarray]:
        """``n_words`` ids in all, in blocks: whole lines (each ending with ``</s>``) in the order
        they started, the last block's last line cut where ``n_words`` runs out. Deterministic
        for (model, n_words, seed)."""
        for level, key in enumerate(self.keys):
            if len(key) <= n_words and not self.complete[level]:
                self._whole(level)
        rng = np.random.default_rng(seed)
        width = int(min(streams, max(1, n_words // MIN_STREAM_WORDS)))
        length = np.full(width, self.start_length, dtype=np.int64)
        node = np.full(width, self.start_node, dtype=np.int64)
        line = np.arange(width, dtype=np.int64)  # the id of the line each stream is drawing
        at = np.zeros(width, dtype=np.int32)  # its next word's place in that line
        lines = width  # ids handed out
        drawn = 0
        done = 0  # lines emitted: every id below it
        # Words drawn and not yet emitted: the word, its line's id, its place in the line.
        pending = (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int32))
        left = n_words
        seen = None  # once every line the output needs has started: each line's words so far
        while left > 0:
            record = [pending]
            for _ in range(-(-min(left, BLOCK_WORDS) // max(len(line), 1))):
                if not len(line):
                    break
                word, length, node = self._step(length, node, rng)
                record.append((word.astype(np.int32), line, at))
                drawn += len(word)
                ends = word == EOS_ID
                if drawn >= n_words:  # the lines the output needs have all started: streams
                    # stop as their lines end, or once the lines before theirs fill the output
                    seen = _words_per_line(seen, record, line, done, lines)
                    needed = np.searchsorted(np.cumsum(seen), left)  # the last line needed
                    keep = ~ends & (line - done <= needed)
                    length, node, line, at = length[keep], node[keep], line[keep], at[keep] + 1
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
            if seen is not None:
                seen = seen[frontier - done :]
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
        self, length: np.ndarray, context: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One word for every stream, from its context (its length and node); the next contexts.

        Order by order from the longest, each stream still drawing decides whether it takes a
        listed word or backs off to its context's suffix (u over the mass left); then the words
        of every order are found with two searches in all."""
        at = context.copy()  # the context where each stream takes a listed word
        upper = np.full(len(length), -1, dtype=np.int64)  # the context it backed off from
        level = np.empty(len(length), dtype=np.int64)  # at's continuations' order, less one
        u = np.empty(len(length))
        by_length = np.argsort(length, kind="stable")
        starts = np.split(by_length, np.cumsum(np.bincount(length, minlength=self.order))[:-1])
        backed = np.zeros(0, dtype=np.int64)
        for n in range(self.order - 1, -1, -1):
            todo = np.concatenate([starts[n], backed])
            here, up = at[todo], upper[todo]
            if not self.complete[n]:
                self._ready(n, here)
            hidden = np.where(up >= 0, self.hidden[up], 0.0)
            drawn = rng.random(len(todo)) * (self.total[here] - hidden)
            listed = drawn < self.mass[here] - hidden if n else np.ones(len(todo), np.bool_)
            backed = todo[~listed]
            upper[backed] = at[backed]
            at[backed] = self._suffixes(n - 1, at[backed])
            done = todo[listed]
            u[done], level[done] = drawn[listed], n
        lo, hi = self.first[at], self.stop[at]
        low, high = lo, hi  # the span a hidden word bounds on each side
        moved = np.flatnonzero(upper >= 0)
        if len(moved):
            up = upper[moved]
            first, last = self.first[up], self.stop[up]
            # The first hidden word past u (nxt), then u as a mass over every word.
            nxt = 1 + self._last_at_most(self.near_gap, self.gap, up, first, last, u[moved])
            inside = nxt < last
            hidden_before = self.hidden[up]
            next_hidden = self.suffix[np.minimum(nxt, len(self.suffix) - 1)]
            hidden_before[inside] = self.below[next_hidden[inside]] - self.gap[nxt[inside]]
            u[moved] += hidden_before
            high = hi.copy()
            high[moved] = np.where(inside, next_hidden, hi[moved])
            low = lo.copy()
            low[moved] = np.where(nxt > first, self.suffix[np.maximum(nxt - 1, 0)] + 1, lo[moved])
        pick = self._last_at_most(self.near, self.below, at, lo, hi, u)
        np.clip(pick, low, high - 1, out=pick)
        word = self.word[pick]
        # The context grows by the word, unless it is already the longest kept.
        full = level + 1 == self.order
        new_length = np.where(full, level, level + 1)
        new_context = np.where(full, self.suffix[pick], pick)
        ends = word == EOS_ID
        new_length[ends] = self.start_length
        new_context[ends] = self.start_node
        return word, new_length, new_context

    def _last_at_most(
        self,
        near: _Increasing,
        exact: np.ndarray,
        context: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        u: np.ndarray,
    ) -> np.ndarray:
        """Per query, the last node of ``lo:hi`` (its context's continuations) whose ``exact``
        (nondecreasing there) is ≤ u, else lo − 1: found by one sorted search over ``near``
        (lift + exact) for lift + u, then stepped to the exact node (float rounding of the lift
        can land it a row or two off)."""
        target = self.lift[context] + u
        order = np.argsort(target)  # NumPy searches sorted queries several times faster
        at = np.empty(len(u), dtype=np.int64)
        at[order] = near.count_at_most(target[order])
        at -= self.shift[context] + 1
        np.clip(at, lo - 1, hi - 1, out=at)
        last = len(exact) - 1
        while True:
            ahead = (at + 1 < hi) & (exact[np.minimum(at + 1, last)] <= u)
            behind = (at >= lo) & (exact[at] > u)
            if not (ahead.any() or behind.any()):
                return at
            at += ahead
            at -= behind


def _words_per_line(
    seen: np.ndarray | None, record: list, line: np.ndarray, done: int, lines: int
) -> np.ndarray:
    """The words drawn so far of each line from ``done`` on (no line starts any more): counted
    from the ``record`` of the draws the first time (``seen`` None), then one step's at a time
    (``line``: the lines of the step's streams, each once)."""
    if seen is None:
        ids = np.concatenate([part[1] for part in record])
        return np.bincount(ids - done, minlength=lines - done)
    seen[line - done] += 1
    return seen


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
    """Write ``Sampler.blocks`` as text block by block (never the whole sample in memory), each
    block made text in a second thread while the next is drawn; the number of ids written."""
    written = 0
    with ThreadPoolExecutor(1) as pool:
        text = None
        for ids in blocks:
            following = pool.submit(sample_text, ids, vocab)
            if text is not None:
                out.write(text.result())
            text = following
            written += len(ids)
        if text is not None:
            out.write(text.result())
    return written
