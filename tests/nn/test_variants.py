"""PeepholeLSTM and CoupledLSTM: gradient checks, hand-computed steps, and reductions to the LSTM."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnlab.nn as rl

F64 = torch.float64
INPUT, HIDDEN = 2, 3
LENGTHS = [2, 4, 3]
VARIANTS = {
    "peephole": (rl.PeepholeLSTM, rl.PeepholeLSTMCell),
    "coupled": (rl.CoupledLSTM, rl.CoupledLSTMCell),
}


def _states(module, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    layers = module.num_layers * (2 if module.bidirectional else 1)
    return tuple(torch.randn(layers, batch, HIDDEN, generator=gen, dtype=F64) for _ in range(2))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layer_gradcheck(variant):
    layer_cls, _ = VARIANTS[variant]
    module = layer_cls(INPUT, HIDDEN, num_layers=2, bidirectional=True).to(F64)
    names = [name for name, _ in module.named_parameters()]
    x = torch.randn(max(LENGTHS), len(LENGTHS), INPUT, dtype=F64, requires_grad=True)
    h0, c0 = (s.requires_grad_() for s in _states(module, len(LENGTHS), seed=1))
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]

    def run(x, h0, c0, *params):
        packed = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
        out, (h_n, c_n) = functional_call(
            module, dict(zip(names, params, strict=True)), (packed, (h0, c0))
        )
        return out.data, h_n, c_n

    assert torch.autograd.gradcheck(run, (x, h0, c0, *params))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cell_gradcheck(variant):
    _, cell_cls = VARIANTS[variant]
    cell = cell_cls(INPUT, HIDDEN).to(F64)
    names = [name for name, _ in cell.named_parameters()]
    x = torch.randn(4, INPUT, dtype=F64, requires_grad=True)
    h, c = (torch.randn(4, HIDDEN, dtype=F64, requires_grad=True) for _ in range(2))
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]

    def run(x, h, c, *params):
        return functional_call(cell, dict(zip(names, params, strict=True)), (x, (h, c)))

    assert torch.autograd.gradcheck(run, (x, h, c, *params))


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_coupled_step_by_hand():
    """One step on hand-set weights: the input gate is exactly 1 - f, so c' = f c + (1 - f) g."""
    cell = rl.CoupledLSTMCell(1, 2).to(F64)
    layer = rl.CoupledLSTM(1, 2).to(F64)
    with torch.no_grad():
        for module, suffix in ((cell, ""), (layer, "_l0")):
            getattr(module, "weight_ih" + suffix).copy_(
                torch.tensor([[0.5], [-1.0], [0.0], [2.0], [0.0], [0.0]], dtype=F64)
            )  # blocks f, g, o
            getattr(module, "weight_hh" + suffix).zero_()
            getattr(module, "bias_ih" + suffix).copy_(
                torch.tensor([0.3, -0.2, 0.7, 0.1, 1.5, -0.4], dtype=F64)
            )
            getattr(module, "bias_hh" + suffix).zero_()
    x, c0 = 0.8, [0.6, -1.1]
    f = [_sigmoid(0.5 * x + 0.3), _sigmoid(-1.0 * x - 0.2)]
    g = [math.tanh(0.7), math.tanh(2.0 * x + 0.1)]
    o = [_sigmoid(1.5), _sigmoid(-0.4)]
    c1 = [f[k] * c0[k] + (1 - f[k]) * g[k] for k in range(2)]
    h1 = [o[k] * math.tanh(c1[k]) for k in range(2)]

    h0 = torch.tensor([[0.25, -0.5]], dtype=F64)  # ignored: weight_hh is zero
    h, c = cell(torch.tensor([[x]], dtype=F64), (h0, torch.tensor([c0], dtype=F64)))
    torch.testing.assert_close(c, torch.tensor([c1], dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(h, torch.tensor([h1], dtype=F64), atol=1e-12, rtol=0)
    out, (h_n, c_n) = layer(
        torch.tensor([[[x]]], dtype=F64), (h0[None], torch.tensor([[c0]], dtype=F64))
    )
    torch.testing.assert_close(c_n[0], c, atol=1e-12, rtol=0)
    torch.testing.assert_close(out[0], h, atol=1e-12, rtol=0)
    # An independent input gate of the same pre-activations would give a different cell.
    independent = [f[k] * c0[k] + f[k] * g[k] for k in range(2)]
    assert not torch.allclose(c, torch.tensor([independent], dtype=F64))


def test_peephole_with_zero_peepholes_is_lstm():
    options = {"num_layers": 2, "bidirectional": True}
    peephole = rl.PeepholeLSTM(INPUT, HIDDEN, **options).to(F64)
    with torch.no_grad():
        for name, p in peephole.named_parameters():
            if name.startswith("weight_c"):
                p.zero_()
    shared = {k: v for k, v in peephole.state_dict().items() if not k.startswith("weight_c")}
    reference = nn.LSTM(INPUT, HIDDEN, **options).to(F64)
    reference.load_state_dict(shared, strict=True)
    ours = rl.LSTM(INPUT, HIDDEN, **options).to(F64)
    ours.load_state_dict(shared, strict=True)
    x = torch.randn(max(LENGTHS), len(LENGTHS), INPUT, dtype=F64)
    state = _states(peephole, len(LENGTHS), seed=2)

    def run(module):
        xx = x.clone().requires_grad_()
        packed = pack_padded_sequence(xx, torch.tensor(LENGTHS), enforce_sorted=False)
        out, (h_n, c_n) = module(packed, state)
        loss = (out.data.sin()).sum() + (h_n * c_n).sum()
        params = [getattr(module, name) for name in shared]
        return [out.data, h_n, c_n, *torch.autograd.grad(loss, [xx, *params])]

    expected = run(reference)
    for module in (peephole, ours):
        for e, a in zip(expected, run(module), strict=True):
            torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-10)
    cell = rl.PeepholeLSTMCell(INPUT, HIDDEN).to(F64)
    with torch.no_grad():
        for name in ("weight_ci", "weight_cf", "weight_co"):
            getattr(cell, name).zero_()
    torch_cell = nn.LSTMCell(INPUT, HIDDEN).to(F64)
    torch_cell.load_state_dict({k: v for k, v in cell.state_dict().items() if k in shared_cell()})
    step_input, step_state = x[0], (state[0][0], state[1][0])
    for e, a in zip(torch_cell(step_input, step_state), cell(step_input, step_state), strict=True):
        torch.testing.assert_close(a, e, atol=1e-12, rtol=0)


def shared_cell() -> set[str]:
    return {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}


def _unrolled(layer, x, lengths, h0, c0):
    """Reference: the variant's cell applied one sequence and one step at a time, layer by layer.

    The cells share the layer's Parameter objects, so gradients reach the same leaves.
    """
    _, cell_cls = next(v for v in VARIANTS.values() if isinstance(layer, v[0]))
    directions = 2 if layer.bidirectional else 1
    outputs, h_last, c_last = [], [], []
    for b, length in enumerate(lengths):
        sequence = x[:length, b]  # (len, I)
        h_seq, c_seq = [], []
        for index in range(layer.num_layers * directions):
            layer_index, direction = divmod(index, directions)
            if direction == 0:
                layer_steps = []
            suffix = f"_l{layer_index}" + ("_reverse" if direction else "")
            cell = cell_cls(1, HIDDEN).to(F64)
            for name in [n for n, _ in cell.named_parameters()]:
                delattr(cell, name)
                setattr(cell, name, getattr(layer, name + suffix))
            h, c = h0[index, b], c0[index, b]
            order = range(length) if direction == 0 else reversed(range(length))
            steps = [None] * length
            for t in order:
                h, c = cell(sequence[t], (h, c))
                steps[t] = h
            layer_steps.append(torch.stack(steps))
            h_seq.append(h)
            c_seq.append(c)
            if direction == directions - 1:
                sequence = torch.cat(layer_steps, dim=-1)  # (len, D·H), next layer's input
        outputs.append(sequence)
        h_last.append(torch.stack(h_seq))
        c_last.append(torch.stack(c_seq))
    return outputs, torch.stack(h_last, dim=1), torch.stack(c_last, dim=1)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_packed_layer_equals_unrolled_cells(variant, bidirectional):
    layer_cls, _ = VARIANTS[variant]
    layer = layer_cls(INPUT, HIDDEN, num_layers=2, bidirectional=bidirectional).to(F64)
    x = torch.randn(max(LENGTHS), len(LENGTHS), INPUT, dtype=F64, requires_grad=True)
    h0, c0 = _states(layer, len(LENGTHS), seed=5)
    out, (h_n, c_n) = layer(
        pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False), (h0, c0)
    )
    padded, _ = pad_packed_sequence(out)  # (T, B, D·H)
    expected_out, expected_h, expected_c = _unrolled(layer, x, LENGTHS, h0, c0)
    for b, length in enumerate(LENGTHS):
        torch.testing.assert_close(padded[:length, b], expected_out[b], atol=1e-12, rtol=0)
    torch.testing.assert_close(h_n, expected_h, atol=1e-12, rtol=0)
    torch.testing.assert_close(c_n, expected_c, atol=1e-12, rtol=0)

    params = [x, *layer.parameters()]
    weights = torch.randn(padded.shape, dtype=F64)
    ours = torch.autograd.grad((padded * weights).sum() + c_n.sum(), params)
    expected_loss = sum((o * weights[: len(o), b]).sum() for b, o in enumerate(expected_out))
    reference = torch.autograd.grad(expected_loss + expected_c.sum(), params)
    for e, a in zip(reference, ours, strict=True):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-10)


def test_variant_shapes():
    coupled = rl.CoupledLSTM(4, 8, num_layers=2, bidirectional=True)
    assert coupled.weight_ih_l0.shape == (24, 4) and coupled.weight_hh_l1_reverse.shape == (24, 8)
    peephole = rl.PeepholeLSTM(4, 8)
    assert {n for n, _ in peephole.named_parameters()} >= {
        "weight_ci_l0",
        "weight_cf_l0",
        "weight_co_l0",
    }
    assert peephole.weight_co_l0.shape == (8,)
    with pytest.raises(ValueError, match="proj_size"):
        rl.PeepholeLSTM(4, 8, proj_size=2)
