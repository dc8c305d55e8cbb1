"""``LoopLinear`` against ``F.linear`` under autograd: the same values and the same gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnlab.nn.loop_products import LoopBmm, LoopLinear


def _recurrence(linear, inputs: torch.Tensor, h0: torch.Tensor, used: list[int]) -> torch.Tensor:
    """h_t = tanh(linear(h_{t-1}) + u_t); the loss reads the states at the steps in ``used``."""
    h, states = h0, []
    for u in inputs.unbind(0):
        h = torch.tanh(linear(h) + u)
        states.append(h)
    return sum((states[t] ** 2).sum() for t in used)


def _leaves(seed: int, bias: bool, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn(6, 6, generator=g, dtype=dtype) * 0.5).requires_grad_()
    b = torch.randn(6, generator=g, dtype=dtype).requires_grad_() if bias else None
    inputs = torch.randn(5, 3, 6, generator=g, dtype=dtype).requires_grad_()
    h0 = torch.randn(3, 6, generator=g, dtype=dtype).requires_grad_()
    return weight, b, inputs, h0


def _grads(loss: torch.Tensor, tensors: list) -> list[torch.Tensor | None]:
    wanted = [t for t in tensors if t is not None]
    return list(torch.autograd.grad(loss, wanted, allow_unused=True))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("used", [[0, 1, 2, 3, 4], [4], [1, 2]])
def test_gradients_equal_f_linear(bias: bool, used: list[int]) -> None:
    weight, b, inputs, h0 = _leaves(0, bias)
    expected_loss = _recurrence(lambda x: F.linear(x, weight, b), inputs, h0, used)
    expected = _grads(expected_loss, [weight, b, inputs, h0])

    loss = _recurrence(LoopLinear(weight, b), inputs, h0, used)
    got = _grads(loss, [weight, b, inputs, h0])

    torch.testing.assert_close(loss, expected_loss)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)
    # Steps after the last one read contribute nothing (their inputs get no gradient).
    assert not got[2][max(used) + 1 :].any()


def test_parameters_get_one_accumulated_gradient_and_backward_twice_adds_up() -> None:
    weight, b, inputs, h0 = _leaves(1, True)
    reference = weight.detach().clone().requires_grad_()
    ref_bias = b.detach().clone().requires_grad_()
    _recurrence(lambda x: F.linear(x, reference, ref_bias), inputs, h0, [2, 4]).backward(
        retain_graph=True
    )

    loss = _recurrence(LoopLinear(weight, b), inputs, h0, [2, 4])
    loss.backward(retain_graph=True)
    torch.testing.assert_close(weight.grad, reference.grad)
    torch.testing.assert_close(b.grad, ref_bias.grad)

    loss.backward()  # the same graph again: every gradient doubles
    torch.testing.assert_close(weight.grad, 2 * reference.grad)
    torch.testing.assert_close(b.grad, 2 * ref_bias.grad)


def test_weight_reached_through_a_cast_gets_its_gradient() -> None:
    """As in the decoders under autocast: the loop reads a cast copy, the parameter is float32."""
    weight, b, inputs, h0 = _leaves(2, True, dtype=torch.float32)
    wide_weight, wide_bias = weight.double(), b.double()
    ref = _grads(
        _recurrence(lambda x: F.linear(x.double(), wide_weight, wide_bias), inputs, h0, [4]),
        [weight],
    )
    (got,) = _grads(_recurrence(LoopLinear(wide_weight, wide_bias), inputs, h0, [4]), [weight])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref[0])


def test_bfloat16_autocast_stays_close_to_float32() -> None:
    weight, b, inputs, h0 = _leaves(3, True, dtype=torch.float32)
    expected = _grads(_recurrence(lambda x: F.linear(x, weight, b), inputs, h0, [4]), [weight, b])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast_weight, cast_bias = weight.to(torch.bfloat16), b.to(torch.bfloat16)
        loss = _recurrence(LoopLinear(cast_weight, cast_bias), inputs, h0, [4])
    got = _grads(loss, [weight, b])
    assert [g.dtype for g in got] == [torch.float32, torch.float32]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=0.05, rtol=0.05)


def test_without_autograd_it_is_f_linear_and_builds_no_graph() -> None:
    weight, b, inputs, _ = _leaves(4, True)
    with torch.no_grad():
        linear = LoopLinear(weight, b)
        out = linear(inputs[0])
    assert out.grad_fn is None
    torch.testing.assert_close(out, F.linear(inputs[0], weight, b))


def test_inputs_of_more_dimensions() -> None:
    weight, b, _, _ = _leaves(5, True)
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64, requires_grad=True)
    expected = _grads(F.linear(x, weight, b).sin().sum(), [weight, b, x])
    got = _grads(LoopLinear(weight, b)(x).sin().sum(), [weight, b, x])
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("used", [[0, 1, 2, 3], [3], [0, 2]])
def test_bmm_gradients_equal_torch_bmm(used: list[int]) -> None:
    """Attention's context at every step: ``bmm(softmax(h_{t-1} M_sumᵀ + u_t), M)``."""
    g = torch.Generator().manual_seed(6)
    memory = torch.randn(3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    inputs = torch.randn(4, 3, 1, 5, generator=g, dtype=torch.float64, requires_grad=True)

    def loop(read) -> torch.Tensor:
        context, outputs = torch.zeros(3, 1, 4, dtype=torch.float64), []
        for u in inputs.unbind(0):
            scores = context.sum(-1, keepdim=True) + u  # (3, 1, 5): depends on the last step
            context = read(torch.softmax(scores, -1))  # (3, 1, 4)
            outputs.append(context)
        return sum((outputs[t] ** 2).sum() for t in used)

    expected = _grads(loop(lambda a: torch.bmm(a, memory)), [memory, inputs])
    got = _grads(loop(LoopBmm(memory)), [memory, inputs])
    for x, e in zip(got, expected, strict=True):
        torch.testing.assert_close(x, e)


def test_bmm_with_a_float32_operand_stays_float32_under_autocast() -> None:
    """The decoders' memory on a CPU: autocast would round each step's product to bfloat16."""
    g = torch.Generator().manual_seed(7)
    memory = torch.randn(3, 5, 4, generator=g, requires_grad=True)
    weights = torch.softmax(torch.randn(2, 3, 1, 5, generator=g), -1).requires_grad_()
    expected = [torch.bmm(w, memory) for w in weights.unbind(0)]
    expected_grads = _grads(sum((y**2).sum() for y in expected), [memory, weights])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        read = LoopBmm(memory)
        got = [read(w) for w in weights.unbind(0)]
    assert [y.dtype for y in got] == [torch.float32, torch.float32]
    for y, e in zip(got, expected, strict=True):
        torch.testing.assert_close(y, e)
    for x, e in zip(
        _grads(sum((y**2).sum() for y in got), [memory, weights]), expected_grads, strict=True
    ):
        torch.testing.assert_close(x, e)
