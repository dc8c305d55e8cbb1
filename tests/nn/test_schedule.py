"""``rnnlab.nn.schedule``: the time-major packed layout and the state helpers of the time loops.

References: ``torch.nn.utils.rnn.pack_padded_sequence`` for where each step's rows live, the
docstring's worked example, hand-made states for ``fit_state``/``final_state``, and a recurrence
run one sequence at a time over the padded batch against the same recurrence walked over the packed
layout with the helpers, forwards and backwards, as Python and compiled with TorchScript
(hypothesis over lengths). The failed-compile path of ``CompiledLoop`` is covered by
``tests/nn/test_compiled_loop.py``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence

from rnnlab.nn.schedule import CompiledLoop, Schedule, final_state, fit_state, time_index

FEATURES = 2


def walk(
    data: Tensor, h0: Tensor, batch_sizes: list[int], offsets: list[int], reverse: bool
) -> Tensor:
    """h ← h / 2 + x_t over a packed (N, F) batch, as ``rnn_loops.elman_forward`` walks it.

    Halving makes the result depend on the order of the steps, so walking the wrong way, or mixing
    rows of different sequences, changes it.
    """
    steps = len(batch_sizes)
    h = h0[: batch_sizes[time_index(0, steps, reverse)]]
    finished: list[Tensor] = []
    for step in range(steps):
        t = time_index(step, steps, reverse)
        batch, first = batch_sizes[t], offsets[t]
        h = fit_state(h, h0, batch, finished)
        h = h / 2 + data[first : first + batch]
    return final_state(h, finished)


COMPILED_WALK = CompiledLoop(walk)


def walk_each_sequence(padded: Tensor, lengths: list[int], h0: Tensor, reverse: bool) -> Tensor:
    """The same recurrence, one sequence at a time over its own tokens: padded (B, T, F)."""
    finals = []
    for row, length in enumerate(lengths):
        h = h0[row]
        times = range(length - 1, -1, -1) if reverse else range(length)
        for t in times:
            h = h / 2 + padded[row, t]
        finals.append(h)
    return torch.stack(finals)  # (B, F)


def test_packed_schedule_of_the_docstring_example() -> None:
    schedule = Schedule.packed(torch.tensor([3, 2, 1]))  # lengths 3, 2, 1
    assert schedule == Schedule([3, 2, 1], [0, 3, 5], False)


def test_padded_schedule_is_a_packed_one_with_constant_batch() -> None:
    steps, batch = 4, 3
    schedule = Schedule.padded(steps, batch)
    assert schedule == Schedule.packed(torch.full((steps,), batch))
    # Flattening a (T, B, F) batch time-major puts step t at rows offsets[t] : offsets[t] + B.
    padded = torch.randn(steps, batch, FEATURES)  # (T, B, F)
    flat = padded.reshape(steps * batch, FEATURES)  # (T·B, F)
    for t in range(steps):
        first = schedule.offsets[t]
        assert torch.equal(flat[first : first + schedule.batch_sizes[t]], padded[t])


def test_reversed_flips_only_the_direction() -> None:
    schedule = Schedule.packed(torch.tensor([2, 2, 1]))
    backwards = schedule.reversed()
    assert backwards.reverse and not schedule.reverse
    assert backwards.batch_sizes == schedule.batch_sizes and backwards.offsets == schedule.offsets
    assert backwards.reversed() == schedule
    assert Schedule.padded(2, 3, reverse=True) == Schedule.padded(2, 3).reversed()
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.reverse = True  # type: ignore[misc]


def test_time_index_visits_every_step_once_in_each_direction() -> None:
    assert [time_index(step, 4, False) for step in range(4)] == [0, 1, 2, 3]
    assert [time_index(step, 4, True) for step in range(4)] == [3, 2, 1, 0]


def test_fit_state_cuts_and_extends_by_hand() -> None:
    state = torch.tensor([[1.0], [2.0], [3.0]])  # (b, F): three sequences running
    initial = torch.tensor([[10.0], [20.0], [30.0], [40.0]])  # (B, F)
    finished: list[Tensor] = []
    cut = fit_state(state, initial, 2, finished)  # the third sequence ended
    assert cut.tolist() == [[1.0], [2.0]]
    assert [tail.tolist() for tail in finished] == [[[3.0]]]
    grown = fit_state(cut, initial, 4, finished)  # walking backwards: two sequences start
    assert grown.tolist() == [[1.0], [2.0], [30.0], [40.0]]
    assert len(finished) == 1  # rows that join are not parked
    assert fit_state(grown, initial, 4, finished) is grown


def test_final_state_puts_the_tails_back_in_row_order() -> None:
    """Lengths 3, 2, 1 walked forwards: row 2 ends first and is parked first, row 1 next."""
    finished = [torch.tensor([[2.0]]), torch.tensor([[1.0]])]
    assert final_state(torch.tensor([[0.0]]), finished).tolist() == [[0.0], [1.0], [2.0]]
    only = torch.tensor([[5.0], [6.0]])
    assert final_state(only, []) is only


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    reverse=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_packed_walk_equals_each_sequence_walked_alone(
    lengths: list[int], reverse: bool, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    batch, steps = len(lengths), max(lengths)
    padded = torch.randn(batch, steps, FEATURES, generator=generator, dtype=torch.float64)
    h0 = torch.randn(batch, FEATURES, generator=generator, dtype=torch.float64)  # (B, F)
    packed = pack_padded_sequence(
        padded, torch.tensor(lengths), batch_first=True, enforce_sorted=False
    )
    order = packed.sorted_indices  # row k of the packed layout is sequence order[k]
    schedule = Schedule.packed(packed.batch_sizes, reverse=reverse)

    # Step t's rows are where torch put them: the first batch_sizes[t] sequences, longest first.
    for t, (size, first) in enumerate(zip(schedule.batch_sizes, schedule.offsets, strict=True)):
        assert torch.equal(packed.data[first : first + size], padded[order[:size], t])
    assert schedule.offsets[-1] + schedule.batch_sizes[-1] == sum(lengths)

    expected = walk_each_sequence(padded, lengths, h0, reverse)[order]  # (B, F), packed order
    arguments = (packed.data, h0[order], schedule.batch_sizes, schedule.offsets, reverse)
    assert torch.equal(walk(*arguments), expected)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = COMPILED_WALK(*arguments)
    # The helpers must keep to TorchScript: a failed compile would warn and run the Python walk.
    assert not [w for w in caught if "could not compile" in str(w.message)]
    assert torch.equal(compiled, expected)


def test_compiled_loop_compiles_once_and_keeps_the_functions_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiles: list[str] = []
    script = torch.jit.script

    def counting_script(fn: Callable) -> Callable:
        compiles.append(fn.__name__)
        return script(fn)

    monkeypatch.setattr(torch.jit, "script", counting_script)
    loop = CompiledLoop(walk)
    assert loop.__name__ == "walk" and loop.__doc__ == walk.__doc__
    assert compiles == []  # nothing before the first call
    data = torch.arange(6.0).view(6, 1)  # lengths 3, 2, 1 packed: (N, F)
    h0 = torch.zeros(3, 1)
    for _ in range(3):
        result = loop(data, h0, [3, 2, 1], [0, 3, 5], False)
    assert compiles == ["walk"]
    # Sequence a reads rows 0, 3, 5; b rows 1, 4; c row 2 (the docstring's layout).
    assert result.tolist() == [[(0 / 2 + 3) / 2 + 5], [1 / 2 + 4], [2.0]]
