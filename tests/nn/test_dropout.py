"""Dropout and SequenceDropout: the distribution of the mask, the expectation of the input, the
gradient, identity in eval; SequenceDropout's one mask per sequence and feature."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlab.nn import SequenceDropout
from rnnlab.nn.dropout import Dropout, dropout


def test_each_feature_is_dropped_or_kept_for_the_whole_sequence() -> None:
    torch.manual_seed(0)
    dropout = SequenceDropout(0.4).train()
    inputs = torch.rand(6, 9, 20) + 0.5  # no zeros of its own
    out = dropout(inputs)
    ratio = out / inputs  # (B, T, F): 0 where dropped, 1 / 0.6 where kept
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))
    kept = ratio[:, 0] != 0
    assert torch.allclose(ratio[:, 0][kept], torch.full_like(ratio[:, 0][kept], 1 / 0.6))
    assert 0 < kept.sum() < kept.numel()  # both outcomes occur in 120 draws
    # Standard dropout, for contrast, varies along time: the check above can fail.
    plain = nn.Dropout(0.4).train()(inputs) / inputs
    assert not torch.allclose(plain, plain[:, :1].expand_as(plain))


def test_masks_differ_between_sequences_of_a_batch() -> None:
    torch.manual_seed(1)
    out = SequenceDropout(0.5).train()(torch.ones(4, 3, 64))
    masks = out[:, 0]
    assert not all(torch.equal(masks[0], masks[b]) for b in range(1, 4))


def test_keeps_the_expectation_and_drops_a_fraction_p() -> None:
    torch.manual_seed(2)
    out = SequenceDropout(0.3).train()(torch.ones(4000, 2, 50))
    assert abs(out.mean().item() - 1.0) < 0.02
    assert abs((out[:, 0] == 0).float().mean().item() - 0.3) < 0.01


def test_gradient_is_the_mask() -> None:
    torch.manual_seed(3)
    inputs = torch.rand(3, 5, 7, requires_grad=True)
    dropout = SequenceDropout(0.5).train()
    out = dropout(inputs)
    out.sum().backward()
    assert inputs.grad is not None
    assert torch.allclose(inputs.grad, out.detach() / inputs.detach())


def test_identity_in_evaluation_and_at_zero() -> None:
    inputs = torch.rand(2, 4, 3)
    assert SequenceDropout(0.5).eval()(inputs) is inputs
    assert SequenceDropout(0.0).train()(inputs) is inputs


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_rejects_probabilities_outside_zero_one(p: float) -> None:
    with pytest.raises(ValueError, match="dropout probability"):
        SequenceDropout(p)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.4, 0.65])
def test_dropout_zeroes_a_fraction_p_and_scales_the_rest(p: float, dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(2)
    inputs = (torch.rand(100, 100, 100, generator=generator) + 0.5).to(dtype)  # none zero
    torch.manual_seed(2)
    out = dropout(inputs, p)
    assert out.dtype == dtype and out.shape == inputs.shape
    dropped = out == 0
    # Binomial standard deviation sqrt(p(1 − p) / 1e6) < 5e-4: ten of them.
    assert abs(dropped.float().mean().item() - p) < 5e-3
    expected = inputs[~dropped] * torch.tensor(1 / (1 - p), dtype=dtype)
    torch.testing.assert_close(out[~dropped], expected, rtol=0, atol=0)
    # The same mask for every dtype given the seed (float32 uniforms either way).
    torch.manual_seed(2)
    assert torch.equal(dropout(inputs.float(), p) == 0, dropped)


def test_dropout_gradient_is_its_scaled_mask() -> None:
    torch.manual_seed(3)
    inputs = torch.randn(5, 7, 11, requires_grad=True)
    out = dropout(inputs, 0.3)
    (grad,) = torch.autograd.grad(out.sum(), inputs)
    kept = out.detach() != 0
    torch.testing.assert_close(grad, kept.float() / 0.7)


def test_dropout_module_in_evaluation_at_zero_and_at_one() -> None:
    inputs = torch.randn(3, 4)
    module = Dropout(0.5)
    assert repr(module) == "Dropout(p=0.5)"
    assert module.eval()(inputs) is inputs
    assert dropout(inputs, 0.0) is inputs
    assert dropout(inputs, 0.5, training=False) is inputs
    assert torch.equal(dropout(inputs, 1.0), torch.zeros_like(inputs))  # as F.dropout gives it
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)
    torch.manual_seed(4)
    first = module.train()(inputs)
    torch.manual_seed(4)
    assert torch.equal(first, dropout(inputs, 0.5))  # the module is the function
