"""What a search returns for one sentence: tokens, their log-probability and the ranking score.

Greedy and beam search share this type so a caller (the inference API, a server) reports the same
fields whichever search ran. The score is GNMT's length-normalised log-probability (Wu et al. 2016):
``log_prob / lp(|Y|)`` with lp(|Y|) = ((5 + |Y|) / 6)^α, where |Y| counts ``<eos>`` when the
hypothesis ended with it; α = 0 leaves the raw log-probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]
    """Output token ids without ``<bos>``/``<eos>``."""
    log_prob: float
    """Sum of the model's log-probabilities of the tokens (and of ``<eos>`` when it ended)."""
    score: float
    """``log_prob`` divided by the length penalty: what hypotheses are ranked by."""


def unscored(tokens: list[int]) -> Hypothesis:
    """The hypothesis of a search that skipped scoring (greedy search without its softmax)."""
    return Hypothesis(tokens=tokens, log_prob=math.nan, score=math.nan)


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's lp(|Y|) = ((5 + |Y|) / 6)^α."""
    return ((5.0 + length) / 6.0) ** alpha
