"""The n-gram rung: count tables, maximum-likelihood / add-k / modified Kneser–Ney models, ARPA."""

from seqlm.ngram.arpa import read_arpa, write_arpa
from seqlm.ngram.counts import count_ngrams, merge_tables, read_tables, write_tables
from seqlm.ngram.estimate import SMOOTHINGS, fit
from seqlm.ngram.model import NgramModel, TokenScores

__all__ = [
    "SMOOTHINGS",
    "NgramModel",
    "TokenScores",
    "count_ngrams",
    "fit",
    "merge_tables",
    "read_arpa",
    "read_tables",
    "write_arpa",
    "write_tables",
]
