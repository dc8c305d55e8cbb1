"""Greedy search: both searches equal beam search with one beam (torch.topk, not the blocked argmax),
and scores are the model's log-probabilities."""

from __future__ import annotations

import pytest
import torch

from rnnlab.decoding.beam import beam_search
from rnnlab.decoding.greedy import greedy_hypotheses, greedy_search
from rnnlab.decoding.hypothesis import length_penalty
from rnnlab.models.language_model import RNNLanguageModel
from rnnlab.models.seq2seq import build_seq2seq
from rnnlab.tasks.seq2seq_config import Seq2SeqModelConfig
from tests.decoding.test_beam import DECODERS, sources, teacher_forced_log_prob, trained
from tests.reverse_task import BOS, EOS

WIDE_VOCAB = 3000
"""With 64 sentences, wide enough for the blocked argmax (rnnlab.decoding.argmax) to run."""


@pytest.mark.parametrize("attention", DECODERS)
def test_greedy_over_a_wide_vocabulary_equals_beam_search_with_one_beam(attention):
    torch.manual_seed(0)
    model = build_seq2seq(
        Seq2SeqModelConfig(embed_size=16, hidden_size=32, num_layers=1, attention=attention),
        src_vocab_size=50,
        tgt_vocab_size=WIDE_VOCAB,
    ).eval()
    src = torch.randint(4, 50, (64, 7), generator=torch.Generator().manual_seed(1))
    lengths = torch.full((64,), 7)
    search = dict(batch_size=64, bos_id=BOS, eos_id=EOS, max_len=8)
    with torch.no_grad():
        fast = greedy_search(model, model.start(src, lengths), **search)
    scored = greedy_hypotheses(model, model.start(src, lengths), **search)
    one_beam = beam_search(model, model.start(src, lengths), beam_size=1, **search)
    assert fast == [h.tokens for h in scored] == [b[0] for b in one_beam]
    assert len({tuple(tokens) for tokens in fast}) > 1  # not one degenerate output for all rows


@pytest.mark.parametrize("attention", DECODERS)
@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_greedy_scores_are_teacher_forced_log_probabilities(attention, alpha):
    model, batch = trained(attention), sources()
    hyps = greedy_hypotheses(
        model,
        model.start(batch.src, batch.src_lengths),
        batch_size=batch.src.size(0),
        bos_id=BOS,
        eos_id=EOS,
        max_len=14,
        length_penalty_alpha=alpha,
    )
    for row, hyp in enumerate(hyps):
        ended = len(hyp.tokens) < 14
        expected = teacher_forced_log_prob(
            model, batch.src[row], batch.src_lengths[row], hyp.tokens, ended
        )
        assert hyp.log_prob == pytest.approx(expected, abs=1e-4)
        lp = length_penalty(len(hyp.tokens) + int(ended), alpha)
        assert hyp.score == pytest.approx(hyp.log_prob / lp)


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_language_model_unnormalised_step_ranks_like_its_log_probabilities(softmax):
    torch.manual_seed(0)
    model = RNNLanguageModel(
        vocab_size=40, embed_size=8, hidden_size=16, num_layers=1, cell="lstm",
        softmax=softmax, cutoffs=[5, 20],
    ).eval()  # fmt: skip
    tokens = torch.tensor([4, 9, 17])
    with torch.no_grad():
        log_probs, _ = model.step(tokens, model.start(3))
        scores, _ = model.step(tokens, model.start(3), normalize=False)
    torch.testing.assert_close(torch.log_softmax(scores, -1), log_probs)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3))


class _Countdown:
    """Row r emits token 10 + r until step r, then ``<eos>`` — and keeps emitting ``<eos>``; its
    state is the (R,) tensor of row numbers and the log-prob of each token is −(step + 1)."""

    def __init__(self) -> None:
        self.kept: list[int] = []
        self.step_rows: list[int] = []

    def step(self, tokens, state, *, normalize=True):
        rows, t = state
        self.step_rows.append(rows.numel())
        scores = torch.full((rows.numel(), 10 + 64), -100.0)
        ids = torch.where(rows <= t, EOS, 10 + rows)
        scores[torch.arange(rows.numel()), ids] = -(t + 1.0)
        return scores, (rows, t + 1)

    def select_state(self, state, indices):
        self.kept.append(indices.numel())
        return state[0][indices], state[1]


def test_finished_sentences_leave_the_batch_a_quarter_at_a_time_and_their_outputs_stay_put():
    model = _Countdown()
    search = dict(batch_size=16, bos_id=BOS, eos_id=EOS, max_len=30)
    hyps = greedy_hypotheses(model, (torch.arange(16), 0), **search)
    # Row r: r tokens, then <eos> at step r; the log-probs −1 … −(r + 1) summed.
    assert [h.tokens for h in hyps] == [[10 + r] * r for r in range(16)]
    assert [h.log_prob for h in hyps] == [-(r + 1) * (r + 2) / 2 for r in range(16)]
    # Rows leave once the finished ones are a quarter of the batch: 4 of 16, 3 of 12, 3 of 9, …
    assert model.kept == [12, 9, 6, 4, 3, 2, 1, 0]
    assert model.step_rows == [16] * 4 + [12] * 3 + [9] * 3 + [6] * 2 + [4] + [3] + [2] + [1]
