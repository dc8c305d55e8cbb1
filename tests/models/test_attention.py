"""Attention: masking of padded source positions, teacher forcing = stepwise decoding, learning."""

from __future__ import annotations

import pytest
import torch

from rnnlab.decoding.greedy import greedy_search
from rnnlab.errors import ConfigError
from rnnlab.metrics.bleu import corpus_bleu
from rnnlab.models.attention import BahdanauAttention, LuongAttention, additive_scores
from rnnlab.models.bridge import Bridge, merge_directions
from tests.reverse_task import BOS, EOS, PAD, batch_nll, reverse_batch, tiny_model

ATTENTIONS = ["bahdanau", "luong_dot", "luong_general"]


def padded_batch(seed: int = 0):
    batch = reverse_batch(torch.Generator().manual_seed(seed), 6, min_len=2, max_len=7)
    assert int(batch.src_lengths.min()) < batch.src.size(1), "the batch needs padding"
    return batch


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_weights_sum_to_one_over_valid_positions_and_are_zero_on_padding(attention):
    batch = padded_batch()
    model = tiny_model(attention=attention).eval()
    with torch.no_grad():
        weights = model.attention_weights(batch.src, batch.src_lengths, batch.tgt_in)
    assert weights.shape == (*batch.tgt_in.shape, batch.src.size(1))  # (B, T, S)
    for row, length in enumerate(batch.src_lengths.tolist()):
        torch.testing.assert_close(weights[row, :, :length].sum(-1), torch.ones(weights.size(1)))
        assert torch.all(weights[row, :, length:] == 0)
        assert torch.all(weights[row, :, :length] > 0)


@pytest.mark.parametrize("module", ["bahdanau", "dot", "general"])
def test_attention_modules_mask_padding_exactly(module):
    torch.manual_seed(0)
    memory, query = torch.randn(3, 5, 8), torch.randn(3, 2, 8)
    lengths = torch.tensor([5, 3, 1])
    attend = (
        BahdanauAttention(query_size=8, memory_size=8, attention_size=6)
        if module == "bahdanau"
        else LuongAttention(query_size=8, memory_size=8, method=module)
    )
    context, weights = attend(query, attend.project_keys(memory), memory, lengths)
    assert context.shape == (3, 2, 8) and weights.shape == (3, 2, 5)
    assert torch.all(weights[1, :, 3:] == 0) and torch.all(weights[2, :, 1:] == 0)
    torch.testing.assert_close(context[2], memory[2, :1].expand(2, -1))  # one position: itself


def _textbook_additive_scores(projected, keys, energy):
    """``vᵀ tanh(q + k)`` as the formula reads (d2l's AdditiveAttention)."""
    features = torch.tanh(projected.unsqueeze(2) + keys.unsqueeze(1))  # (B, Q, S, A)
    return (features * energy[0]).sum(-1)


def test_additive_scores_equal_the_tanh_formula_in_value_and_gradient():
    generator = torch.Generator().manual_seed(0)
    inputs = [
        3 * torch.randn(3, 4, 16, generator=generator, dtype=torch.float64),  # queries
        3 * torch.randn(3, 5, 16, generator=generator, dtype=torch.float64),  # keys
        torch.randn(1, 16, generator=generator, dtype=torch.float64),  # v
    ]
    inputs = [t.requires_grad_() for t in inputs]
    got, want = additive_scores(*inputs), _textbook_additive_scores(*inputs)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for a, b in zip(
        torch.autograd.grad(got.sum(), inputs),
        torch.autograd.grad(want.sum(), inputs),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # float32, near 0 too (where 2σ(2z) − 1 cancels): an absolute error near float32's epsilon.
    query, keys, energy = (t.detach() for t in inputs)
    for scale in (1.0, 0.01):
        q, k = (scale * query).float(), (scale * keys).float()
        torch.testing.assert_close(
            additive_scores(q, k, energy.float()).double(),
            _textbook_additive_scores(q.double(), k.double(), energy),
            rtol=0,
            atol=2e-6,
        )


def test_additive_scores_under_cpu_bf16_autocast_run_in_float32():
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(2, 3, 8, generator=generator).bfloat16().requires_grad_()
    keys = torch.randn(2, 6, 8, generator=generator).bfloat16().requires_grad_()
    energy = torch.randn(1, 8, generator=generator).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = additive_scores(query, keys, energy)
        in_bf16 = torch.nn.functional.linear(
            torch.tanh(query.unsqueeze(2) + keys.unsqueeze(1)), energy
        ).squeeze(-1)
    assert got.dtype == torch.float32
    # The function of the bfloat16 inputs to float32's precision, which bfloat16 itself misses.
    want = _textbook_additive_scores(query.double(), keys.double(), energy.double())
    torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-6)
    assert (in_bf16.double() - want).abs().max() > 1e-3
    got.sum().backward()
    assert query.grad is not None and query.grad.dtype == torch.bfloat16
    assert keys.grad is not None and keys.grad.dtype == torch.bfloat16
    assert energy.grad is not None and energy.grad.dtype == torch.float32


def test_bahdanau_keys_are_float32_on_cpu_under_autocast():
    torch.manual_seed(2)
    attention = BahdanauAttention(query_size=6, memory_size=8, attention_size=5)
    memory = torch.randn(2, 4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        keys = attention.project_keys(memory)
    assert keys.dtype == torch.float32  # cast once per sentence, read at every step
    torch.testing.assert_close(keys, attention.key_layer(memory), rtol=0.02, atol=0.02)


@pytest.mark.parametrize("attention", ["none", *ATTENTIONS])
def test_padded_source_positions_change_nothing(attention):
    batch = padded_batch()
    model = tiny_model(attention=attention, bidirectional_encoder=attention != "luong_dot")
    model.eval()
    with torch.no_grad():
        reference = model(batch.src, batch.src_lengths, batch.tgt_in)
        scrambled = batch.src.clone()
        padding = scrambled == PAD
        scrambled[padding] = torch.randint(4, 12, (int(padding.sum()),))
        torch.testing.assert_close(
            model(scrambled, batch.src_lengths, batch.tgt_in), reference, rtol=0, atol=0
        )
        model.encoder.embedding.weight[PAD] = 100.0  # a padding embedding that would dominate
        torch.testing.assert_close(
            model(batch.src, batch.src_lengths, batch.tgt_in), reference, rtol=0, atol=0
        )


@pytest.mark.parametrize(
    ("attention", "input_feed", "cell"),
    [
        ("none", True, "gru"),
        ("bahdanau", True, "gru"),
        ("bahdanau", True, "lstm"),
        ("luong_general", True, "gru"),
        ("luong_general", False, "lstm"),
        ("luong_dot", False, "gru"),
    ],
)
def test_teacher_forcing_equals_stepwise_decoding(attention, input_feed, cell):
    """The whole-target path (a fused call without input feeding) and ``step`` agree."""
    batch = padded_batch(1)
    model = tiny_model(attention=attention, input_feed=input_feed, cell=cell).eval()
    with torch.no_grad():
        features = model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, H)
        expected = torch.log_softmax(model.project(features), dim=-1)
        state = model.start(batch.src, batch.src_lengths)
        for t in range(batch.tgt_in.size(1)):
            log_probs, state = model.step(batch.tgt_in[:, t], state)
            torch.testing.assert_close(log_probs, expected[:, t], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong_general"])
def test_bidirectional_encoder_bridge_shapes(cell, attention):
    batch = padded_batch()
    model = tiny_model(
        attention=attention, cell=cell, num_layers=2, bidirectional_encoder=True
    ).eval()
    encoded = model.encoder(batch.src, batch.src_lengths)
    h = encoded.state[0] if cell == "lstm" else encoded.state
    assert encoded.outputs.shape == (6, batch.src.size(1), 64)  # (B, S, 2H)
    assert h.shape == (4, 6, 32)  # (2·L, B, H)
    state = model.start(batch.src, batch.src_lengths)
    hidden = state.hidden
    for part in hidden if cell == "lstm" else (hidden,):
        assert part.shape == (2, 6, 32)  # (L, B, H)
    if attention == "none":
        assert state.context.shape == (6, 64)  # the context is 2H: both directions' top layer
        torch.testing.assert_close(state.context[:, :32], h[2])
        torch.testing.assert_close(state.context[:, 32:], h[3])
    features = model(batch.src, batch.src_lengths, batch.tgt_in)
    assert features.shape == (*batch.tgt_in.shape, 32)


def test_bridge_concatenates_each_layers_directions():
    torch.manual_seed(0)
    h = torch.randn(4, 3, 5)  # (2·L, B, H) with L = 2, layer-major like torch.nn
    merged = merge_directions(h, 2)
    assert merged.shape == (2, 3, 10)
    torch.testing.assert_close(merged[1], torch.cat([h[2], h[3]], dim=-1))
    bridge = Bridge(hidden_size=5, cell_state=True)
    out_h, out_c = bridge((h, h + 1))
    assert out_h.shape == out_c.shape == (2, 3, 5)
    torch.testing.assert_close(out_h, torch.tanh(bridge.hidden_layer(merged)))


def test_model_without_attention_says_so():
    batch = padded_batch()
    model = tiny_model(attention="none")
    assert not model.has_attention
    with pytest.raises(ValueError, match="no attention"):
        model.attention_weights(batch.src, batch.src_lengths, batch.tgt_in)


def _steps_to_bleu(attention: str, threshold: float, max_steps: int) -> int | None:
    """Train on the reverse task; the first multiple of 50 steps with greedy BLEU > threshold."""
    model = tiny_model(attention=attention)
    generator = torch.Generator().manual_seed(0)
    held_out = reverse_batch(torch.Generator().manual_seed(99), 100)
    references = [" ".join(map(str, s[::-1])) for s in held_out.sources]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(1, max_steps + 1):
        model.train()
        batch = reverse_batch(generator, 32)
        loss = batch_nll(model, batch) / int(batch.tgt_lengths.sum())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0:
            model.eval()
            with torch.no_grad():
                outputs = greedy_search(
                    model,
                    model.start(held_out.src, held_out.src_lengths),
                    batch_size=100,
                    bos_id=BOS,
                    eos_id=EOS,
                    max_len=12,
                )
            hypotheses = [" ".join(map(str, o)) for o in outputs]
            if corpus_bleu(hypotheses, references) > threshold:
                return step
    return None


def test_attention_learns_reversal_faster_than_the_context_decoder():
    """Seeded: attention passes BLEU 90 in ~200 steps; the context decoder is ~70 at 600."""
    with_attention = _steps_to_bleu("luong_general", 90.0, max_steps=300)
    assert with_attention is not None
    without = _steps_to_bleu("none", 90.0, max_steps=2 * with_attention)
    assert without is None


def test_dot_attention_over_a_bidirectional_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="use luong_general"):
        tiny_model(attention="luong_dot", bidirectional_encoder=True)
