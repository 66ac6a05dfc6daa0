"""The n-gram rung: count tables, maximum-likelihood / add-k / modified Kneser–Ney models, ARPA."""

from importlib import import_module
from typing import Any

# Each name's module, imported on first use: scoring a saved model needs none of the counting and
# estimating machinery (nor pyarrow), so the command line starts without it.
_EXPORTS = {
    "SMOOTHINGS": "model",
    "NgramModel": "model",
    "TokenScores": "model",
    "count_ngrams": "counts",
    "fit": "estimate",
    "merge_tables": "counts",
    "read_arpa": "arpa",
    "read_tables": "layers",
    "write_arpa": "arpa",
    "write_tables": "counts",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"seqlm.ngram.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'seqlm.ngram' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
