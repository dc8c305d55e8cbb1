"""Batched greedy search over the step protocol.

The whole batch decodes together; a sentence that emits ``<eos>`` leaves the batch (its rows are
dropped from the state), so finished sentences stop costing compute — the textbook decodes one
sentence at a time instead.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor


class StepModel(Protocol):
    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]: ...

    def select_state(self, state: Any, indices: Tensor) -> Any: ...


@torch.no_grad()
def greedy_search(
    model: StepModel,
    state: Any,
    *,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    max_len: int,
    device: torch.device | str = "cpu",
) -> list[list[int]]:
    """Token ids per sentence, without ``<bos>``/``<eos>``; at most ``max_len`` tokens each."""
    outputs: list[list[int]] = [[] for _ in range(batch_size)]
    active = torch.arange(batch_size, device=device)  # original row of each live sentence
    tokens = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)
    for _ in range(max_len):
        if active.numel() == 0:
            break
        log_probs, state = model.step(tokens, state)
        tokens = log_probs.argmax(dim=-1)  # (B_active,)
        finished = tokens == eos_id
        for row, token in zip(active.tolist(), tokens.tolist(), strict=True):
            if token != eos_id:
                outputs[row].append(token)
        if bool(finished.any()):
            keep = (~finished).nonzero(as_tuple=True)[0]
            active, tokens = active[keep], tokens[keep]
            state = model.select_state(state, keep)
    return outputs
