import pytest
import torch
import torch.nn.functional as F

from rnnlab.nn.cross_entropy import summed_cross_entropy


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_summed_loss_and_gradient_equal_torch_cross_entropy(smoothing):
    torch.manual_seed(2)
    logits = torch.randn(9, 11, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 3, 3, 10, 5, 3, 0, 7, 10])  # repeated targets, both ends of V
    weight = torch.rand(())  # a gradient of the loss other than 1
    ours = summed_cross_entropy(logits, targets, label_smoothing=smoothing)
    (grad,) = torch.autograd.grad(ours * weight, logits)
    reference = F.cross_entropy(logits, targets, reduction="sum", label_smoothing=smoothing)
    (expected,) = torch.autograd.grad(reference * weight, logits)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grad, expected)


def test_bfloat16_logits_reduce_in_float32_and_get_a_bfloat16_gradient():
    torch.manual_seed(3)
    exact = torch.randn(64, 300, dtype=torch.float64)
    logits = exact.bfloat16().requires_grad_()
    targets = torch.randint(0, 300, (64,))
    loss = summed_cross_entropy(logits, targets, label_smoothing=0.1)
    loss.backward()
    reference = exact.bfloat16().double().requires_grad_()
    F.cross_entropy(reference, targets, reduction="sum", label_smoothing=0.1).backward()
    assert loss.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(
        loss.detach().double(),
        F.cross_entropy(reference.detach(), targets, reduction="sum", label_smoothing=0.1),
        rtol=1e-6,
        atol=0,
    )
    # The gradient is rounded to bfloat16 once, after the subtraction at the target in float32.
    torch.testing.assert_close(logits.grad.double(), reference.grad, rtol=2**-8, atol=1e-6)


def test_a_retained_graph_gives_the_same_gradient_twice():
    logits = torch.randn(4, 5, requires_grad=True)
    loss = summed_cross_entropy(logits, torch.tensor([1, 2, 3, 4]), label_smoothing=0.2)
    (first,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (second,) = torch.autograd.grad(loss, logits)
    assert torch.equal(first, second)


def test_label_smoothing_outside_the_unit_interval_is_refused():
    with pytest.raises(ValueError, match="label_smoothing"):
        summed_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), label_smoothing=1.5)


def test_logits_and_targets_of_other_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(N, V\)"):
        summed_cross_entropy(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padding_rows_past_the_targets_add_nothing_and_get_zero_gradient(dtype):
    torch.manual_seed(4)
    logits = torch.randn(7, 13).to(dtype).requires_grad_()
    targets = torch.tensor([2, 12, 0, 5, 5])
    padded = summed_cross_entropy(logits, targets, label_smoothing=0.1, padded=True)
    (grad,) = torch.autograd.grad(padded * 0.5, logits)
    rows = logits[:5].detach().double().requires_grad_()
    reference = F.cross_entropy(rows, targets, reduction="sum", label_smoothing=0.1)
    (expected,) = torch.autograd.grad(reference * 0.5, rows)
    torch.testing.assert_close(padded.double(), reference.detach(), rtol=1e-6, atol=0)
    assert grad.shape == logits.shape and grad.dtype == dtype
    torch.testing.assert_close(grad[:5].double(), expected, rtol=2**-8, atol=1e-6)
    assert torch.all(grad[5:] == 0)


def test_extra_rows_are_refused_unless_declared_padding():
    with pytest.raises(ValueError, match="N, V"):
        summed_cross_entropy(torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="N' ≥ N"):
        summed_cross_entropy(torch.randn(1, 4), torch.tensor([0, 1]), padded=True)
    with pytest.raises(ValueError, match="targets"):
        summed_cross_entropy(torch.randn(5, 4), torch.zeros(1, 2, dtype=torch.long), padded=True)
