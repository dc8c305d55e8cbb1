"""The Cho context decoder: a decoding step with the context projected once equals the fused call."""

from __future__ import annotations

import pytest
import torch

from rnnlab.models.decoder import ContextDecoder, ContextDecoderState
from rnnlab.models.encoder import EncoderOutput

VOCAB, EMBED, HIDDEN, BATCH = 9, 5, 6, 4


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_one_step_with_the_context_projected_once_equals_the_fused_call(cell):
    torch.manual_seed(0)
    decoder = ContextDecoder(
        vocab_size=VOCAB,
        embed_size=EMBED,
        hidden_size=HIDDEN,
        context_size=HIDDEN,
        num_layers=2,
        cell=cell,
    ).double()
    h = torch.randn(2, BATCH, HIDDEN, dtype=torch.float64)
    state = (h, torch.randn_like(h)) if cell == "lstm" else h
    encoded = EncoderOutput(
        outputs=torch.zeros(BATCH, 3, HIDDEN), state=state, lengths=torch.full((BATCH,), 3)
    )
    start = decoder.init_state(encoded)
    w_context = decoder.rnn.weight_ih_l0[:, EMBED:]
    torch.testing.assert_close(
        start.context_gates, start.context @ w_context.T + decoder.rnn.bias_ih_l0
    )

    tokens = torch.tensor([[1], [4], [8], [2]])
    fast, fast_state = decoder(tokens, start)  # one token: the stepwise path
    without_gates = ContextDecoderState(hidden=start.hidden, context=start.context)
    fused, fused_state = decoder(tokens, without_gates)  # the fused torch.nn call
    torch.testing.assert_close(fast, fused)
    torch.testing.assert_close(fast_state.hidden, fused_state.hidden)
    assert fast_state.context_gates is start.context_gates  # carried, not recomputed

    (grad_fast,) = torch.autograd.grad(fast.sum(), decoder.rnn.weight_ih_l0, retain_graph=True)
    (grad_fused,) = torch.autograd.grad(fused.sum(), decoder.rnn.weight_ih_l0)
    torch.testing.assert_close(grad_fast, grad_fused)


def test_select_keeps_the_projected_context_rows():
    gates = torch.arange(12.0).view(4, 3)
    state = ContextDecoderState(
        hidden=torch.zeros(1, 4, 2), context=torch.zeros(4, 2), context_gates=gates
    )
    picked = state.select(torch.tensor([2, 0]))
    torch.testing.assert_close(picked.context_gates, gates[[2, 0]])
