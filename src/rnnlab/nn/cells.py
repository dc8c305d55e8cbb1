"""Single-step recurrent cells: drop-in equals of ``torch.nn.RNNCell``/``LSTMCell``/``GRUCell``, plus
the peephole and coupled LSTM cells.

Elman 1990 (RNN), Hochreiter & Schmidhuber 1997 with the forget gate of Gers et al. 2000 (LSTM),
Cho et al. 2014 (GRU), Gers & Schmidhuber 2000 (peepholes), Greff et al. 2017 (coupled gates).

A cell is the textbook equation written once, on plain autograd: it is what a decoder calls one token
at a time, and the readable statement of the arithmetic that the layers' compiled time loops
(:mod:`rnnlab.nn.lstm_loops`, :mod:`rnnlab.nn.rnn_loops`) repeat with a hand-written backward.
Parameters carry the ``torch.nn`` names and shapes, (G·H, I) and (G·H, H) with G gate blocks, so a
``state_dict`` moves between the two.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class _Cell(nn.Module):
    """Parameters, initialisation and the batched/unbatched handling every cell shares."""

    gate_blocks: int = 1
    carries_cell: bool = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        rows = self.gate_blocks * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows, **factory))
            self.bias_hh = nn.Parameter(torch.empty(rows, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self._extra_parameters(factory)
        self.reset_parameters()

    def _extra_parameters(self, factory: dict) -> None:
        """Hook for cells with parameters beyond the four of ``torch.nn``."""

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, the ``torch.nn`` default."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def _gates(self, x: Tensor, h: Tensor) -> Tensor:
        """Pre-activations of all gate blocks, (B, G·H): x W_ih^T + b_ih + h W_hh^T + b_hh."""
        return F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)

    def _batched(self, x: Tensor, states: tuple[Tensor | None, ...]) -> tuple[Tensor, list[Tensor]]:
        """Add the batch axis to unbatched input (I,) and fill missing states with zeros (B, H)."""
        if x.dim() not in (1, 2):
            raise ValueError(f"expected 1-D (unbatched) or 2-D input, got {x.dim()}-D")
        for state in states:
            if state is not None and state.dim() != x.dim():
                raise RuntimeError(
                    f"hidden state must be {x.dim()}-D for {x.dim()}-D input, got {state.dim()}-D"
                )
        if x.dim() == 1:
            x = x.unsqueeze(0)
            states = tuple(None if s is None else s.unsqueeze(0) for s in states)
        expected = (x.size(0), self.hidden_size)
        for state in states:
            if state is not None and tuple(state.shape) != expected:
                raise RuntimeError(
                    f"hidden state has shape {tuple(state.shape)}; expected {expected}"
                )
        zeros = x.new_zeros(expected)
        return x, [zeros if s is None else s for s in states]

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(_Cell):
    """h' = phi(x W_ih^T + b_ih + h W_hh^T + b_hh), phi = tanh or relu.

    x (B, I) or (I,), h (B, H) or (H,) or None for zeros; returns h' of h's shape.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; expected 'tanh' or 'relu'")
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, (h,) = self._batched(input, (hx,))
        pre = self._gates(x, h)
        h = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
        return h.squeeze(0) if input.dim() == 1 else h

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.nonlinearity == "tanh" else text + ", nonlinearity='relu'"


class GRUCell(_Cell):
    """GRU step in the ``torch.nn.GRUCell`` form (gates r, z, n):

    r = σ(W_ir x + b_ir + W_hr h + b_hr), z = σ(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h.
    Shapes as :class:`RNNCell`.
    """

    gate_blocks = 3

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, (h,) = self._batched(input, (hx,))
        gx = F.linear(x, self.weight_ih, self.bias_ih)  # (B, 3H)
        gh = F.linear(h, self.weight_hh, self.bias_hh)  # (B, 3H)
        x_r, x_z, x_n = gx.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        h = (1 - z) * n + z * h
        return h.squeeze(0) if input.dim() == 1 else h


class LSTMCell(_Cell):
    """LSTM step (gates i, f, g, o): c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c').

    x (B, I) or (I,); hx = (h, c), each (B, H) or (H,), or None for zeros; returns (h', c').
    """

    gate_blocks = 4
    carries_cell = True

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        x, (h, c) = self._batched(input, (None, None) if hx is None else hx)
        i, f, g, o = self._gates(x, h).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        return (h.squeeze(0), c.squeeze(0)) if input.dim() == 1 else (h, c)


class PeepholeLSTMCell(_Cell):
    """LSTM step whose gates see the cell through diagonal weights (Gers & Schmidhuber 2000):

    i = σ(·_i + w_ci ⊙ c), f = σ(·_f + w_cf ⊙ c), c' = f ⊙ c + i ⊙ g, o = σ(·_o + w_co ⊙ c'),
    h' = o ⊙ tanh(c'). Extra parameters ``weight_ci``, ``weight_cf``, ``weight_co`` (H,). Calling
    convention as :class:`LSTMCell`.
    """

    gate_blocks = 4
    carries_cell = True

    def _extra_parameters(self, factory: dict) -> None:
        for name in ("weight_ci", "weight_cf", "weight_co"):
            self.register_parameter(name, nn.Parameter(torch.empty(self.hidden_size, **factory)))

    def peepholes(self) -> tuple[Tensor, Tensor, Tensor]:
        """The (H,) peephole weights into the input, forget and output gates."""
        return self.weight_ci, self.weight_cf, self.weight_co  # type: ignore[return-value]

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        x, (h, c) = self._batched(input, (None, None) if hx is None else hx)
        i, f, g, o = self._gates(x, h).chunk(4, dim=1)
        weight_ci, weight_cf, weight_co = self.peepholes()
        i = torch.sigmoid(i + weight_ci * c)
        f = torch.sigmoid(f + weight_cf * c)
        c = f * c + i * torch.tanh(g)
        o = torch.sigmoid(o + weight_co * c)  # the output gate peeks at the new cell
        h = o * torch.tanh(c)
        return (h.squeeze(0), c.squeeze(0)) if input.dim() == 1 else (h, c)


class CoupledLSTMCell(_Cell):
    """LSTM step with coupled input and forget gates, i = 1 − f (gate blocks f, g, o):

    c' = f ⊙ c + (1 − f) ⊙ g, h' = o ⊙ tanh(c'). Weights are (3H, ·). Calling convention as
    :class:`LSTMCell`.
    """

    gate_blocks = 3
    carries_cell = True

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        x, (h, c) = self._batched(input, (None, None) if hx is None else hx)
        f, g, o = self._gates(x, h).chunk(3, dim=1)
        f, g, o = torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + (1 - f) * g
        h = o * torch.tanh(c)
        return (h.squeeze(0), c.squeeze(0)) if input.dim() == 1 else (h, c)
