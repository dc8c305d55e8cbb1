"""FinishedHypotheses keeps what sorting a list of every finished hypothesis would keep."""

from __future__ import annotations

import random

import pytest
import torch

from rnnlab.decoding.finished import FinishedHypotheses
from rnnlab.decoding.hypothesis import Hypothesis

NEG_INF = float("-inf")


def offer(finished: FinishedHypotheses, reference: list[list[Hypothesis]], offers, lp: float):
    """Offer ``offers`` {sentence: [(log_prob or None, tokens)]} (same C and length for all) to
    both ``finished`` and the reference lists, in order."""
    sentences = sorted(offers)
    log_prob = torch.tensor(
        [[NEG_INF if lp_ is None else lp_ for lp_, _ in offers[s]] for s in sentences]
    )
    tokens = torch.tensor([[toks for _, toks in offers[s]] for s in sentences], dtype=torch.long)
    finished.add(torch.tensor(sentences), log_prob, tokens, lp)
    for s in sentences:
        for raw, toks in offers[s]:
            if raw is not None:
                raw32 = float(torch.tensor(raw, dtype=torch.float32))
                reference[s].append(Hypothesis(list(toks), raw32, raw32 / lp))


def best_of(reference: list[list[Hypothesis]], n: int) -> list[list[Hypothesis]]:
    return [sorted(hyps, key=lambda h: -h.score)[:n] for hyps in reference]


def test_an_empty_search_has_no_hypotheses_and_no_nth_best():
    finished = FinishedHypotheses(3, 2, "cpu")
    assert finished.hypotheses() == [[], [], []]
    assert torch.equal(finished.nth_best(torch.arange(3)), torch.full((3,), NEG_INF))


def test_offers_keep_the_n_best_in_the_order_a_stable_sort_of_all_of_them_gives():
    finished, reference = FinishedHypotheses(2, 2, "cpu"), [[], []]
    offer(finished, reference, {0: [(-1.0, []), (None, [])]}, lp=1.0)  # ended at the first step
    offer(finished, reference, {0: [(-2.0, [5]), (-0.5, [6])], 1: [(-3.0, [7]), (None, [0])]}, 1.5)
    offer(finished, reference, {1: [(-4.5, [8, 9]), (-4.5, [9, 8])]}, lp=1.5)  # a tie
    got = finished.hypotheses()
    assert got == best_of(reference, 2)
    assert [h.tokens for h in got[0]] == [[6], []]  # -0.5 / 1.5 beats -1.0 / 1
    assert [h.tokens for h in got[1]] == [[7], [8, 9]]  # the first of the tie, as offered
    assert got[0][0].score == -0.5 / 1.5 and got[0][0].log_prob == -0.5
    assert finished.nth_best(torch.tensor([0, 1])).tolist() == pytest.approx([-1.0, -3.0])


def test_a_sentence_with_fewer_than_n_hypotheses_has_no_nth_best():
    finished, reference = FinishedHypotheses(1, 3, "cpu"), [[]]
    offer(finished, reference, {0: [(-1.0, [4]), (-2.0, [5])]}, lp=1.0)
    assert finished.nth_best(torch.tensor([0])).item() == NEG_INF
    assert finished.hypotheses() == best_of(reference, 3)


@pytest.mark.parametrize("seed", range(20))
def test_random_offers_equal_sorting_every_hypothesis(seed):
    """Brute force: the n best of all offers, ties (few distinct values) included."""
    rng = random.Random(seed)
    batch, n, k = rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 5)
    finished, reference = FinishedHypotheses(batch, n, "cpu"), [[] for _ in range(batch)]
    for length in range(rng.randint(1, 6)):
        lp = ((5 + length + 1) / 6) ** rng.choice([0.0, 0.6])
        sentences = rng.sample(range(batch), rng.randint(1, batch))
        offers = {
            s: [
                (
                    rng.choice([None, -0.5, -1.0, -2.0, -3.25]),
                    [rng.randint(4, 9) for _ in range(length)],
                )
                for _ in range(k)
            ]
            for s in sentences
        }
        offer(finished, reference, offers, lp)
        expected = best_of(reference, n)
        nth = [hyps[n - 1].score if len(hyps) == n else NEG_INF for hyps in expected]
        got = finished.nth_best(torch.arange(batch)).tolist()
        assert got == pytest.approx(nth, rel=1e-6)  # -inf equals only -inf
    assert finished.hypotheses() == best_of(reference, n)
