"""``rnnlab.decoding.hypothesis``: the GNMT length penalty and the ``Hypothesis`` record.

References: exact rational arithmetic (``fractions.Fraction``) for lp(|Y|) = ((5 + |Y|) / 6)^α with
integer α, hand-computed values, ``math`` for non-integer α, and the copy of the formula in the
exported runtime (``rnnlab.export.runtime``), which must rank hypotheses identically.
``tests/decoding/test_beam.py`` checks four values of the penalty; this file checks it as a
property, its effect on ranking, and the record type.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.decoding.hypothesis import Hypothesis, length_penalty, unscored
from rnnlab.export import runtime

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True)
lengths = st.integers(0, 500)
alphas = st.floats(0.0, 3.0, allow_nan=False)


@PROPERTY
@given(length=lengths, alpha=st.integers(0, 4))
def test_integer_alpha_equals_exact_rational_arithmetic(length: int, alpha: int) -> None:
    exact = Fraction(5 + length, 6) ** alpha
    assert length_penalty(length, float(alpha)) == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.parametrize(
    ("length", "alpha", "expected"),
    [
        (0, 1.0, 5 / 6),  # an empty output is rewarded, not penalised: lp < 1
        (0, 2.0, 25 / 36),
        (1, 3.7, 1.0),  # |Y| = 1 is the fixed point for every α
        (7, 2.0, 4.0),
        (19, 1.0, 4.0),
        (31, 0.5, math.sqrt(6.0)),
        (10**6, 0.0, 1.0),  # α = 0: no length normalisation at all
    ],
)
def test_hand_computed_values(length: int, alpha: float, expected: float) -> None:
    assert length_penalty(length, alpha) == pytest.approx(expected, rel=1e-12)


@PROPERTY
@given(length=lengths, alpha=alphas)
def test_penalty_equals_math_pow_and_the_exported_runtime(length: int, alpha: float) -> None:
    value = length_penalty(length, alpha)
    assert value == pytest.approx(math.pow((5 + length) / 6, alpha), rel=1e-12)
    # The ONNX runtime re-implements the formula; both must score a hypothesis identically.
    assert runtime.length_penalty(length, alpha) == value


@PROPERTY
@given(length=st.integers(1, 500), alpha=st.floats(0.01, 3.0), log_prob=st.floats(-100.0, -0.01))
def test_with_positive_alpha_a_longer_output_of_equal_log_prob_scores_higher(
    length: int, alpha: float, log_prob: float
) -> None:
    # What the penalty is for: dividing a negative log-probability by a larger lp favours length.
    shorter = log_prob / length_penalty(length, alpha)
    longer = log_prob / length_penalty(length + 1, alpha)
    assert longer > shorter
    assert length_penalty(length + 1, alpha) > length_penalty(length, alpha) >= 1.0


def test_hypothesis_is_a_frozen_record() -> None:
    hypothesis = Hypothesis(tokens=[4, 5], log_prob=-1.5, score=-1.0)
    assert (hypothesis.tokens, hypothesis.log_prob, hypothesis.score) == ([4, 5], -1.5, -1.0)
    assert [f.name for f in dataclasses.fields(Hypothesis)] == ["tokens", "log_prob", "score"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        hypothesis.score = 0.0  # type: ignore[misc]
    assert hypothesis == Hypothesis([4, 5], -1.5, -1.0)
    assert hypothesis != Hypothesis([4, 5], -1.5, -0.5)


@PROPERTY
@given(tokens=st.lists(st.integers(0, 10_000), max_size=10))
def test_unscored_keeps_the_tokens_and_has_no_numbers(tokens: list[int]) -> None:
    hypothesis = unscored(tokens)
    assert hypothesis.tokens == tokens
    # NaN, not 0.0: a missing score must never look like a probability of one.
    assert math.isnan(hypothesis.log_prob) and math.isnan(hypothesis.score)
