"""A parameter table of a module: which tensors it learns, their shapes, and how many numbers in all.

Useful to see at a glance what a recurrent layer holds (G·H rows per gate stack, a ``_reverse`` copy
per bidirectional layer, a ``weight_hr`` per projection) and to compare variants by size.
"""

from __future__ import annotations

from torch import nn

ParameterRow = tuple[str, tuple[int, ...], int]


def parameter_table(module: nn.Module) -> list[ParameterRow]:
    """One row (name, shape, element count) per parameter, in ``named_parameters()`` order."""
    return [(name, tuple(p.shape), p.numel()) for name, p in module.named_parameters()]


def describe(module: nn.Module) -> str:
    """The parameter table as aligned text, with a header and a final total row."""
    rows = parameter_table(module)
    cells = [(name, str(shape), f"{count:,}") for name, shape, count in rows]
    total = f"{sum(count for _, _, count in rows):,}"
    header = ("parameter", "shape", "count")
    name_w = max([len(header[0]), len("total")] + [len(c[0]) for c in cells])
    shape_w = max([len(header[1])] + [len(c[1]) for c in cells])
    count_w = max([len(header[2]), len(total)] + [len(c[2]) for c in cells])

    def line(name: str, shape: str, count: str) -> str:
        return f"{name:<{name_w}}  {shape:<{shape_w}}  {count:>{count_w}}"

    rule = "-" * (name_w + shape_w + count_w + 4)
    body = [line(*c) for c in cells]
    return "\n".join(
        [type(module).__name__, line(*header), rule, *body, rule, line("total", "", total)]
    )
