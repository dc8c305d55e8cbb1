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


def ended(hypothesis: Hypothesis, max_len: int) -> bool:
    """Whether a search of at most ``max_len`` steps ended ``hypothesis`` with ``<eos>``: every
    step adds one token, ``<eos>`` included, so only a hypothesis cut at the limit holds
    ``max_len`` tokens (greedy and beam search alike)."""
    return len(hypothesis.tokens) < max_len


def unscored(tokens: list[int]) -> Hypothesis:
    """The hypothesis of a search that skipped scoring (greedy search without its softmax)."""
    return Hypothesis(tokens=tokens, log_prob=math.nan, score=math.nan)


MAX_LENGTH_PENALTY = 10.0
"""The largest α accepted: GNMT used 0.2–1; far beyond that ``lp`` only orders hypotheses by length,
and from about α = 300 it overflows a float for a few hundred tokens."""


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's lp(|Y|) = ((5 + |Y|) / 6)^α."""
    return ((5.0 + length) / 6.0) ** alpha


def length_penalty_problem(alpha: float) -> str | None:
    """Why ``alpha`` cannot be a length penalty, or None when it can (0 ≤ α ≤ MAX_LENGTH_PENALTY)."""
    if not 0.0 <= alpha <= MAX_LENGTH_PENALTY:  # also refuses nan
        return f"must be between 0 and {MAX_LENGTH_PENALTY:g}, got {alpha}"
    return None
