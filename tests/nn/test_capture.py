"""``capturing_graph`` tells eager runs from TorchScript tracing."""

from __future__ import annotations

import torch

from rnnlab.nn.capture import capturing_graph


def test_false_when_eager_true_while_tracing() -> None:
    seen: list[bool] = []

    def step(x: torch.Tensor) -> torch.Tensor:
        seen.append(capturing_graph())
        return x + 1

    step(torch.ones(2))
    torch.jit.trace(step, torch.ones(2), check_trace=False)
    assert seen == [False, True]
