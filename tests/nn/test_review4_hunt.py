"""The recurrent layers under attack: argument checks, autocast, empty batches, loop-product gradients.

References, none of them rnnlab output:

* loop products: the same recurrence written with plain ``F.linear`` / ``torch.bmm`` and
  differentiated by autograd, in float64;
* attention decoders: the same decoder (same weights) with ``LoopLinear``/``LoopBmm`` monkeypatched
  to plain ``F.linear``/``torch.bmm`` closures, or with the stepper removed (the per-call loop through
  ``torch.nn.GRU``/``LSTM``);
* scratch stacks: ``torch.nn.RNN``/``GRU``/``LSTM`` holding the same weights (float64, or float16 /
  bfloat16 compared to a float64 ``torch.nn`` run on the same rounded weights), ``torch.nn``'s error
  behaviour for dtype mismatches and empty batches, and hand-written shapes for the LSTM variants;
* cells: ``torch.nn.RNNCell``/``GRUCell``/``LSTMCell`` on the same arguments (accept vs refuse, and
  equal values where both accept);
* argument checks: ``torch.nn.RNN``'s own validation of ``dropout`` and ``input_size``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnlab.models.attention_decoder as attention_decoder_module
import rnnlab.nn as rl
import rnnlab.nn.stepwise as stepwise_module
from rnnlab.models.attention_decoder import BahdanauDecoder, LuongDecoder
from rnnlab.models.encoder import EncoderOutput
from rnnlab.nn import make_rnn
from rnnlab.nn.loop_products import LoopBmm, LoopLinear

F64 = torch.float64


def _close(got, expected, **tolerance):
    assert (got is None) == (expected is None)
    if got is not None:
        torch.testing.assert_close(got, expected, **tolerance)


# -- 1. loop products against plain autograd ------------------------------------------------------


def _leaves(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn(6, 6, generator=g, dtype=F64) * 0.5).requires_grad_()
    bias = torch.randn(6, generator=g, dtype=F64).requires_grad_()
    inputs = torch.randn(5, 3, 6, generator=g, dtype=F64).requires_grad_()
    h0 = torch.randn(3, 6, generator=g, dtype=F64).requires_grad_()
    return weight, bias, inputs, h0


def _states(linear, inputs, h0):
    h, states = h0, []
    for u in inputs.unbind(0):
        h = torch.tanh(linear(h) + u)
        states.append(h)
    return states


def _loss(states, used=None):
    used = range(len(states)) if used is None else used
    return sum((states[t] ** 2).sum() for t in used)


def _plain(weight, bias):
    return lambda x: F.linear(x, weight, bias)


def _reference_grads(weight, bias, inputs, h0, used=None):
    loss = _loss(_states(_plain(weight, bias), inputs, h0), used)
    return torch.autograd.grad(loss, [weight, bias, inputs, h0])


def test_retained_graph_input_then_weight_then_backward_equal_plain_linear():
    weight, bias, inputs, h0 = _leaves()
    w_ref, b_ref, u_ref, h_ref = _reference_grads(weight, bias, inputs, h0)
    loss = _loss(_states(LoopLinear(weight, bias), inputs, h0))
    (gu,) = torch.autograd.grad(loss, [inputs], retain_graph=True)
    (gw,) = torch.autograd.grad(loss, [weight], retain_graph=True)
    (gb, gh) = torch.autograd.grad(loss, [bias, h0], retain_graph=True)
    loss.backward()
    _close(gu, u_ref)
    _close(gw, w_ref)
    _close(gb, b_ref)
    _close(gh, h_ref)
    for leaf, expected in zip(
        (weight, bias, inputs, h0), (w_ref, b_ref, u_ref, h_ref), strict=True
    ):
        _close(leaf.grad, expected)


def test_backward_with_inputs_keyword_then_weight_only():
    weight, bias, inputs, h0 = _leaves(1)
    w_ref, _, u_ref, _ = _reference_grads(weight, bias, inputs, h0)
    loss = _loss(_states(LoopLinear(weight, bias), inputs, h0))
    loss.backward(inputs=[inputs], retain_graph=True)
    loss.backward(inputs=[weight])
    _close(inputs.grad, u_ref)
    _close(weight.grad, w_ref)
    assert bias.grad is None and h0.grad is None


def test_create_graph_false_twice_and_weight_only_grad_equal_plain_linear():
    weight, bias, inputs, h0 = _leaves(2)
    w_ref, b_ref, *_ = _reference_grads(weight, bias, inputs, h0, used=[1, 3])
    loss = _loss(_states(LoopLinear(weight, bias), inputs, h0), used=[1, 3])
    first = torch.autograd.grad(loss, [weight], retain_graph=True, create_graph=False)
    second = torch.autograd.grad(loss, [weight, bias], retain_graph=False, create_graph=False)
    _close(first[0], w_ref)
    _close(second[0], w_ref)
    _close(second[1], b_ref)


def test_two_loop_linears_sharing_one_weight_equal_plain_linear():
    weight, bias, inputs, h0 = _leaves(3)
    with_bias, without = _plain(weight, bias), _plain(weight, None)

    def run(a, b):
        h, total = h0, 0
        for t, u in enumerate(inputs.unbind(0)):
            h = torch.tanh((a if t % 2 else b)(h) + u)
            total = total + (h**2).sum()
        return total

    expected = torch.autograd.grad(run(with_bias, without), [weight, bias, inputs, h0])
    got = torch.autograd.grad(
        run(LoopLinear(weight, bias), LoopLinear(weight)), [weight, bias, inputs, h0]
    )
    for g, e in zip(got, expected, strict=True):
        _close(g, e)


def test_products_partly_reached_and_two_losses_backward_separately():
    weight, bias, inputs, h0 = _leaves(4)
    ref_states = _states(_plain(weight, bias), inputs, h0)
    expected_a = torch.autograd.grad(_loss(ref_states, [1]), [weight, bias], retain_graph=True)
    expected_b = torch.autograd.grad(_loss(ref_states, [3, 4]), [weight, bias])
    states = _states(LoopLinear(weight, bias), inputs, h0)
    # Steps after 1 are never reached by the first loss; the second reaches them all.
    _loss(states, [1]).backward(retain_graph=True)
    _close(weight.grad, expected_a[0])
    _close(bias.grad, expected_a[1])
    _loss(states, [3, 4]).backward()
    _close(weight.grad, expected_a[0] + expected_b[0])
    _close(bias.grad, expected_a[1] + expected_b[1])


def test_gradient_accumulation_over_two_forward_passes():
    weight, bias, inputs, h0 = _leaves(5)
    w_ref = weight.detach().clone().requires_grad_()
    b_ref = bias.detach().clone().requires_grad_()
    first = _loss(_states(LoopLinear(weight, bias), inputs, h0), [0, 2])
    second = _loss(_states(LoopLinear(weight, bias), inputs * 0.5, h0), [4])
    (first + second).backward()  # both forward passes before one backward
    ref = _loss(_states(_plain(w_ref, b_ref), inputs, h0), [0, 2])
    ref = ref + _loss(_states(_plain(w_ref, b_ref), inputs * 0.5, h0), [4])
    ref.backward()
    _close(weight.grad, w_ref.grad)
    _close(bias.grad, b_ref.grad)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "built_under_no_grad"])
def test_without_autograd_equal_plain_linear(mode):
    weight, bias, inputs, h0 = _leaves(6)
    with torch.no_grad():
        expected = _states(_plain(weight, bias), inputs, h0)[-1]
    if mode == "no_grad":
        with torch.no_grad():
            got = _states(LoopLinear(weight, bias), inputs, h0)[-1]
        assert not got.requires_grad
    elif mode == "inference_mode":
        with torch.inference_mode():
            got = _states(LoopLinear(weight, bias), inputs, h0)[-1]
        assert not got.requires_grad
    else:  # built without grad, used with grad: must still differentiate like F.linear
        with torch.no_grad():
            product = LoopLinear(weight, bias)
        got = _states(product, inputs, h0)[-1]
        (gw,) = torch.autograd.grad(got.sum(), [weight])
        (ew,) = torch.autograd.grad(_states(_plain(weight, bias), inputs, h0)[-1].sum(), [weight])
        _close(gw, ew)
    _close(got.detach(), expected)


def test_loop_bmm_retained_graph_passes_equal_torch_bmm():
    g = torch.Generator().manual_seed(7)
    right = torch.randn(2, 4, 3, generator=g, dtype=F64, requires_grad=True)
    queries = torch.randn(5, 2, 1, 4, generator=g, dtype=F64, requires_grad=True)
    proj = torch.randn(3, 4, generator=g, dtype=F64) * 0.4

    def run(product):
        a, total = queries[0], 0
        for t in range(5):
            out = product(torch.tanh(a + queries[t]))  # (2, 1, 3)
            a = out.matmul(proj)  # (2, 1, 4)
            total = total + (out**2).sum()
        return total

    expected = torch.autograd.grad(run(lambda a: torch.bmm(a, right)), [right, queries])
    loss = run(LoopBmm(right))
    (gq,) = torch.autograd.grad(loss, [queries], retain_graph=True)
    (gr,) = torch.autograd.grad(loss, [right], retain_graph=True)
    loss.backward()
    _close(gq, expected[1])
    _close(gr, expected[0])
    _close(right.grad, expected[0])
    _close(queries.grad, expected[1])


def _backward_with_nested_pass(product, h0, inputs):
    """``.backward()`` on the loop, with a hook at step 2 that runs a side backward pass."""
    states = _states(product, inputs, h0)
    side = (states[1] ** 3).sum()

    def hook(grad):
        torch.autograd.grad(side, [h0], retain_graph=True)  # a side computation; grad unchanged
        return grad

    states[2].register_hook(hook)
    _loss(states).backward()


def test_nested_backward_in_a_hook_keeps_the_outer_pass_pairs():
    weight, bias, inputs, h0 = _leaves(8)
    w_ref = weight.detach().clone().requires_grad_()
    b_ref = bias.detach().clone().requires_grad_()
    _backward_with_nested_pass(_plain(w_ref, b_ref), h0, inputs)
    _backward_with_nested_pass(LoopLinear(weight, bias), h0, inputs)
    _close(weight.grad, w_ref.grad)
    _close(bias.grad, b_ref.grad)


# -- 1b. attention decoders: loop products against the same decoder with plain products ------------

VOCAB, EMBED, HIDDEN, MEMORY, BATCH, SRC, TGT = 9, 4, 5, 6, 3, 4, 4


def _decoder(kind, cell, num_layers):
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
        return BahdanauDecoder(**common).double().eval()
    return LuongDecoder(method="general", input_feed=True, **common).double().eval()


def _decoder_inputs(cell, num_layers):
    g = torch.Generator().manual_seed(1)
    memory = torch.randn(BATCH, SRC, MEMORY, dtype=F64, generator=g, requires_grad=True)
    h0 = torch.randn(num_layers, BATCH, HIDDEN, dtype=F64, generator=g, requires_grad=True)
    hidden = (h0, torch.randn(h0.shape, dtype=F64, generator=g)) if cell == "lstm" else h0
    tgt_in = torch.randint(1, VOCAB, (BATCH, TGT), generator=g)
    lengths = torch.tensor([4, 2, 1])
    return EncoderOutput(outputs=memory, lengths=lengths, state=hidden), hidden, tgt_in, h0


def _plain_loop_linear(weight, bias=None):
    return lambda x: F.linear(x.to(weight.dtype), weight, bias)


def _plain_loop_bmm(right):
    return lambda a: torch.bmm(a.to(right.dtype), right)


def _decoder_loss(decoder, cell, num_layers, steps_read):
    encoded, hidden, tgt_in, h0 = _decoder_inputs(cell, num_layers)
    features, state, _ = decoder.forward_with_attention(tgt_in, decoder.init_state(encoded, hidden))
    final = state.hidden[0] if cell == "lstm" else state.hidden
    loss = (features[:, :steps_read] ** 2).sum() + (final * 0.3).sum()
    return loss, encoded.outputs, h0


@pytest.mark.parametrize("kind", ["bahdanau", "luong"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("steps_read", [TGT, 2])
def test_decoder_multi_pass_gradients_equal_the_plain_product_decoder(
    kind, cell, steps_read, monkeypatch
):
    num_layers = 2
    decoder = _decoder(kind, cell, num_layers)
    assert decoder.stepper is not None
    params = list(decoder.parameters())
    names = [name for name, _ in decoder.named_parameters()]

    with monkeypatch.context() as patch:
        patch.setattr(attention_decoder_module, "LoopLinear", _plain_loop_linear)
        patch.setattr(attention_decoder_module, "LoopBmm", _plain_loop_bmm)
        patch.setattr(stepwise_module, "LoopLinear", _plain_loop_linear)
        loss, memory, h0 = _decoder_loss(decoder, cell, num_layers, steps_read)
        expected = torch.autograd.grad(loss, [memory, h0, *params], allow_unused=True)

    loss, memory, h0 = _decoder_loss(decoder, cell, num_layers, steps_read)
    # Input-only pass first (never reaches the tokens), then the weights only, then .backward().
    got_memory, got_h0 = torch.autograd.grad(loss, [memory, h0], retain_graph=True)
    got_params = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    decoder.zero_grad(set_to_none=True)
    loss.backward()
    _close(got_memory, expected[0])
    _close(got_h0, expected[1])
    _close(memory.grad, expected[0])
    for name, p, g, e in zip(names, params, got_params, expected[2:], strict=True):
        if e is None or not e.any():
            assert g is None or not g.any(), name
            assert p.grad is None or not p.grad.any(), name
            continue
        _close(g, e, msg=name)
        _close(p.grad, e, msg=name)


@pytest.mark.parametrize("kind", ["bahdanau", "luong"])
def test_decoder_accumulated_over_two_forwards_equals_per_call_loop(kind):
    cell, num_layers = "gru", 1
    decoder = _decoder(kind, cell, num_layers)
    params = list(decoder.parameters())
    total = sum(_decoder_loss(decoder, cell, num_layers, TGT)[0] for _ in range(2))
    total.backward()  # two forwards, one backward
    got = [None if p.grad is None else p.grad.clone() for p in params]
    decoder.zero_grad(set_to_none=True)
    stepper, decoder.stepper = decoder.stepper, None  # per-call loop through torch.nn.GRU
    try:
        reference = sum(_decoder_loss(decoder, cell, num_layers, TGT)[0] for _ in range(2))
    finally:
        decoder.stepper = stepper
    expected = torch.autograd.grad(reference, params, allow_unused=True)
    for g, e in zip(got, expected, strict=True):
        if e is None:
            assert g is None or not g.any()
        else:
            _close(g, e)


# -- 2. scratch stacks: dtypes and autocast ---------------------------------------------------------

PAIRS = {
    "rnn": (nn.RNN, rl.RNN, {}),
    "gru": (nn.GRU, rl.GRU, {}),
    "lstm": (nn.LSTM, rl.LSTM, {}),
    "lstm_proj": (nn.LSTM, rl.LSTM, {"proj_size": 2}),
}


def _pair(kind, dtype=F64, **options):
    reference_cls, ours_cls, extra = PAIRS[kind]
    torch.manual_seed(3)
    reference = reference_cls(3, 4, **extra, **options).to(dtype)
    ours = ours_cls(3, 4, **extra, **options).to(dtype)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("kind", list(PAIRS))
def test_float64_stack_stays_float64_and_equals_torch(kind):
    reference, ours = _pair(kind, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(2, 5, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    results = []
    for module in (reference, ours):
        xx = x.clone().requires_grad_()
        out, state = module(xx)
        loss = (out * out.detach().cos()).sum() + sum(s.sum() for s in _flat(state))
        grads = torch.autograd.grad(loss, [xx, *module.parameters()])
        results.append([out, *_flat(state), *grads])
    for got, expected in zip(results[1], results[0], strict=True):
        assert got.dtype == F64
        _close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", list(PAIRS))
def test_half_precision_stack_without_autocast_matches_float64_torch(kind, dtype):
    reference, ours = _pair(kind, dtype=dtype, num_layers=2)
    wide = type(reference)(3, 4, num_layers=2, **PAIRS[kind][2]).to(F64)
    wide.load_state_dict(reference.state_dict())  # the same (rounded) weights, in float64
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(1)).to(dtype)
    out, state = ours(x)
    expected_out, expected_state = wide(x.to(F64))
    tolerance = 3e-2 if dtype == torch.bfloat16 else 5e-3
    assert out.dtype == dtype and all(s.dtype == dtype for s in _flat(state))
    _close(out.to(F64), expected_out, rtol=0, atol=tolerance)
    for s, e in zip(_flat(state), _flat(expected_state), strict=True):
        _close(s.to(F64), e, rtol=0, atol=tolerance)


@pytest.mark.parametrize("kind", list(PAIRS))
def test_bf16_autocast_packed_runs_in_float32_and_returns_bf16_input_grads(kind):
    reference, ours = _pair(kind, dtype=torch.float32, num_layers=2, batch_first=True)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 3, generator=g).to(torch.bfloat16).requires_grad_()
    lengths = torch.tensor([2, 4, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, state = ours(packed)
    padded, _ = pad_packed_sequence(out, batch_first=True)
    # Reference: torch.nn in float32 (autocast off) on the same bf16 values.
    x_ref = x.detach().float().requires_grad_()
    ref_packed = pack_padded_sequence(x_ref, lengths, batch_first=True, enforce_sorted=False)
    ref_out, ref_state = reference(ref_packed)
    ref_padded, _ = pad_packed_sequence(ref_out, batch_first=True)
    _close(padded.float(), ref_padded, rtol=1e-5, atol=1e-6)
    for s, e in zip(_flat(state), _flat(ref_state), strict=True):
        _close(s.float(), e, rtol=1e-5, atol=1e-6)
    weight = torch.randn(padded.shape, generator=g)
    (padded.float() * weight).sum().backward()
    (ref_padded * weight).sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    _close(x.grad.float(), x_ref.grad.to(torch.bfloat16).float(), rtol=1e-2, atol=1e-2)
    for p, q in zip(ours.parameters(), reference.parameters(), strict=True):
        _close(p.grad, q.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", list(PAIRS))
def test_float64_stack_under_bf16_autocast_stays_float64(kind):
    reference, ours = _pair(kind, num_layers=2, bidirectional=True)
    x = torch.randn(4, 2, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    x_ours = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = ours(x_ours)
    expected_out, expected_state = reference(x)  # torch.nn in float64, no autocast
    assert out.dtype == F64 and all(s.dtype == F64 for s in _flat(state))
    _close(out, expected_out, rtol=1e-10, atol=1e-12)
    for s, e in zip(_flat(state), _flat(expected_state), strict=True):
        _close(s, e, rtol=1e-10, atol=1e-12)
    out.sum().backward()
    assert x_ours.grad.dtype == F64


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("what", ["input", "state"])
def test_dtype_mismatch_without_autocast_is_refused_like_torch(kind, what):
    reference, ours = _pair(kind, dtype=torch.float32)
    x = torch.randn(5, 2, 3)
    h = torch.zeros(1, 2, 4)
    if what == "input":
        x = x.double()
    else:
        h = h.double()
    hx = (h, h.clone()) if kind == "lstm" else h
    with pytest.raises((RuntimeError, ValueError)):
        reference(x, hx)  # the reference refuses
    with pytest.raises((RuntimeError, ValueError)):
        ours(x, hx)


# -- 3. empty batches ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(PAIRS))
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("given", [False, True])
def test_empty_batch_equals_torch(kind, batch_first, bidirectional, given):
    options = dict(num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    reference, ours = _pair(kind, **options)
    x = torch.randn((0, 5, 3) if batch_first else (5, 0, 3), dtype=F64)
    hx = None
    if given:
        layers = 2 * (2 if bidirectional else 1)
        h = torch.randn(layers, 0, reference.proj_size or 4, dtype=F64)
        hx = (h, torch.randn(layers, 0, 4, dtype=F64)) if isinstance(reference, nn.LSTM) else h
    results = []
    for module in (reference, ours):
        xx = x.clone().requires_grad_()
        out, state = module(xx, hx)
        loss = out.sum() + sum(s.sum() for s in _flat(state))
        grads = torch.autograd.grad(loss, [xx, *module.parameters()], allow_unused=True)
        results.append((out, _flat(state), grads))
    (ref_out, ref_state, ref_grads), (out, state, grads) = results
    assert out.shape == ref_out.shape and out.dtype == ref_out.dtype
    assert [s.shape for s in state] == [s.shape for s in ref_state]
    for g, e in zip(grads, ref_grads, strict=True):
        if e is None:
            assert g is None or not g.any()
        else:
            _close(g, e)


@pytest.mark.parametrize("cls", [rl.PeepholeLSTM, rl.CoupledLSTM])
def test_lstm_variants_take_an_empty_batch(cls):
    layer = cls(3, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    out, (h, c) = layer(torch.randn(0, 5, 3, dtype=F64))
    assert out.shape == (0, 5, 8) and h.shape == (4, 0, 4) and c.shape == (4, 0, 4)


# -- 4. cells accept and refuse what torch.nn's cells do ------------------------------------------

CELLS = {
    "rnn": (nn.RNNCell, rl.RNNCell),
    "gru": (nn.GRUCell, rl.GRUCell),
    "lstm": (nn.LSTMCell, rl.LSTMCell),
    "peephole": (nn.LSTMCell, rl.PeepholeLSTMCell),
    "coupled": (nn.LSTMCell, rl.CoupledLSTMCell),
}
SHAPES = {
    "1d_1d": ((3,), (4,)),
    "1d_none": ((3,), None),
    "2d_2d": ((2, 3), (2, 4)),
    "2d_none": ((2, 3), None),
    "empty_batch": ((0, 3), (0, 4)),
    "1d_2d": ((3,), (1, 4)),
    "2d_1d": ((2, 3), (4,)),
    "batch1_1d": ((1, 3), (4,)),
    "wrong_batch": ((2, 3), (3, 4)),
    "broadcast_batch": ((2, 3), (1, 4)),
    "wrong_hidden": ((2, 3), (2, 5)),
    "wrong_hidden_1d": ((3,), (5,)),
    "state_3d": ((2, 3), (1, 2, 4)),
    "input_3d": ((1, 2, 3), None),
}


def _call(cell, lstm, x, h, c_shape=None):
    try:
        if lstm and h is not None:
            c = torch.randn(c_shape if c_shape is not None else h.shape, dtype=F64)
            return cell(x, (h, c))
        return cell(x, h)
    except (RuntimeError, ValueError, AssertionError):
        return "refused"


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("case", list(SHAPES))
def test_cells_accept_and_refuse_like_torch(name, case):
    reference_cls, ours_cls = CELLS[name]
    lstm = reference_cls is nn.LSTMCell
    reference, ours = reference_cls(3, 4).double(), ours_cls(3, 4).double()
    if name in ("rnn", "gru", "lstm"):
        ours.load_state_dict(reference.state_dict())
    x_shape, h_shape = SHAPES[case]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, dtype=F64, generator=g)
    h = None if h_shape is None else torch.randn(h_shape, dtype=F64, generator=g)
    torch.manual_seed(0)
    expected = _call(reference, lstm, x, h)
    torch.manual_seed(0)
    got = _call(ours, lstm, x, h)
    assert (isinstance(got, str)) == (isinstance(expected, str)), (got, expected)
    if isinstance(got, str):
        return
    for a, b in zip(_flat(got), _flat(expected), strict=True):
        assert a.shape == b.shape
        if name in ("rnn", "gru", "lstm"):
            _close(a, b)


@pytest.mark.parametrize("name", ["lstm", "peephole", "coupled"])
@pytest.mark.parametrize("c_shape", [(2, 5), (4,), (3, 4), (1, 4)])
def test_lstm_cells_refuse_a_bad_cell_state_like_torch(name, c_shape):
    reference_cls, ours_cls = CELLS[name]
    x, h = torch.randn(2, 3, dtype=F64), torch.randn(2, 4, dtype=F64)
    assert _call(reference_cls(3, 4).double(), True, x, h, c_shape) == "refused"
    assert _call(ours_cls(3, 4).double(), True, x, h, c_shape) == "refused"


# -- 5. dropout and input_size checks ------------------------------------------------------------


def _torch_accepts(**kwargs):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nn.GRU(**kwargs)
    except ValueError:
        return False
    return True


def _make(impl, cell, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_rnn(cell, impl, **kwargs)


@pytest.mark.parametrize("impl", rl.IMPLS)
@pytest.mark.parametrize("cell", ["gru", "peephole_lstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("dropout", [0, 1, 0.0, 1.0, -0.0, 0.5])
def test_boundary_dropout_accepted(impl, cell, num_layers, dropout):
    assert _torch_accepts(input_size=3, hidden_size=4, num_layers=num_layers, dropout=dropout)
    _make(impl, cell, input_size=3, hidden_size=4, num_layers=num_layers, dropout=dropout)


@pytest.mark.parametrize("impl", rl.IMPLS)
@pytest.mark.parametrize("cell", ["gru", "peephole_lstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("dropout", [-1e-9, 1 + 1e-9, float("nan"), float("inf"), -1])
def test_out_of_range_dropout_refused_with_a_clear_value_error(impl, cell, num_layers, dropout):
    assert not _torch_accepts(input_size=3, hidden_size=4, num_layers=num_layers, dropout=dropout)
    with pytest.raises(ValueError, match="dropout"):
        _make(impl, cell, input_size=3, hidden_size=4, num_layers=num_layers, dropout=dropout)


@pytest.mark.parametrize("impl", rl.IMPLS)
@pytest.mark.parametrize("dropout", [True, False])
def test_bool_dropout_refused_with_two_layers(impl, dropout):
    assert not _torch_accepts(input_size=3, hidden_size=4, num_layers=2, dropout=dropout)
    with pytest.raises(ValueError, match="dropout"):
        _make(impl, "gru", input_size=3, hidden_size=4, num_layers=2, dropout=dropout)


@pytest.mark.parametrize("impl", rl.IMPLS)
@pytest.mark.parametrize("dropout", [True, False])
def test_bool_dropout_refused_with_one_layer(impl, dropout):
    assert not _torch_accepts(input_size=3, hidden_size=4, num_layers=1, dropout=dropout)
    with pytest.raises(ValueError, match="dropout"):
        _make(impl, "gru", input_size=3, hidden_size=4, num_layers=1, dropout=dropout)


@pytest.mark.parametrize("impl", rl.IMPLS)
@pytest.mark.parametrize("dropout", ["0.5", "1"])
def test_non_number_dropout_is_a_value_error(impl, dropout):
    assert not _torch_accepts(input_size=3, hidden_size=4, num_layers=2, dropout=dropout)
    with pytest.raises(ValueError, match="dropout"):
        _make(impl, "gru", input_size=3, hidden_size=4, num_layers=2, dropout=dropout)


@pytest.mark.parametrize("impl", rl.IMPLS)
@pytest.mark.parametrize("cell", list(rl.CELLS))
@pytest.mark.parametrize("input_size", [0, -2])
def test_non_positive_input_size_refused_like_torch(impl, cell, input_size):
    assert not _torch_accepts(input_size=input_size, hidden_size=4)
    with pytest.raises(ValueError, match="input_size"):
        _make(impl, cell, input_size=input_size, hidden_size=4)


@pytest.mark.parametrize("cls", [rl.RNN, rl.GRU, rl.LSTM, rl.PeepholeLSTM, rl.CoupledLSTM])
def test_scratch_stack_input_size_one_works_like_torch(cls):
    layer = cls(1, 2).double()
    out, _ = layer(torch.randn(3, 2, 1, dtype=F64))
    assert out.shape == (3, 2, 2)
