"""The CRF's forward algorithm and Viterbi against brute-force enumeration of every tag sequence."""

from __future__ import annotations

import itertools

import pytest
import torch

from rnnlab.models.crf import LinearChainCRF


@torch.no_grad()
def brute_force(crf: LinearChainCRF, emissions: torch.Tensor, length: int):
    """log Z and the best sequence of one sentence (emissions (T, K), padded) by enumeration.

    Each candidate is scored on the unpadded emissions, with ``hand_score``'s definition.
    """
    num_tags = emissions.size(1)
    scores = {
        seq: hand_score(crf, emissions[:length], list(seq))
        for seq in itertools.product(range(num_tags), repeat=length)
    }
    log_z = torch.logsumexp(torch.stack(list(scores.values())), dim=0)
    best = max(scores, key=lambda s: float(scores[s]))
    return log_z, list(best), scores


def hand_score(crf: LinearChainCRF, emissions: torch.Tensor, seq: list[int]) -> torch.Tensor:
    total = crf.start_transitions[seq[0]] + crf.end_transitions[seq[-1]]
    for t, tag in enumerate(seq):
        total = total + emissions[t, tag]
        if t > 0:
            total = total + crf.transitions[seq[t - 1], tag]
    return total


@pytest.fixture
def crf_case():
    torch.manual_seed(0)
    crf = LinearChainCRF(3)
    with torch.no_grad():
        crf.transitions.normal_()
        crf.start_transitions.normal_()
        crf.end_transitions.normal_()
    lengths = torch.tensor([4, 1, 3, 2])
    emissions = torch.randn(4, 4, 3) * 2
    return crf, emissions, lengths


def test_score_matches_the_definition(crf_case):
    crf, emissions, lengths = crf_case
    tags = torch.tensor([[0, 2, 1, 1], [2, 0, 0, 0], [1, 1, 0, 2], [2, 0, 1, 1]])
    scores = crf.score(emissions, tags, lengths)
    for b, n in enumerate(lengths.tolist()):
        expected = hand_score(crf, emissions[b], tags[b, :n].tolist())
        assert torch.allclose(scores[b], expected, atol=1e-5)


def test_log_partition_equals_enumeration(crf_case):
    crf, emissions, lengths = crf_case
    log_z = crf.log_partition(emissions, lengths)
    for b, n in enumerate(lengths.tolist()):
        expected, _, _ = brute_force(crf, emissions[b], n)
        assert torch.allclose(log_z[b], expected, atol=1e-5)


def test_viterbi_equals_brute_force_argmax(crf_case):
    crf, emissions, lengths = crf_case
    best = crf.viterbi(emissions, lengths)
    for b, n in enumerate(lengths.tolist()):
        _, expected, _ = brute_force(crf, emissions[b], n)
        assert best[b, :n].tolist() == expected
        assert best[b, n:].tolist() == [0] * (emissions.size(1) - n)


@pytest.mark.parametrize("seed", range(4))
def test_random_padded_batches_match_enumeration(seed):
    torch.manual_seed(seed)
    crf = LinearChainCRF(3)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_(std=2.0)
    lengths = torch.randint(1, 6, (6,))
    lengths[0] = 5
    emissions = torch.randn(6, 5, 3)
    log_z = crf.log_partition(emissions, lengths)
    best = crf.viterbi(emissions, lengths)
    for b, n in enumerate(lengths.tolist()):
        expected_z, expected_best, _ = brute_force(crf, emissions[b], n)
        assert torch.allclose(log_z[b], expected_z, atol=1e-5)
        assert best[b, :n].tolist() == expected_best


def test_padding_values_change_nothing(crf_case):
    crf, emissions, lengths = crf_case
    tags = torch.randint(0, 3, (4, 4))
    noisy = emissions.clone()
    noisy_tags = tags.clone()
    for b, n in enumerate(lengths.tolist()):
        noisy[b, n:] = 100.0
        noisy_tags[b, n:] = 2
    assert torch.allclose(crf.nll(emissions, tags, lengths), crf.nll(noisy, noisy_tags, lengths))
    assert torch.equal(crf.viterbi(emissions, lengths), crf.viterbi(noisy, lengths))


def test_nll_is_a_normalised_distribution(crf_case):
    crf, emissions, lengths = crf_case
    _, _, scores = brute_force(crf, emissions[2], 3)
    log_z = crf.log_partition(emissions[2:3], lengths[2:3])[0]
    total = sum(torch.exp(s - log_z) for s in scores.values())
    assert torch.allclose(total, torch.tensor(1.0), atol=1e-5)


def test_empty_sequence_has_zero_loss():
    crf = LinearChainCRF(2)
    emissions = torch.randn(2, 3, 2)
    lengths = torch.tensor([0, 3])
    nll = crf.nll(emissions, torch.zeros(2, 3, dtype=torch.long), lengths)
    assert nll[0] == 0 and nll[1] > 0
