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
    # Tokens go into one (B, max_len) tensor, one indexed write per step, and become lists once at
    # the end: appending to B Python lists at every step cost more than a small model's step.
    emitted = torch.full((batch_size, max(max_len, 0)), eos_id, dtype=torch.long, device=device)
    active = torch.arange(batch_size, device=device)  # original row of each live sentence
    tokens = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)
    for t in range(max_len):
        if active.numel() == 0:
            break
        log_probs, state = model.step(tokens, state)
        tokens = log_probs.argmax(dim=-1)  # (B_active,)
        emitted[active, t] = tokens
        finished = tokens == eos_id
        if bool(finished.any()):
            keep = (~finished).nonzero(as_tuple=True)[0]
            active, tokens = active[keep], tokens[keep]
            state = model.select_state(state, keep)
    outputs = []
    for row in emitted.tolist():
        end = row.index(eos_id) if eos_id in row else len(row)
        outputs.append(row[:end])
    return outputs
