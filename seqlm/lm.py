"""What every model of the ladder offers, whatever its family."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class LanguageModel(Protocol):
    def score_stream(self, stream: np.ndarray) -> np.ndarray:
        """The natural-log probability of every target of an id stream (its ``</s>`` end lines)."""
        ...

    def sample(self, n_words: int, seed: int = 0) -> np.ndarray:
        """``n_words`` ids drawn from the model, lines ended by ``</s>``."""
        ...
