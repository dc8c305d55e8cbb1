"""One time step of a recurrent stack, with layer 0's input projection supplied by the caller.

A decoder that must run a Python loop over time (attention queried by the previous state, input
feeding) pays per step for what does not depend on the previous step. Calling a ``torch.nn.GRU`` on
one time step at a time recomputes ``W_ih · [e(y_{t-1}) ; c_t]`` in full, checks and flattens weights
and reshapes states at every call. ``StackStepper`` splits the work instead::

    layer 0 input  x_t = [x¹_t ; x²_t ; …]   (column blocks of W_ih⁰, one per part)
    W_ih⁰ x_t + b_ih⁰ = W¹ x¹_t + W² x²_t + … + b_ih⁰
                        └ known for all t before the loop (embeddings): one matmul over (B, T)
                                   └ only what the previous step produced: inside the loop

and keeps per-layer states as a list during the loop, stacking them to (L, B, H) once at the end.

The gate equations are those of ``torch.nn.GRU``/``LSTM``/``RNN`` (same parameter names and layout),
so a stepper runs the weights of either a fused ``torch.nn`` stack or rnnlab's scratch stack of the
same cell; cells without a ``torch.nn`` counterpart (peephole, coupled) have no stepper.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.nn.dropout import dropout
from rnnlab.nn.loop_products import LoopLinear
from rnnlab.nn.precision import autocast_operand, tanh_in_float32_on_cpu
from rnnlab.nn.state import RecurrentState

_GATES = {"gru": 3, "lstm": 4, "rnn_tanh": 1, "rnn_relu": 1}


@dataclass
class LayerWeights:
    w_ih: Tensor
    """(G·H, I) input weights; for layer 0 the caller uses column blocks of it."""
    w_hh: Tensor
    """(G·H, H)"""
    b_ih: Tensor | None
    b_hh: Tensor | None
    recurrent: Callable[[Tensor], Tensor]
    """``h ↦ W_hh h + b_hh``; in a loop's weights a ``LoopLinear`` (``rnnlab.nn.loop_products``)."""
    upward: Callable[[Tensor], Tensor] | None
    """``x ↦ W_ih x + b_ih`` for the layers above the first (the caller projects layer 0's input)."""


def _linear(weight: Tensor, bias: Tensor | None) -> Callable[[Tensor], Tensor]:
    return functools.partial(F.linear, weight=weight, bias=bias)


def _cell_kind(rnn: nn.Module) -> str | None:
    """ "gru", "lstm", "rnn_tanh" or "rnn_relu" for a unidirectional stack without projections."""
    if getattr(rnn, "bidirectional", False) or getattr(rnn, "proj_size", 0):
        return None
    if not getattr(rnn, "batch_first", False):
        return None
    mode = getattr(rnn, "mode", None)  # torch.nn.RNNBase and rnnlab.nn stacks both set it
    if mode == "GRU":
        return "gru"
    if mode == "LSTM":
        return "lstm"
    if mode in ("RNN_TANH", "RNN_RELU"):
        return mode.lower()
    return None


class StackStepper:
    """Run ``rnn``'s weights one time step at a time; see the module docstring.

    Build with ``StackStepper.of(rnn)``, which returns None for stacks it cannot run (bidirectional,
    projected, peephole or coupled cells), so that callers keep their general loop for those. The
    stepper holds no parameters: every call reads them from the stack it is given.
    """

    def __init__(self, *, kind: str, num_layers: int, dropout: float) -> None:
        self.kind = kind
        self.num_layers = num_layers
        self.dropout = dropout

    @classmethod
    def of(cls, rnn: nn.Module) -> StackStepper | None:
        kind = _cell_kind(rnn)
        if kind is None:
            return None
        num_layers: int = getattr(rnn, "num_layers")  # noqa: B009 (a plain int on every stack)
        dropout: float = getattr(rnn, "dropout")  # noqa: B009
        return cls(kind=kind, num_layers=num_layers, dropout=float(dropout))

    def weights(self, rnn: nn.Module, *, loop: bool = False) -> list[LayerWeights]:
        """``rnn``'s current parameters, fetched once per forward (not once per step).

        Under autocast they are cast here, once: autocast caches the casts of parameters but not of
        their column blocks (``split_input``), which it would otherwise cast again at every step.
        ``loop``: the weights serve every step of a loop, so their products are ``LoopLinear`` maps,
        whose weight gradients are summed once after it; otherwise plain ``F.linear``.
        """
        product = LoopLinear if loop else _linear

        def get(name: str) -> Tensor:
            return autocast_operand(getattr(rnn, name))

        bias = getattr(rnn, "bias", True)
        layers = []
        for k in range(self.num_layers):
            w_ih, w_hh = get(f"weight_ih_l{k}"), get(f"weight_hh_l{k}")
            b_ih = get(f"bias_ih_l{k}") if bias else None
            b_hh = get(f"bias_hh_l{k}") if bias else None
            layers.append(
                LayerWeights(
                    w_ih=w_ih,
                    w_hh=w_hh,
                    b_ih=b_ih,
                    b_hh=b_hh,
                    recurrent=product(w_hh, b_hh),
                    upward=product(w_ih, b_ih) if k > 0 else None,
                )
            )
        return layers

    @staticmethod
    def split_input(weights: list[LayerWeights], first_size: int) -> tuple[Tensor, Tensor]:
        """Layer 0's input weights (G·H, I) → the columns of the first ``first_size`` inputs and the
        rest (views, no copies)."""
        w_ih = weights[0].w_ih
        return w_ih[:, :first_size], w_ih[:, first_size:]

    def unstack(self, state: RecurrentState) -> list[RecurrentState]:
        """(L, B, H) state (or an (h, c) pair) → a list of L per-layer states (B, H)."""
        if isinstance(state, tuple):
            return list(zip(state[0].unbind(0), state[1].unbind(0), strict=True))
        return list(state.unbind(0))

    def stack(self, layers: list[RecurrentState]) -> RecurrentState:
        """The inverse of ``unstack``."""
        if self.kind == "lstm":
            return (
                torch.stack([s[0] for s in layers]),
                torch.stack([s[1] for s in layers]),
            )
        return torch.stack(layers)  # type: ignore[arg-type]

    def step(
        self,
        input_gates: Tensor,
        layers: list[RecurrentState],
        weights: list[LayerWeights],
        *,
        training: bool,
    ) -> tuple[Tensor, list[RecurrentState]]:
        """One step: layer 0's ``W_ih x_t + b_ih`` (B, G·H) and per-layer states → top output (B, H).

        ``training`` turns on the dropout between layers, as ``torch.nn`` stacks do in train mode.
        """
        new_layers: list[RecurrentState] = []
        gates_in = input_gates
        output = input_gates  # replaced by layer 0's output below
        for k, (w, state) in enumerate(zip(weights, layers, strict=True)):
            if k > 0:
                if self.dropout > 0 and training:
                    output = dropout(output, self.dropout, training=True)
                assert w.upward is not None
                gates_in = w.upward(output)
            output, new_state = self._cell(gates_in, state, w)
            new_layers.append(new_state)
        return output, new_layers

    def _cell(
        self, gi: Tensor, state: RecurrentState, w: LayerWeights
    ) -> tuple[Tensor, RecurrentState]:
        if self.kind == "lstm":
            h, c = state
            gates = gi + w.recurrent(h)  # (B, 4H): i, f, g, o as in torch.nn
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * tanh_in_float32_on_cpu(g)
            h = torch.sigmoid(o) * tanh_in_float32_on_cpu(c)
            return h, (h, c)
        assert isinstance(state, Tensor)
        h = state
        gh = w.recurrent(h)
        if self.kind == "gru":
            i_r, i_z, i_n = gi.chunk(3, dim=-1)
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = tanh_in_float32_on_cpu(torch.addcmul(i_n, r, h_n))  # i_n + r ⊙ h_n
            h = torch.addcmul(n, z, h - n)  # (1 - z) n + z h
            return h, h
        h = tanh_in_float32_on_cpu(gi + gh) if self.kind == "rnn_tanh" else torch.relu(gi + gh)
        return h, h


__all__ = ["LayerWeights", "StackStepper"]
