"""The mapped rounds of partitioned modified Kneser–Ney (:mod:`seqlm.ngram.partitioned`): each
call reads one part of one order and writes one Parquet file per target part of the next round.

Rows move between rounds by a hash of the words a step groups by, so a call holds about 1/parts
of an order: continuation counts go to the part of their suffix, an n-gram's rows to the part of
its context (its Σa, N1, N2, N3+ and γ are then local), an order's probabilities to the part of
the n-gram (where the order above, partitioned by suffix, joins them). Finished rows go to ranges
of first-word ids, whose sorted concatenation is the model's row order.

Every p and γ is computed with :func:`seqlm.ngram.kneser_ney.interpolate`'s operations on the
same integer sums (IEEE arithmetic, the same on every machine), so the model equals the
single-machine one bit for bit; their log10, whose SIMD code differs between CPUs, is left to the
coordinator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from seqlm.errors import SeqlmError
from seqlm.files import atomic_path
from seqlm.ngram import kneser_ney
from seqlm.ngram.counts import COUNT, word_columns
from seqlm.vocab import BOS_ID, UNK_ID

SCRATCH_COMPRESSION = "lz4"  # shuffle files are read once, soon after
# Per order and range: the model's rows, p and γ (NaN where the n-gram is no context).
LAYOUT_COLUMNS = ("key", "context", "word", "prob", "gamma")


# ---- where rows go: a hash of their words, or a range of first-word ids ----


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_parts(frame: pl.DataFrame, cols: list[str], parts: int) -> np.ndarray:
    """Each row's part from its words ``cols`` in order: the same in every process (Polars'
    hash promises stability within one version only), and for a sequence of words whatever
    columns hold it (a suffix ``w2..wn`` goes where the (n−1)-gram ``w1..wn−1`` does)."""
    h = np.zeros(frame.height, dtype=np.uint64)
    for col in cols:
        h = _splitmix(h ^ frame[col].to_numpy().astype(np.uint64))
    return (h % np.uint64(parts)).astype(np.int64)


def range_parts(frame: pl.DataFrame, bounds: np.ndarray) -> np.ndarray:
    """Each row's range of first-word ids: ``bounds[i] <= w1 < bounds[i + 1]``."""
    return np.searchsorted(bounds, frame["w1"].to_numpy(), side="right") - 1


def split(frame: pl.DataFrame, part: np.ndarray, parts: int) -> list[pl.DataFrame]:
    """``frame``'s rows of each part 0..parts−1 (empty where none), in their order."""
    order = np.argsort(part, kind="stable")
    cuts = np.searchsorted(part[order], np.arange(parts + 1))
    grouped = frame[order]
    return [grouped.slice(cuts[q], cuts[q + 1] - cuts[q]) for q in range(parts)]


def scatter(frame: pl.DataFrame, part: np.ndarray, parts: int, folder: Path, producer: int) -> None:
    """Rows of part q to ``folder/to<q>/from<producer>.parquet``, for every q (an empty file where
    none, so that a reader finds every producer's)."""
    for q, piece in enumerate(split(frame, part, parts)):
        path = folder / f"to{q}" / f"from{producer}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:  # a retried call never leaves half a file to read
            piece.write_parquet(tmp, compression=SCRATCH_COMPRESSION)


def gather(folder: Path, part: int) -> pl.DataFrame:
    """What every producer sent to ``part``."""
    return pl.concat([pl.read_parquet(f) for f in sorted((folder / f"to{part}").glob("*.parquet"))])


def table_part(tables: Path, n: int, part: int) -> Path:
    return Path(tables) / f"order{n}" / f"part{part}.parquet"


# ---- rounds 1 and 2: adjusted counts and their counts-of-counts ----


def continuation(tables: Path, m: int, part: int, parts: int, work: Path) -> dict:
    """Order ``m``'s part: how many distinct words precede each suffix here, sent to the part
    of the suffix in order m − 1."""
    suffix, cols = word_columns(m)[1:], word_columns(m - 1)
    frame = pl.read_parquet(table_part(tables, m, part), columns=suffix)
    found = frame.group_by(suffix).agg(pl.len().cast(pl.Int64).alias("ext"))
    found = found.rename(dict(zip(suffix, cols, strict=True)))
    scatter(found, hash_parts(found, cols, parts), parts, work / f"ext{m - 1}", part)
    return {"read": {m: frame.height}}


def adjust(tables: Path, n: int, order: int, part: int, parts: int, work: Path) -> dict:
    """Order ``n``'s part with its adjusted counts ``a`` (as :func:`kneser_ney.adjust`: raw at
    the top order and for n-grams that start with ``<s>``, 0 for the unigram ``<s>``), sent on
    by suffix (order 1: kept here); returns the counts-of-counts (and for order 1 the sums its
    single context's γ needs, and the raw count of ``<unk>``)."""
    cols = word_columns(n)
    frame = pl.read_parquet(table_part(tables, n, part))
    raw = pl.col(COUNT).cast(pl.Int64)
    if n < order:
        ext = gather(work / f"ext{n}", part).group_by(cols).agg(pl.col("ext").sum())
        frame = frame.join(ext, on=cols, how="left")
        at_bos = pl.lit(0, pl.Int64) if n == 1 else raw
        a = pl.when(pl.col("w1") == BOS_ID).then(at_bos).otherwise(pl.col("ext").fill_null(0))
    else:
        a = raw
    frame = frame.select(*cols, a.alias("a"), raw.alias(COUNT))
    values = frame["a"].to_numpy()
    out = {"read": {n: frame.height}, "coc": np.bincount(np.minimum(values, 5), minlength=6)[:5]}
    if n == 1:
        out |= {
            "total": int(values.sum()),
            "by_k": np.bincount(np.minimum(values, 3), minlength=4),
            "unk": int(frame.filter(pl.col("w1") == UNK_ID)[COUNT].sum()),
        }
    by = cols[1:] if n > 1 else cols
    frame = frame.drop(COUNT)
    scatter(frame, hash_parts(frame, by, parts), parts, work / f"adjusted{n}", part)
    return out


# ---- rounds 3…: interpolated probabilities, order by order ----


@dataclass(frozen=True)
class Unigrams:
    """The unigrams' one context, reduced from every part: order 1's discounts, Σa and γ, and
    the uniform probability below them."""

    d: np.ndarray
    total: float
    gamma: float
    uniform: float

    @classmethod
    def of(cls, d: np.ndarray, total: int, by_k: np.ndarray, uniform_size: int) -> Unigrams:
        # interpolate's float operations, on the sums of every part's integers.
        mass = d[1] * by_k[1] + d[2] * by_k[2] + d[3] * by_k[3]
        gamma = mass / float(total) if total > 0 else -1.0
        return cls(d, float(total), float(gamma), 1.0 / uniform_size)

    def prob(self, a: np.ndarray) -> np.ndarray:
        """p of unigrams of adjusted counts ``a``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a - self.d[np.minimum(a, 3)]) / self.total + self.gamma * self.uniform


def unigrams(
    work: Path, order: int, part: int, parts: int, uni: Unigrams, bounds: np.ndarray
) -> dict:
    """Order 1's part: probabilities, for the bigrams (by the unigram's part) and the model (by
    range)."""
    frame = gather(work / "adjusted1", part)
    probs = frame.select("w1", pl.Series("prob", uni.prob(frame["a"].to_numpy())))
    if order > 1:
        scatter(probs, hash_parts(probs, ["w1"], parts), parts, work / "prob1", part)
    scatter(probs, range_parts(probs, bounds), parts, work / "final1", part)
    return {"read": {1: frame.height}}


def lower(work: Path, n: int, part: int, parts: int) -> dict:
    """Order ``n``'s part by suffix joined with the order below's probabilities of the same part;
    sent on to the part of the n-gram's context."""
    cols = word_columns(n)
    rows = gather(work / f"adjusted{n}", part)
    probs = gather(work / f"prob{n - 1}", part)
    probs = probs.rename(dict(zip(word_columns(n - 1), cols[1:], strict=True)))
    rows = rows.join(probs.rename({"prob": "lower"}), on=cols[1:], how="left")
    if rows["lower"].null_count():
        raise SeqlmError(f"inconsistent count tables: {n}-grams whose suffix is not counted")
    scatter(rows, hash_parts(rows, cols[:-1], parts), parts, work / f"context{n}", part)
    return {"read": {n: rows.height, n - 1: probs.height}}


def interpolate(
    work: Path, n: int, order: int, part: int, parts: int, d: np.ndarray, bounds: np.ndarray
) -> dict:
    """Order ``n``'s part by context: each context's γ (the back-off of the (n−1)-gram it is) and
    each n-gram's p, by :func:`kneser_ney.interpolate` itself; probabilities go to the n-gram's
    part for the order above and with the γs to their ranges. Returns rows per range."""
    cols = word_columns(n)
    rows = gather(work / f"context{n}", part).sort(cols)
    starts = _starts(rows, cols[:-1])
    context = np.cumsum(starts) - 1
    if rows.height:
        gamma, p = kneser_ney.interpolate(
            rows["a"].to_numpy(), context, None, d, rows["lower"].to_numpy()
        )
    else:
        gamma, p = np.zeros(0), np.zeros(0)
    present = gamma >= 0  # where Σa > 0: as the single-machine estimate, no back-off otherwise
    contexts = rows.filter(pl.Series(starts)).select(cols[:-1]).filter(pl.Series(present))
    contexts = contexts.with_columns(pl.Series("gamma", gamma[present]))
    scatter(contexts, range_parts(contexts, bounds), parts, work / f"backoff{n - 1}", part)
    probs = rows.select(*cols, pl.Series("prob", p))
    if n < order:
        scatter(probs, hash_parts(probs, cols, parts), parts, work / f"prob{n}", part)
    ranges = range_parts(probs, bounds)
    scatter(probs, ranges, parts, work / f"final{n}", part)
    return {"read": {n: rows.height}, "ranges": np.bincount(ranges, minlength=parts)}


def _starts(frame: pl.DataFrame, cols: list[str]) -> np.ndarray:
    """Where a sorted frame's ``cols`` change: the first row of each run."""
    new = np.zeros(frame.height, dtype=bool)
    new[:1] = True
    for col in cols:
        values = frame[col].to_numpy()
        new[1:] |= values[1:] != values[:-1]
    return new


# ---- the last round: each range of first words in the model's row order ----


def layout(
    work: Path, order: int, i: int, bounds: np.ndarray, offsets: list[int], uni: Unigrams
) -> dict:
    """Range ``i``'s rows of every order sorted by words, with their global context rows (the
    ranges before it hold ``offsets[n − 1]`` rows of order n), p and γ: ``.npy`` files of range
    i. Order 1 is dense over the range's ids, as the single-machine model's."""
    first, size = int(bounds[i]), int(bounds[-1])
    ids = np.arange(first, bounds[i + 1])
    found = gather(work / "final1", i)
    p = uni.prob(np.zeros(len(ids), dtype=np.int64))  # unlisted words
    p[found["w1"].to_numpy().astype(np.int64) - first] = found["prob"].to_numpy()
    rows = pl.DataFrame(
        [pl.Series("w1", ids).cast(found.schema["w1"]), pl.Series("prob", p)]
    ).with_columns(context=pl.lit(0, pl.Int64))
    read = {1: found.height}
    for n in range(1, order + 1):
        cols = word_columns(n)
        if n > 1:  # an n-gram's context: its prefix's row in the order below
            below = rows.select(cols[:-1]).with_row_index("context")
            below = below.with_columns(pl.col("context").cast(pl.Int64) + offsets[n - 2])
            rows = gather(work / f"final{n}", i).sort(cols)
            read[n] = rows.height
            rows = rows.join(below, on=cols[:-1], how="left", maintain_order="left")
            if rows["context"].null_count():
                raise SeqlmError(
                    f"inconsistent count tables: {n}-grams whose prefix is not counted"
                )
        if n < order:
            backoffs = gather(work / f"backoff{n}", i)
            rows = rows.join(backoffs, on=cols, how="left", maintain_order="left")
        else:  # the top order is never a context
            rows = rows.with_columns(gamma=pl.lit(None, pl.Float64))
        context = rows["context"].to_numpy()
        word = rows[cols[-1]].to_numpy().astype(np.int64)
        columns = {
            "key": context * size + word,
            "context": context,
            "word": word,
            "prob": rows["prob"].to_numpy(),
            "gamma": rows["gamma"].fill_null(np.nan).to_numpy(),
        }
        for name in LAYOUT_COLUMNS:
            np.save(work / "layout" / f"{name}{n}-{i}.npy", columns[name])
    return {"read": read}
