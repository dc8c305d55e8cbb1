"""The recurrent layers of an export against the layers they replace.

``PortableRecurrent`` becomes ONNX ``RNN``/``GRU``/``LSTM`` operators whose ``sequence_lens`` must
do what packing does; it is exported once here (every cell, ``torch.nn`` and rnnlab's scratch
layers, in one graph) and run by ONNX Runtime on shapes the trace never saw, against the original
layer run eagerly on a ``PackedSequence`` (with lengths) or on the plain padded batch (without).
``CellStack``, the single-token stack of decoder and language-model steps, runs in PyTorch and is
checked against one step of the original stack. The refusals (projections, ReLU, time-major
stacks) are checked by their messages.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from rnnlab.export.onnx import _export_graph, _session  # noqa: E402
from rnnlab.export.recurrent import CellStack, PortableRecurrent  # noqa: E402
from rnnlab.nn import layers  # noqa: E402
from rnnlab.nn.factory import has_cell_state  # noqa: E402

INPUT_SIZE, HIDDEN_SIZE = 3, 4
ATOL = 1e-5

# (cell, layer class, layers, bidirectional): every cell, both implementations of the GRU and LSTM,
# one- and two-layer stacks, both directions.
STACKS: list[tuple[str, type[nn.Module], int, bool]] = [
    ("rnn", nn.RNN, 2, True),
    ("gru", nn.GRU, 2, True),
    ("lstm", nn.LSTM, 2, True),
    ("gru", layers.GRU, 1, False),
    ("lstm", layers.LSTM, 1, True),
    ("peephole_lstm", layers.PeepholeLSTM, 2, True),
    ("coupled_lstm", layers.CoupledLSTM, 2, True),
]

# (lengths, padded steps) the graph is run with: one token; an unsorted batch larger than the
# traced one; and a batch whose longest sentence ends before the padding does.
SHAPES: list[tuple[list[int], int]] = [([1], 1), ([9, 1, 4, 9, 2, 7], 9), ([3, 5, 2], 8)]


def make_stack(cell: str, cls: type[nn.Module], num_layers: int, bidirectional: bool) -> nn.Module:
    stack = cls(INPUT_SIZE, HIDDEN_SIZE, num_layers, batch_first=True, bidirectional=bidirectional)
    # Scratch layers initialise like torch.nn (small uniform weights); wider weights make the
    # gates saturate differently per cell, so a swapped gate block cannot go unnoticed.
    with torch.no_grad():
        for parameter in stack.parameters():
            parameter.uniform_(-0.8, 0.8)
    return stack.eval()


def output_count() -> int:
    """Graph outputs: per stack, twice (with and without lengths) the outputs and final state."""
    return sum(2 * (3 if has_cell_state(cell) else 2) for cell, *_ in STACKS)


def state_tensors(stack: nn.Module, cell: str, batch: int, seed: int) -> list[Tensor]:
    """A random initial state (h, and c for the LSTM family), (L·D, B, H) each."""
    generator = torch.Generator().manual_seed(seed)
    rows = stack.num_layers * (2 if stack.bidirectional else 1)
    count = 2 if has_cell_state(cell) else 1
    return [torch.randn(rows, batch, HIDDEN_SIZE, generator=generator) for _ in range(count)]


def as_state(tensors: list[Tensor]) -> Tensor | tuple[Tensor, Tensor]:
    return (tensors[0], tensors[1]) if len(tensors) == 2 else tensors[0]


class StackBank(nn.Module):
    """Every stack of ``STACKS`` in one module, run with and without lengths.

    One graph for all of them: exporting is the slow part of this file. Inputs are x (B, T, I),
    lengths (B,) and the flat initial states; outputs per stack are (outputs, *final state) with
    lengths, then the same without.
    """

    def __init__(self, stacks: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.portables = nn.ModuleList(PortableRecurrent(rnn, cell) for cell, rnn in stacks)

    def forward(self, x: Tensor, lengths: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        outputs: list[Tensor] = []
        position = 0
        for portable in self.portables:
            count = 2 if portable.carries_cell else 1
            state = as_state(list(states[position : position + count]))
            position += count
            for stack_lengths in (lengths, None):
                y, final = portable(x, state, stack_lengths)
                outputs += [y, *(final if isinstance(final, tuple) else (final,))]
        return tuple(outputs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[nn.Module], Any]:
    """The original stacks and an ONNX Runtime session of their portable forms, exported by
    rnnlab's own ``_export_graph`` (its translation table for the custom operator)."""
    torch.manual_seed(0)
    stacks = [make_stack(*spec) for spec in STACKS]
    bank = StackBank([(spec[0], stack) for spec, stack in zip(STACKS, stacks, strict=True)])
    x = torch.randn(3, 5, INPUT_SIZE)
    lengths = torch.tensor([5, 2, 4])
    states = [
        t
        for (cell, *_), stack in zip(STACKS, stacks, strict=True)
        for t in state_tensors(stack, cell, 3, 0)
    ]
    batch = torch.export.Dim("batch", min=1, max=64)
    steps = torch.export.Dim("steps", min=1, max=64)
    path = tmp_path_factory.mktemp("recurrent") / "stacks.onnx"
    _export_graph(
        bank,
        (x, lengths, *states),
        path,
        input_names=["x", "lengths", *[f"state.{i}" for i in range(len(states))]],
        output_names=[f"out.{i}" for i in range(output_count())],
        dynamic_shapes=({0: batch, 1: steps}, {0: batch}, tuple({1: batch} for _ in states)),
    )
    return stacks, _session(path)


@torch.no_grad()
def reference(
    stack: nn.Module, x: Tensor, lengths: Tensor | None, state: list[Tensor]
) -> list[Tensor]:
    """The original layer: outputs (B, T, D·H) zero past each length, then its final state."""
    if lengths is None:
        y, final = stack(x, as_state(state))
    else:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        packed_y, final = stack(packed, as_state(state))
        y, _ = pad_packed_sequence(packed_y, batch_first=True, total_length=x.size(1))
    return [y, *(final if isinstance(final, tuple) else (final,))]


@pytest.mark.parametrize(("lengths", "steps"), SHAPES, ids=["one-token", "unsorted", "padded"])
def test_exported_stacks_equal_the_packed_layers(exported, lengths: list[int], steps: int):
    stacks, session = exported
    generator = torch.Generator().manual_seed(steps)
    # Random values in the padding too: what lies past a sentence's end must not reach its outputs,
    # its backward direction or its final state.
    x = torch.randn(len(lengths), steps, INPUT_SIZE, generator=generator)
    length_tensor = torch.tensor(lengths)
    states = [
        state_tensors(stack, cell, len(lengths), seed=index + 1)
        for index, ((cell, *_), stack) in enumerate(zip(STACKS, stacks, strict=True))
    ]
    feed = {"x": x.numpy(), "lengths": length_tensor.numpy()}
    feed.update({f"state.{i}": t.numpy() for i, t in enumerate(t for s in states for t in s)})
    got = iter(session.run(None, feed))
    for spec, stack, state in zip(STACKS, stacks, states, strict=True):
        for stack_lengths in (length_tensor, None):
            for index, want in enumerate(reference(stack, x, stack_lengths, state)):
                np.testing.assert_allclose(
                    next(got),
                    want.numpy(),
                    atol=ATOL,
                    err_msg=f"{spec} lengths={stack_lengths is not None} output {index}",
                )
    assert next(got, None) is None


def test_outputs_past_a_sentence_end_are_zero(exported):
    """The tagger's output layer reads every position: past the end they must be exactly zero."""
    stacks, session = exported
    lengths = np.array([2, 6, 1], dtype=np.int64)
    x = np.random.default_rng(0).standard_normal((3, 6, INPUT_SIZE)).astype(np.float32)
    states = [
        state_tensors(stack, cell, 3, seed=0)
        for (cell, *_), stack in zip(STACKS, stacks, strict=True)
    ]
    feed = {"x": x, "lengths": lengths}
    feed.update({f"state.{i}": t.numpy() for i, t in enumerate(t for s in states for t in s)})
    got = session.run(None, feed)
    position = 0
    for cell, *_ in STACKS:
        outputs = got[position]  # the stack's outputs with lengths
        position += 2 * (3 if has_cell_state(cell) else 2)
        for row, length in enumerate(lengths.tolist()):
            assert not outputs[row, length:].any(), cell
            assert outputs[row, :length].any(), cell


CELL_STACKS: list[tuple[str, type[nn.Module]]] = [
    ("rnn", nn.RNN),
    ("gru", nn.GRU),
    ("lstm", nn.LSTM),
    ("rnn", layers.RNN),
    ("gru", layers.GRU),
    ("lstm", layers.LSTM),
    ("peephole_lstm", layers.PeepholeLSTM),
    ("coupled_lstm", layers.CoupledLSTM),
]


@pytest.mark.parametrize(
    ("cell", "cls"), CELL_STACKS, ids=[f"{c}-{k.__module__.split('.')[0]}" for c, k in CELL_STACKS]
)
def test_cell_stack_steps_like_the_stack(cell: str, cls: type[nn.Module]):
    torch.manual_seed(1)
    stack = make_stack(cell, cls, 2, False)
    step = CellStack(stack, cell).eval()
    state = state_tensors(stack, cell, 4, seed=2)
    x = torch.randn(4, 3, INPUT_SIZE)
    with torch.no_grad():
        want_out, want_state = stack(x[:, :1], as_state(state))
        got_out, got_state = step(x[:, :1], as_state(state))
        # A second step from the state the first left: the state is carried, not rebuilt.
        want_out2, _ = stack(x[:, 1:2], want_state)
        got_out2, _ = step(x[:, 1:2], got_state)
    torch.testing.assert_close(got_out, want_out, atol=ATOL, rtol=0)
    torch.testing.assert_close(got_out2, want_out2, atol=ATOL, rtol=0)
    if has_cell_state(cell):
        assert isinstance(got_state, tuple)
        torch.testing.assert_close(got_state[0], want_state[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(got_state[1], want_state[1], atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(got_state, want_state, atol=ATOL, rtol=0)


def test_cell_stack_does_not_share_weights_with_the_stack():
    """A step stack is a copy: retraining or editing the model must not change an exported step."""
    stack = make_stack("gru", nn.GRU, 1, False)
    step = CellStack(stack, "gru")
    with torch.no_grad():
        stack.weight_ih_l0.add_(1.0)
    assert not torch.equal(step.layers[0].weight_ih, stack.weight_ih_l0)


def test_portable_recurrent_runs_only_in_an_export():
    """The custom operator has no kernel: run eagerly it must say so rather than compute nonsense."""
    portable = PortableRecurrent(make_stack("gru", nn.GRU, 1, False), "gru")
    with pytest.raises(NotImplementedError, match="exists only to be exported"):
        portable(torch.randn(2, 3, INPUT_SIZE))


@pytest.mark.parametrize(
    ("stack", "message"),
    [
        (nn.LSTM(3, 4, batch_first=True, proj_size=2), "proj_size"),
        (nn.RNN(3, 4, batch_first=True, nonlinearity="relu"), "relu activation"),
        (nn.GRU(3, 4, batch_first=False), "batch-first"),
    ],
    ids=["projection", "relu", "time-major"],
)
def test_stacks_without_an_onnx_operator_are_refused(stack: nn.Module, message: str):
    cell = {nn.LSTM: "lstm", nn.RNN: "rnn", nn.GRU: "gru"}[type(stack)]
    with pytest.raises(ValueError, match=message):
        PortableRecurrent(stack, cell)


@pytest.mark.parametrize(
    "stack",
    [
        nn.GRU(3, 4, batch_first=True, bidirectional=True),
        nn.LSTM(3, 4, batch_first=True, proj_size=2),
    ],
    ids=["bidirectional", "projection"],
)
def test_a_step_stack_must_be_unidirectional_and_unprojected(stack: nn.Module):
    with pytest.raises(ValueError, match="unidirectional and without projection"):
        CellStack(stack, "gru" if isinstance(stack, nn.GRU) else "lstm")
