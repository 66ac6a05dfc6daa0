"""Modified Kneser–Ney, as KenLM's ``lmplz`` estimates it, over the order-by-order index of sorted
count tables (:mod:`seqlm.ngram.levels`), in row batches: memory bounded by the order below.

Chen & Goodman's interpolated estimate with three discounts per order: the top order keeps raw
counts, lower orders use adjusted counts (the number of distinct left extensions; n-grams that
start with ``<s>`` have none and keep raw counts; the unigram ``<s>`` gets 0), discounts come from
each order's counts-of-counts, and the unigram is interpolated with the uniform distribution:

    p(w | h) = (a(hw) − D(a)) / Σ_w a(hw) + γ(h) · p(w | h's suffix)
    γ(h) = (D1·N1(h) + D2·N2(h) + D3·N3+(h)) / Σ_w a(hw)

Per context the sums are of integers (Σ a and how many have count 1, 2 and 3+), so where a batch
ends cannot change a figure. The counts-of-counts are known after indexing, and a corpus that gives
no discount is refused then, before any estimate. ``lmplz --prune`` drops n-grams whose raw count
is at most their order's threshold; their whole adjusted count joins their context's back-off
mass, and the discounts stay the unpruned model's (:mod:`seqlm.ngram.prune`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqlm.errors import SeqlmError
from seqlm.ngram.levels import Level, Spilled, Tables, batch_rows, index_orders, row_type
from seqlm.ngram.model import NgramModel
from seqlm.vocab import BOS_ID, UNK_ID, Vocabulary

log = logging.getLogger(__name__)

# lmplz --discount_fallback: D1, D2, D3+ for an order whose counts-of-counts give no valid discount.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def fit_kneser_ney(
    tables: Tables,
    order: int,
    vocab: Vocabulary,
    scratch: Path,
    memory: int,
    *,
    discount_fallback: bool = False,
    first_seen: np.ndarray | None = None,
    prune: Sequence[int] = (),
    setting: str = "memory",
) -> NgramModel:
    """A model of ``order`` from the count tables, estimated within ``memory`` bytes (``setting``
    names the budget in a refusal), its arrays written to ``scratch`` and mapped from there.

    ``first_seen``: lmplz's word numbering (:func:`seqlm.ngram.estimate.first_seen`); with it the
    counts-of-counts reproduce lmplz's printed discounts digit for digit. ``prune``: one count
    threshold per order (:func:`seqlm.ngram.prune.thresholds`)."""
    batch = batch_rows(tables, order, vocab.size, memory, setting)
    levels, open_rows = index_orders(tables, order, vocab.size, scratch, batch, first_seen)
    adjusted, coc = adjust(levels, open_rows, scratch)
    d = discounts(coc, discount_fallback)  # refused here if it must be, before any estimate
    uniform = vocab.size - 1 + int(levels[0].count.read(UNK_ID, UNK_ID + 1)[0] > 0)
    limits = list(prune) or [0] * order
    estimated = estimate_orders(levels, adjusted, d, uniform, limits, scratch, batch)
    arrays = estimated.arrays()
    info = {
        "smoothing": "kn",
        "discounts": d[:, 1:].tolist(),
        "counts_of_counts": coc[:, 1:].tolist(),
    }
    if any(limits):
        info["prune"] = limits
    return NgramModel(
        vocab=vocab, info=info | {"sizes": [len(w) for w in arrays["word"]]}, **arrays
    )


def adjust(
    levels: list[Level], open_rows: dict[int, tuple[int, int]], scratch: Path
) -> tuple[list[Spilled], np.ndarray]:
    """Each order's adjusted counts (written to ``scratch``) and the counts-of-counts ``[order,
    k]`` of adjusted count k = 1..4 (column 0 unused), where the rows lmplz leaves open count at
    their raw counts. The top order keeps raw counts; below, a count is the distinct left
    extensions, except that n-grams starting with ``<s>`` (they have none) keep raw counts and
    the unigram ``<s>`` gets 0."""
    coc = np.zeros((len(levels), 5), dtype=np.int64)
    adjusted = []
    for n, level in enumerate(levels, start=1):
        if n == len(levels):
            a, spilled = level.count.load(), level.count
        else:
            a, spilled = (
                level.extensions.load(),
                Spilled(scratch / f"adjusted{n}", np.dtype(np.int64)),
            )
            first, stop = level.bos
            a[first:stop] = level.count.read(first, stop)
            if n == 1:
                a[BOS_ID] = 0
            spilled.append(a)
        bins = np.bincount(np.minimum(a, 5), minlength=6)
        if n in open_rows:
            row, raw = open_rows[n]
            bins[min(a[row], 5)] -= 1
            bins[min(raw, 5)] += 1
        coc[n - 1] = bins[:5]
        adjusted.append(spilled)
    return adjusted, coc


def discounts(coc: np.ndarray, fallback: bool) -> np.ndarray:
    """``[order, k]`` = D_k for k = 1, 2, 3+ (Chen & Goodman eq. 26; column 0 is D_0 = 0)."""
    out = np.zeros((len(coc), 4))
    for i, n in enumerate(coc):
        problem = next(
            (f"no {i + 1}-grams have adjusted count {k}" for k in (1, 2, 3) if n[k] == 0),
            None,
        )
        if problem is None:
            y = n[1] / (n[1] + 2.0 * n[2])
            d = np.array([k - (k + 1) * y * n[k + 1] / n[k] for k in (1, 2, 3)])
            bad = [k for k in (1, 2, 3) if not 0.0 <= d[k - 1] <= k]
            if not bad:
                out[i, 1:] = d
                continue
            k = bad[0]
            problem = f"the {i + 1}-gram discount D{k} = {d[k - 1]:.4g} is outside [0, {k}]"
        if not fallback:
            raise SeqlmError(
                f"modified Kneser-Ney: {problem} (counts-of-counts n1..n4 = "
                f"{', '.join(map(str, n[1:]))}), so order {i + 1} has no valid discounts; the "
                "corpus is too small or artificial. Use --discount-fallback (discount_fallback="
                f"True) for lmplz's fallback discounts {' '.join(map(str, FALLBACK_DISCOUNTS))}"
            )
        log.warning(
            "order %d: %s; substituting fallback discounts D1=%g D2=%g D3+=%g",
            i + 1,
            problem,
            *FALLBACK_DISCOUNTS,
        )
        out[i, 1:] = FALLBACK_DISCOUNTS
    return out


# ---- interpolated probabilities and back-offs ----


def _log10(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log10(x)


@dataclass
class Estimated:
    """The model's arrays per order, on disk: unpruned orders keep their index's context and word
    files; pruned ones get their kept rows' own."""

    context: list[Spilled]
    word: list[Spilled]
    log10_prob: list[Spilled]
    log10_backoff: list[Spilled]

    def arrays(self) -> dict[str, list[np.ndarray]]:
        return {name: [s.mapped() for s in getattr(self, name)] for name in COLUMNS}


COLUMNS = ("context", "word", "log10_prob", "log10_backoff")


def estimate_orders(
    levels: list[Level],
    adjusted: list[Spilled],
    d: np.ndarray,
    uniform_size: int,
    prune: Sequence[int],
    scratch: Path,
    batch: int,
) -> Estimated:
    """Each order's interpolated log10 p, batch by batch, from the order below's probabilities;
    each context's back-off, once all its extensions are seen."""
    out = Estimated([], [], [], [])
    lower = np.full(levels[0].rows, 1.0 / uniform_size)  # below the unigrams: uniform
    kept_below = renumber = None  # a pruned order below: its kept rows, and their new numbers
    for n, level in enumerate(levels, start=1):
        top, pruned = n == len(levels), prune[n - 1] > 0
        probs = None if top else np.empty(level.rows)
        backoff = np.zeros(len(lower))  # 0 for a row that is no context
        kept_rows = np.zeros(level.rows, dtype=bool) if pruned else None
        if pruned:
            out.context.append(Spilled(scratch / f"kept_context{n}", row_type(len(lower))))
            out.word.append(Spilled(scratch / f"kept_word{n}", level.word.dtype))
        else:
            out.context.append(level.context)
            out.word.append(level.word)
        out.log10_prob.append(Spilled(scratch / f"log10_prob{n}", np.dtype(np.float64)))
        for start, context, suffix in _context_batches(level, batch):
            stop = start + len(context)
            a = adjusted[n - 1].read(start, stop)
            keep = level.count.read(start, stop) > prune[n - 1] if pruned else None
            gamma, p = interpolate(a, context, keep, d[n - 1], lower[suffix] if n > 1 else lower)
            present = gamma >= 0
            backoff[int(context[0]) + np.flatnonzero(present)] = _log10(gamma[present])
            if probs is not None:
                probs[start:stop] = p
            log_p = _log10(p)
            if n == 1:
                log_p[BOS_ID] = 0.0  # <s> is never predicted; lmplz writes probability 1
            if keep is None:
                out.log10_prob[-1].append(log_p)
                continue
            kept_rows[start:stop] = keep
            out.log10_prob[-1].append(log_p[keep])
            out.context[-1].append(context[keep] if renumber is None else renumber[context[keep]])
            out.word[-1].append(level.word.read(start, stop)[keep])
        if n > 1:  # the order below's back-offs are complete
            out.log10_backoff[-1].append(backoff if kept_below is None else backoff[kept_below])
        out.log10_backoff.append(Spilled(scratch / f"log10_backoff{n}", np.dtype(np.float64)))
        lower, kept_below = probs, kept_rows
        renumber = None if kept_rows is None else np.cumsum(kept_rows) - 1
    kept = levels[-1].rows if kept_below is None else int(kept_below.sum())
    out.log10_backoff[-1].append(np.zeros(kept))  # the top order is never a context
    return out


def interpolate(
    a: np.ndarray, context: np.ndarray, keep: np.ndarray | None, d: np.ndarray, lower: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For a batch holding its contexts' extensions whole: each context's γ, from
    ``context[0]`` on (−1 where a row is no context), and each n-gram's interpolated p."""
    local = context - context[0]
    width = int(local[-1]) + 1
    k = np.minimum(a, 3)
    total = np.bincount(local, weights=a, minlength=width)
    counted = k if keep is None else np.where(keep, k, 0)  # N1, N2, N3+ of kept n-grams
    by_k = np.bincount(local * 4 + counted, minlength=4 * width).reshape(width, 4)
    mass = d[1] * by_k[:, 1] + d[2] * by_k[:, 2] + d[3] * by_k[:, 3]
    if keep is not None:  # a pruned n-gram's whole count goes to the back-off
        mass += np.bincount(local, weights=np.where(keep, 0, a), minlength=width)
    gamma = np.divide(mass, total, out=np.full(width, -1.0), where=total > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = (a - d[k]) / total[local] + gamma[local] * lower
    return gamma, p


def _context_batches(level: Level, batch: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(first row, context, suffix)`` of batches of about ``batch`` rows that hold each
    context's extensions whole (they are contiguous: rows are sorted by context)."""
    start = 0
    while start < level.rows:
        stop = min(start + batch, level.rows)
        context = level.context.read(start, stop).astype(np.int64)
        if stop < level.rows:
            following = level.context.read(stop, stop + 1)[0]
            while context[-1] == following:  # the last context goes on: end before it
                cut = int(np.searchsorted(context, context[-1]))
                if cut > 0:
                    stop, context = start + cut, context[:cut]
                    break
                stop = min(start + 2 * len(context), level.rows)  # one context, larger than batch
                context = level.context.read(start, stop).astype(np.int64)
                following = level.context.read(stop, stop + 1)[0] if stop < level.rows else -1
        yield start, context, level.suffix.read(start, stop).astype(np.int64)
        start = stop
