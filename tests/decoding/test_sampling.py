"""Sampling over the step protocol, against scripted step models and a plain-Python distribution.

``sampling_logits`` is checked against the target distribution written out by hand and in plain
Python: q_i ∝ p_i^(1/T) over the k most probable tokens (ties at the k-th value kept), 0 elsewhere.
``sample`` is checked with two scripted models: a cycle whose greedy continuation is known by hand
(and which records the tokens and states it is fed), and a fixed distribution whose empirical
frequencies over many rows must match that target. Also: the generator is the only source of
randomness, and the argument checks. The language-model checks in tests/models/test_language_model.py
(top-1 equals greedy, reproducibility per seed) are not repeated.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from rnnlab.decoding.sampling import sample, sampling_logits

PROPERTY = settings(max_examples=80, deadline=None, derandomize=True)

# Next-token probabilities of the fixed model; the last token is impossible.
PROBABILITIES = [0.5, 0.25, 0.15, 0.1, 0.0]


class NextInCycle:
    """Puts almost all probability on ``(token + 1) % V``; its state counts the steps read per row.

    It records every (tokens, state) it is given, so a test can see what ``sample`` fed back.
    """

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.fed: list[tuple[list[int], list[int]]] = []

    def step(self, tokens: Tensor, state: Tensor, *, normalize: bool = True) -> tuple[Tensor, Any]:
        self.fed.append((tokens.tolist(), state.tolist()))
        scores = torch.full((tokens.size(0), self.vocab_size), -10.0)
        scores[torch.arange(tokens.size(0)), (tokens + 1) % self.vocab_size] = 10.0
        return torch.log_softmax(scores, dim=-1), state + 1

    def select_state(self, state: Tensor, indices: Tensor) -> Tensor:
        return state[indices]


class FixedDistribution:
    """Always predicts the same next-token distribution; records the tokens it is fed."""

    def __init__(self, probabilities: list[float]) -> None:
        self.log_probs = torch.tensor([[math.log(p) if p else -math.inf for p in probabilities]])
        self.fed: list[list[int]] = []

    def step(self, tokens: Tensor, state: Any, *, normalize: bool = True) -> tuple[Tensor, Any]:
        self.fed.append(tokens.tolist())
        return self.log_probs.expand(tokens.size(0), -1), state

    def select_state(self, state: Any, indices: Tensor) -> Any:
        return state


def target_distribution(probabilities: list[float], temperature: float, top_k: int) -> list[float]:
    """q_i ∝ p_i^(1/T) over the tokens at least as probable as the k-th one (k = 0: all)."""
    kept = range(len(probabilities))
    if 0 < top_k < len(probabilities):
        kth = sorted(probabilities, reverse=True)[top_k - 1]
        kept = [i for i, p in enumerate(probabilities) if p >= kth]
    weights = [p ** (1 / temperature) if i in kept else 0.0 for i, p in enumerate(probabilities)]
    return [w / sum(weights) for w in weights]


def test_target_distribution_by_hand():
    # The reference itself, on numbers worked on paper: T = 0.5 squares, top-2 keeps 0.5 and 0.25.
    squares = [0.25, 0.0625, 0.0225, 0.01, 0.0]
    assert target_distribution(PROBABILITIES, 0.5, 0) == pytest.approx([s / 0.345 for s in squares])
    assert target_distribution(PROBABILITIES, 1.0, 2) == pytest.approx([2 / 3, 1 / 3, 0, 0, 0])
    assert target_distribution(PROBABILITIES, 0.5, 2) == pytest.approx([0.8, 0.2, 0, 0, 0])


@PROPERTY
@given(
    scores=st.lists(st.lists(st.integers(-4, 4), min_size=5, max_size=5), min_size=1, max_size=3),
    temperature=st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0]),
    top_k=st.integers(0, 6),
)
def test_sampling_logits_give_the_tempered_top_k_distribution(
    scores: list[list[int]], temperature: float, top_k: int
):
    # Integer scores make ties exact, so "ties at the k-th value are kept" is well defined.
    log_probs = torch.log_softmax(torch.tensor(scores, dtype=torch.float64), dim=-1)
    before = log_probs.clone()
    logits = sampling_logits(log_probs, temperature=temperature, top_k=top_k)
    assert torch.equal(log_probs, before)  # the caller's log-probabilities are left alone
    assert logits.shape == log_probs.shape
    for row, row_logits in zip(log_probs.exp().tolist(), logits, strict=True):
        expected = target_distribution(row, temperature, top_k)
        assert torch.softmax(row_logits, -1).tolist() == pytest.approx(expected, abs=1e-9)
        dropped = [q == 0.0 for q in expected]
        assert torch.isneginf(row_logits).tolist() == dropped  # dropped tokens are exactly −inf


def test_top_k_beyond_the_possible_tokens_keeps_probability_on_them_only():
    # One certain token and three impossible ones: the k-th value is −inf, which masks nothing.
    log_probs = torch.tensor([[0.0, -math.inf, -math.inf, -math.inf]])
    distribution = torch.softmax(sampling_logits(log_probs, top_k=2), -1)
    assert distribution.tolist() == [[1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("temperature", [1e-300, 5e-324])
def test_a_vanishing_temperature_samples_the_most_probable_token(temperature: float):
    # log p / T overflows for such T; the limit of softmax(log p / T) as T → 0 is the argmax.
    log_probs = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))
    probs = torch.softmax(sampling_logits(log_probs, temperature=temperature), -1)
    assert probs.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    drawn = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(0))
    assert drawn.squeeze(1).tolist() == [1, 0]


def test_a_huge_temperature_samples_uniformly():
    log_probs = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    probs = torch.softmax(sampling_logits(log_probs, temperature=1e308), -1)
    assert probs[0].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3])


@pytest.mark.parametrize("temperature", [1e30, 1e39, 1e308])
def test_top_1_is_the_most_probable_token_at_any_temperature(temperature: float):
    # Dividing by T keeps the order, so top-1 is greedy even where log p / T rounds to -0.0.
    log_probs = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))
    probs = torch.softmax(sampling_logits(log_probs, temperature=temperature, top_k=1), -1)
    assert probs.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


@pytest.mark.parametrize("greedy", [True, False])
def test_banned_tokens_are_never_generated_and_the_rest_keep_their_odds(greedy: bool):
    class Fresh(FixedDistribution):  # a new tensor per step, as models return
        def step(self, tokens: Tensor, state: Any, *, normalize: bool = True) -> tuple[Tensor, Any]:
            log_probs, state = super().step(tokens, state)
            return log_probs.clone(), state

    # Token 0 is the most probable; banned, greedy takes token 1 and sampling never draws 0.
    model = Fresh(PROBABILITIES)
    generator = torch.Generator().manual_seed(3)
    rows = sample(
        model, None, torch.zeros(400, dtype=torch.long), length=5, greedy=greedy,
        generator=generator, banned=[0],
    )  # fmt: skip
    drawn = torch.tensor(rows).flatten()
    assert not bool((drawn == 0).any())
    if greedy:
        assert bool((drawn == 1).all())
    else:  # 0.25 : 0.15 : 0.1 among the rest, within five standard errors of 2,000 draws
        shares = torch.bincount(drawn, minlength=5)[1:4].double() / drawn.numel()
        assert shares.tolist() == pytest.approx([0.5, 0.3, 0.2], abs=5 * math.sqrt(0.25 / 2000))


@pytest.mark.parametrize("temperature", [-0.5, -1e-9])
def test_a_negative_temperature_is_refused(temperature: float):
    with pytest.raises(ValueError, match="temperature must be positive"):
        sampling_logits(torch.zeros(1, 3), temperature=temperature)


def test_greedy_follows_the_most_probable_path_and_feeds_back_its_tokens():
    model = NextInCycle(vocab_size=5)
    start_state = torch.zeros(2, dtype=torch.long)
    rows = sample(model, start_state, torch.tensor([0, 3]), length=4, greedy=True)
    assert rows == [[1, 2, 3, 4], [4, 0, 1, 2]]
    # Step t reads the token chosen at step t - 1 and the state step t - 1 returned.
    assert model.fed == [([0, 3], [0, 0]), ([1, 4], [1, 1]), ([2, 0], [2, 2]), ([3, 1], [3, 3])]


def test_sampled_tokens_are_fed_back_and_every_row_gets_length_ints():
    model = FixedDistribution([0.25, 0.25, 0.25, 0.25])
    generator = torch.Generator().manual_seed(0)
    rows = sample(model, None, torch.tensor([0, 0, 0]), length=6, generator=generator)
    assert len(rows) == 3 and all(len(row) == 6 for row in rows)
    assert all(type(token) is int and 0 <= token < 4 for row in rows for token in row)
    # The model was fed the start tokens, then each step's draws.
    assert model.fed == [[0, 0, 0]] + [[row[t] for row in rows] for t in range(5)]


@pytest.mark.parametrize(
    ("temperature", "top_k"), [(1.0, 0), (0.5, 0), (2.0, 0), (1.0, 2), (0.5, 2), (3.0, 3)]
)
def test_empirical_frequencies_match_the_target_distribution(temperature: float, top_k: int):
    rows = 20_000
    model = FixedDistribution(PROBABILITIES)
    generator = torch.Generator().manual_seed(1234)
    drawn = sample(
        model,
        None,
        torch.zeros(rows, dtype=torch.long),
        length=1,
        temperature=temperature,
        top_k=top_k,
        generator=generator,
    )
    counts = torch.bincount(torch.tensor(drawn).flatten(), minlength=len(PROBABILITIES))
    expected = target_distribution(PROBABILITIES, temperature, top_k)
    # A frequency's standard error is at most √(0.25 / 20000) ≈ 0.0035; 0.015 is over 4 of them.
    assert (counts / rows).tolist() == pytest.approx(expected, abs=0.015)
    # Tokens outside the top k, or with probability 0, are never drawn at all.
    assert [count == 0 for count in counts.tolist()] == [q == 0.0 for q in expected]


def test_the_generator_is_the_only_source_of_randomness():
    model = FixedDistribution([0.4, 0.3, 0.2, 0.1])
    start = torch.zeros(4, dtype=torch.long)

    def draw(seed: int) -> list[list[int]]:
        return sample(model, None, start, length=10, generator=torch.Generator().manual_seed(seed))

    global_state = torch.get_rng_state()
    first = draw(5)
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG is not consumed
    torch.manual_seed(99)
    torch.rand(1000)  # whatever else the process draws does not change a seeded sample
    assert draw(5) == first


def test_zero_length_returns_empty_rows_without_stepping():
    model = FixedDistribution([0.5, 0.5])
    assert sample(model, None, torch.tensor([1, 0, 1]), length=0) == [[], [], []]
    assert model.fed == []


def test_a_negative_length_is_refused():
    with pytest.raises(ValueError, match="length must be"):
        sample(FixedDistribution([1.0]), None, torch.tensor([0]), length=-1)
