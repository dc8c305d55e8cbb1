"""Where each time step lives in a time-major token matrix, and how a time loop is compiled.

Every recurrent layer in rnnlab runs on the layout of a ``PackedSequence``: the tokens of all sequences
stacked time-major into one matrix (N, ·), step ``t`` holding the first ``batch_sizes[t]`` sequences
(sorted longest first) at rows ``offsets[t] : offsets[t] + batch_sizes[t]``::

    lengths 3, 2, 1        batch_sizes 3, 2, 1        offsets 0, 3, 5

    row:  0   1   2 | 3   4 | 5
    seq:  a0  b0  c0| a1  b1| a2          (N = 6 tokens, no padding anywhere)

A padded (T, B, ·) batch is the same layout with every ``batch_sizes[t] = B``, so one loop serves
both, and packed input pays nothing for padding: the batch shrinks as sequences end.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Schedule:
    """Batch size and first row of every time step; ``reverse`` walks the steps from last to first."""

    batch_sizes: list[int]
    offsets: list[int]
    reverse: bool = False

    @staticmethod
    def packed(batch_sizes: Tensor, *, reverse: bool = False) -> Schedule:
        """Schedule of a ``PackedSequence`` from its (T,) ``batch_sizes``."""
        sizes = [int(b) for b in batch_sizes.tolist()]
        offsets = [0] * len(sizes)
        for t in range(1, len(sizes)):
            offsets[t] = offsets[t - 1] + sizes[t - 1]
        return Schedule(sizes, offsets, reverse)

    @staticmethod
    def padded(steps: int, batch: int, *, reverse: bool = False) -> Schedule:
        """Schedule of a padded (T, B, ·) batch flattened to (T·B, ·)."""
        return Schedule([batch] * steps, [t * batch for t in range(steps)], reverse)

    def reversed(self) -> Schedule:
        return Schedule(self.batch_sizes, self.offsets, not self.reverse)


class CompiledLoop:
    """A time loop compiled with TorchScript on its first call, or run as Python if that fails.

    TorchScript runs the loop without the Python interpreter between the per-step kernels and keeps
    the loop a loop, whatever the number of steps. ``torch.compile`` traces the Python loop instead:
    it unrolls it and guards on the ``batch_sizes`` list, so every new sequence length or packed
    layout means a new compilation -- in a training run, nearly every batch.

    Compiling waits for the first call so that ``import rnnlab.nn`` stays cheap and a program that
    never runs a scratch layer never compiles one. A failed compile is reported once, as a
    ``RuntimeWarning`` naming the loop, and the plain Python loop runs instead, with the same results.
    """

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self._compiled: Callable | None = None

    def __call__(self, *args: Any) -> Any:
        if self._compiled is None:
            self._compiled = self._compile()
        return self._compiled(*args)

    def _compile(self) -> Callable:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.script(self.fn)
        except Exception as exc:  # noqa: BLE001 - any failure to compile means: run the Python loop
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            warnings.warn(
                f"TorchScript could not compile the time loop {self.__name__} "
                f"({type(exc).__name__}: {reason}); running it as Python (same results, slower)",
                RuntimeWarning,
                stacklevel=3,
            )
            return self.fn


# The helpers below run inside the compiled loops, so they keep to what TorchScript understands.


def time_index(step: int, steps: int, backwards: bool) -> int:
    """The time step visited at loop iteration ``step`` when walking forwards or backwards in time."""
    return steps - 1 - step if backwards else step


def fit_state(state: Tensor, initial: Tensor, batch: int, finished: list[Tensor]) -> Tensor:
    """Cut or extend the running (b, ·) state to the ``batch`` sequences active at this step.

    Walking forwards in time the batch only shrinks: the rows that drop out have ended and are parked
    in ``finished``. Walking backwards it only grows: the rows that join start from ``initial``.
    """
    current = state.size(0)
    if current > batch:
        finished.append(state[batch:])
        return state[:batch]
    if current < batch:
        return torch.cat([state, initial[current:batch]])
    return state


def final_state(state: Tensor, finished: list[Tensor]) -> Tensor:
    """Reassemble the (B, ·) last state of every sequence; ``finished`` holds tails, latest first."""
    parts = [state]
    for k in range(len(finished)):
        parts.append(finished[len(finished) - 1 - k])
    return torch.cat(parts) if len(parts) > 1 else state
