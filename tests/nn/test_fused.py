"""``rnnlab.nn.fused``: ``torch.nn``'s recurrent layers, kept in float32 under CUDA autocast.

References: ``torch.nn.RNN``/``GRU``/``LSTM`` loaded with the same weights and run outside autocast.
The CUDA branch itself runs on a GPU only (``tests/gpu``); here the same branch is reached on the CPU
by declaring the CPU a device where it applies, with CPU bfloat16 autocast standing in for CUDA's.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.nn import fused

CLASSES = {"rnn": (fused.RNN, nn.RNN), "gru": (fused.GRU, nn.GRU), "lstm": (fused.LSTM, nn.LSTM)}
INPUT, HIDDEN, BATCH, STEPS = 3, 5, 4, 6


def _pair(cell: str) -> tuple[nn.Module, nn.Module]:
    ours_class, torch_class = CLASSES[cell]
    torch.manual_seed(0)
    options = dict(num_layers=2, bidirectional=True, batch_first=True)
    ours = ours_class(INPUT, HIDDEN, **options)
    reference = torch_class(INPUT, HIDDEN, **options)
    reference.load_state_dict(ours.state_dict())  # strict: the same names and shapes
    return ours, reference


def _initial_state(cell: str, dtype: torch.dtype) -> torch.Tensor | tuple[torch.Tensor, ...]:
    h = torch.randn(4, BATCH, HIDDEN, dtype=dtype)
    return (h, torch.randn(4, BATCH, HIDDEN, dtype=dtype)) if cell == "lstm" else h


def _states(state: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("cell", sorted(CLASSES))
def test_a_torch_nn_layer_under_its_own_name(cell: str) -> None:
    ours, reference = _pair(cell)
    assert isinstance(ours, type(reference)) and type(ours).__name__ == type(reference).__name__
    assert list(ours.state_dict()) == list(reference.state_dict())
    x = torch.randn(BATCH, STEPS, INPUT)
    out, state = ours(x)
    expected_out, expected_state = reference(x)
    assert torch.equal(out, expected_out)
    assert all(
        torch.equal(a, b) for a, b in zip(_states(state), _states(expected_state), strict=True)
    )


def test_only_cuda_autocast_takes_the_kernel_out_of_autocast() -> None:
    assert not fused.runs_outside_autocast("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused.runs_outside_autocast("cpu")  # oneDNN's bfloat16 kernels are the gain
    assert not fused.runs_outside_autocast("cuda")  # no CUDA autocast is active


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("cell", sorted(CLASSES))
def test_outside_autocast_the_kernel_runs_in_the_weights_dtype(
    monkeypatch: pytest.MonkeyPatch, cell: str, packed: bool
) -> None:
    monkeypatch.setattr(fused, "runs_outside_autocast", lambda device_type: True)
    ours, reference = _pair(cell)
    torch.manual_seed(1)
    x = torch.randn(BATCH, STEPS, INPUT)
    lengths = torch.tensor([6, 2, 5, 1])
    hx = _initial_state(cell, torch.float32)
    # What autocast hands a layer: bfloat16 activations and states from earlier products.
    low_x = x.to(torch.bfloat16)
    low_hx = tuple(h.to(torch.bfloat16) for h in _states(hx))
    low_hx_arg = low_hx if cell == "lstm" else low_hx[0]

    def run(layer: nn.Module, inputs: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        if not packed:
            return layer(inputs, state)
        sequence = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        out, final = layer(sequence, state)
        return pad_packed_sequence(out, batch_first=True)[0], final

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = run(ours, low_x, low_hx_arg)
    expected_out, expected_state = run(reference, low_x.float(), _cast(low_hx_arg))
    assert out.dtype == torch.float32
    assert torch.equal(out, expected_out)
    for got, want in zip(_states(state), _states(expected_state), strict=True):
        assert got.dtype == torch.float32 and torch.equal(got, want)


def _cast(state: object) -> object:
    if isinstance(state, tuple):
        return tuple(s.float() for s in state)
    assert isinstance(state, torch.Tensor)
    return state.float()


def test_gradients_reach_the_float32_weights_outside_autocast(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fused, "runs_outside_autocast", lambda device_type: True)
    ours, reference = _pair("lstm")
    x = torch.randn(BATCH, STEPS, INPUT)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours(x.to(torch.bfloat16))[0].sum().backward()
    reference(x.to(torch.bfloat16).float())[0].sum().backward()
    for (name, got), want in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert got.grad is not None and got.grad.dtype == torch.float32, name
        assert torch.equal(got.grad, want.grad), name
