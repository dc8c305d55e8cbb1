"""Banned tokens: no search emits them, and every other token keeps its log-probability."""

from __future__ import annotations

import itertools

import pytest
import torch

from rnnlab.decoding.banned import ban, banned_index
from rnnlab.decoding.beam import beam_search_hypotheses
from rnnlab.decoding.greedy import greedy_hypotheses, greedy_search
from tests.decoding.step_tables import EOS_ID, StepTable

PAD, WORD_A, EOS, WORD_B = 0, 1, EOS_ID, 3


class PadLover(StepTable):
    """Four tokens. <pad> is the most likely token at every step, then the words, then <eos>, which
    becomes likely from the second step on."""

    LOG_PROBS = torch.tensor([[0.5, 0.3, 0.05, 0.15], [0.4, 0.1, 0.35, 0.15]]).log()


def search_args(**kwargs):
    return dict(batch_size=2, bos_id=9, eos_id=EOS, max_len=3, **kwargs)


def test_ban_sets_only_the_banned_columns_to_minus_infinity():
    scores = torch.arange(12.0).view(2, 6)
    want = scores.clone()
    want[:, [1, 4]] = float("-inf")
    assert torch.equal(ban(scores, banned_index([4, 1, 4], "cpu")), want)
    assert banned_index([], "cpu") is None
    assert torch.equal(ban(scores.clone(), None), scores)


@pytest.mark.parametrize("beam_size", [1, 2, 4])
def test_beam_search_ranks_like_brute_force_over_outputs_without_the_banned_token(beam_size):
    hyps = beam_search_hypotheses(
        PadLover(), torch.zeros(2, dtype=torch.long), beam_size=beam_size,
        **search_args(banned=[PAD]),
    )  # fmt: skip
    allowed = [WORD_A, WORD_B]
    outputs = [list(y) for n in range(4) for y in itertools.product(allowed, repeat=n)]
    ranked = sorted(outputs, key=lambda y: -PadLover.log_prob(y, 3))
    for sentence in hyps:
        assert [h.tokens for h in sentence] == ranked[:beam_size]
        for h in sentence:  # not renormalised: the model's own log-probabilities
            assert h.log_prob == pytest.approx(PadLover.log_prob(h.tokens, 3), abs=1e-6)


def test_without_a_ban_the_searches_emit_the_token():
    assert (
        greedy_search(PadLover(), torch.zeros(2, dtype=torch.long), **search_args())
        == [[PAD] * 3] * 2
    )


def test_greedy_skips_the_banned_token_and_equals_beam_search_with_one_beam():
    state = torch.zeros(2, dtype=torch.long)
    greedy = greedy_hypotheses(PadLover(), state, **search_args(banned=[PAD]))
    unscored = greedy_search(PadLover(), state, **search_args(banned=[PAD]))
    beam = beam_search_hypotheses(PadLover(), state, beam_size=1, **search_args(banned=[PAD]))
    assert [h.tokens for h in greedy] == unscored == [[WORD_A]] * 2
    assert [[h.tokens for h in sentence] for sentence in beam] == [[[WORD_A]]] * 2
    assert greedy[0].log_prob == pytest.approx(PadLover.log_prob([WORD_A], 3))
