"""Beam search's candidate ranking: both rankings against brute force over all W·V pairs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rnnlab.decoding import extensions
from rnnlab.decoding.beam import beam_search_hypotheses
from rnnlab.decoding.extensions import BLOCK, _blocked, _blocked_applies, _per_row, best_extensions
from tests.reverse_task import BOS, EOS, reverse_batch, tiny_model, train_steps

RANKINGS = {"per_row": _per_row, "blocked": _blocked, "best_extensions": best_extensions}


def applies(ranking: str, log_probs: torch.Tensor, width: int, count: int) -> bool:
    """Whether ``ranking`` may be called on these scores (the blocked one needs enough blocks)."""
    return ranking != "blocked" or _blocked_applies(log_probs, width, count)


def brute_force(log_probs: torch.Tensor, scores: torch.Tensor, count: int):
    """Every (beam, token) pair of each sentence ranked at once."""
    batch, width = scores.shape
    vocab = log_probs.size(-1)
    totals = (scores.unsqueeze(-1) + log_probs.view(batch, width, vocab)).flatten(1)
    best, index = totals.topk(count, dim=-1)
    return best, index // vocab, index % vocab


def random_step(batch: int, width: int, vocab: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(batch * width, vocab, generator=generator).log_softmax(-1)
    scores = -10 * torch.rand(batch, width, generator=generator)
    return log_probs, scores


@pytest.mark.parametrize("ranking", RANKINGS)
@pytest.mark.parametrize(
    "vocab",
    [2 * BLOCK, 5 * BLOCK, 5 * BLOCK + 1, 2254, 5893],  # whole blocks, a 1-column tail, real sizes
)
@pytest.mark.parametrize("width", [1, 5])
def test_each_ranking_equals_brute_force_on_tie_free_scores(ranking, vocab, width):
    log_probs, scores = random_step(7, width, vocab, seed=vocab + width)
    count = min(10, width * -(-vocab // BLOCK))  # as many pairs as the blocked ranking can give
    assert applies(ranking, log_probs, width, count)
    expected = brute_force(log_probs, scores, count)
    got = RANKINGS[ranking](log_probs, scores, count)
    for want, have in zip(expected, got, strict=True):
        assert torch.equal(want, have)


# Few distinct values, so that ties and dead (-inf) beams and tokens are common.
PALETTE = torch.tensor([-math.inf, -3.0, -1.0, -0.5, 0.0])


@pytest.mark.parametrize("ranking", RANKINGS)
@settings(max_examples=100, deadline=None)
@given(
    batch=st.integers(1, 6),
    width=st.integers(1, 5),
    vocab=st.integers(2 * BLOCK, 4 * BLOCK + 3),
    count=st.integers(1, 8),
    seed=st.integers(0, 2**31),
)
def test_rankings_with_ties_and_dead_beams_return_the_best_scores(
    ranking, batch, width, vocab, count, seed
):
    generator = torch.Generator().manual_seed(seed)
    log_probs = PALETTE[torch.randint(len(PALETTE), (batch * width, vocab), generator=generator)]
    scores = PALETTE[torch.randint(len(PALETTE), (batch, width), generator=generator)]
    assume(applies(ranking, log_probs, width, count))
    best, beam, token = RANKINGS[ranking](log_probs, scores, count)
    assert torch.equal(best, brute_force(log_probs, scores, count)[0])
    # Each finite score belongs to a real pair holding it, and no pair is returned twice.
    rows = torch.arange(batch).unsqueeze(1) * width + beam
    finite = torch.isfinite(best)
    assert torch.equal((scores.gather(1, beam) + log_probs[rows, token])[finite], best[finite])
    for sentence in range(batch):
        alive = finite[sentence]
        pairs = set(
            zip(beam[sentence][alive].tolist(), token[sentence][alive].tolist(), strict=True)
        )
        assert len(pairs) == int(alive.sum())


def test_blocked_ranking_applies_to_contiguous_cpu_scores_with_enough_blocks():
    log_probs = torch.zeros(5, 3 * BLOCK)
    assert _blocked_applies(log_probs, width=5, count=10)
    assert not _blocked_applies(log_probs, width=1, count=10)  # 3 blocks cannot hold 10 pairs
    assert not _blocked_applies(torch.zeros(5, BLOCK + 1), width=5, count=10)
    assert not _blocked_applies(torch.zeros(3 * BLOCK, 5).t(), width=5, count=10)


def test_fewer_pairs_than_asked_for_fill_with_minus_infinity():
    log_probs = torch.tensor([[-0.1, -2.3, -4.0]]).log_softmax(-1)
    best, beam, token = best_extensions(log_probs, torch.zeros(1, 1), 5)
    assert best[0, :3].tolist() == sorted(log_probs[0].tolist(), reverse=True)
    assert best[0, 3:].tolist() == [-math.inf, -math.inf]
    assert token[0, :3].tolist() == [0, 1, 2] and (token < 3).all() and (beam == 0).all()


@pytest.mark.parametrize("block", [1, 5])  # every step blocked / a tail block after the first step
def test_beam_search_finds_the_same_hypotheses_with_either_ranking(monkeypatch, block):
    """The reverse task's 12-word vocabulary takes the blocked ranking once blocks are this small."""
    model = train_steps(tiny_model(attention="bahdanau"), 60, seed=1)
    batch = reverse_batch(torch.Generator().manual_seed(5), 12, min_len=2, max_len=9)

    def search():
        with torch.no_grad():
            return beam_search_hypotheses(
                model, model.start(batch.src, batch.src_lengths), batch_size=12, beam_size=5,
                n_best=3, bos_id=BOS, eos_id=EOS, max_len=14, length_penalty_alpha=0.6,
            )  # fmt: skip

    monkeypatch.setattr(extensions, "_blocked_applies", lambda *args: False)
    per_row = search()
    monkeypatch.undo()
    monkeypatch.setattr(extensions, "BLOCK", block)
    calls = []
    blocked = extensions._blocked
    monkeypatch.setattr(extensions, "_blocked", lambda *a: calls.append(1) or blocked(*a))
    assert search() == per_row
    assert calls, "the blocked ranking should have run"
