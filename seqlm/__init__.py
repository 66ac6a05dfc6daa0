"""seqlm: the ladder of sequence models (unigram, Kneser-Ney n-grams, recurrent networks) trained
on a corpus and compared on the same held-out text.

``seqlm.run(corpus, **settings)`` runs the whole pipeline in this process and returns the
comparison; ``seqlm.load(model_folder)`` gives a model of the store ready to score text.
``seqlm.stages`` holds each stage, to run by hand.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    # Imported on first use: ``import seqlm`` stays light for the command line.
    if name in ("run", "load"):
        from seqlm import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'seqlm' has no attribute {name!r}")


__all__ = ["load", "run"]
