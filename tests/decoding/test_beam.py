"""Beam search: beam 1 is greedy, scores are the model's log-probabilities, batching is invisible."""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest
import torch

from rnnlab.decoding.beam import (
    BEAM_SCORES_BYTES,
    beam_batch_size,
    beam_search,
    beam_search_hypotheses,
    length_penalty,
)
from rnnlab.decoding.greedy import greedy_search
from tests.decoding.step_tables import EOS_ID, StepTable
from tests.reverse_task import BOS, EOS, reverse_batch, tiny_model, train_steps

DECODERS = ["none", "bahdanau", "luong_general"]


@functools.cache
def trained(attention: str):
    """Briefly trained, so that outputs are neither degenerate nor perfect (ties are unlikely)."""
    return train_steps(tiny_model(attention=attention), 60, seed=1)


def sources(n: int = 12, seed: int = 5):
    return reverse_batch(torch.Generator().manual_seed(seed), n, min_len=2, max_len=9)


def beam(model, batch, **kwargs):
    kwargs.setdefault("max_len", 14)
    return beam_search_hypotheses(
        model,
        model.start(batch.src, batch.src_lengths),
        batch_size=batch.src.size(0),
        bos_id=BOS,
        eos_id=EOS,
        **kwargs,
    )


@pytest.mark.parametrize("attention", DECODERS)
@pytest.mark.parametrize("max_len", [14, 4])
def test_beam_size_one_equals_greedy(attention, max_len):
    model, batch = trained(attention), sources()
    with torch.no_grad():
        greedy = greedy_search(
            model,
            model.start(batch.src, batch.src_lengths),
            batch_size=batch.src.size(0),
            bos_id=BOS,
            eos_id=EOS,
            max_len=max_len,
        )
    hyps = beam(model, batch, beam_size=1, max_len=max_len)
    assert [h[0].tokens for h in hyps] == greedy
    assert any(len(g) < max_len for g in greedy), "some sentence should end with <eos>"


def teacher_forced_log_prob(model, src, src_length, tokens: list[int], ended: bool) -> float:
    """log P(tokens [+ <eos>] | src) by teacher forcing, one sentence."""
    target = tokens + [EOS] if ended else tokens
    tgt_in = torch.tensor([[BOS, *target[:-1]]])
    with torch.no_grad():
        features = model(src.unsqueeze(0), src_length.view(1), tgt_in)  # (1, T, H)
        log_probs = torch.log_softmax(model.project(features), dim=-1)[0]  # (T, V)
    return float(log_probs.gather(1, torch.tensor(target).unsqueeze(1)).sum())


@pytest.mark.parametrize("attention", DECODERS)
def test_best_score_is_the_teacher_forced_log_probability(attention):
    model, batch = trained(attention), sources()
    for row, hyps in enumerate(beam(model, batch, beam_size=4, n_best=4)):
        for hyp in hyps:
            ended = len(hyp.tokens) < 14
            expected = teacher_forced_log_prob(
                model, batch.src[row], batch.src_lengths[row], hyp.tokens, ended
            )
            assert hyp.score == pytest.approx(hyp.log_prob)  # alpha = 0
            assert hyp.log_prob == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("attention", DECODERS)
def test_batched_beam_equals_one_sentence_at_a_time(attention):
    model, batch = trained(attention), sources(8)
    together = beam(model, batch, beam_size=3, n_best=3, length_penalty_alpha=0.6)
    for row, hyps in enumerate(together):
        n = int(batch.src_lengths[row])  # no padding at all when alone
        one = replace(
            batch, src=batch.src[row : row + 1, :n], src_lengths=batch.src_lengths[row : row + 1]
        )
        alone = beam(model, one, beam_size=3, n_best=3, length_penalty_alpha=0.6)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in hyps]
        for a, b in zip(alone, hyps, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_n_best_are_sorted_distinct_and_scored_with_the_length_penalty(alpha):
    model, batch = trained("luong_general"), sources()
    for hyps in beam(model, batch, beam_size=5, n_best=5, length_penalty_alpha=alpha):
        assert len(hyps) == 5
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 5
        for h in hyps:
            size = len(h.tokens) + (1 if len(h.tokens) < 14 else 0)  # |Y| counts <eos>
            assert h.score == pytest.approx(h.log_prob / length_penalty(size, alpha))


def test_length_penalty_is_gnmt():
    assert length_penalty(1, 0.0) == 1.0
    assert length_penalty(1, 0.6) == 1.0
    assert length_penalty(7, 1.0) == pytest.approx(2.0)
    assert length_penalty(13, 0.5) == pytest.approx(3**0.5)


def test_beam_search_returns_n_best_token_lists_within_max_len():
    model, batch = trained("bahdanau"), sources(5)
    out = beam_search(
        model,
        model.start(batch.src, batch.src_lengths),
        batch_size=5,
        beam_size=4,
        n_best=2,
        bos_id=BOS,
        eos_id=EOS,
        max_len=3,
    )
    assert len(out) == 5 and all(len(h) == 2 for h in out)
    assert all(len(tokens) <= 3 and EOS not in tokens for h in out for tokens in h)


def test_wider_beam_never_scores_worse_on_a_trained_model():
    """Not a theorem for beam search, but on this tiny model wider beams find likelier outputs."""
    model, batch = trained("none"), sources()
    narrow = beam(model, batch, beam_size=1)
    wide = beam(model, batch, beam_size=6)
    better = [w[0].score >= n[0].score - 1e-6 for w, n in zip(wide, narrow, strict=True)]
    assert all(better)
    assert any(w[0].score > n[0].score + 1e-4 for w, n in zip(wide, narrow, strict=True))


class RowCounter:
    """A step model that records how many rows each step reads, around a real model."""

    def __init__(self, model):
        self.model, self.rows = model, []

    def step(self, tokens, state, *, normalize=True):
        self.rows.append(tokens.numel())
        return self.model.step(tokens, state, normalize=normalize)

    def select_state(self, state, indices):
        return self.model.select_state(state, indices)


@pytest.mark.parametrize("attention", DECODERS)
def test_first_step_reads_one_row_per_sentence_and_later_steps_k(attention):
    batch = sources()
    model = trained(attention)
    counter = RowCounter(model)
    with torch.no_grad():
        counted = beam_search_hypotheses(
            counter, model.start(batch.src, batch.src_lengths), batch_size=12,
            beam_size=4, bos_id=BOS, eos_id=EOS, max_len=14,
        )  # fmt: skip
        # The same encoder path as above: without gradients a GRU encoder runs packed, with them
        # padded, and the two can round differently.
        expected = beam(model, batch, beam_size=4)
    assert counter.rows[0] == 12
    assert counter.rows[1] == 12 * 4
    assert counted == expected


@pytest.mark.parametrize("attention", DECODERS)
@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_stopping_once_the_n_best_are_settled_changes_no_answer(attention, alpha):
    """A sentence stops when its n_best are final; waiting for K finished ones (n_best = K, the
    old rule for every n_best) returns the same n_best, later."""
    batch, model = sources(), trained(attention)

    def run(n_best: int) -> tuple[list, int]:
        counter = RowCounter(model)
        with torch.no_grad():
            hyps = beam_search_hypotheses(
                counter, model.start(batch.src, batch.src_lengths), batch_size=12, beam_size=5,
                n_best=n_best, bos_id=BOS, eos_id=EOS, max_len=14, length_penalty_alpha=alpha,
            )  # fmt: skip
        return hyps, sum(counter.rows)

    waited, waited_rows = run(5)
    for n_best in (1, 2):
        settled, settled_rows = run(n_best)
        for early, late in zip(settled, waited, strict=True):
            assert [h.tokens for h in early] == [h.tokens for h in late[:n_best]]
            for a, b in zip(early, late[:n_best], strict=True):
                assert a.score == pytest.approx(b.score, abs=1e-5)
        assert settled_rows <= waited_rows
        if alpha == 0.0:
            assert settled_rows < waited_rows


@pytest.mark.parametrize("attention", DECODERS)
@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_heuristic_stop_reads_fewer_rows_and_equals_exact_without_a_length_penalty(
    attention, alpha
):
    batch, model = sources(), trained(attention)

    def run(stop: str, n_best: int) -> tuple[list, int]:
        counter = RowCounter(model)
        with torch.no_grad():
            hyps = beam_search_hypotheses(
                counter, model.start(batch.src, batch.src_lengths), batch_size=12, beam_size=5,
                n_best=n_best, bos_id=BOS, eos_id=EOS, max_len=14, length_penalty_alpha=alpha,
                stop=stop,
            )  # fmt: skip
        return hyps, sum(counter.rows)

    for n_best in (1, 3):
        exact, exact_rows = run("exact", n_best)
        early, early_rows = run("heuristic", n_best)
        assert early_rows <= exact_rows
        for found, best in zip(early, exact, strict=True):
            # It stops no later than the exact search, so it cannot find a better hypothesis.
            assert found[0].score <= best[0].score + 1e-5
            if alpha == 0.0:
                assert [h.tokens for h in found] == [h.tokens for h in best]


class LongerWinsLater:
    """A step model over five tokens whose state is the step count. After <bos>, <eos> and token 3
    are even (log 0.5 each); after one 3, another costs 0.3 nats; then 3s are nearly free until
    <eos> is, at the seventh step. With α = 1 the six 3s (log-prob ≈ -0.99, lp(7) = 2) outrank the
    empty output (-0.69, lp(1) = 1), but a beam ending one step after the second 3 would not
    (-0.99 / lp(3) < -0.69)."""

    def step(self, tokens, state, *, normalize=True):
        t = state  # (R,) steps taken by each row
        log_probs = torch.full((tokens.numel(), 5), -20.0)
        log_probs[:, 4] = -10.0
        first, second = t == 0, t == 1
        log_probs[first, EOS_ID] = log_probs[first, 3] = float(torch.tensor(0.5).log())
        log_probs[second, 3], log_probs[second, EOS_ID] = -0.3, -5.0
        later = t >= 2
        log_probs[later, 3] = torch.where(t[later] < 6, -1e-4, -9.0)
        log_probs[later, EOS_ID] = torch.where(t[later] < 6, -9.0, -1e-4)
        return log_probs, t + 1

    def select_state(self, state, indices):
        return state.index_select(0, indices)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_only_the_exact_stop_finds_a_longer_hypothesis_that_wins_by_its_length_penalty(alpha):
    def best(stop: str) -> list[int]:
        hyps = beam_search_hypotheses(
            LongerWinsLater(), torch.zeros(1, dtype=torch.long), batch_size=1, beam_size=2,
            n_best=1, bos_id=1, eos_id=EOS_ID, max_len=10, length_penalty_alpha=alpha, stop=stop,
        )  # fmt: skip
        return hyps[0][0].tokens

    if alpha == 0.0:
        assert best("exact") == best("heuristic") == []
    else:
        assert best("exact") == [3] * 6
        assert best("heuristic") == []


class ThreeWords(StepTable):
    """Words 0, 1 and <eos> (2). Their probabilities are 0.6, 0.3 and 0.1 at the first step and 0.5,
    0.2 and 0.3 after it: <eos> is the least likely word at the start."""

    LOG_PROBS = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3]]).log()


@pytest.mark.parametrize(
    "beam_size", [2, 3, 5]
)  # 2K candidates: more than the 3 words at the start
def test_a_vocabulary_smaller_than_the_candidates_gives_the_best_hypotheses(beam_size):
    hyps = beam_search_hypotheses(
        ThreeWords(), torch.zeros(1, dtype=torch.long), batch_size=1, beam_size=beam_size,
        bos_id=1, eos_id=EOS_ID, max_len=2,
    )[0]  # fmt: skip
    # Brute force: every output of at most 2 words, ended by <eos> unless it has 2.
    outputs = [[], [0], [1], [0, 0], [0, 1], [1, 0], [1, 1]]
    ranked = sorted(outputs, key=lambda y: -ThreeWords.log_prob(y, 2))
    assert [h.tokens for h in hyps] == ranked[:beam_size]
    for h in hyps:
        assert h.log_prob == pytest.approx(ThreeWords.log_prob(h.tokens, 2), abs=1e-6)


def test_unknown_stop_rule_is_an_error():
    with pytest.raises(ValueError, match="exact, heuristic"):
        beam_search_hypotheses(
            LongerWinsLater(), torch.zeros(1, dtype=torch.long), batch_size=1, beam_size=2,
            bos_id=1, eos_id=EOS_ID, max_len=3, stop="never",
        )  # fmt: skip


class MemoryRows:
    """The step protocol around an attention model, recording the memory rows and decoder rows of
    every selected state; with ``per_row`` it gives every decoder row its own copy of the memory:
    the reference for a beam's rows sharing their sentence's memory."""

    def __init__(self, model, *, per_row: bool):
        self.model, self.per_row, self.seen = model, per_row, []

    def step(self, tokens, state, *, normalize=True):
        return self.model.step(tokens, state, normalize=normalize)

    def select_state(self, state, indices):
        state = self.model.select_state(state, indices)
        self.seen.append((state.memory.size(0), indices.numel()))
        if not self.per_row:
            return state
        rows = torch.arange(state.memory.size(0)).repeat_interleave(state.group)
        return replace(
            state,
            memory=state.memory[rows],
            keys=state.keys[rows],
            memory_lengths=state.memory_lengths[rows],
            group=1,
        )


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "luong_dot"])
def test_beams_sharing_their_sentences_memory_equal_beams_with_copies(attention):
    batch = sources()
    model = trained(attention)

    def search(step_model):
        with torch.no_grad():
            return beam_search_hypotheses(
                step_model, model.start(batch.src, batch.src_lengths), batch_size=12,
                beam_size=4, bos_id=BOS, eos_id=EOS, max_len=14,
            )  # fmt: skip

    copies, shares = MemoryRows(model, per_row=True), MemoryRows(model, per_row=False)
    copied, shared = search(copies), search(shares)
    assert [[h.tokens for h in s] for s in shared] == [[h.tokens for h in s] for s in copied]
    for s, c in zip(shared, copied, strict=True):
        assert [h.score for h in s] == pytest.approx([h.score for h in c], abs=1e-5)
    # One memory row per live sentence (12 sentences, 48 rows), never one per beam.
    assert shares.seen[0] == (12, 48)
    assert all(memory * 4 == rows for memory, rows in shares.seen)
    assert any(memory < 12 for memory, _ in shares.seen), "some sentence should finish"


def test_beam_search_keeps_a_steps_scores_within_its_budget():
    assert (
        beam_batch_size(512, 5, 3_820, attention=False) == 219
    )  # 4·5·3,820·219 ≤ 16 MiB < 4·5·3,820·220
    assert 4 * 5 * 3_820 * 219 <= BEAM_SCORES_BYTES < 4 * 5 * 3_820 * 220
    assert beam_batch_size(512, 5, 5_893, attention=True) == 102  # B·K rows as greedy's B
    assert beam_batch_size(512, 5, 50, attention=False) == 512  # small scores: the whole batch
    assert beam_batch_size(512, 5, 10**7, attention=False) == 1  # always at least one sentence
