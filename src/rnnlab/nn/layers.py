"""Stacked, optionally bidirectional recurrent layers: drop-in equals of ``torch.nn.RNN``/``GRU``/``LSTM``.

Elman 1990 (RNN), Cho et al. 2014 (GRU), Hochreiter & Schmidhuber 1997 (LSTM), Sak et al. 2014 (LSTM
projection), Schuster & Paliwal 1997 (bidirectional), Gers & Schmidhuber 2000 (peephole LSTM),
Greff et al. 2017 (coupled input-forget gate).

Parameter names, shapes, default initialisation, calling convention and return values follow
``torch.nn``, so a ``state_dict`` moves between the two in both directions. Each layer and direction
runs as one autograd function (:mod:`rnnlab.nn.recurrence`) over the token layout of a
``PackedSequence`` (:mod:`rnnlab.nn.schedule`); padded input is the special case of a batch that
never shrinks. How the stack is wired, with L layers and D directions::

    x (N, I) ─▶ layer 0 ─┬─ forward  ─▶ (N, P) ─┐
                         └─ backward ─▶ (N, P) ─┴─ cat ─▶ (N, D·P) ─▶ dropout ─▶ layer 1 ─▶ ...
    h_n[layer·D + direction] = last state of that direction        (D·L, B, P)

P is the output size of a layer: ``proj_size`` when the LSTM projects, else H.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence

from rnnlab.nn import recurrence
from rnnlab.nn.schedule import Schedule

State = Tensor | tuple[Tensor, Tensor]
ParamShapes = list[tuple[str, tuple[int, ...] | None]]


def check_dropout(dropout: object) -> None:
    """Refuse what ``torch.nn``'s layers refuse: a bool, a non-number, a value outside [0, 1]
    (compared exactly, before any rounding to float)."""
    try:
        in_range = (
            isinstance(dropout, numbers.Number)
            and not isinstance(dropout, bool)
            and 0 <= dropout <= 1  # type: ignore[operator]
        )
    except (TypeError, ArithmeticError):  # no order (a complex number), or a Decimal NaN
        in_range = False
    if not in_range:
        raise ValueError(f"dropout should be a number in range [0, 1], got {dropout!r}")


class _RecurrentStack(nn.Module):
    """What every stack shares: parameters, state handling, input layouts and the layer loop.

    A subclass states its gate count, whether it carries a cell state, its per-direction parameter
    shapes, and how one direction runs (``_direction``).
    """

    mode: str = ""
    gate_blocks: int = 1
    carries_cell: bool = False
    projects: bool = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_dropout(dropout)
        if input_size <= 0 or hidden_size <= 0 or num_layers <= 0:
            raise ValueError("input_size, hidden_size and num_layers must be positive")
        if proj_size and not self.projects:
            raise ValueError(f"proj_size is only supported by LSTM, not {type(self).__name__}")
        if proj_size < 0 or (proj_size and proj_size >= hidden_size):
            raise ValueError("proj_size has to be a non-negative integer smaller than hidden_size")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout acts between recurrent layers; with num_layers=1 it does nothing",
                stacklevel=2,
            )
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        # Names of every direction's parameters in the order its loop takes them (None: absent).
        self._direction_names: list[list[str | None]] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else self.output_size * self.num_directions
            for direction in range(self.num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                names: list[str | None] = []
                for stem, shape in self._direction_shapes(layer_input):
                    if shape is None:
                        names.append(None)
                        continue
                    self.register_parameter(
                        stem + suffix, nn.Parameter(torch.empty(shape, **factory))
                    )
                    names.append(stem + suffix)
                self._direction_names.append(names)
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Size of h_t and of each direction's output: ``proj_size`` when projecting, else H."""
        return self.proj_size or self.hidden_size

    def _direction_shapes(self, layer_input: int) -> ParamShapes:
        rows = self.gate_blocks * self.hidden_size
        bias = (rows,) if self.bias else None
        return [
            ("weight_ih", (rows, layer_input)),
            ("weight_hh", (rows, self.output_size)),
            ("bias_ih", bias),
            ("bias_hh", bias),
        ]

    def _direction(
        self, x: Tensor, states: list[Tensor], params: list[Tensor | None], schedule: Schedule
    ) -> tuple[Tensor, ...]:
        """Run one direction of one layer: returns (out (N, P), *final states (B, ·))."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, the ``torch.nn`` default."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, for code written against ``torch.nn`` (there is no cuDNN weight buffer here)."""

    @property
    def all_weights(self) -> list[list[Tensor]]:
        return [
            [getattr(self, name) for name in names if name is not None]
            for names in self._direction_names
        ]

    def _params(self, index: int) -> list[Tensor | None]:
        return [
            None if name is None else getattr(self, name) for name in self._direction_names[index]
        ]

    def _state_sizes(self) -> list[int]:
        sizes = [self.output_size]
        return [*sizes, self.hidden_size] if self.carries_cell else sizes

    def _initial_states(
        self, hx: State | None, batch: int, like: Tensor, unbatched: bool, order: Tensor | None
    ) -> list[Tensor]:
        """The initial states as (D·L, B, ·) tensors, in the sorted order of a packed batch."""
        layers = self.num_layers * self.num_directions
        if hx is None:
            return [like.new_zeros(layers, batch, size) for size in self._state_sizes()]
        given: list[Tensor] = list(hx) if isinstance(hx, (tuple, list)) else [hx]
        if self.carries_cell and len(given) != 2:
            raise ValueError("expected hx to be a tuple (h_0, c_0)")
        states = []
        for state, size in zip(given, self._state_sizes(), strict=True):
            if unbatched:
                if state.dim() != 2:
                    raise RuntimeError(f"for unbatched input hx should be 2-D, got {state.dim()}-D")
                state = state.unsqueeze(1)
            expected = (layers, batch, size)
            if tuple(state.shape) != expected:
                raise RuntimeError(f"Expected hidden size {expected}, got {tuple(state.shape)}")
            states.append(state if order is None else state.index_select(1, order))
        return states

    def forward(self, input: Tensor | PackedSequence, hx: State | None = None):
        """Run the stack, exactly as ``torch.nn.RNN``/``GRU``/``LSTM`` do.

        input: (T, B, I), (B, T, I) with ``batch_first``, (T, I) unbatched, or a ``PackedSequence``.
        hx: h_0 (D·L, B, P) -- for the LSTM family a pair (h_0, c_0 (D·L, B, H)) -- or None for zeros;
        for a packed batch in the caller's (unsorted) order. Returns (output, h_n) or
        (output, (h_n, c_n)): output (T, B, D·P) / (B, T, D·P) / a ``PackedSequence`` like the input,
        h_n (D·L, B, P), c_n (D·L, B, H); unbatched input drops B.
        """
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            batch, schedule, unbatched = int(batch_sizes[0]), Schedule.packed(batch_sizes), False
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"expected 2-D (unbatched) or 3-D input, got {input.dim()}-D")
            unbatched, sorted_indices = input.dim() == 2, None
            if unbatched:
                x = input.unsqueeze(1)  # (T, 1, I)
            else:
                x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
            steps, batch = x.shape[0], x.shape[1]
            data = x.reshape(steps * batch, x.shape[2])  # (T·B, I), time-major
            schedule = Schedule.padded(steps, batch)
        if data.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {data.shape[-1]}"
            )
        states = self._initial_states(hx, batch, data, unbatched, sorted_indices)
        data, states = self._in_parameter_dtype(data, states)
        with torch.autocast(data.device.type, enabled=False):
            layer_input, last_states = self._run_layers(data, states, schedule)

        if isinstance(input, PackedSequence):
            packed = PackedSequence(layer_input, batch_sizes, sorted_indices, unsorted_indices)
            if unsorted_indices is not None:
                last_states = [state.index_select(1, unsorted_indices) for state in last_states]
            return packed, self._final(last_states)
        output = layer_input.view(steps, batch, self.num_directions * self.output_size)
        if unbatched:
            output, last_states = output.squeeze(1), [s.squeeze(1) for s in last_states]
        elif self.batch_first:
            output = output.transpose(0, 1)  # (B, T, D·P)
        return output, self._final(last_states)

    def _in_parameter_dtype(
        self, data: Tensor, states: list[Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        """The tokens and initial states in the parameters' dtype. The hand-written loops add
        products in place, so they run in one dtype with autocast off (as ``torch.nn``'s layers
        compute their gates in one dtype): under autocast the input and states are cast to it;
        without it another dtype is refused, as ``torch.nn`` refuses it."""
        first = self._params(0)[0]  # weight_ih_l0
        assert first is not None
        dtype = first.dtype
        if torch.is_autocast_enabled(data.device.type):
            return data.to(dtype), [state.to(dtype) for state in states]
        if data.dtype != dtype:
            raise ValueError(f"input must have the type {dtype}, got type {data.dtype}")
        if any(state.dtype != dtype for state in states):
            raise RuntimeError(f"hidden states must have the type {dtype}, as the input has")
        return data, states

    def _run_layers(
        self, data: Tensor, states: list[Tensor], schedule: Schedule
    ) -> tuple[Tensor, list[Tensor]]:
        """Every layer over the tokens ``data`` (N, I): the last layer's outputs (N, D·P) and the
        final states (D·L, B, ·)."""
        layer_input = data
        finals: list[list[Tensor]] = [[] for _ in states]
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                out, *last = self._direction(
                    layer_input,
                    [state[index] for state in states],
                    self._params(index),
                    schedule.reversed() if direction else schedule,
                )
                outputs.append(out)
                for collected, state in zip(finals, last, strict=True):
                    collected.append(state)
            layer_input = torch.cat(outputs, 1) if len(outputs) > 1 else outputs[0]  # (N, D·P)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        return layer_input, [torch.stack(collected) for collected in finals]

    def _final(self, last_states: list[Tensor]) -> State:
        """h_n, or (h_n, c_n) for the LSTM family."""
        if self.carries_cell:
            return last_states[0], last_states[1]
        return last_states[0]

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            text += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text


class RNN(_RecurrentStack):
    """Elman RNN, h_t = phi(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), phi = tanh or relu.

    Same arguments as ``torch.nn.RNN``; ``input_size``, ``hidden_size`` and ``num_layers`` may be given
    by position, the rest by keyword.
    """

    gate_blocks = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        nonlinearity: str = "tanh",
        **kwargs,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; expected 'tanh' or 'relu'")
        super().__init__(input_size, hidden_size, num_layers, **kwargs)
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"

    def _direction(self, x, states, params, schedule):
        relu = self.nonlinearity == "relu"
        return recurrence.elman_direction(x, states[0], params, schedule, relu=relu)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.nonlinearity == "tanh" else text + ", nonlinearity='relu'"


class GRU(_RecurrentStack):
    """Gated recurrent unit (gates r, z, n in the ``torch.nn.GRU`` layout); arguments as ``torch.nn.GRU``."""

    mode = "GRU"
    gate_blocks = 3

    def _direction(self, x, states, params, schedule):
        return recurrence.gru_direction(x, states[0], params, schedule)


class LSTM(_RecurrentStack):
    """Long short-term memory (gates i, f, g, o), optionally projected; arguments as ``torch.nn.LSTM``.

    With ``proj_size`` P > 0, h_t = W_hr (o_t * tanh(c_t)) has size P, and ``weight_hr_l{k}`` is (P, H).
    """

    mode = "LSTM"
    gate_blocks = 4
    carries_cell = True
    projects = True

    def _direction_shapes(self, layer_input: int) -> ParamShapes:
        projection = (self.proj_size, self.hidden_size) if self.proj_size else None
        return [*super()._direction_shapes(layer_input), ("weight_hr", projection)]

    def _direction(self, x, states, params, schedule):
        return recurrence.lstm_direction(x, states[0], states[1], params, schedule)


class PeepholeLSTM(_RecurrentStack):
    """LSTM whose gates see the cell: i, f see c_{t-1}, o sees c_t (Gers & Schmidhuber 2000).

    The peepholes are diagonal, one (H,) vector per gate per direction: ``weight_ci_l{k}``,
    ``weight_cf_l{k}``, ``weight_co_l{k}``. Arguments and calling convention as ``LSTM`` without
    ``proj_size``.
    """

    mode = "PEEPHOLE_LSTM"
    gate_blocks = 4
    carries_cell = True

    def _direction_shapes(self, layer_input: int) -> ParamShapes:
        diagonal = (self.hidden_size,)
        return [
            *super()._direction_shapes(layer_input),
            ("weight_ci", diagonal),
            ("weight_cf", diagonal),
            ("weight_co", diagonal),
        ]

    def _direction(self, x, states, params, schedule):
        return recurrence.peephole_direction(x, states[0], states[1], params, schedule)


class CoupledLSTM(_RecurrentStack):
    """LSTM with one gate deciding both what to forget and what to write: i_t = 1 - f_t.

    Three gate blocks (f, g, o), so ``weight_ih_l{k}`` is (3H, ·). Arguments and calling convention
    as ``LSTM`` without ``proj_size``.
    """

    mode = "COUPLED_LSTM"
    gate_blocks = 3
    carries_cell = True

    def _direction(self, x, states, params, schedule):
        return recurrence.coupled_direction(x, states[0], states[1], params, schedule)
