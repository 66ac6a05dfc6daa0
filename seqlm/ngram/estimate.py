"""Estimating back-off models from count tables: modified Kneser–Ney (as KenLM's ``lmplz``, in a
memory budget: :mod:`seqlm.ngram.kneser_ney`), add-k and maximum likelihood.

Every estimator reads the tables through the order-by-order index of :mod:`seqlm.ngram.levels`;
the model's arrays are written to a scratch folder and mapped from there, so a model larger than
memory is estimated and written out without being held.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seqlm.errors import SeqlmError
from seqlm.ngram.budget import DEFAULT_MEMORY, parse_memory
from seqlm.ngram.kneser_ney import fit_kneser_ney
from seqlm.ngram.levels import Level, Tables, batch_rows, index_orders, order_of
from seqlm.ngram.lines import check_order
from seqlm.ngram.model import SMOOTHINGS, NgramModel
from seqlm.ngram.prune import Thresholds, thresholds
from seqlm.vocab import BOS_ID, SPECIALS, Vocabulary


def fit(
    tables: Tables,
    vocab: Vocabulary,
    smoothing: str = "kn",
    *,
    order: int | None = None,
    add_k: float = 1.0,
    discount_fallback: bool = False,
    first_seen: np.ndarray | None = None,
    prune: Thresholds = (),
    memory: int | str = DEFAULT_MEMORY,
    scratch: Path | None = None,
    setting: str = "memory",
) -> NgramModel:
    """A model of ``order`` (all the tables' orders by default) from count tables over
    ``vocab``'s ids: in memory, or a folder of ``order<n>.parquet`` files (read in batches).

    ``first_seen`` (kn only): lmplz's word numbering, from :func:`first_seen` of the training
    stream; with it the counts-of-counts reproduce lmplz's printed discounts digit for digit.
    ``prune`` (kn only): lmplz's ``--prune`` count thresholds, e.g. ``(0, 1, 1)``. ``memory``
    bounds the working set (``setting`` names it in a refusal); the model's arrays go to a folder
    in ``scratch`` (the system's temporary folder by default), mapped and already unlinked.
    """
    order = order or order_of(tables)
    check_order(order)
    if order > order_of(tables):
        where = f"{tables}: " if isinstance(tables, Path) else ""
        raise SeqlmError(f"{where}counted up to order {order_of(tables)}, not {order}")
    limits = thresholds(prune, order)
    if any(limits) and smoothing != "kn":
        raise SeqlmError(f"--prune: pruning is lmplz's, for --smoothing kn, not {smoothing}")
    if smoothing not in SMOOTHINGS:
        raise SeqlmError(f"unknown smoothing {smoothing!r} (choose from {', '.join(SMOOTHINGS)})")
    if smoothing == "addk" and add_k <= 0:
        raise SeqlmError(f"add-k needs k > 0, not {add_k}")
    budget = parse_memory(memory, setting)
    with tempfile.TemporaryDirectory(prefix="seqlm-estimate-", dir=scratch) as folder:
        if smoothing == "kn":
            return fit_kneser_ney(
                tables,
                order,
                vocab,
                Path(folder),
                budget,
                discount_fallback=discount_fallback,
                first_seen=first_seen,
                prune=limits,
                setting=setting,
            )
        batch = batch_rows(tables, order, vocab.size, budget, setting)
        levels, _ = index_orders(tables, order, vocab.size, Path(folder), batch)
        k = add_k if smoothing == "addk" else 0.0
        info = (
            {"smoothing": "addk", "add_k": add_k} if smoothing == "addk" else {"smoothing": "mle"}
        )
        return _fit_discounted(levels, vocab, k, info)


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


def _fit_discounted(levels: Sequence[Level], vocab: Vocabulary, k: float, info: dict) -> NgramModel:
    """p(w|h) = (c(hw) + k) / (c(h) + k·U) for listed n-grams; the mass left for unlisted words
    goes to the order below, renormalised over them (k = 0 is maximum likelihood). Teaching
    baselines: estimated in memory."""
    size = vocab.size - 1  # predictable ids: all but <s>
    unigram = levels[0].count.load().astype(np.float64) + k
    unigram[BOS_ID] = 0.0
    probs = [unigram / unigram.sum()]
    backoffs = []
    for level in levels[1:]:
        ctx, c = level.context.load(), level.count.load().astype(np.float64)
        rows_below = len(probs[-1])
        total = np.bincount(ctx, weights=c, minlength=rows_below)
        listed = np.bincount(ctx, minlength=rows_below)
        denom = total + k * size
        p = (c + k) / denom[ctx]
        lower = probs[-1][level.suffix.load()]
        left = np.divide(k * (size - listed), denom, out=np.zeros(rows_below), where=denom > 0)
        lower_left = 1.0 - np.bincount(ctx, weights=lower, minlength=rows_below)
        alpha = np.divide(left, lower_left, out=np.zeros(rows_below), where=lower_left > 1e-12)
        backoffs.append(np.where(listed > 0, _log10(alpha), 0.0))
        probs.append(p)
    backoffs.append(np.zeros(len(probs[-1])))
    log_probs = [_log10(p) for p in probs]
    log_probs[0][BOS_ID] = 0.0
    return NgramModel(
        vocab=vocab,
        context=[level.context.load() for level in levels],
        word=[level.word.load() for level in levels],
        log10_prob=log_probs,
        log10_backoff=backoffs,
        info=info | {"sizes": [len(p) for p in log_probs]},
    )
