"""rnnlab.nn.RNN/GRU/LSTM against torch.nn as the reference: outputs, final states and every gradient."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnlab.nn as rl
from rnnlab.nn import lstm_loops, rnn_loops

INPUT, HIDDEN, STEPS = 3, 5, 5
UNSORTED_LENGTHS = [4, 2, 5, 1]
SORTED_LENGTHS = [5, 4, 2, 1]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}

KINDS = {
    "rnn_tanh": (nn.RNN, rl.RNN, {}),
    "rnn_relu": (nn.RNN, rl.RNN, {"nonlinearity": "relu"}),
    "gru": (nn.GRU, rl.GRU, {}),
    "lstm": (nn.LSTM, rl.LSTM, {}),
    "lstm_proj": (nn.LSTM, rl.LSTM, {"proj_size": 3}),
}


def make_pair(kind: str, dtype: torch.dtype, **options) -> tuple[nn.Module, nn.Module]:
    """A torch.nn layer and an rnnlab layer holding the same weights."""
    reference_cls, ours_cls, extra = KINDS[kind]
    reference = reference_cls(INPUT, HIDDEN, **extra, **options).to(dtype)
    ours = ours_cls(INPUT, HIDDEN, **extra, **options).to(dtype)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def initial_state(module: nn.Module, batch: int, dtype: torch.dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    layers = module.num_layers * (2 if module.bidirectional else 1)
    out_size = module.proj_size or module.hidden_size
    h0 = torch.randn(layers, batch, out_size, generator=gen, dtype=dtype)
    if isinstance(module, (nn.LSTM, rl.LSTM)):
        return (h0, torch.randn(layers, batch, module.hidden_size, generator=gen, dtype=dtype))
    return h0


def run(module, x, hx, layout: str, lengths: list[int], batch_first: bool):
    """Forward with the given layout; backward of a fixed random functional of every output."""
    x = x.detach().clone().requires_grad_()
    states_in = [] if hx is None else [s.detach().clone().requires_grad_() for s in _as_tuple(hx)]
    hx_in = None if hx is None else (tuple(states_in) if isinstance(hx, tuple) else states_in[0])
    if layout == "padded":
        out, state = module(x, hx_in)
        data, indices = out, None
    else:
        sequence = pack_padded_sequence(
            x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=layout == "sorted"
        )
        out, state = module(sequence, hx_in)
        assert isinstance(out, PackedSequence)
        data, indices = out.data, (out.batch_sizes, out.sorted_indices, out.unsorted_indices)
    gen = torch.Generator().manual_seed(7)
    results = [data, *_as_tuple(state)]
    loss = sum((r * torch.randn(r.shape, generator=gen, dtype=r.dtype)).sum() for r in results)
    params = list(module.parameters())
    grads = torch.autograd.grad(loss, [x, *states_in, *params])
    return results, indices, grads


def _as_tuple(state):
    return tuple(state) if isinstance(state, tuple) else (state,)


def assert_same(reference_run, ours_run, tol: float) -> None:
    (ref_results, ref_indices, ref_grads), (our_results, our_indices, our_grads) = (
        reference_run,
        ours_run,
    )
    for expected, actual in zip(ref_results, our_results, strict=True):
        torch.testing.assert_close(actual, expected, atol=tol, rtol=tol)
    if ref_indices is not None:
        for expected, actual in zip(ref_indices, our_indices, strict=True):
            assert (expected is None) == (actual is None)
            if expected is not None:
                assert torch.equal(expected, actual)
    for expected, actual in zip(ref_grads, our_grads, strict=True):
        torch.testing.assert_close(actual, expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["padded", "sorted", "unsorted"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("kind", list(KINDS))
def test_layer_matches_torch(
    kind, num_layers, bidirectional, batch_first, with_state, layout, dtype
):
    reference, ours = make_pair(
        kind, dtype, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first
    )
    lengths = SORTED_LENGTHS if layout == "sorted" else UNSORTED_LENGTHS
    batch = len(lengths)
    shape = (batch, STEPS, INPUT) if batch_first else (STEPS, batch, INPUT)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    hx = initial_state(reference, batch, dtype, seed=2) if with_state else None
    assert_same(
        run(reference, x, hx, layout, lengths, batch_first),
        run(ours, x, hx, layout, lengths, batch_first),
        TOLERANCE[dtype],
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_without_bias_and_unbatched_input(kind):
    reference, ours = make_pair(kind, torch.float64, num_layers=2, bias=False, bidirectional=True)
    assert not any("bias" in name for name, _ in ours.named_parameters())
    x = torch.randn(STEPS, INPUT, dtype=torch.float64)  # (T, I): no batch axis
    hx = initial_state(reference, 1, torch.float64, seed=3)
    hx = tuple(s[:, 0] for s in hx) if isinstance(hx, tuple) else hx[:, 0]  # (D·L, H)
    expected, expected_state = reference(x, hx)
    actual, actual_state = ours(x, hx)
    assert actual.shape == expected.shape == (STEPS, 2 * (ours.proj_size or HIDDEN))
    torch.testing.assert_close(actual, expected, atol=1e-10, rtol=1e-10)
    for e, a in zip(_as_tuple(expected_state), _as_tuple(actual_state), strict=True):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kind", list(KINDS))
def test_python_loops_match_torch(kind, monkeypatch):
    """The eager fallback (the loops uncompiled) computes the same as the compiled loops."""
    for module in (lstm_loops, rnn_loops):
        for name in dir(module):
            if name.isupper() and name.endswith(("_FORWARD", "_BACKWARD")):
                monkeypatch.setattr(module, name, getattr(module, name.lower()))
    reference, ours = make_pair(kind, torch.float64, num_layers=2, bidirectional=True)
    x = torch.randn(STEPS, 4, INPUT, dtype=torch.float64)
    hx = initial_state(reference, 4, torch.float64, seed=4)
    assert_same(
        run(reference, x, hx, "unsorted", UNSORTED_LENGTHS, False),
        run(ours, x, hx, "unsorted", UNSORTED_LENGTHS, False),
        1e-10,
    )


def test_loops_are_compiled():
    """On the supported torch the time loops compile; the eager path is only a fallback."""
    loops = [
        rnn_loops.ELMAN_FORWARD,
        rnn_loops.ELMAN_BACKWARD,
        rnn_loops.GRU_FORWARD,
        rnn_loops.GRU_BACKWARD,
        lstm_loops.LSTM_FORWARD,
        lstm_loops.LSTM_BACKWARD,
        lstm_loops.PEEPHOLE_FORWARD,
        lstm_loops.PEEPHOLE_BACKWARD,
        lstm_loops.COUPLED_FORWARD,
        lstm_loops.COUPLED_BACKWARD,
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to Python fails this test
        compiled = [loop._compile() for loop in loops]
    assert all(isinstance(fn, torch.jit.ScriptFunction) for fn in compiled)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm", "lstm_proj", "peephole", "coupled"])
def test_packed_final_state_is_last_valid_output(kind):
    classes = {
        "rnn": rl.RNN,
        "gru": rl.GRU,
        "lstm": rl.LSTM,
        "lstm_proj": rl.LSTM,
        "peephole": rl.PeepholeLSTM,
        "coupled": rl.CoupledLSTM,
    }
    options = {"proj_size": 2} if kind == "lstm_proj" else {}
    module = classes[kind](INPUT, HIDDEN, num_layers=2, bidirectional=True, **options)
    lengths = torch.tensor(UNSORTED_LENGTHS)
    x = torch.randn(STEPS, len(lengths), INPUT)
    out, state = module(pack_padded_sequence(x, lengths, enforce_sorted=False))
    h_n = state[0] if isinstance(state, tuple) else state  # (D·L, B, P)
    padded, padded_lengths = pad_packed_sequence(out)  # (T, B, 2P)
    assert padded_lengths.tolist() == UNSORTED_LENGTHS
    size = h_n.shape[-1]
    for b, length in enumerate(UNSORTED_LENGTHS):
        assert torch.equal(h_n[-2, b], padded[length - 1, b, :size])  # forward: its own last step
        assert torch.equal(h_n[-1, b], padded[0, b, size:])  # reverse: ends at position 0
        assert torch.all(padded[length:, b] == 0)


def test_shape_facts():
    lstm = rl.LSTM(4, 8)
    assert lstm.weight_ih_l0.shape == (32, 4)
    assert lstm.weight_hh_l0.shape == (32, 8)
    assert lstm.bias_ih_l0.shape == lstm.bias_hh_l0.shape == (32,)
    gru = rl.GRU(4, 8, num_layers=2, bidirectional=True, batch_first=True)
    out, h_n = gru(torch.randn(3, 6, 4))
    assert out.shape == (3, 6, 16)
    assert h_n.shape == (4, 3, 8)
    projected = rl.LSTM(4, 8, proj_size=2, num_layers=2, bidirectional=True)
    assert projected.weight_hr_l1_reverse.shape == (2, 8)
    assert projected.weight_ih_l1.shape == (32, 4)  # layer 1 reads D·P = 4 features
    _, (h_n, c_n) = projected(torch.randn(6, 3, 4))
    assert h_n.shape == (4, 3, 2) and c_n.shape == (4, 3, 8)


@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "bidirectional": True, "proj_size": 3}])
def test_state_dict_round_trip(options):
    reference = nn.LSTM(INPUT, HIDDEN, **options)
    ours = rl.LSTM(INPUT, HIDDEN, **options)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, p.shape) for n, p in reference.named_parameters()
    ]
    ours.load_state_dict(reference.state_dict(), strict=True)
    back = nn.LSTM(INPUT, HIDDEN, **options)
    back.load_state_dict(ours.state_dict(), strict=True)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor)


@pytest.mark.parametrize("kind", list(KINDS))
def test_default_init_is_uniform_like_torch(kind):
    """Every parameter ~ U(-1/sqrt(H), 1/sqrt(H)), as torch.nn: bounded, with the uniform's spread."""
    reference_cls, ours_cls, extra = KINDS[kind]
    torch.manual_seed(0)
    ours = ours_cls(16, 32, num_layers=2, **extra)
    bound = 32**-0.5
    for p in ours.parameters():
        assert p.abs().max() <= bound
    values = torch.cat([p.detach().flatten() for p in ours.parameters()])
    torch.testing.assert_close(
        values.std(), torch.tensor(bound / 3**0.5), atol=0.02 * bound, rtol=0
    )
    assert abs(values.mean()) < 0.02 * bound


def test_dropout_between_layers_only_in_training():
    reference, ours = make_pair("gru", torch.float64, num_layers=2, dropout=0.5)
    x = torch.randn(STEPS, 4, INPUT, dtype=torch.float64)
    ours.eval()
    reference.eval()
    torch.testing.assert_close(ours(x)[0], reference(x)[0])
    ours.train()
    torch.manual_seed(0)
    dropped, _ = ours(x)
    assert not torch.allclose(dropped, reference(x)[0])
    with pytest.warns(UserWarning):
        rl.GRU(INPUT, HIDDEN, num_layers=1, dropout=0.5)


def test_rejects_bad_state_and_input():
    lstm = rl.LSTM(INPUT, HIDDEN, num_layers=2)
    x = torch.randn(STEPS, 4, INPUT)
    with pytest.raises(RuntimeError, match="hidden size"):
        lstm(x, (torch.zeros(1, 4, HIDDEN), torch.zeros(1, 4, HIDDEN)))
    with pytest.raises(RuntimeError, match="input_size"):
        lstm(torch.randn(STEPS, 4, INPUT + 1))
    with pytest.raises(ValueError, match="proj_size"):
        rl.GRU(INPUT, HIDDEN, proj_size=2)


@pytest.mark.parametrize("cell", rl.CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_factory_builds_working_scratch_layers(cell, bidirectional):
    module = rl.make_rnn(
        cell, "scratch", input_size=INPUT, hidden_size=HIDDEN, num_layers=2,
        dropout=0.1, bidirectional=bidirectional, batch_first=True,
    )  # fmt: skip
    assert type(module).__module__ == "rnnlab.nn.layers"
    directions = 2 if bidirectional else 1
    out, state = module(torch.randn(4, STEPS, INPUT))
    assert out.shape == (4, STEPS, directions * HIDDEN)
    states = _as_tuple(state)
    assert len(states) == (2 if rl.has_cell_state(cell) else 1)
    assert all(s.shape == (2 * directions, 4, HIDDEN) for s in states)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
