"""The adversarial step: per-sequence size, direction of steepest ascent, padding untouched."""

from __future__ import annotations

import pytest
import torch

from rnnlab.nn.adversarial import adversarial_perturbation


def test_each_sequence_moves_along_its_gradient_by_epsilon_per_coordinate():
    torch.manual_seed(0)
    lengths = torch.tensor([4, 1, 3])
    gradient = torch.randn(3, 4, 5)
    gradient[1, 1:] = 100.0  # padding: huge, and it must count for nothing
    gradient[2, 3:] = -50.0
    step = adversarial_perturbation(gradient, lengths, 0.03)
    for b, n in enumerate(lengths.tolist()):
        valid = step[b, :n]
        assert torch.all(step[b, n:] == 0)
        rms = valid.pow(2).mean().sqrt()  # over the n · F valid coordinates
        assert float(rms) == pytest.approx(0.03, rel=1e-5)
        # A positive multiple of the sentence's own gradient: cosine 1.
        cosine = torch.nn.functional.cosine_similarity(
            valid.flatten(), gradient[b, :n].flatten(), dim=0
        )
        assert float(cosine) > 1 - 1e-6


def test_a_flat_sequence_is_left_alone_and_nothing_is_differentiated_through():
    gradient = torch.randn(2, 3, 4, requires_grad=True)
    flat = gradient.detach().clone()
    flat[0] = 0.0
    step = adversarial_perturbation(flat, torch.tensor([3, 3]), 0.1)
    assert torch.all(step[0] == 0) and bool(step[1].abs().sum() > 0)
    assert not adversarial_perturbation(gradient, torch.tensor([3, 2]), 0.1).requires_grad


def test_the_step_raises_a_loss_more_than_random_steps_of_its_size():
    """Steepest ascent to first order: no random direction of the same norm raises it as much."""
    torch.manual_seed(1)
    weights = torch.randn(6, 5)
    targets = torch.randn(2, 3, 6)
    lengths = torch.tensor([3, 2])
    valid = (torch.arange(3).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)

    def loss(x):
        return ((x @ weights.T).tanh() - targets).pow(2).mul(valid).sum()

    x = torch.randn(2, 3, 5, requires_grad=True)
    (gradient,) = torch.autograd.grad(loss(x), x)
    step = adversarial_perturbation(gradient, lengths, 0.01)
    rise = float(loss(x.detach() + step) - loss(x.detach()))
    assert rise > 0
    for _ in range(50):
        noise = torch.randn(2, 3, 5).masked_fill(~valid, 0.0)
        norms = noise.flatten(1).norm(dim=1) / step.flatten(1).norm(dim=1)
        noise = noise / norms.view(-1, 1, 1)  # each sequence's norm equal to the step's
        assert float(loss(x.detach() + noise) - loss(x.detach())) < rise


def test_a_bfloat16_gradient_gives_a_bfloat16_step_of_the_same_size():
    gradient = torch.randn(2, 5, 8).to(torch.bfloat16)
    step = adversarial_perturbation(gradient, torch.tensor([5, 2]), 0.05)
    assert step.dtype == torch.bfloat16
    rms = step[1, :2].float().pow(2).mean().sqrt()
    assert float(rms) == pytest.approx(0.05, rel=1e-2)
