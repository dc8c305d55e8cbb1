"""Scheduled sampling's step loop: with ε ≡ 1 it is teacher forcing, for every decoder; below 1 it
feeds the model's own predictions, per token."""

from __future__ import annotations

import pytest
import torch

from rnnlab.models.feedback import Feedback
from rnnlab.models.seq2seq import build_seq2seq
from rnnlab.tasks.seq2seq_config import Seq2SeqModelConfig

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


def record_choices(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Patch ``Feedback.choose`` to record the tokens it hands the decoder, one (B,) per position."""
    chosen: list[torch.Tensor] = []
    original = Feedback.choose

    def spy(self, gold, features):
        tokens, use_gold = original(self, gold, features)
        chosen.append(tokens.clone())
        return tokens, use_gold

    monkeypatch.setattr(Feedback, "choose", spy)
    return chosen


@pytest.mark.parametrize(("attention", "input_feed"), DECODERS)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_teacher_forcing_one_is_teacher_forcing_bit_for_bit(attention, input_feed, cell):
    model, src, src_lengths, tgt_in = model_and_batch(attention, input_feed, cell, dropout=0.3)
    torch.manual_seed(1)
    reference = model(src, src_lengths, tgt_in)
    torch.manual_seed(1)
    scheduled = model.forward_scheduled(src, src_lengths, tgt_in, teacher_forcing=1.0)
    assert torch.equal(scheduled, reference)  # dropout masks included


def random_model_and_batch(attention: str, input_feed: bool, cell: str, seed: int):
    """Sizes drawn per seed, so that bit-identity is not a property of one lucky shape."""
    generator = torch.Generator().manual_seed(seed)

    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=generator))

    torch.manual_seed(seed)
    cfg = Seq2SeqModelConfig(
        attention=attention,  # type: ignore[arg-type]
        input_feed=input_feed,
        cell=cell,  # type: ignore[arg-type]
        num_layers=draw(1, 3),
        dropout=0.0,
        embed_dropout=0.0,
        embed_size=draw(4, 40),
        hidden_size=draw(8, 64),
        bidirectional_encoder=attention != "none",
    )
    model = build_seq2seq(cfg, src_vocab_size=30, tgt_vocab_size=31).train()
    batch, source_len, target_len = draw(1, 16), draw(2, 15), draw(2, 16)
    src = torch.randint(4, 30, (batch, source_len), generator=generator)
    src_lengths = torch.randint(1, source_len + 1, (batch,), generator=generator)
    src_lengths[0] = source_len
    tgt_in = torch.randint(4, 31, (batch, target_len), generator=generator)
    return model, src, src_lengths, tgt_in


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cell", ["gru", "lstm", "peephole_lstm"])
@pytest.mark.parametrize("attention", ["bahdanau", "luong_general"])
def test_step_loop_fed_gold_tokens_is_teacher_forcing_bit_for_bit(attention, cell, seed):
    """The looping decoders (Bahdanau; Luong with input feeding): scheduled sampling runs teacher
    forcing's own loop, gold rows read the hoisted embeddings and projections, and Bahdanau's deep
    output runs over all T after it, so ε ≡ 1 computes the very same tensors. Peephole cells take
    the per-call loop (no stepper)."""
    model, src, src_lengths, tgt_in = random_model_and_batch(attention, True, cell, seed)
    reference = model(src, src_lengths, tgt_in)
    looped = model.scheduled_loop(src, src_lengths, tgt_in, teacher_forcing=1.0)
    assert torch.equal(looped, reference)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize(("attention", "input_feed"), [("none", True), ("luong_general", False)])
def test_step_loop_of_fused_decoders_is_teacher_forcing_to_rounding(
    attention, input_feed, cell, seed
):
    """The context decoder and Luong without input feeding teacher-force with one fused RNN call
    over all T (and Luong one batched attention). Bit-identity is impossible there without a
    Python loop in teacher forcing: the fused kernel computes every position's input projection
    inside itself, and its rounding depends on T: even calling the same ``torch.nn.GRU`` once
    per position differs from one call over T in the last bits for most shapes on CPU (the loop
    here takes decoding's step, with the context's share of the projection precomputed). The
    features are bounded by 1, so 1e-6 is a few units in the last place; measured worst 3e-7.
    """
    model, src, src_lengths, tgt_in = random_model_and_batch(attention, input_feed, cell, seed)
    reference = model(src, src_lengths, tgt_in)
    looped = model.scheduled_loop(src, src_lengths, tgt_in, teacher_forcing=1.0)
    torch.testing.assert_close(looped, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("attention", "input_feed"), DECODERS)
@pytest.mark.parametrize("cell", ["gru", "peephole_lstm"])
def test_teacher_forcing_zero_feeds_the_models_argmax(attention, input_feed, cell):
    """With ε = 0 the features equal a teacher-forced pass over the model's own greedy tokens."""
    model, src, src_lengths, tgt_in = model_and_batch(attention, input_feed, cell)
    model.eval()
    features = model.scheduled_loop(src, src_lengths, tgt_in, teacher_forcing=0.0)
    predicted = model.project(features).argmax(-1)  # (B, T)
    fed = torch.cat([tgt_in[:, :1], predicted[:, :-1]], dim=1)
    torch.testing.assert_close(model(src, src_lengths, fed), features, rtol=0, atol=1e-6)


def test_mixing_is_per_token_and_follows_epsilon(monkeypatch):
    model, src, src_lengths, _ = model_and_batch("bahdanau", True, "gru")
    model.eval()
    src = src.repeat(40, 1)
    src_lengths = src_lengths.repeat(40)
    tgt_in = torch.randint(4, 22, (src.size(0), 12))
    seen = record_choices(monkeypatch)
    torch.manual_seed(0)
    model.scheduled_loop(src, src_lengths, tgt_in, teacher_forcing=0.5)
    inputs = torch.stack([tgt_in[:, 0], *seen], 1)  # (B, T)
    gold = (inputs[:, 1:] == tgt_in[:, 1:]).float()
    # Gold with probability 0.5, else the prediction (which matches gold by chance ~1/22).
    assert 0.4 < gold.mean().item() < 0.65
    rows = gold.mean(1)
    assert rows.min() < rows.max()  # decided per token, not per sentence
    assert torch.equal(inputs[:, 0], tgt_in[:, 0])  # <bos> always


def test_sampled_feedback_draws_from_the_softmax_not_the_argmax(monkeypatch):
    model, src, src_lengths, _ = model_and_batch("bahdanau", True, "gru")
    model.eval()
    src, src_lengths = src.repeat(20, 1), src_lengths.repeat(20)
    tgt_in = torch.randint(4, 22, (src.size(0), 8))
    fed = record_choices(monkeypatch)
    torch.manual_seed(0)
    features = model.scheduled_loop(src, src_lengths, tgt_in, teacher_forcing=0.0, sample=True)
    inputs = torch.stack(fed, 1)  # (B, T-1) what was fed after <bos>
    argmax = model.project(features).argmax(-1)[:, :-1]
    # An untrained model's softmax is nearly flat: samples mostly differ from its argmax.
    assert (inputs != argmax).float().mean() > 0.5
    assert inputs.min() >= 0 and inputs.max() < 22
