"""``rnnlab.nn.factory``: which class ``make_rnn`` builds and what it passes on.

References: the ``torch.nn.RNN``/``GRU``/``LSTM`` classes themselves (and a ``torch.nn`` layer built
directly with the same arguments, whose weights the scratch layer loads and whose outputs it must
reproduce), the ``Literal`` type aliases, and the state each built layer actually returns.
(``tests/nn/test_layers.py`` runs the scratch layers the factory builds; this file checks the
fused side, the fallbacks, the forwarded options and the errors.)
"""

from __future__ import annotations

import typing
import warnings

import pytest
import torch
from torch import Tensor, nn

from rnnlab.nn import fused, layers
from rnnlab.nn.factory import CELLS, IMPLS, CellName, RnnImpl, has_cell_state, make_rnn
from tests.numeric import assert_near

INPUT, HIDDEN, BATCH, STEPS = 3, 4, 2, 5

FUSED = {"rnn": fused.RNN, "gru": fused.GRU, "lstm": fused.LSTM}
SCRATCH = {
    "rnn": layers.RNN,
    "gru": layers.GRU,
    "lstm": layers.LSTM,
    "peephole_lstm": layers.PeepholeLSTM,
    "coupled_lstm": layers.CoupledLSTM,
}


def test_names_agree_with_the_literal_types() -> None:
    """The type aliases and the tuples checked at run time name the same choices, in order."""
    assert typing.get_args(CellName) == CELLS
    assert typing.get_args(RnnImpl) == IMPLS


@pytest.mark.parametrize("impl", ["fused", "scratch"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "peephole_lstm", "coupled_lstm"])
def test_builds_torch_nn_where_it_has_the_cell_and_scratch_otherwise(cell: str, impl: str) -> None:
    module = make_rnn(cell, impl, input_size=INPUT, hidden_size=HIDDEN)
    # Exact classes: a scratch subclass of torch.nn would not count as "fused".
    expected = FUSED[cell] if impl == "fused" and cell in FUSED else SCRATCH[cell]
    assert type(module) is expected
    # The fused classes are torch.nn's own (cuDNN and oneDNN kernels), the scratch ones are not.
    torch_class = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}.get(cell)
    is_torch = torch_class is not None and isinstance(module, torch_class)
    assert is_torch == (impl == "fused" and cell in FUSED)


@pytest.mark.parametrize("impl", ["fused", "scratch"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "peephole_lstm", "coupled_lstm"])
def test_has_cell_state_matches_the_state_the_layer_returns(cell: str, impl: str) -> None:
    torch.manual_seed(0)
    module = make_rnn(cell, impl, input_size=INPUT, hidden_size=HIDDEN, num_layers=2)
    _, state = module(torch.randn(BATCH, STEPS, INPUT))  # batch_first by default
    if has_cell_state(cell):
        assert isinstance(state, tuple) and len(state) == 2
        assert state[0].shape == state[1].shape == (2, BATCH, HIDDEN)
    else:
        assert isinstance(state, Tensor) and state.shape == (2, BATCH, HIDDEN)


@pytest.mark.parametrize("impl", ["fused", "scratch"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_options_are_forwarded(impl: str, bidirectional: bool, batch_first: bool) -> None:
    module = make_rnn(
        "gru",
        impl,
        input_size=INPUT,
        hidden_size=HIDDEN,
        num_layers=3,
        dropout=0.25,
        bidirectional=bidirectional,
        batch_first=batch_first,
    )
    assert module.input_size == INPUT and module.hidden_size == HIDDEN
    assert module.num_layers == 3 and module.dropout == 0.25
    assert module.bidirectional == bidirectional and module.batch_first == batch_first
    directions = 2 if bidirectional else 1
    shape = (BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT)
    outputs, state = module.eval()(torch.zeros(shape))
    assert outputs.shape == shape[:2] + (directions * HIDDEN,)
    assert state.shape == (3 * directions, BATCH, HIDDEN)


@pytest.mark.parametrize("impl", ["fused", "scratch"])
def test_dropout_of_a_single_layer_is_dropped_without_a_warning(impl: str) -> None:
    """torch.nn warns that dropout between layers of a one-layer stack does nothing; the factory
    asks for 0 instead, so one config can serve one and several layers."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = make_rnn("lstm", impl, input_size=INPUT, hidden_size=HIDDEN, dropout=0.5)
    assert module.dropout == 0.0


def test_defaults_are_one_forward_batch_first_layer() -> None:
    module = make_rnn("gru", input_size=INPUT, hidden_size=HIDDEN)
    assert type(module) is fused.GRU  # impl defaults to fused
    assert module.num_layers == 1 and not module.bidirectional and module.batch_first


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_scratch_layer_reproduces_the_fused_one_with_its_weights(cell: str) -> None:
    """The two implementations take the same parameter names and return the same values, so a
    model never needs to know which one it holds (and checkpoints move between them)."""
    torch.manual_seed(0)
    options = dict(input_size=INPUT, hidden_size=HIDDEN, num_layers=2, bidirectional=True)
    fused = make_rnn(cell, "fused", **options).double()
    scratch = make_rnn(cell, "scratch", **options).double()
    scratch.load_state_dict(fused.state_dict())  # strict: the names must match one to one
    inputs = torch.randn(BATCH, STEPS, INPUT, dtype=torch.float64)  # (B, T, I)
    expected_outputs, expected_state = fused(inputs)
    outputs, state = scratch(inputs)
    assert_near(outputs, expected_outputs)
    for part, expected in zip(
        state if isinstance(state, tuple) else (state,),
        expected_state if isinstance(expected_state, tuple) else (expected_state,),
        strict=True,
    ):
        assert_near(part, expected)


def test_unknown_cell_or_impl_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown cell 'lstmm'.*peephole_lstm"):
        make_rnn("lstmm", input_size=INPUT, hidden_size=HIDDEN)
    with pytest.raises(ValueError, match="unknown rnn_impl 'cudnn'.*fused, scratch"):
        make_rnn("gru", "cudnn", input_size=INPUT, hidden_size=HIDDEN)


def test_has_cell_state_by_name() -> None:
    assert [cell for cell in CELLS if has_cell_state(cell)] == [
        "lstm",
        "peephole_lstm",
        "coupled_lstm",
    ]
