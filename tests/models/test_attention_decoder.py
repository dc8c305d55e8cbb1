"""The attention decoders' hoisted teacher-forced loop against the loop that calls the stack per step."""

from __future__ import annotations

import pytest
import torch

from rnnlab.models.attention_decoder import BahdanauDecoder, LuongDecoder
from rnnlab.models.encoder import EncoderOutput

VOCAB, EMBED, HIDDEN, MEMORY, BATCH, SRC, TGT = 11, 6, 8, 10, 4, 5, 6


def make_decoder(kind: str, cell: str, num_layers: int):
    torch.manual_seed(0)
    common = dict(
        vocab_size=VOCAB,
        embed_size=EMBED,
        hidden_size=HIDDEN,
        memory_size=MEMORY,
        num_layers=num_layers,
        cell=cell,
    )
    if kind == "bahdanau":
        return BahdanauDecoder(**common).double()
    return LuongDecoder(method="general", input_feed=True, **common).double()


def inputs(cell: str, num_layers: int):
    generator = torch.Generator().manual_seed(1)
    memory = torch.randn(BATCH, SRC, MEMORY, dtype=torch.float64, generator=generator)
    memory.requires_grad_()  # the encoder's outputs get a gradient from every step
    lengths = torch.tensor([5, 3, 1, 4])
    h0 = torch.randn(num_layers, BATCH, HIDDEN, dtype=torch.float64, generator=generator)
    c0 = torch.randn(h0.shape, dtype=torch.float64, generator=generator)
    hidden = (h0, c0) if cell == "lstm" else h0
    tgt_in = torch.randint(1, VOCAB, (BATCH, TGT), generator=generator)
    return EncoderOutput(outputs=memory, lengths=lengths, state=hidden), hidden, tgt_in


def features_and_grads(decoder, *, stepwise: bool, cell: str, num_layers: int):
    encoded, hidden, tgt_in = inputs(cell, num_layers)
    saved = decoder.stepper
    if not stepwise:
        decoder.stepper = None  # the per-call loop: what every step did before the hoisting
    try:
        features, state, weights = decoder.forward_with_attention(
            tgt_in, decoder.init_state(encoded, hidden)
        )
    finally:
        decoder.stepper = saved
    final = state.hidden[0] if cell == "lstm" else state.hidden
    decoder.zero_grad()
    (features.square().sum() + final.sum()).backward()
    grads = {name: p.grad.clone() for name, p in decoder.named_parameters() if p.grad is not None}
    grads["memory"] = encoded.outputs.grad.clone()
    return features.detach(), final.detach(), weights.detach(), grads


@pytest.mark.parametrize("kind", ["bahdanau", "luong"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_hoisted_loop_equals_per_call_loop(kind, cell, num_layers):
    decoder = make_decoder(kind, cell, num_layers).train()
    assert decoder.stepper is not None
    fast = features_and_grads(decoder, stepwise=True, cell=cell, num_layers=num_layers)
    slow = features_and_grads(decoder, stepwise=False, cell=cell, num_layers=num_layers)
    for ours, reference in zip(fast[:3], slow[:3], strict=True):
        torch.testing.assert_close(ours, reference)
    assert fast[3].keys() == slow[3].keys()
    for name in slow[3]:
        torch.testing.assert_close(fast[3][name], slow[3][name], msg=name)


def test_cells_without_a_stepper_keep_the_per_call_loop():
    decoder = make_decoder("bahdanau", "peephole_lstm", 1)
    assert decoder.stepper is None
    encoded, hidden, tgt_in = inputs("lstm", 1)
    features, _, weights = decoder.forward_with_attention(
        tgt_in, decoder.init_state(encoded, hidden)
    )
    assert features.shape == (BATCH, TGT, HIDDEN)
    torch.testing.assert_close(weights.sum(-1), torch.ones(BATCH, TGT, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["bahdanau", "luong", "luong-no-feed"])
def test_parameters_are_drawn_in_the_documented_order(kind):
    """Seeded runs stay reproducible: each decoder draws its initial weights as if built by hand in
    the order embedding, output layer, attention, recurrent stack, then its own output layer."""
    from torch import nn

    from rnnlab.models.attention import BahdanauAttention, LuongAttention

    feed = kind != "luong-no-feed"
    torch.manual_seed(3)
    if kind == "bahdanau":
        decoder = BahdanauDecoder(
            vocab_size=VOCAB, embed_size=EMBED, hidden_size=HIDDEN, memory_size=MEMORY, num_layers=2
        )
    else:
        decoder = LuongDecoder(
            vocab_size=VOCAB,
            embed_size=EMBED,
            hidden_size=HIDDEN,
            memory_size=MEMORY,
            num_layers=2,
            input_feed=feed,
        )
    torch.manual_seed(3)
    by_hand = [nn.Embedding(VOCAB, EMBED, padding_idx=0), nn.Linear(HIDDEN, VOCAB)]
    if kind == "bahdanau":
        by_hand.append(
            BahdanauAttention(query_size=HIDDEN, memory_size=MEMORY, attention_size=HIDDEN)
        )
        by_hand.append(nn.GRU(EMBED + MEMORY, HIDDEN, num_layers=2, batch_first=True))
        by_hand.append(nn.Linear(HIDDEN + MEMORY + EMBED, HIDDEN))
    else:
        by_hand.append(LuongAttention(query_size=HIDDEN, memory_size=MEMORY, method="general"))
        fed = HIDDEN if feed else 0
        by_hand.append(nn.GRU(EMBED + fed, HIDDEN, num_layers=2, batch_first=True))
        by_hand.append(nn.Linear(MEMORY + HIDDEN, HIDDEN, bias=False))
    expected = [p for module in by_hand for p in module.parameters()]
    actual = list(decoder.parameters())
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert torch.equal(a, e)
    assert (decoder.stepper is None) == (not feed)
