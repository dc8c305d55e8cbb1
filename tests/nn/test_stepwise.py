"""StackStepper against torch.nn stacks: one step at a time equals the whole-sequence kernel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnnlab.nn as rl
from rnnlab.nn.stepwise import StackStepper

INPUT, HIDDEN, STEPS, BATCH = 6, 5, 4, 3

STACKS = {
    "gru": lambda **kw: nn.GRU(INPUT, HIDDEN, **kw),
    "lstm": lambda **kw: nn.LSTM(INPUT, HIDDEN, **kw),
    "rnn_tanh": lambda **kw: nn.RNN(INPUT, HIDDEN, **kw),
    "rnn_relu": lambda **kw: nn.RNN(INPUT, HIDDEN, nonlinearity="relu", **kw),
    "scratch_gru": lambda **kw: rl.GRU(INPUT, HIDDEN, **kw),
    "scratch_lstm": lambda **kw: rl.LSTM(INPUT, HIDDEN, **kw),
}


def run_stepwise(rnn: nn.Module, x: torch.Tensor, state, loop: bool = False):
    """Drive the stepper over x (B, T, I), splitting layer 0's input in two blocks of columns."""
    stepper = StackStepper.of(rnn)
    assert stepper is not None
    weights = stepper.weights(rnn, loop=loop)
    w_a, w_b = stepper.split_input(weights, 2)
    hoisted = F.linear(x[..., :2], w_a, weights[0].b_ih)  # (B, T, G·H) before the loop
    layers = stepper.unstack(state)
    outputs = []
    for t in range(x.size(1)):
        gates = hoisted[:, t] + F.linear(x[:, t, 2:], w_b)
        top, layers = stepper.step(gates, layers, weights, training=rnn.training)
        outputs.append(top)
    return torch.stack(outputs, 1), stepper.stack(layers)


@pytest.mark.parametrize("kind", sorted(STACKS))
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("loop", [False, True])
def test_stepper_equals_the_whole_sequence_kernel_in_values_and_gradients(kind, num_layers, loop):
    torch.manual_seed(0)
    rnn = STACKS[kind](num_layers=num_layers, batch_first=True).double()
    x = torch.randn(BATCH, STEPS, INPUT, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(num_layers, BATCH, HIDDEN, dtype=torch.float64)
    state = (h0, torch.randn_like(h0)) if "lstm" in kind else h0

    expected, expected_state = rnn(x, state)
    (expected.square().sum() + sum(s.sum() for s in expected_state)).backward()
    reference_grads = [p.grad.clone() for p in rnn.parameters()] + [x.grad.clone()]
    rnn.zero_grad()
    x.grad = None

    outputs, final = run_stepwise(rnn, x, state, loop=loop)
    (outputs.square().sum() + sum(s.sum() for s in final)).backward()
    torch.testing.assert_close(outputs, expected)
    torch.testing.assert_close(final, expected_state)
    for ours, reference in zip(
        [p.grad for p in rnn.parameters()] + [x.grad], reference_grads, strict=True
    ):
        torch.testing.assert_close(ours, reference)


def test_stepper_applies_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    rnn = nn.GRU(INPUT, HIDDEN, num_layers=2, dropout=0.5, batch_first=True)
    x, h0 = torch.randn(BATCH, STEPS, INPUT), torch.zeros(2, BATCH, HIDDEN)
    rnn.eval()
    evaluated, _ = run_stepwise(rnn, x, h0)
    torch.testing.assert_close(evaluated, rnn(x, h0)[0])
    rnn.train()
    trained, _ = run_stepwise(rnn, x, h0)
    assert not torch.allclose(trained, evaluated)


@pytest.mark.parametrize(
    "rnn",
    [
        nn.GRU(INPUT, HIDDEN, bidirectional=True, batch_first=True),
        nn.LSTM(INPUT, HIDDEN, proj_size=2, batch_first=True),
        rl.PeepholeLSTM(INPUT, HIDDEN, batch_first=True),
        rl.CoupledLSTM(INPUT, HIDDEN, batch_first=True),
    ],
)
def test_no_stepper_for_stacks_it_cannot_run(rnn):
    assert StackStepper.of(rnn) is None
