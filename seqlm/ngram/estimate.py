"""Estimating back-off models from count tables: maximum likelihood, add-k, modified Kneser–Ney.

Modified Kneser–Ney follows KenLM's ``lmplz`` (Chen & Goodman's interpolated estimate with three
discounts per order): the top order keeps raw counts, lower orders use adjusted counts (the number
of distinct left extensions, with n-grams that start with ``<s>`` keeping raw counts and the unigram
``<s>`` getting 0), discounts come from each order's counts-of-counts, and the unigram is
interpolated with the uniform distribution. ``prune`` drops rare n-grams as ``lmplz --prune``
(:mod:`seqlm.ngram.prune`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import polars as pl

from seqlm.errors import SeqlmError
from seqlm.ngram.index import NgramIndex
from seqlm.ngram.lines import check_order
from seqlm.ngram.model import NgramModel
from seqlm.ngram.prune import Thresholds, drop_pruned, keep_masks, thresholds
from seqlm.vocab import BOS_ID, SPECIALS, UNK_ID, Vocabulary

log = logging.getLogger(__name__)

SMOOTHINGS = ("kn", "addk", "mle")
# lmplz --discount_fallback: D1, D2, D3+ for an order whose counts-of-counts give no valid discount.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def fit(
    tables: Sequence[pl.DataFrame],
    vocab: Vocabulary,
    smoothing: str = "kn",
    *,
    add_k: float = 1.0,
    discount_fallback: bool = False,
    first_seen: np.ndarray | None = None,
    prune: Thresholds = (),
) -> NgramModel:
    """A model of the tables' order from count tables over ``vocab``'s ids.

    ``first_seen`` (kn only): lmplz's word numbering, from :func:`first_seen` of the training
    stream; with it the counts-of-counts reproduce lmplz's printed discounts digit for digit.
    ``prune`` (kn only): lmplz's ``--prune`` count thresholds, e.g. ``(0, 1, 1)``.
    """
    check_order(len(tables))
    limits = thresholds(prune, len(tables))
    if any(limits) and smoothing != "kn":
        raise SeqlmError(f"--prune: pruning is lmplz's, for --smoothing kn, not {smoothing}")
    index = NgramIndex.build(tables, vocab.size)
    if smoothing == "kn":
        return fit_kneser_ney(index, vocab, discount_fallback, first_seen, limits)
    if smoothing == "addk":
        if add_k <= 0:
            raise SeqlmError(f"add-k needs k > 0, not {add_k}")
        return _fit_discounted(index, vocab, add_k, {"smoothing": "addk", "add_k": add_k})
    if smoothing == "mle":
        return _fit_discounted(index, vocab, 0.0, {"smoothing": "mle"})
    raise SeqlmError(f"unknown smoothing {smoothing!r} (choose from {', '.join(SMOOTHINGS)})")


def first_seen(stream: np.ndarray, vocab_size: int) -> np.ndarray:
    """lmplz's word numbering as ranks: the specials first, in id order (``<unk>``, ``<s>``,
    ``</s>``, before any word however early a line ends, even an empty first line), then each
    word by its first position in the stream (+inf if absent)."""
    ids, first = np.unique(stream, return_index=True)
    out = np.full(vocab_size, np.inf)
    out[ids] = first
    out[: len(SPECIALS)] = np.arange(len(SPECIALS)) - len(SPECIALS)
    return out


def _log10(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log10(x)


def _uniform_size(index: NgramIndex) -> int:
    """Entries of the uniform floor: every id but ``<s>`` and, like lmplz, one reserved for an
    unknown word besides the corpus's own ``<unk>`` when the corpus spells it."""
    return index.vocab_size - 1 + int(index.counts[0][UNK_ID] > 0)


# ---- maximum likelihood and add-k: discounted estimates with back-off to the order below ----


def _fit_discounted(index: NgramIndex, vocab: Vocabulary, k: float, info: dict) -> NgramModel:
    """p(w|h) = (c(hw) + k) / (c(h) + k·U) for listed n-grams; the mass left for unlisted words
    goes to the order below, renormalised over them (k = 0 is maximum likelihood)."""
    size = index.vocab_size - 1  # predictable ids: all but <s>
    unigram = index.counts[0].astype(np.float64) + k
    unigram[BOS_ID] = 0.0
    probs = [unigram / unigram.sum()]
    backoffs = []
    for n in range(2, index.order + 1):
        ctx, c = index.context[n - 1], index.counts[n - 1].astype(np.float64)
        rows_below = len(index.counts[n - 2])
        total = np.bincount(ctx, weights=c, minlength=rows_below)
        listed = np.bincount(ctx, minlength=rows_below)
        denom = total + k * size
        p = (c + k) / denom[ctx]
        lower = probs[-1][index.suffix[n - 1]]
        left = np.divide(k * (size - listed), denom, out=np.zeros(rows_below), where=denom > 0)
        lower_left = 1.0 - np.bincount(ctx, weights=lower, minlength=rows_below)
        alpha = np.divide(left, lower_left, out=np.zeros(rows_below), where=lower_left > 1e-12)
        backoffs.append(np.where(listed > 0, _log10(alpha), 0.0))
        probs.append(p)
    backoffs.append(np.zeros(len(probs[-1])))
    log_probs = [_log10(p) for p in probs]
    log_probs[0][BOS_ID] = 0.0
    return _model(index, vocab, log_probs, backoffs, info)


def _model(index, vocab, log_probs, backoffs, info, keep=None) -> NgramModel:
    words = [w[-1] for w in index.words]
    context = index.context
    if keep is not None:
        context, words, log_probs, backoffs = drop_pruned(keep, context, words, log_probs, backoffs)
    return NgramModel(
        vocab=vocab,
        context=context,
        word=words,
        log10_prob=log_probs,
        log10_backoff=backoffs,
        info=info | {"sizes": [len(p) for p in log_probs]},
    )


# ---- modified Kneser–Ney ----


def adjusted_counts(index: NgramIndex) -> list[np.ndarray]:
    """Raw counts at the top order; below, the number of distinct left extensions, except that
    n-grams starting with ``<s>`` (they have none) keep raw counts; the unigram ``<s>`` gets 0."""
    adjusted = []
    for n in range(1, index.order + 1):
        raw = index.counts[n - 1]
        if n == index.order:
            adjusted.append(raw)
            continue
        a = np.bincount(index.suffix[n], minlength=len(raw))
        starts_bos = index.words[n - 1][0] == BOS_ID
        a[starts_bos] = raw[starts_bos]
        if n == 1:
            a[BOS_ID] = 0
        adjusted.append(a)
    return adjusted


def counts_of_counts(
    index: NgramIndex, adjusted: list[np.ndarray], first_seen: np.ndarray | None
) -> np.ndarray:
    """``[order, k]`` = how many n-grams have (adjusted) count k, for k = 1..4 (column 0 unused)."""
    table = np.zeros((index.order, 5), dtype=np.int64)
    open_rows = _lmplz_open_rows(index, first_seen) if first_seen is not None else {}
    for n, a in enumerate(adjusted, start=1):
        a = a.copy()
        if n in open_rows:
            a[open_rows[n]] = index.counts[n - 1][open_rows[n]]
        table[n - 1] = np.bincount(np.minimum(a, 5), minlength=6)[:5]
    return table


def _lmplz_open_rows(index: NgramIndex, first_seen: np.ndarray) -> dict[int, int]:
    """The lower-order n-grams lmplz's adjust pass still holds open when its suffix-sorted stream
    ends (the suffixes of the last top-order n-gram): it records their raw counts, not adjusted.

    lmplz numbers the specials first, then words by first appearance, and sorts by the last word
    first, so the last n-gram ends with the word seen last, preceded by the latest-seen word that
    precedes it, and so on.
    """
    rank = np.asarray(first_seen, dtype=np.float64)
    present = index.counts[0] > 0
    present[BOS_ID] = False
    row = int(np.flatnonzero(present)[np.argmax(rank[present])])
    rows = {1: row}
    for n in range(2, index.order):
        extends = np.flatnonzero(index.suffix[n - 1] == row)
        if len(extends) == 0:
            break
        first_words = index.words[n - 1][0][extends]
        pick = np.argmax(rank[first_words])
        row = int(extends[pick])
        rows[n] = row
        if first_words[pick] == BOS_ID:
            break
    return rows


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


def fit_kneser_ney(
    index: NgramIndex,
    vocab: Vocabulary,
    discount_fallback: bool = False,
    first_seen: np.ndarray | None = None,
    prune: Sequence[int] = (),
) -> NgramModel:
    """``prune``: one count threshold per order, as :func:`seqlm.ngram.prune.thresholds` gives."""
    keep = keep_masks(index.counts, prune or (0,) * index.order)
    adjusted = adjusted_counts(index)
    coc = counts_of_counts(index, adjusted, first_seen)
    d = discounts(coc, discount_fallback)
    probs: list[np.ndarray] = []
    backoffs: list[np.ndarray] = []
    for n, a in enumerate(adjusted, start=1):
        ctx = index.context[n - 1]
        rows_below = 1 if n == 1 else len(adjusted[n - 2])
        total = np.bincount(ctx, weights=a, minlength=rows_below)
        discount = d[n - 1][np.minimum(a, 3)]
        # D1·N1 + D2·N2 + D3·N3+ over the kept n-grams, plus a pruned n-gram's whole count
        freed = discount if keep[n - 1] is None else np.where(keep[n - 1], discount, a)
        mass = np.bincount(ctx, weights=freed, minlength=rows_below)
        gamma = np.divide(mass, total, out=np.zeros(rows_below), where=total > 0)
        if n == 1:
            lower = np.full(len(a), 1.0 / _uniform_size(index))
        else:
            lower = probs[-1][index.suffix[n - 1]]
            backoffs.append(np.where(total > 0, _log10(gamma), 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            probs.append((a - discount) / total[ctx] + gamma[ctx] * lower)
    backoffs.append(np.zeros(len(probs[-1])))
    log_probs = [_log10(p) for p in probs]
    log_probs[0][BOS_ID] = 0.0  # <s> is never predicted; lmplz writes probability 1
    info = {
        "smoothing": "kn",
        "discounts": d[:, 1:].tolist(),
        "counts_of_counts": coc[:, 1:].tolist(),
    }
    if any(k is not None for k in keep):
        info["prune"] = list(prune)
    return _model(index, vocab, log_probs, backoffs, info, keep)
