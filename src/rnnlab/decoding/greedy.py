"""Batched greedy search over the step protocol.

The whole batch decodes together; a sentence that emits ``<eos>`` leaves the batch (its rows are
dropped from the state), so finished sentences stop costing compute — the textbook decodes one
sentence at a time instead.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from rnnlab.decoding.hypothesis import Hypothesis, length_penalty


class StepModel(Protocol):
    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]: ...

    def select_state(self, state: Any, indices: Tensor) -> Any: ...


@torch.no_grad()
def greedy_hypotheses(
    model: StepModel,
    state: Any,
    *,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    max_len: int,
    length_penalty_alpha: float = 0.0,
    device: torch.device | str = "cpu",
) -> list[Hypothesis]:
    """The greedy output of every sentence with its log-probability and score.

    The score is what beam search with one beam would rank by (the same normalisation), so a caller
    sees one meaning of ``score`` whichever search ran.
    """
    outputs: list[list[int]] = [[] for _ in range(batch_size)]
    ended = [False] * batch_size
    log_prob = torch.zeros(batch_size, device=device)  # (B,) summed over the emitted tokens
    active = torch.arange(batch_size, device=device)  # original row of each live sentence
    tokens = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)
    for _ in range(max_len):
        if active.numel() == 0:
            break
        log_probs, state = model.step(tokens, state)  # (B_active, V)
        tokens = log_probs.argmax(dim=-1)  # (B_active,)
        log_prob.index_add_(0, active, log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1))
        finished = tokens == eos_id
        for row, token in zip(active.tolist(), tokens.tolist(), strict=True):
            if token != eos_id:
                outputs[row].append(token)
            else:
                ended[row] = True
        if bool(finished.any()):
            keep = (~finished).nonzero(as_tuple=True)[0]
            active, tokens = active[keep], tokens[keep]
            state = model.select_state(state, keep)
    hypotheses = []
    for out, did_end, raw in zip(outputs, ended, log_prob.tolist(), strict=True):
        lp = length_penalty(len(out) + int(did_end), length_penalty_alpha)
        hypotheses.append(Hypothesis(tokens=out, log_prob=raw, score=raw / lp))
    return hypotheses


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
    hypotheses = greedy_hypotheses(
        model,
        state,
        batch_size=batch_size,
        bos_id=bos_id,
        eos_id=eos_id,
        max_len=max_len,
        device=device,
    )
    return [h.tokens for h in hypotheses]
