"""``rnnlab.models.feedback``: scheduled sampling's per-token choice and the row mix.

References: hand-made logits whose argmax is known, gold tokens chosen never to equal that argmax
(so the returned mask can be read off the tokens), frequencies of many independent rows against ε
and against the softmax's probabilities, the random stream compared with a reseeded one, and row
selection written as a Python loop (hypothesis over shapes and masks). The decoders' loops that use
``Feedback`` are covered end to end by ``tests/models/test_scheduled_sampling_loop.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from rnnlab.models.feedback import Feedback, mix

VOCAB = 5


def fixed_logits(batch: int, seed: int = 0) -> Tensor:
    """(B, V) logits with a clear argmax per row (margins ≥ 1, so ties cannot blur it)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(VOCAB, generator=generator) for _ in range(batch)])
    return order.double()  # (B, V): a permutation of 0..V-1 per row, argmax where it is V-1


def refuse(features: Tensor) -> Tensor:
    raise AssertionError("teacher forcing ≥ 1 must not project the features")


def test_full_teacher_forcing_returns_gold_without_projecting_or_drawing() -> None:
    """ε ≥ 1 must leave the random stream untouched, so that dropout masks drawn after it match a
    teacher-forced pass bit for bit."""
    gold = torch.tensor([3, 1, 4])
    features = torch.randn(3, 2)
    for teacher_forcing in (1.0, 1.5):
        torch.manual_seed(7)
        tokens, use_gold = Feedback(teacher_forcing, refuse).choose(gold, features)
        after = torch.rand(4)
        torch.manual_seed(7)
        assert torch.equal(after, torch.rand(4))  # nothing was drawn
        assert torch.equal(tokens, gold)
        assert use_gold.dtype == torch.bool and bool(use_gold.all())


def test_no_teacher_forcing_feeds_the_argmax_of_the_projected_features() -> None:
    batch = 6
    logits = fixed_logits(batch)  # (B, V)
    seen: list[Tensor] = []

    def project(features: Tensor) -> Tensor:
        seen.append(features)
        return logits

    features = torch.randn(batch, 3)  # (B, H)
    gold = torch.full((batch,), -1)  # never a vocabulary id, so any gold read would show
    tokens, use_gold = Feedback(0.0, project).choose(gold, features)
    assert seen[0] is features
    assert tokens.tolist() == [row.index(VOCAB - 1) for row in logits.int().tolist()]
    assert not bool(use_gold.any())


@pytest.mark.parametrize("teacher_forcing", [0.25, 0.7])
def test_each_token_reads_gold_with_probability_epsilon(teacher_forcing: float) -> None:
    batch = 8000
    logits = fixed_logits(batch)  # (B, V)
    argmax = logits.argmax(-1)  # (B,)
    gold = (argmax + 1) % VOCAB  # never the prediction: the token tells which one was read
    torch.manual_seed(0)
    tokens, use_gold = Feedback(teacher_forcing, lambda _: logits).choose(gold, torch.zeros(batch))
    assert torch.equal(use_gold, tokens == gold)
    assert torch.equal(tokens[~use_gold], argmax[~use_gold])
    # Binomial(8000, ε): 5 standard deviations is under 0.03 for either ε.
    spread = 5 * math.sqrt(teacher_forcing * (1 - teacher_forcing) / batch)
    assert abs(use_gold.double().mean().item() - teacher_forcing) < spread


def test_sampled_feedback_follows_the_softmax() -> None:
    """With ``sample`` each fed token is a draw from softmax(logits): frequencies match the
    probabilities, including tokens that are never the argmax."""
    batch = 20000
    probabilities = torch.tensor([0.1, 0.2, 0.0, 0.7, 0.0], dtype=torch.float64)
    logits = probabilities.log().expand(batch, VOCAB)  # (B, V), -inf where the probability is 0
    torch.manual_seed(0)
    feedback = Feedback(0.0, lambda _: logits, sample=True)
    tokens, _ = feedback.choose(torch.zeros(batch, dtype=torch.long), torch.zeros(batch))
    frequencies = torch.bincount(tokens, minlength=VOCAB).double() / batch
    # A multinomial frequency's standard deviation is at most 0.5 / sqrt(20000) ≈ 0.0035.
    assert (frequencies - probabilities).abs().max().item() < 0.015
    assert frequencies[2] == 0 and frequencies[4] == 0


def test_projection_runs_without_building_a_graph() -> None:
    """The choice is not differentiated through: the projection of the features (a full
    vocabulary matmul) must not be recorded for backward."""
    weight = torch.randn(VOCAB, 3, requires_grad=True)
    grad_enabled: list[bool] = []

    def project(features: Tensor) -> Tensor:
        grad_enabled.append(torch.is_grad_enabled())
        return features @ weight.T  # (B, V)

    features = torch.randn(4, 3, requires_grad=True)  # (B, H)
    tokens, use_gold = Feedback(0.5, project).choose(torch.tensor([0, 1, 2, 3]), features)
    assert grad_enabled == [False]
    assert tokens.shape == use_gold.shape == (4,)


def test_mix_by_hand() -> None:
    gold = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # (B, E)
    fed = -gold
    out = mix(torch.tensor([True, False, True]), gold, fed)
    assert out.tolist() == [[1.0, 2.0], [-3.0, -4.0], [5.0, 6.0]]


@settings(max_examples=40, deadline=None)
@given(
    mask=st.lists(st.booleans(), min_size=1, max_size=6),
    trailing=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_mix_takes_whole_rows_exactly(mask: list[bool], trailing: list[int], seed: int) -> None:
    """Each row of the result is the gold row or the fed row, bit for bit (an all-gold step must
    equal teacher forcing exactly), whatever the number of trailing dimensions."""
    generator = torch.Generator().manual_seed(seed)
    shape = (len(mask), *trailing)  # (B, …)
    gold = torch.randn(shape, generator=generator)
    fed = torch.randn(shape, generator=generator)
    out = mix(torch.tensor(mask), gold, fed)
    assert out.shape == gold.shape
    for row, use_gold in enumerate(mask):
        assert torch.equal(out[row], gold[row] if use_gold else fed[row])
