"""Perplexity: exp of the mean negative log-likelihood per token (natural log)."""

from __future__ import annotations

import math


def perplexity(nll_sum: float, num_tokens: int) -> float:
    """``exp(nll_sum / num_tokens)``: 1 for a perfect model, V for a uniform one over V tokens.

    Returns ``inf`` when the exponential overflows (a token got probability 0) and ``nan`` for a
    ``nan`` loss, so a diverged run reads as diverged rather than as a merely hopeless model.
    """
    if num_tokens <= 0:
        raise ValueError("perplexity needs at least one token")
    mean = nll_sum / num_tokens
    try:
        return math.exp(mean)
    except OverflowError:
        return math.inf
