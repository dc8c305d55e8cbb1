"""Scheduled sampling's step loop: with ε ≡ 1 it is teacher forcing, for every decoder; below 1 it
feeds the model's own predictions, per token."""

from __future__ import annotations

import pytest
import torch

from rnnlab.models.seq2seq import build_seq2seq
from rnnlab.tasks.seq2seq import Seq2SeqModelConfig

DECODERS = [
    ("none", True),
    ("bahdanau", True),
    ("luong_general", True),
    ("luong_general", False),
]


def model_and_batch(attention: str, input_feed: bool, cell: str, dropout: float = 0.0):
    torch.manual_seed(0)
    cfg = Seq2SeqModelConfig(
        attention=attention,  # type: ignore[arg-type]
        input_feed=input_feed,
        cell=cell,  # type: ignore[arg-type]
        num_layers=2,
        dropout=dropout,
        embed_dropout=dropout,
        embed_size=8,
        hidden_size=16,
        bidirectional_encoder=attention != "none",
    )
    model = build_seq2seq(cfg, src_vocab_size=20, tgt_vocab_size=22).train()
    src = torch.randint(4, 20, (5, 7))
    src_lengths = torch.tensor([7, 5, 3, 6, 2])
    tgt_in = torch.randint(4, 22, (5, 6))
    return model, src, src_lengths, tgt_in


@pytest.mark.parametrize(("attention", "input_feed"), DECODERS)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_teacher_forcing_one_is_teacher_forcing_bit_for_bit(attention, input_feed, cell):
    model, src, src_lengths, tgt_in = model_and_batch(attention, input_feed, cell, dropout=0.3)
    torch.manual_seed(1)
    reference = model(src, src_lengths, tgt_in)
    torch.manual_seed(1)
    scheduled = model.forward_scheduled(src, src_lengths, tgt_in, teacher_forcing=1.0)
    assert torch.equal(scheduled, reference)  # dropout masks included


@pytest.mark.parametrize(("attention", "input_feed"), DECODERS)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_step_loop_fed_gold_tokens_matches_teacher_forcing(attention, input_feed, cell):
    """The loop itself, one decoder call per position, against the teacher-forced pass.

    Equal to rounding only: teacher forcing may run fused or batched kernels over all positions
    (one RNN call, one attention matmul, input projections computed once), whose float sums are
    ordered differently from one step at a time. Bit-for-bit equality at ε = 1 is what
    ``forward_scheduled`` guarantees, by taking the teacher-forcing path (test above).
    """
    model, src, src_lengths, tgt_in = model_and_batch(attention, input_feed, cell)
    reference = model(src, src_lengths, tgt_in)
    looped = model.scheduled_loop(src, src_lengths, tgt_in, teacher_forcing=1.0)
    torch.testing.assert_close(looped, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("attention", "input_feed"), DECODERS)
def test_teacher_forcing_zero_feeds_the_models_argmax(attention, input_feed):
    """With ε = 0 the features equal a teacher-forced pass over the model's own greedy tokens."""
    model, src, src_lengths, tgt_in = model_and_batch(attention, input_feed, "gru")
    model.eval()
    features = model.scheduled_loop(src, src_lengths, tgt_in, teacher_forcing=0.0)
    predicted = model.project(features).argmax(-1)  # (B, T)
    fed = torch.cat([tgt_in[:, :1], predicted[:, :-1]], dim=1)
    torch.testing.assert_close(model(src, src_lengths, fed), features, rtol=0, atol=1e-6)


def test_mixing_is_per_token_and_follows_epsilon():
    model, src, src_lengths, _ = model_and_batch("bahdanau", True, "gru")
    model.eval()
    src = src.repeat(40, 1)
    src_lengths = src_lengths.repeat(40)
    tgt_in = torch.randint(4, 22, (src.size(0), 12))
    seen = []
    original = model.decoder.forward

    def spy(tokens, state):
        seen.append(tokens[:, 0].clone())
        return original(tokens, state)

    model.decoder.forward = spy  # type: ignore[method-assign]
    torch.manual_seed(0)
    model.scheduled_loop(src, src_lengths, tgt_in, teacher_forcing=0.5)
    inputs = torch.stack(seen, 1)  # (B, T)
    gold = (inputs[:, 1:] == tgt_in[:, 1:]).float()
    # Gold with probability 0.5, else the prediction (which matches gold by chance ~1/22).
    assert 0.4 < gold.mean().item() < 0.65
    rows = gold.mean(1)
    assert rows.min() < rows.max()  # decided per token, not per sentence
    assert torch.equal(inputs[:, 0], tgt_in[:, 0])  # <bos> always


def test_sampled_feedback_draws_from_the_softmax_not_the_argmax():
    model, src, src_lengths, _ = model_and_batch("bahdanau", True, "gru")
    model.eval()
    src, src_lengths = src.repeat(20, 1), src_lengths.repeat(20)
    tgt_in = torch.randint(4, 22, (src.size(0), 8))
    fed = []
    original = model.decoder.forward

    def spy(tokens, state):
        fed.append(tokens[:, 0].clone())
        return original(tokens, state)

    model.decoder.forward = spy  # type: ignore[method-assign]
    torch.manual_seed(0)
    features = model.scheduled_loop(src, src_lengths, tgt_in, teacher_forcing=0.0, sample=True)
    inputs = torch.stack(fed, 1)[:, 1:]  # (B, T-1) what was fed after <bos>
    argmax = model.project(features).argmax(-1)[:, :-1]
    # An untrained model's softmax is nearly flat: samples mostly differ from its argmax.
    assert (inputs != argmax).float().mean() > 0.5
    assert inputs.min() >= 0 and inputs.max() < 22
