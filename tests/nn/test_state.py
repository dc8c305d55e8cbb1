"""Recurrent-state helpers (``rnnlab.nn.state``) for plain tensors and LSTM ``(h, c)`` pairs.

References: brute-force row picking in plain Python for ``select_batch``, ``torch.nn.LSTM`` / ``GRU``
run on a subset of the batch, and hand-computed gradients for ``detach_state``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from rnnlab.nn.state import detach_state, hidden_of, map_state, select_batch


def brute_force_rows(tensor: Tensor, indices: list[int]) -> Tensor:
    """Batch rows (axis 1) picked one at a time and stacked back along axis 1."""
    return torch.stack([tensor[:, i, :] for i in indices], dim=1)


def test_map_state_applies_the_function_once_to_a_tensor() -> None:
    calls: list[Tensor] = []

    def double(t: Tensor) -> Tensor:
        calls.append(t)
        return t * 2

    h = torch.tensor([[[1.0, -2.0]]])
    out = map_state(h, double)
    assert isinstance(out, Tensor)
    assert out.tolist() == [[[2.0, -4.0]]]
    assert len(calls) == 1 and calls[0] is h


def test_map_state_applies_the_function_to_h_and_c_in_order() -> None:
    seen: list[Tensor] = []

    def negate(t: Tensor) -> Tensor:
        seen.append(t)
        return -t

    h, c = torch.tensor([[[1.0]]]), torch.tensor([[[5.0]]])
    out = map_state((h, c), negate)
    # An LSTM needs a real tuple back (nn.LSTM refuses a list), with h first.
    assert type(out) is tuple and len(out) == 2
    assert out[0].item() == -1.0 and out[1].item() == -5.0
    assert seen[0] is h and seen[1] is c


def test_hidden_of_returns_h_itself() -> None:
    h, c = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    assert hidden_of(h) is h
    assert hidden_of((h, c)) is h


@settings(max_examples=40, deadline=None)
@given(
    layers=st.integers(1, 3),
    batch=st.integers(1, 5),
    hidden=st.integers(1, 4),
    data=st.data(),
)
def test_select_batch_equals_picking_rows_one_by_one(
    layers: int, batch: int, hidden: int, data: st.DataObject
) -> None:
    # Any order and repeats: beam search reorders and duplicates hypotheses this way.
    indices = data.draw(st.lists(st.integers(0, batch - 1), min_size=1, max_size=7))
    h = torch.arange(layers * batch * hidden, dtype=torch.float32).reshape(layers, batch, hidden)
    c = -h - 0.5
    index_tensor = torch.tensor(indices, dtype=torch.long)

    picked_h = select_batch(h, index_tensor)
    assert isinstance(picked_h, Tensor)
    assert torch.equal(picked_h, brute_force_rows(h, indices))

    picked = select_batch((h, c), index_tensor)
    assert isinstance(picked, tuple)
    assert torch.equal(picked[0], brute_force_rows(h, indices))
    assert torch.equal(picked[1], brute_force_rows(c, indices))


def test_select_batch_with_no_indices_keeps_no_rows() -> None:
    h = torch.randn(2, 3, 4)
    empty = select_batch(h, torch.tensor([], dtype=torch.long))
    assert isinstance(empty, Tensor) and empty.shape == (2, 0, 4)


def test_select_batch_gradient_counts_how_often_each_row_was_picked() -> None:
    h = torch.zeros(2, 3, 2, requires_grad=True)
    picked = select_batch(h, torch.tensor([2, 0, 2]))
    assert isinstance(picked, Tensor)
    picked.sum().backward()
    assert h.grad is not None
    # Row 0 picked once, row 1 never, row 2 twice: d(sum)/dh is that count in every cell.
    expected = torch.tensor([1.0, 0.0, 2.0]).view(1, 3, 1).expand(2, 3, 2)
    assert torch.equal(h.grad, expected)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_selected_state_equals_running_the_rnn_on_those_rows_only(cell: str) -> None:
    torch.manual_seed(0)
    kind = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    rnn = kind(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True)
    inputs = torch.randn(5, 6, 3)
    keep = torch.tensor([4, 1, 1])
    with torch.no_grad():
        _, full_state = rnn(inputs)
        _, subset_state = rnn(inputs.index_select(0, keep))
    picked = select_batch(full_state, keep)
    if cell == "lstm":
        assert isinstance(picked, tuple) and isinstance(subset_state, tuple)
        pairs = list(zip(picked, subset_state, strict=True))
    else:
        assert isinstance(picked, Tensor)
        pairs = [(picked, subset_state)]
    for got, want in pairs:
        assert got.shape == (2 * 2, 3, 4)  # (L·D, B, H)
        # allclose, not torch.testing.assert_close, whose first call imports for seconds.
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (got - want).abs().max()


@pytest.mark.parametrize("as_pair", [False, True])
def test_detach_state_keeps_values_and_cuts_the_graph(as_pair: bool) -> None:
    leaf = torch.tensor([1.0, 2.0], requires_grad=True)
    h = leaf * 2  # part of a graph that reaches ``leaf``
    state = (h, h + 1) if as_pair else h
    detached = detach_state(state)
    parts = detached if isinstance(detached, tuple) else (detached,)
    originals = state if isinstance(state, tuple) else (state,)
    for cut, original in zip(parts, originals, strict=True):
        assert not cut.requires_grad and cut.grad_fn is None
        assert torch.equal(cut, original)
        assert cut.data_ptr() == original.data_ptr()  # the values are shared, not copied
    # loss = sum(d · leaf): through the cut only the direct path counts, d/dleaf = d = [2, 4].
    # Without the cut it would be d + 2·leaf = [4, 8].
    (hidden_of(detached) * leaf).sum().backward()
    assert leaf.grad is not None and leaf.grad.tolist() == [2.0, 4.0]
    # The original graph is untouched: it still backpropagates into ``leaf``.
    assert h.grad_fn is not None and h.requires_grad
