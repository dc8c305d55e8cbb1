"""rnnlab.nn cells against torch.nn.RNNCell/GRUCell/LSTMCell: same parameters, outputs and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rnnlab.nn as rl

INPUT, HIDDEN, BATCH = 3, 4, 5
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}

KINDS = {
    "rnn_tanh": (nn.RNNCell, rl.RNNCell, {}),
    "rnn_relu": (nn.RNNCell, rl.RNNCell, {"nonlinearity": "relu"}),
    "gru": (nn.GRUCell, rl.GRUCell, {}),
    "lstm": (nn.LSTMCell, rl.LSTMCell, {}),
}


def step(cell, x, hx):
    """One step and the gradients of a fixed random functional of its outputs."""
    x = x.detach().clone().requires_grad_()
    leaves = [] if hx is None else [s.detach().clone().requires_grad_() for s in hx]
    state = None if hx is None else (tuple(leaves) if len(leaves) == 2 else leaves[0])
    out = cell(x, state)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(3)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    return outs, torch.autograd.grad(loss, [x, *leaves, *cell.parameters()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_cell_matches_torch(kind, bias, with_state, batched, dtype):
    reference_cls, ours_cls, extra = KINDS[kind]
    reference = reference_cls(INPUT, HIDDEN, bias=bias, **extra).to(dtype)
    ours = ours_cls(INPUT, HIDDEN, bias=bias, **extra).to(dtype)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, p.shape) for n, p in reference.named_parameters()
    ]
    ours.load_state_dict(reference.state_dict(), strict=True)
    gen = torch.Generator().manual_seed(1)
    lead = (BATCH,) if batched else ()
    x = torch.randn(*lead, INPUT, generator=gen, dtype=dtype)
    hx = None
    if with_state:
        count = 2 if kind == "lstm" else 1
        hx = [torch.randn(*lead, HIDDEN, generator=gen, dtype=dtype) for _ in range(count)]
    expected, expected_grads = step(reference, x, hx)
    actual, actual_grads = step(ours, x, hx)
    tol = TOLERANCE[dtype]
    for e, a in zip(expected + expected_grads, actual + actual_grads, strict=True):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, atol=tol, rtol=tol)


def test_cell_shapes_and_init():
    cell = rl.LSTMCell(4, 8)
    assert cell.weight_ih.shape == (32, 4) and cell.weight_hh.shape == (32, 8)
    assert cell.bias_ih.shape == cell.bias_hh.shape == (32,)
    bound = 8**-0.5
    assert all(0.5 * bound < p.abs().max() <= bound for p in cell.parameters())
    assert rl.GRUCell(4, 8).weight_ih.shape == (24, 4)
    with pytest.raises(ValueError, match="nonlinearity"):
        rl.RNNCell(4, 8, nonlinearity="sigmoid")
