"""``perplexity`` against its definitions: the geometric mean of the inverse token probabilities
(hand-worked and written out with ``math.prod``), and ``exp`` of torch's mean cross-entropy when
given the summed one. Also: it depends on the mean loss only, grows with the loss, refuses an empty
count, and turns an overflowing mean into ``inf`` instead of raising. The fixed points (1 for a zero
loss, V for a uniform model) are already in tests/metrics/test_bleu.py and
tests/tasks/test_lm_perplexity.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.metrics.perplexity import perplexity

PROPERTY = settings(max_examples=80, deadline=None, derandomize=True)


def inverse_geometric_mean(probabilities: list[float]) -> float:
    """(∏ 1/p)^(1/N): the textbook's definition, with no logarithm in sight."""
    return math.prod(1 / p for p in probabilities) ** (1 / len(probabilities))


def test_two_tokens_by_hand():
    # p = 1/2 and 1/8: NLL = ln 2 + ln 8 = ln 16 over 2 tokens, so perplexity = √16 = 4.
    assert perplexity(math.log(2) + math.log(8), 2) == pytest.approx(4.0)


@PROPERTY
@given(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=20))
def test_equals_the_inverse_geometric_mean_of_token_probabilities(probabilities: list[float]):
    nll_sum = sum(-math.log(p) for p in probabilities)
    expected = inverse_geometric_mean(probabilities)
    assert perplexity(nll_sum, len(probabilities)) == pytest.approx(expected, rel=1e-9)


def test_takes_the_summed_loss_that_torch_cross_entropy_averages():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(13, 7, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 7, (13,), generator=generator)
    summed = float(F.cross_entropy(logits, targets, reduction="sum"))
    mean = float(F.cross_entropy(logits, targets, reduction="mean"))
    assert perplexity(summed, 13) == pytest.approx(math.exp(mean), rel=1e-12)


@PROPERTY
@given(st.floats(0.0, 50.0), st.integers(1, 1000), st.integers(1, 50))
def test_depends_on_the_mean_loss_only(nll_sum: float, num_tokens: int, factor: int):
    # A file repeated ``factor`` times has the same perplexity as the file once.
    repeated = perplexity(nll_sum * factor, num_tokens * factor)
    assert repeated == pytest.approx(perplexity(nll_sum, num_tokens), rel=1e-9)


@PROPERTY
@given(st.floats(0.0, 1e4), st.floats(0.0, 1e4), st.integers(1, 10))
def test_more_loss_is_never_a_lower_perplexity(first: float, second: float, num_tokens: int):
    low, high = sorted([first, second])
    assert 1.0 <= perplexity(low, num_tokens) <= perplexity(high, num_tokens)


@pytest.mark.parametrize("num_tokens", [0, -1, -100])
def test_no_tokens_is_refused(num_tokens: int):
    with pytest.raises(ValueError, match="at least one token"):
        perplexity(0.0, num_tokens)


@pytest.mark.parametrize("nll_sum", [710.0, 1e4, 1e6, 1e308, math.inf])
def test_an_overflowing_mean_is_infinite_not_an_overflow_error(nll_sum: float):
    # math.exp raises OverflowError above ~709.78; a token with probability 0 must not crash a run.
    assert perplexity(nll_sum, 1) == math.inf


def test_a_large_but_representable_mean_stays_finite():
    # Mean 300: exp(300) ≈ 1.9e130 is far from overflow and must come back exactly.
    assert perplexity(600.0, 2) == pytest.approx(math.exp(300.0))


def test_the_largest_finite_exponential_is_not_cut_to_infinity():
    # exp(709) ≈ 8.2e307 is still a float; only a mean beyond ~709.78 overflows.
    assert perplexity(709.0, 1) == math.exp(709.0)


def test_a_nan_loss_stays_nan():
    # A diverged run must not report the perplexity of a model that gave a token probability 0.
    assert math.isnan(perplexity(math.nan, 3))
