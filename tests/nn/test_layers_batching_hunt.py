"""Defect hunt in rnnlab's recurrent layers and variable-length batching primitives.

Every expectation comes from a reference that does not go through the code under test:

* ``torch.nn.RNN``/``GRU``/``LSTM`` (and their cells) holding the same weights, fed through
  ``pack_padded_sequence``/``pad_packed_sequence`` (``enforce_sorted=False``): outputs, final states
  and gradients, in float64;
* the peephole LSTM (Gers, Schraudolph & Schmidhuber 2002: i and f see c_{t-1}, o sees c_t) and the
  coupled LSTM (i = 1 - f; Greff et al. 2017) written out here in plain torch, one sequence and one
  step at a time, differentiated by autograd;
* ``torch.autograd.gradcheck`` (finite differences) for the hand-written backward passes;
* per-sequence / per-token Python loops for masks, masked softmax and masked losses; plain
  ``F.linear`` autograd for the loop products; set arithmetic for the batch samplers.
"""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnlab.nn as rl
from rnnlab.data.batching import bucket_batches, pad_batch, sorted_batches
from rnnlab.nn import (
    final_states_by_lengths,
    length_mask,
    make_rnn,
    masked_softmax,
    run_by_lengths,
    sequence_mask,
)
from rnnlab.nn.dropout import dropout
from rnnlab.nn.loop_products import LoopBmm, LoopLinear
from rnnlab.nn.state import hidden_of, map_state, select_batch
from rnnlab.training.losses import MaskedSoftmaxCELoss, masked_token_nll, select_valid

F64 = torch.float64


# -- references written out by hand ----------------------------------------------------------------


def _peephole_step(layer, suffix, x, h, c):
    """Gers, Schraudolph & Schmidhuber 2002: i, f peek at c_{t-1}; o peeks at the new c_t."""
    hidden = layer.hidden_size
    a = getattr(layer, "weight_ih" + suffix) @ x + getattr(layer, "weight_hh" + suffix) @ h
    a = a + getattr(layer, "bias_ih" + suffix) + getattr(layer, "bias_hh" + suffix)
    a_i, a_f, a_g, a_o = (
        a[:hidden],
        a[hidden : 2 * hidden],
        a[2 * hidden : 3 * hidden],
        a[3 * hidden :],
    )
    i = torch.sigmoid(a_i + getattr(layer, "weight_ci" + suffix) * c)
    f = torch.sigmoid(a_f + getattr(layer, "weight_cf" + suffix) * c)
    c_new = f * c + i * torch.tanh(a_g)
    o = torch.sigmoid(a_o + getattr(layer, "weight_co" + suffix) * c_new)
    return o * torch.tanh(c_new), c_new


def _coupled_step(layer, suffix, x, h, c):
    """Greff et al. 2017 (CIFG): gate blocks f, g, o; the input gate is 1 - f."""
    hidden = layer.hidden_size
    a = getattr(layer, "weight_ih" + suffix) @ x + getattr(layer, "weight_hh" + suffix) @ h
    a = a + getattr(layer, "bias_ih" + suffix) + getattr(layer, "bias_hh" + suffix)
    f = torch.sigmoid(a[:hidden])
    g = torch.tanh(a[hidden : 2 * hidden])
    o = torch.sigmoid(a[2 * hidden :])
    c_new = f * c + (1 - f) * g
    return o * torch.tanh(c_new), c_new


def _by_hand(layer, step, x, lengths, h0, c0):
    """Per sequence, per layer, per direction loop. x (B, T, I) batch-first; returns a list of
    (len_b, D·H) outputs and h_n, c_n (L·D, B, H)."""
    directions = 2 if layer.bidirectional else 1
    outputs, h_last, c_last = [], [], []
    for b, length in enumerate(lengths):
        sequence = x[b, :length]
        hs, cs = [], []
        for layer_index in range(layer.num_layers):
            per_direction = []
            for direction in range(directions):
                index = layer_index * directions + direction
                suffix = f"_l{layer_index}" + ("_reverse" if direction else "")
                h, c = h0[index, b], c0[index, b]
                steps = [None] * length
                for t in range(length) if direction == 0 else reversed(range(length)):
                    h, c = step(layer, suffix, sequence[t], h, c)
                    steps[t] = h
                per_direction.append(torch.stack(steps))
                hs.append(h)
                cs.append(c)
            sequence = torch.cat(per_direction, dim=-1)
        outputs.append(sequence)
        h_last.append(torch.stack(hs))
        c_last.append(torch.stack(cs))
    return outputs, torch.stack(h_last, 1), torch.stack(c_last, 1)


def _packed(module, x, lengths, hx=None):
    """torch's packing around ``module``: padded batch-first outputs and the final state(s)."""
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    out, state = module(packed, hx)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
    return out, state


def _randomise(module, seed: int) -> None:
    """Weights well away from the default init, so peepholes and biases matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.6)


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


# -- peephole and coupled LSTMs against their equations -----------------------------------------------


VARIANTS = {
    "peephole": (rl.PeepholeLSTM, _peephole_step),
    "coupled": (rl.CoupledLSTM, _coupled_step),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("given_state", [False, True], ids=["zero_state", "given_state"])
def test_variant_layers_follow_their_equations_packed_bidirectional(variant, given_state):
    layer_cls, step = VARIANTS[variant]
    layer = layer_cls(3, 4, num_layers=2, bidirectional=True, batch_first=True).to(F64)
    _randomise(layer, seed=11)
    lengths = [3, 1, 5, 2, 5]  # unsorted, with a length-1 sequence and a tie for the longest
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 5, 3, generator=gen, dtype=F64, requires_grad=True)
    if given_state:
        h0 = torch.randn(4, 5, 4, generator=gen, dtype=F64, requires_grad=True)
        c0 = torch.randn(4, 5, 4, generator=gen, dtype=F64, requires_grad=True)
    else:
        h0 = torch.zeros(4, 5, 4, dtype=F64, requires_grad=True)
        c0 = torch.zeros(4, 5, 4, dtype=F64, requires_grad=True)

    out, (h_n, c_n) = _packed(layer, x, lengths, (h0, c0) if given_state else None)
    want_out, want_h, want_c = _by_hand(layer, step, x, lengths, h0, c0)
    for b, length in enumerate(lengths):
        torch.testing.assert_close(out[b, :length], want_out[b], rtol=1e-10, atol=1e-12)
        assert torch.all(out[b, length:] == 0)
    torch.testing.assert_close(h_n, want_h, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c_n, want_c, rtol=1e-10, atol=1e-12)

    weights = torch.randn(out.shape, generator=gen, dtype=F64)
    leaves = [x, *([h0, c0] if given_state else []), *layer.parameters()]
    ours = _grads((out * weights).sum() + (h_n * c_n).sum(), leaves)
    mine = sum((o * weights[b, : len(o)]).sum() for b, o in enumerate(want_out))
    reference = _grads(mine + (want_h * want_c).sum(), leaves)
    for got, expected in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_cells_follow_their_equations(variant):
    layer_cls, step = VARIANTS[variant]
    cell_cls = rl.PeepholeLSTMCell if variant == "peephole" else rl.CoupledLSTMCell
    cell = cell_cls(3, 4).to(F64)
    _randomise(cell, seed=2)
    # The step reference reads the layer's parameter names; give the cell's ones the layer suffix.
    shim = nn.Module()
    shim.hidden_size = 4
    for name, p in cell.named_parameters():
        setattr(shim, name + "_l0", p)
    gen = torch.Generator().manual_seed(3)
    x, h, c = (torch.randn(n, generator=gen, dtype=F64) for n in (3, 4, 4))
    got_h, got_c = cell(x, (h, c))  # unbatched
    want_h, want_c = step(shim, "_l0", x, h, c)
    torch.testing.assert_close(got_h, want_h, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got_c, want_c, rtol=1e-12, atol=1e-14)
    batch_h, batch_c = cell(x.expand(2, 3), (h.expand(2, 4), c.expand(2, 4)))
    torch.testing.assert_close(batch_h[1], want_h, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(batch_c[0], want_c, rtol=1e-12, atol=1e-14)


# -- scratch layers against torch.nn, packed edge cases with initial states ----------------------------


SCRATCH = {
    "rnn_relu": (nn.RNN, rl.RNN, {"nonlinearity": "relu"}),
    "gru": (nn.GRU, rl.GRU, {}),
    "lstm": (nn.LSTM, rl.LSTM, {}),
    "lstm_proj": (nn.LSTM, rl.LSTM, {"proj_size": 2}),
}


def _pair(kind, **options):
    reference_cls, ours_cls, extra = SCRATCH[kind]
    reference = reference_cls(3, 4, batch_first=True, **extra, **options).to(F64)
    _randomise(reference, seed=5)
    ours = ours_cls(3, 4, batch_first=True, **extra, **options).to(F64)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _state_for(module, batch, gen):
    layers = module.num_layers * (2 if module.bidirectional else 1)
    h = torch.randn(layers, batch, module.proj_size or module.hidden_size, generator=gen, dtype=F64)
    if isinstance(module, (nn.LSTM, rl.LSTM)):
        return (h, torch.randn(layers, batch, module.hidden_size, generator=gen, dtype=F64))
    return h


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("kind", list(SCRATCH))
@pytest.mark.parametrize(
    "lengths",
    [[1], [4], [1, 1, 1], [3, 3, 3], [2, 4, 1]],
    ids=["b1_len1", "b1", "all1", "equal", "mixed"],
)
def test_scratch_layers_equal_torch_on_packed_edge_cases_with_initial_state(kind, lengths):
    reference, ours = _pair(kind, num_layers=2, bidirectional=True)
    gen = torch.Generator().manual_seed(len(lengths) * 10 + max(lengths))
    x = torch.randn(len(lengths), max(lengths) + 1, 3, generator=gen, dtype=F64)
    state = _state_for(reference, len(lengths), gen)
    runs = []
    for module in (reference, ours):
        xx = x.clone().requires_grad_()
        hx = [s.clone().requires_grad_() for s in _flat(state)]
        out, final = _packed(module, xx, lengths, tuple(hx) if len(hx) == 2 else hx[0])
        results = [out, *_flat(final)]
        weights = torch.Generator().manual_seed(9)
        loss = sum((r * torch.randn(r.shape, generator=weights, dtype=F64)).sum() for r in results)
        runs.append(results + list(_grads(loss, [xx, *hx, *module.parameters()])))
    for expected, got in zip(*runs, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", ["rnn_relu", "gru", "lstm_proj"])
def test_scratch_layer_gradcheck_packed_with_initial_state(kind):
    _, ours = _pair(kind, num_layers=2, bidirectional=True)
    names = [name for name, _ in ours.named_parameters()]
    gen = torch.Generator().manual_seed(4)
    lengths = [2, 3, 1]
    x = torch.randn(3, 3, 3, generator=gen, dtype=F64, requires_grad=True)
    state = [s.requires_grad_() for s in _flat(_state_for(ours, 3, gen))]
    params = [p.detach().clone().requires_grad_() for p in ours.parameters()]

    def run(x, *rest):
        hx, ps = rest[: len(state)], rest[len(state) :]
        packed = pack_padded_sequence(
            x, torch.tensor(lengths), batch_first=True, enforce_sorted=False
        )
        out, final = torch.func.functional_call(
            ours, dict(zip(names, ps, strict=True)), (packed, tuple(hx) if len(hx) == 2 else hx[0])
        )
        return (out.data, *_flat(final))

    assert torch.autograd.gradcheck(run, (x, *state, *params))


# -- run_by_lengths / final_states_by_lengths against packing, every cell and impl ---------------------


def _reference_by_lengths(cell, module, x, lengths):
    """Packing through torch.nn with the same weights, or the equations for the LSTM variants."""
    if cell in ("peephole_lstm", "coupled_lstm"):
        step = _peephole_step if cell == "peephole_lstm" else _coupled_step
        zeros = torch.zeros(
            module.num_layers * (2 if module.bidirectional else 1), x.size(0), 4, dtype=F64
        )
        outs, h_n, _ = _by_hand(module, step, x, lengths, zeros, zeros)
        padded = x.new_zeros(x.size(0), x.size(1), outs[0].size(1))
        for b, o in enumerate(outs):
            padded[b, : len(o)] = o
        return padded, h_n, list(module.parameters())
    reference = make_rnn(
        cell,
        "fused",
        input_size=3,
        hidden_size=4,
        num_layers=module.num_layers,
        bidirectional=module.bidirectional,
    ).to(F64)
    reference.load_state_dict(module.state_dict())
    out, state = _packed(reference, x, lengths)
    return out, hidden_of(state), list(reference.parameters())


@settings(max_examples=30, deadline=None)
@given(
    cell=st.sampled_from(rl.CELLS),
    impl=st.sampled_from(rl.IMPLS),
    num_layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    lengths=st.lists(st.integers(1, 5), min_size=1, max_size=5),
    extra=st.integers(0, 2),
    mode=st.sampled_from(["grad", "no_grad", "eval_frozen"]),
    groups=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_run_by_lengths_equals_packing_for_every_cell_and_impl(
    cell, impl, num_layers, bidirectional, lengths, extra, mode, groups, seed
):
    torch.manual_seed(seed)
    rnn = make_rnn(
        cell, impl, input_size=3, hidden_size=4, num_layers=num_layers, bidirectional=bidirectional
    ).to(F64)
    if mode == "eval_frozen":
        rnn.eval().requires_grad_(False)
    x = torch.randn(len(lengths), max(lengths) + extra, 3, dtype=F64)
    lengths_t = torch.tensor(lengths)
    mine = x.clone().requires_grad_(mode == "grad")
    with torch.set_grad_enabled(mode != "no_grad"):
        outputs, final = run_by_lengths(rnn, mine, lengths_t)
        grouped = final_states_by_lengths(rnn, mine, lengths_t, length_groups=groups)
    reference_x = x.clone().requires_grad_(mode == "grad")
    expected_out, expected_final, reference_params = _reference_by_lengths(
        cell, rnn, reference_x, lengths
    )
    assert outputs.shape == expected_out.shape
    torch.testing.assert_close(outputs, expected_out, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(final, expected_final, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(grouped, expected_final, rtol=1e-9, atol=1e-11)
    for b, length in enumerate(lengths):  # zero past each length, as pad_packed_sequence gives
        assert torch.all(outputs[b, length:] == 0)
    if mode == "grad":
        w_out = torch.randn(outputs.shape, dtype=F64)
        w_fin = torch.randn(final.shape, dtype=F64)
        ours = _grads(
            (outputs * w_out).sum() + (final * w_fin).sum() + (grouped * w_fin).sum(),
            [mine, *rnn.parameters()],
        )
        want = _grads(
            (expected_out * w_out).sum() + 2 * (expected_final * w_fin).sum(),
            [reference_x, *reference_params],
        )
        for got, expected in zip(ours, want, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)


# -- make_rnn argument checking -----------------------------------------------------------------------


@pytest.mark.parametrize("impl", rl.IMPLS)
@pytest.mark.parametrize(
    "bad",
    [
        {"cell": "GRU"},
        {"cell": "lstmp"},
        {"hidden_size": 0},
        {"hidden_size": -3},
        {"num_layers": 0},
        {"num_layers": 2, "dropout": 1.5},
        {"num_layers": 2, "dropout": -0.1},
    ],
)
def test_make_rnn_refuses_bad_cells_and_sizes_with_a_value_error(impl, bad):
    arguments = {"cell": "gru", "impl": impl, "input_size": 3, "hidden_size": 4, **bad}
    with pytest.raises(ValueError):
        make_rnn(**arguments)


def test_make_rnn_refuses_an_unknown_impl_naming_the_choices():
    with pytest.raises(ValueError, match="fused, scratch"):
        make_rnn("gru", "cudnn", input_size=3, hidden_size=4)


@pytest.mark.parametrize("impl", rl.IMPLS)
@pytest.mark.parametrize("dropout", [1.5, -0.5])
def test_make_rnn_refuses_out_of_range_dropout_for_one_layer(impl, dropout):
    with pytest.raises(ValueError):
        nn.GRU(3, 4, dropout=dropout)  # the reference refuses it for one layer too
    with pytest.raises(ValueError):
        make_rnn("gru", impl, input_size=3, hidden_size=4, num_layers=1, dropout=dropout)


@pytest.mark.parametrize("input_size", [0, -1])
def test_scratch_make_rnn_refuses_non_positive_input_size_like_fused(input_size):
    with pytest.raises(ValueError):
        make_rnn("gru", "fused", input_size=input_size, hidden_size=4)
    with pytest.raises(ValueError):
        make_rnn("gru", "scratch", input_size=input_size, hidden_size=4)


# -- scratch layers: other drop-in differences from torch.nn -------------------------------------------


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_scratch_layer_accepts_an_empty_batch_like_torch(kind):
    reference, ours = _pair(kind, bidirectional=True)
    x = torch.randn(0, 3, 3, dtype=F64)
    want_out, want_state = reference(x)
    got_out, got_state = ours(x)
    assert got_out.shape == want_out.shape
    for got, want in zip(_flat(got_state), _flat(want_state), strict=True):
        assert got.shape == want.shape


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_cells_refuse_a_batched_input_with_an_unbatched_state_like_torch(cell):
    reference_cls, ours_cls = (
        (nn.RNNCell, rl.RNNCell) if cell == "rnn" else (nn.LSTMCell, rl.LSTMCell)
    )
    x, h = torch.randn(2, 3), torch.randn(4)
    state = h if cell == "rnn" else (h, h)
    with pytest.raises(RuntimeError):
        reference_cls(3, 4)(x, state)
    with pytest.raises((RuntimeError, ValueError)):
        ours_cls(3, 4)(x, state)


@pytest.mark.parametrize("layer_cls", [rl.RNN, rl.LSTM, rl.PeepholeLSTM, rl.CoupledLSTM])
def test_scratch_layers_run_under_bfloat16_autocast(layer_cls):
    torch.manual_seed(0)
    layer = layer_cls(3, 4, batch_first=True)
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        expected, _ = layer(x)  # float32, outside autocast
        if layer_cls is rl.RNN:  # the torch.nn counterpart runs under autocast on every CPU
            reference = nn.RNN(3, 4, batch_first=True)
            reference.load_state_dict(layer.state_dict())
            with torch.autocast("cpu", dtype=torch.bfloat16):
                torch_out, _ = reference(x)
            torch.testing.assert_close(torch_out.float(), expected, rtol=0.05, atol=0.03)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = layer(x)
    torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.03)


# -- loop products -------------------------------------------------------------------------------------


def _loop(product, x, steps=3):
    h, outs = x, []
    for _ in range(steps):
        h = torch.tanh(product(h)[..., : x.size(-1)])
        outs.append(h)
    return torch.stack(outs).pow(2).sum()


def test_loop_linear_gradients_equal_plain_linear():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, generator=gen, dtype=F64, requires_grad=True)
    b = torch.randn(4, generator=gen, dtype=F64, requires_grad=True)
    x = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)
    want = _grads(_loop(lambda v: F.linear(v, w, b), x), [x, w, b])
    got = _grads(_loop(LoopLinear(w, b), x), [x, w, b])
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("product", ["linear", "bmm"])
def test_loop_product_weight_gradient_after_an_input_only_backward(product):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 3, generator=gen, dtype=F64, requires_grad=True)
    if product == "linear":
        w = torch.randn(4, 3, generator=gen, dtype=F64, requires_grad=True)
        plain, looped = (lambda v: F.linear(v, w)), LoopLinear(w)
    else:
        w = torch.randn(2, 3, 4, generator=gen, dtype=F64, requires_grad=True)
        plain, looped = (lambda v: torch.bmm(v, w)), LoopBmm(w)
    expected = _grads(_loop(plain, x), [w])[0]
    loss = _loop(looped, x)
    torch.autograd.grad(loss, [x], retain_graph=True)  # e.g. an adversarial input gradient
    (got,) = _grads(loss, [w])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


# -- dropout --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.25, 0.6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sequence_dropout_is_one_scaled_mask_per_sequence_and_feature(p, dtype):
    torch.manual_seed(3)
    drop = rl.SequenceDropout(p)
    x = torch.rand(64, 7, 16, dtype=dtype) + 0.5  # no zeros in the input
    y = drop(x)
    ratio = y / x
    scale = torch.tensor(1.0 / (1.0 - p), dtype=dtype)
    assert torch.all((ratio == 0) | torch.isclose(ratio, scale))  # 0 or 1/(1-p), per value
    kept = ratio != 0
    assert torch.all(kept == kept[:, :1, :])  # the same mask at every time step
    dropped = (ratio[:, 0, :] == 0).double().mean().item()
    # 1024 Bernoulli(p) draws: 5 standard deviations around p
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / 1024)
    drop.eval()
    assert drop(x) is x or torch.equal(drop(x), x)


def test_functional_dropout_matches_its_contract():
    torch.manual_seed(4)
    x = torch.rand(200, 50, dtype=F64) + 0.5
    y = dropout(x, 0.3, training=True)
    ratio = y / x
    assert torch.all((ratio == 0) | torch.isclose(ratio, torch.tensor(1 / 0.7, dtype=F64)))
    assert abs((ratio == 0).double().mean().item() - 0.3) < 5 * math.sqrt(0.21 / 10_000)
    assert torch.equal(dropout(x, 0.3, training=False), x)
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))


# -- masks, masked softmax and masked losses against per-sequence loops ---------------------------------


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    extra=st.integers(0, 2),
    queries=st.sampled_from([None, 1, 3]),
    seed=st.integers(0, 100),
)
def test_masks_and_masked_softmax_equal_per_row_loops(lengths, extra, queries, seed):
    gen = torch.Generator().manual_seed(seed)
    steps = max(lengths) + extra
    lengths_t = torch.tensor(lengths)
    mask = length_mask(lengths_t, steps)
    for b, length in enumerate(lengths):
        assert mask[b].tolist() == [t < length for t in range(steps)]
    x = torch.randn(len(lengths), steps, 2, generator=gen)
    masked = sequence_mask(x, lengths_t, value=-7.0)
    for b, length in enumerate(lengths):
        assert torch.equal(masked[b, :length], x[b, :length])
        assert torch.all(masked[b, length:] == -7.0)
    shape = (len(lengths), steps) if queries is None else (len(lengths), queries, steps)
    scores = torch.randn(shape, generator=gen, dtype=F64)
    weights = masked_softmax(scores, lengths_t)
    for b, length in enumerate(lengths):
        rows = scores[b] if queries is not None else scores[b : b + 1]
        got = weights[b] if queries is not None else weights[b : b + 1]
        for q in range(rows.size(0)):
            if length == 0:
                assert torch.all(got[q] == 0)
                continue
            expected = torch.softmax(rows[q, :length], dim=0)
            torch.testing.assert_close(got[q, :length], expected, rtol=1e-12, atol=1e-14)
            assert torch.all(got[q, length:] == 0)


def test_masked_softmax_gradient_is_finite_and_zero_on_padding():
    scores = torch.randn(3, 2, 4, dtype=F64, requires_grad=True)
    weights = masked_softmax(scores, torch.tensor([0, 2, 4]))
    (weights * torch.randn_like(weights)).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert torch.all(scores.grad[0] == 0) and torch.all(scores.grad[1, :, 2:] == 0)


def _token_losses(logits, labels, lengths, smoothing=0.0):
    """Per valid token, -(1-ε) log p_y - ε mean_v log p_v, by a loop."""
    losses = []
    for b, length in enumerate(lengths):
        for t in range(length):
            log_p = torch.log_softmax(logits[b, t], dim=0)
            losses.append(-(1 - smoothing) * log_p[labels[b, t]] - smoothing * log_p.mean())
    return losses


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_masked_token_nll_is_the_per_token_loop_over_real_tokens(smoothing):
    gen = torch.Generator().manual_seed(5)
    lengths = [3, 1, 5, 2]
    logits = torch.randn(4, 6, 7, generator=gen, dtype=F64, requires_grad=True)
    labels = torch.randint(0, 7, (4, 6), generator=gen)
    lengths_t = torch.tensor(lengths)
    total = masked_token_nll(
        select_valid(logits, lengths_t), select_valid(labels, lengths_t), label_smoothing=smoothing
    )
    expected = torch.stack(_token_losses(logits, labels, lengths, smoothing)).sum()
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=1e-12)
    # the reported mean is over the real tokens only; padding gets no gradient
    mean = total / lengths_t.sum()
    torch.testing.assert_close(mean, expected / sum(lengths), rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(total, [logits])
    (want,) = torch.autograd.grad(expected, [logits])
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)
    for b, length in enumerate(lengths):
        assert torch.all(grad[b, length:] == 0)


def test_textbook_masked_loss_is_the_per_sequence_mean_over_all_positions():
    gen = torch.Generator().manual_seed(6)
    lengths = [3, 1, 6, 0]
    pred = torch.randn(4, 6, 5, generator=gen, dtype=F64)
    label = torch.randint(0, 5, (4, 6), generator=gen)
    got = MaskedSoftmaxCELoss()(pred, label, torch.tensor(lengths))
    for b, length in enumerate(lengths):
        token = [-torch.log_softmax(pred[b, t], 0)[label[b, t]] for t in range(length)]
        expected = (torch.stack(token).sum() if token else torch.tensor(0.0, dtype=F64)) / 6
        torch.testing.assert_close(got[b], expected, rtol=1e-12, atol=1e-12)


# -- batching -----------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 30), max_size=120),
    batch_size=st.integers(1, 9),
    shuffle=st.booleans(),
    bucket=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_bucket_batches_cover_every_example_once_within_the_size_limit(
    lengths, batch_size, shuffle, bucket, seed
):
    batches = bucket_batches(lengths, batch_size, shuffle=shuffle, bucket=bucket, seed=seed)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(batch) <= batch_size for batch in batches)
    assert batches == bucket_batches(lengths, batch_size, shuffle=shuffle, bucket=bucket, seed=seed)
    if not shuffle and bucket:  # one stable sort by length, cut into consecutive batches
        assert flat == sorted(range(len(lengths)), key=lambda i: lengths[i])
    if not shuffle and not bucket:
        assert flat == list(range(len(lengths)))
    if bucket and shuffle and len(lengths) <= batch_size * 50:
        # a single chunk: every batch is sorted, and batches do not overlap in length
        spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
        assert all(a[1] <= b[0] for a, b in pairwise(spans))


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 20), max_size=60),
    batch_size=st.integers(1, 8),
    max_tokens=st.integers(0, 60),
)
def test_sorted_batches_respect_both_limits_and_cover_everything(lengths, batch_size, max_tokens):
    batches = sorted_batches(lengths, batch_size, max_tokens=max_tokens)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        if max_tokens > 0 and len(batch) > 1:
            assert len(batch) * max(lengths[i] for i in batch) <= max_tokens


def test_pad_batch_equals_a_loop():
    sequences = [[4, 5, 6], [], [7], [8, 9]]
    ids, lengths = pad_batch(sequences, pad_id=0)
    assert lengths.tolist() == [3, 0, 1, 2]
    for b, sequence in enumerate(sequences):
        assert ids[b].tolist() == sequence + [0] * (3 - len(sequence))


# -- state helpers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_pair", [False, True])
def test_state_helpers_on_tensors_and_pairs_equal_row_loops(as_pair):
    gen = torch.Generator().manual_seed(8)
    h, c = torch.randn(2, 5, 3, generator=gen), torch.randn(2, 5, 4, generator=gen)
    state = (h, c) if as_pair else h
    assert hidden_of(state) is h
    rows = torch.tensor([4, 0, 0, 2])
    picked = select_batch(state, rows)
    for got, source in zip(_flat(picked), _flat(state), strict=True):
        assert torch.equal(got, torch.stack([source[:, int(r)] for r in rows], dim=1))
    doubled = map_state(state, lambda t: t * 2)
    assert isinstance(doubled, tuple) == as_pair
    for got, source in zip(_flat(doubled), _flat(state), strict=True):
        assert torch.equal(got, source * 2)


def test_selected_rows_of_a_final_state_equal_running_those_rows_alone():
    """select_batch on run_by_lengths's state equals the run of the selected sequences only."""
    torch.manual_seed(9)
    rnn = make_rnn("lstm", "fused", input_size=3, hidden_size=4, bidirectional=True).to(F64)
    x = torch.randn(5, 4, 3, dtype=F64)
    lengths = torch.tensor([4, 2, 1, 3, 4])
    rows = torch.tensor([3, 1])
    _, final = run_by_lengths(rnn, x, lengths)
    _, alone = run_by_lengths(rnn, x[rows], lengths[rows])
    torch.testing.assert_close(select_batch(final, rows), alone, rtol=1e-12, atol=1e-12)
