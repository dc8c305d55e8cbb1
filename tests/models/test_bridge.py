"""``rnnlab.models.bridge``: merging a bidirectional encoder's final states and mapping them to H.

References: the layer-major ordering of a real bidirectional ``torch.nn.GRU``/``LSTM`` (its final
states against its own per-position outputs), index loops written out by hand, the bridge's
``tanh(W x + b)`` computed with plain matrix products, and central finite differences in float64.
(``tests/models/test_attention.py`` already checks the top layer's concatenation and the h path of
an LSTM bridge on one example; this file covers every layer, the c path, the GRU path and errors.)
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from rnnlab.models.bridge import Bridge, merge_directions
from tests.numeric import assert_near, check_gradients

HIDDEN, BATCH, STEPS, INPUT = 4, 3, 5, 2


def merge_by_loop(hidden: Tensor, num_directions: int) -> Tensor:
    """(L·D, B, H) → (L, B, D·H) with explicit indices: row ``D·l + d`` is layer l, direction d."""
    layers = hidden.size(0) // num_directions
    merged = []
    for layer in range(layers):
        parts = [hidden[num_directions * layer + d] for d in range(num_directions)]  # D × (B, H)
        merged.append(torch.cat(parts, dim=-1))  # (B, D·H)
    return torch.stack(merged)  # (L, B, D·H)


def affine_tanh(inputs: Tensor, layer: nn.Linear) -> Tensor:
    """tanh(x Wᵀ + b) by a plain matrix product, independent of ``nn.Linear.forward``."""
    return torch.tanh(inputs @ layer.weight.T + layer.bias)


@settings(max_examples=40, deadline=None)
@given(
    layers=st.integers(1, 3),
    directions=st.integers(1, 3),
    batch=st.integers(1, 4),
    size=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_merge_directions_matches_an_index_loop(
    layers: int, directions: int, batch: int, size: int, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(layers * directions, batch, size, generator=generator)  # (L·D, B, H)
    merged = merge_directions(hidden, directions)
    assert merged.shape == (layers, batch, directions * size)
    assert torch.equal(merged, merge_by_loop(hidden, directions))  # a pure reshuffle: exact


@pytest.mark.parametrize("kind", [nn.GRU, nn.LSTM])
def test_merged_top_layer_is_the_last_forward_and_first_backward_output(kind: type) -> None:
    """torch.nn's final states, merged, must line up with its outputs: the forward direction ends at
    the last position, the backward one at the first, and each layer's pair sits in its own row."""
    torch.manual_seed(0)
    rnn = kind(INPUT, HIDDEN, num_layers=2, bidirectional=True, batch_first=True).double()
    inputs = torch.randn(BATCH, STEPS, INPUT, dtype=torch.float64)
    outputs, state = rnn(inputs)  # (B, T, 2H)
    hidden = state[0] if isinstance(state, tuple) else state  # (2·L, B, H)
    merged = merge_directions(hidden, 2)  # (L, B, 2H)
    top = torch.cat([outputs[:, -1, :HIDDEN], outputs[:, 0, HIDDEN:]], dim=-1)  # (B, 2H)
    assert_near(merged[-1], top)
    # Layer 0's final states are the top layer's inputs; rerunning a one-layer copy of layer 0
    # gives them independently of the stack's state ordering.
    bottom = kind(INPUT, HIDDEN, num_layers=1, bidirectional=True, batch_first=True).double()
    bottom.load_state_dict({k: v for k, v in rnn.state_dict().items() if "_l0" in k})
    bottom_outputs, _ = bottom(inputs)  # (B, T, 2H)
    first = torch.cat([bottom_outputs[:, -1, :HIDDEN], bottom_outputs[:, 0, HIDDEN:]], dim=-1)
    assert_near(merged[0], first)


def test_lstm_bridge_maps_h_and_c_with_their_own_layers() -> None:
    torch.manual_seed(0)
    bridge = Bridge(hidden_size=HIDDEN, cell_state=True).double()
    h = torch.randn(4, BATCH, HIDDEN, dtype=torch.float64)  # (2·L, B, H), L = 2
    c = torch.randn(4, BATCH, HIDDEN, dtype=torch.float64)
    out_h, out_c = bridge((h, c))  # (L, B, H) each
    assert out_h.shape == out_c.shape == (2, BATCH, HIDDEN)
    assert_near(out_h, affine_tanh(merge_by_loop(h, 2), bridge.hidden_layer))
    # c must go through the cell layer, not the hidden one (the two are initialised differently).
    assert bridge.cell_layer is not None
    assert_near(out_c, affine_tanh(merge_by_loop(c, 2), bridge.cell_layer))
    assert not torch.allclose(out_c, affine_tanh(merge_by_loop(c, 2), bridge.hidden_layer))


def test_gru_bridge_maps_a_single_tensor_and_has_no_cell_layer() -> None:
    torch.manual_seed(0)
    bridge = Bridge(hidden_size=HIDDEN, cell_state=False).double()
    assert bridge.cell_layer is None
    assert sum(p.numel() for p in bridge.parameters()) == 2 * HIDDEN * HIDDEN + HIDDEN
    h = torch.randn(6, BATCH, HIDDEN, dtype=torch.float64)  # (2·L, B, H), L = 3
    out = bridge(h)
    assert isinstance(out, Tensor) and out.shape == (3, BATCH, HIDDEN)
    assert_near(out, affine_tanh(merge_by_loop(h, 2), bridge.hidden_layer))


def test_gru_bridge_refuses_an_lstm_pair() -> None:
    bridge = Bridge(hidden_size=HIDDEN, cell_state=False)
    h = torch.zeros(2, BATCH, HIDDEN)
    with pytest.raises(ValueError, match=r"\(h, c\) pair"):
        bridge((h, h))


def test_bridge_outputs_are_bounded_by_tanh() -> None:
    """Large encoder states still give a decoder state in (-1, 1), as a tanh RNN's state is."""
    torch.manual_seed(0)
    bridge = Bridge(hidden_size=HIDDEN, cell_state=True)
    h = 100 * torch.randn(2, BATCH, HIDDEN)  # (2·L, B, H), L = 1
    out_h, out_c = bridge((h, h))
    assert out_h.abs().max() <= 1 and out_c.abs().max() <= 1


def test_bridge_gradients_match_finite_differences() -> None:
    torch.manual_seed(0)
    bridge = Bridge(hidden_size=3, cell_state=True).double()
    h = torch.randn(4, 2, 3, dtype=torch.float64)  # (2·L, B, H), L = 2
    c = torch.randn(4, 2, 3, dtype=torch.float64)
    names = [name for name, _ in bridge.named_parameters()]

    def run(h: Tensor, c: Tensor, *weights: Tensor) -> Tensor:
        parameters = dict(zip(names, weights, strict=True))
        out_h, out_c = torch.func.functional_call(bridge, parameters, ((h, c),))
        return torch.cat([out_h.flatten(), out_c.flatten()])

    check_gradients(run, [h, c, *(p.detach() for p in bridge.parameters())])
