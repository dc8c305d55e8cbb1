"""Perplexity: exp of the mean negative log-likelihood per token (natural log)."""

from __future__ import annotations

import math


def perplexity(nll_sum: float, num_tokens: int) -> float:
    """``exp(nll_sum / num_tokens)``: 1 for a perfect model, V for a uniform one over V tokens.

    Returns ``inf`` when the mean loss overflows (a token got probability 0).
    """
    if num_tokens <= 0:
        raise ValueError("perplexity needs at least one token")
    mean = nll_sum / num_tokens
    return math.exp(mean) if mean < 700 else math.inf
