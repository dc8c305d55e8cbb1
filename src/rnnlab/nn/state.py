"""Helpers for recurrent states, which are a tensor h (L·D, B, H) or a pair (h, c) for LSTMs.

Models pass states around without caring which kind they hold; these functions are the only place
that knows.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

RecurrentState = Tensor | tuple[Tensor, Tensor]


def map_state(state: RecurrentState, fn: Callable[[Tensor], Tensor]) -> RecurrentState:
    """Apply ``fn`` to h (and c)."""
    if isinstance(state, tuple):
        return (fn(state[0]), fn(state[1]))
    return fn(state)


def select_batch(state: RecurrentState, indices: Tensor) -> RecurrentState:
    """Keep batch rows ``indices`` (batch is axis 1 of every state tensor)."""
    return map_state(state, lambda t: t.index_select(1, indices))


def hidden_of(state: RecurrentState) -> Tensor:
    """The h part of a state: (L·D, B, H)."""
    return state[0] if isinstance(state, tuple) else state


def detach_state(state: RecurrentState) -> RecurrentState:
    """Cut the graph at a truncated-BPTT boundary while keeping the values."""
    return map_state(state, Tensor.detach)
