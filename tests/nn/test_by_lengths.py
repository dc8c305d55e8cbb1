"""``run_by_lengths`` and ``final_states_by_lengths`` against the reference they replace: torch.nn's
own packed sequences."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.nn.by_lengths import (
    final_states_by_lengths,
    reverse_within_lengths,
    run_by_lengths,
    runs_padded,
)
from rnnlab.nn.factory import make_rnn
from rnnlab.nn.precision import native_bf16


def packed_reference(rnn: nn.Module, inputs: torch.Tensor, lengths: torch.Tensor):
    packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    outputs, state = rnn(packed)
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=inputs.size(1))
    return outputs, state[0] if isinstance(state, tuple) else state


def test_reverse_within_lengths_by_hand() -> None:
    x = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0], [7, 0, 0, 0]])
    lengths = torch.tensor([4, 2, 1])
    expected = torch.tensor([[4, 3, 2, 1], [6, 5, 0, 0], [7, 0, 0, 0]])
    assert torch.equal(reverse_within_lengths(x, lengths), expected)
    features = x.unsqueeze(2).expand(3, 4, 2)  # trailing dimensions move with their position
    assert torch.equal(
        reverse_within_lengths(features, lengths), expected.unsqueeze(2).expand(3, 4, 2)
    )


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=6), st.integers(0, 3))
def test_reverse_within_lengths_is_its_own_inverse(lengths: list[int], extra: int) -> None:
    steps = max(lengths) + extra
    x = torch.randn(len(lengths), steps, 3)
    lengths_tensor = torch.tensor(lengths)
    once = reverse_within_lengths(x, lengths_tensor)
    assert torch.equal(reverse_within_lengths(once, lengths_tensor), x)
    for row, length in enumerate(lengths):
        assert torch.equal(once[row, :length], x[row, :length].flip(0))
        assert torch.equal(once[row, length:], x[row, length:])


CELLS: dict[str, Callable[..., nn.RNNBase]] = {
    "lstm": nn.LSTM,
    "gru": nn.GRU,
    "rnn-tanh": nn.RNN,
    "rnn-relu": partial(nn.RNN, nonlinearity="relu"),
}


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_padded_kernel_matches_packing_outputs_state_and_gradients(
    cell: str, num_layers: int, bidirectional: bool, bias: bool
) -> None:
    torch.manual_seed(num_layers * 4 + bidirectional * 2 + bias)
    rnn = CELLS[cell](
        5, 7, num_layers=num_layers, bidirectional=bidirectional, bias=bias, batch_first=True
    )
    lengths = torch.tensor([6, 1, 4, 6, 2, 3, 1])
    inputs = torch.randn(7, 7, 5)  # one step longer than the longest sequence
    mine = inputs.clone().requires_grad_()
    reference = inputs.clone().requires_grad_()
    assert runs_padded(rnn, mine)

    outputs, final = run_by_lengths(rnn, mine, lengths)
    expected_outputs, expected_final = packed_reference(rnn, reference, lengths)
    torch.testing.assert_close(outputs, expected_outputs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(final, expected_final, rtol=1e-5, atol=1e-6)

    weights = torch.randn_like(outputs)
    final_weights = torch.randn_like(final)
    mine_grads = torch.autograd.grad(
        (outputs * weights).sum() + (final * final_weights).sum(), [mine, *rnn.parameters()]
    )
    reference_grads = torch.autograd.grad(
        (expected_outputs * weights).sum() + (expected_final * final_weights).sum(),
        [reference, *rnn.parameters()],
    )
    for got, want in zip(mine_grads, reference_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("length_groups", [1, 3, 8])
def test_final_states_in_length_groups_match_packing_and_its_gradients(
    cell: str, num_layers: int, bidirectional: bool, length_groups: int
) -> None:
    torch.manual_seed(num_layers * 2 + bidirectional)
    rnn = CELLS[cell](5, 7, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    lengths = torch.tensor([6, 1, 4, 6, 2, 3, 1])  # 8 groups of 7 rows: one group, padded
    inputs = torch.randn(7, 7, 5)
    mine = inputs.clone().requires_grad_()
    reference = inputs.clone().requires_grad_()

    final = final_states_by_lengths(rnn, mine, lengths, length_groups=length_groups)
    expected = packed_reference(rnn, reference, lengths)[1]
    torch.testing.assert_close(final, expected, rtol=1e-5, atol=1e-6)

    weights = torch.randn_like(final)
    mine_grads = torch.autograd.grad((final * weights).sum(), [mine, *rnn.parameters()])
    reference_grads = torch.autograd.grad(
        (expected * weights).sum(), [reference, *rnn.parameters()]
    )
    for got, want in zip(mine_grads, reference_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_padding_is_never_read() -> None:
    torch.manual_seed(3)
    lstm = nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True)
    lengths = torch.tensor([5, 2, 3])
    inputs = torch.randn(3, 5, 4)
    noisy = inputs.clone()
    for row, length in enumerate(lengths.tolist()):
        noisy[row, length:] = 1e3 * torch.randn(5 - length, 4)
    outputs, final = run_by_lengths(lstm, inputs, lengths)
    noisy_outputs, noisy_final = run_by_lengths(lstm, noisy, lengths)
    assert torch.equal(outputs, noisy_outputs)
    assert torch.equal(final, noisy_final)
    assert outputs[1, 2:].abs().sum() == 0  # zero past the end, as pad_packed_sequence gives it


def test_dropout_between_layers_only_while_training() -> None:
    torch.manual_seed(4)
    lstm = nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True, dropout=0.5)
    lengths = torch.tensor([4, 3])
    inputs = torch.randn(2, 4, 4)
    lstm.eval()
    outputs, _ = run_by_lengths(lstm, inputs, lengths)
    torch.testing.assert_close(outputs, packed_reference(lstm, inputs, lengths)[0])
    lstm.train()
    torch.manual_seed(5)
    first, _ = run_by_lengths(lstm, inputs, lengths)
    torch.manual_seed(6)
    second, _ = run_by_lengths(lstm, inputs, lengths)
    assert not torch.allclose(first, second)  # the mask between the layers is drawn per call
    one_layer = nn.LSTM(4, 6, bidirectional=True, batch_first=True)
    one_layer.train()
    torch.testing.assert_close(
        run_by_lengths(one_layer, inputs, lengths)[0],
        packed_reference(one_layer, inputs, lengths)[0],
    )


@pytest.mark.skipif(
    not native_bf16("cpu"), reason="oneDNN has no bfloat16 LSTM without AVX512-BF16 or AMX"
)
def test_bfloat16_autocast_stays_close_to_float32_packing() -> None:
    torch.manual_seed(7)
    lstm = nn.LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True)
    lengths = torch.tensor([9, 4, 7])
    inputs = torch.randn(3, 9, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs, _ = run_by_lengths(lstm, inputs, lengths)
    expected, _ = packed_reference(lstm, inputs, lengths)
    torch.testing.assert_close(outputs.float(), expected, rtol=0.05, atol=0.03)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_pack_when_no_gradient_is_recorded(cell: str) -> None:
    """Without gradients packing skips the padding and has no quadratic backward to avoid."""
    torch.manual_seed(8)
    rnn = make_rnn(cell, "fused", input_size=3, hidden_size=5, num_layers=2, bidirectional=True)
    inputs = torch.randn(3, 4, 3)
    lengths = torch.tensor([4, 1, 3])
    assert runs_padded(rnn, inputs)  # the weights record gradients
    with torch.no_grad():
        assert not runs_padded(rnn, inputs)
        outputs, final = run_by_lengths(rnn, inputs, lengths)
        expected_outputs, expected_final = packed_reference(rnn, inputs, lengths)
        assert torch.equal(outputs, expected_outputs)
        assert torch.equal(final, expected_final)
        assert torch.equal(
            final_states_by_lengths(rnn, inputs, lengths, length_groups=2), expected_final
        )
    rnn.requires_grad_(False)
    assert not runs_padded(rnn, inputs)  # frozen weights, inputs without gradient


def test_lstm_runs_padded_with_or_without_gradients() -> None:
    lstm = nn.LSTM(3, 5, batch_first=True)
    inputs = torch.randn(2, 4, 3)
    assert runs_padded(lstm, inputs)
    with torch.no_grad():
        assert runs_padded(lstm, inputs)
    assert not runs_padded(nn.LSTM(3, 5, batch_first=True, proj_size=2), inputs)
    assert not runs_padded(nn.LSTM(3, 5), inputs)  # time-major layers keep packing


def test_scratch_lstm_takes_the_packed_path_and_agrees() -> None:
    torch.manual_seed(9)
    scratch = make_rnn("lstm", "scratch", input_size=3, hidden_size=5, bidirectional=True)
    fused = nn.LSTM(3, 5, bidirectional=True, batch_first=True)
    fused.load_state_dict(scratch.state_dict())
    inputs = torch.randn(3, 4, 3)
    lengths = torch.tensor([2, 4, 3])
    assert not runs_padded(scratch, inputs)
    torch.testing.assert_close(
        run_by_lengths(scratch, inputs, lengths)[0], run_by_lengths(fused, inputs, lengths)[0]
    )


def test_threads_running_different_models_at_once_get_their_own_results() -> None:
    torch.manual_seed(10)
    models = [nn.LSTM(4, 6, bidirectional=True, batch_first=True).eval() for _ in range(2)]
    inputs = torch.randn(4, 5, 4)
    lengths = torch.tensor([5, 3, 2, 4])
    expected = [packed_reference(model, inputs, lengths)[0] for model in models]

    def run(index: int) -> torch.Tensor:
        with torch.no_grad():
            return run_by_lengths(models[index % 2], inputs, lengths)[0]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(200)))
    for index, result in enumerate(results):
        torch.testing.assert_close(result, expected[index % 2])
