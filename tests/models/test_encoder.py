"""The seq2seq encoder against torch.nn's packed sequences, the reference it must equal whichever way
it runs its recurrent stack (padded while training GRUs and RNNs, packed otherwise)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.models.encoder import Seq2SeqEncoder


def packed_reference(encoder: Seq2SeqEncoder, src: torch.Tensor, lengths: torch.Tensor):
    embedded = encoder.embedding(src)
    packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
    outputs, state = encoder.rnn(packed)
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.size(1))
    return outputs, state


@pytest.mark.parametrize("cell", ["gru", "rnn", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("grad", [True, False])
def test_outputs_state_and_gradients_equal_packing(cell: str, bidirectional: bool, grad: bool):
    torch.manual_seed(len(cell) + bidirectional)
    encoder = Seq2SeqEncoder(
        vocab_size=11,
        embed_size=6,
        hidden_size=5,
        num_layers=2,
        cell=cell,
        bidirectional=bidirectional,
    )
    encoder.train()  # no dropout configured: training mode only decides how the stack runs
    src = torch.randint(1, 11, (4, 6))
    lengths = torch.tensor([6, 2, 5, 1])
    for row, length in enumerate(lengths.tolist()):
        src[row, length:] = 0
    with torch.set_grad_enabled(grad):
        got = encoder(src, lengths)
        want_outputs, want_state = packed_reference(encoder, src, lengths)
    torch.testing.assert_close(got.outputs, want_outputs, rtol=1e-5, atol=1e-6)
    got_state = got.state if isinstance(got.state, tuple) else (got.state,)
    want_state = want_state if isinstance(want_state, tuple) else (want_state,)
    assert len(got_state) == len(want_state)  # an LSTM's cell state is kept
    for a, b in zip(got_state, want_state, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert got.outputs[1, 2:].abs().sum() == 0  # zeros at padding
    if not grad:
        return
    weights = torch.randn_like(want_outputs)
    params = list(encoder.parameters())
    got_grads = torch.autograd.grad(
        (got.outputs * weights).sum() + got_state[0].sum(), params, allow_unused=True
    )
    want_grads = torch.autograd.grad(
        (want_outputs * weights).sum() + want_state[0].sum(), params, allow_unused=True
    )
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
