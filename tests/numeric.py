"""Numerical checks shared by the unit tests of layers: closeness and finite-difference gradients,
written out because ``torch.testing.assert_close`` and ``torch.autograd.gradcheck`` import
``torch.distributed`` and ``torch.fx`` on first use, seconds on this CPU for a one-line check."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def assert_near(actual: Tensor, expected: Tensor, *, atol: float = 1e-12) -> None:
    """Same shape and every entry within ``atol`` (``torch.testing.assert_close`` would import
    ``torch.distributed`` on first use, seconds on this CPU, for a one-line comparison)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    difference = (actual - expected).abs().max().item()
    assert difference <= atol, f"max |difference| {difference:.3g} > {atol:.3g}"


def check_gradients(
    function: Callable[..., Tensor],
    inputs: list[Tensor],
    *,
    eps: float = 1e-6,
    nonzero: bool = False,
) -> None:
    """Autograd's gradient of ``sum(function(*inputs) · probe)`` for a fixed random ``probe``
    against central differences, entry by entry, in float64.

    What ``torch.autograd.gradcheck`` does for one random direction of the output; written out
    because gradcheck passes ``grad_outputs``, whose first use imports ``torch.fx``'s symbolic
    shapes (several seconds on this CPU).
    """
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    output = function(*leaves)
    probe = torch.randn(
        output.shape, generator=torch.Generator().manual_seed(0), dtype=output.dtype
    )
    (output * probe).sum().backward()
    with torch.no_grad():
        for leaf in leaves:
            numeric = torch.zeros_like(leaf)
            flat = leaf.view(-1)
            for index in range(flat.numel()):
                original = flat[index].item()
                flat[index] = original + eps
                plus = (function(*leaves) * probe).sum().item()
                flat[index] = original - eps
                minus = (function(*leaves) * probe).sum().item()
                flat[index] = original
                numeric.view(-1)[index] = (plus - minus) / (2 * eps)
            assert leaf.grad is not None
            if nonzero:  # the gradient must reach every input, not merely agree at zero
                assert leaf.grad.abs().sum() > 0
            assert_near(leaf.grad, numeric, atol=1e-7)
