"""A model summary: every parameter's name and shape, and the total count."""

from __future__ import annotations

from torch import nn


def parameter_table(module: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    return [(name, tuple(p.shape), p.numel()) for name, p in module.named_parameters()]


def describe(module: nn.Module) -> str:
    rows = parameter_table(module)
    width = max((len(name) for name, _, _ in rows), default=4)
    lines = [f"{name:<{width}}  {str(shape):<16} {count:>10,}" for name, shape, count in rows]
    lines.append(f"{'total':<{width}}  {'':<16} {sum(c for _, _, c in rows):>10,}")
    return "\n".join(lines)
