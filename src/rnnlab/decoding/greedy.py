"""Batched greedy search over the step protocol.

The whole batch decodes together; a sentence that emits ``<eos>`` leaves the batch (its rows are
dropped from the state), so finished sentences stop costing compute — the textbook decodes one
sentence at a time instead.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from rnnlab.decoding.argmax import first_argmax
from rnnlab.decoding.hypothesis import Hypothesis, length_penalty


class StepModel(Protocol):
    def step(self, tokens: Tensor, state: Any, *, normalize: bool = True) -> tuple[Tensor, Any]: ...

    def select_state(self, state: Any, indices: Tensor) -> Any: ...


def _greedy_loop(
    model: StepModel,
    state: Any,
    limits: tuple[int, int, int, int],
    scored: bool,
    device: torch.device | str,
) -> tuple[list[list[int]], list[bool], list[float]]:
    """Tokens per sentence (without ``<eos>``), whether each ended, and their summed log-probs.

    Unscored, the loop asks the model for logits (``normalize=False``) and reads only their argmax:
    the softmax over the vocabulary costs as much as a small model's recurrent step. The summed
    log-probabilities are then all 0. ``limits`` is (batch size, ``<bos>``, ``<eos>``, max length).
    """
    batch_size, bos_id, eos_id, max_len = limits
    # Tokens go into one (B, max_len) tensor, one indexed write per step, and become lists once at
    # the end: appending to B Python lists at every step cost more than a small model's step.
    emitted = torch.full((batch_size, max(max_len, 0)), -1, dtype=torch.long, device=device)
    log_prob = torch.zeros(batch_size, device=device)  # (B,) summed over the emitted tokens
    active = torch.arange(batch_size, device=device)  # original row of each live sentence
    tokens = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)
    for t in range(max_len):
        if active.numel() == 0:
            break
        scores, state = model.step(tokens, state, normalize=scored)  # (B_active, V)
        tokens = first_argmax(scores)  # (B_active,)
        if scored:
            log_prob.index_add_(0, active, scores.gather(1, tokens.unsqueeze(1)).squeeze(1))
        emitted[active, t] = tokens
        finished = tokens == eos_id
        if bool(finished.any()):
            keep = (~finished).nonzero(as_tuple=True)[0]
            active, tokens = active[keep], tokens[keep]
            state = model.select_state(state, keep)
    outputs: list[list[int]] = []
    ended: list[bool] = []
    for row in emitted.tolist():
        row = [token for token in row if token != -1]  # -1: no step (the sentence had ended)
        did_end = eos_id in row
        outputs.append(row[: row.index(eos_id)] if did_end else row)
        ended.append(did_end)
    return outputs, ended, log_prob.tolist()


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
    limits = (batch_size, bos_id, eos_id, max_len)
    outputs, ended, log_probs = _greedy_loop(model, state, limits, True, device)
    hypotheses = []
    for out, did_end, raw in zip(outputs, ended, log_probs, strict=True):
        lp = length_penalty(len(out) + int(did_end), length_penalty_alpha)
        hypotheses.append(Hypothesis(tokens=out, log_prob=raw, score=raw / lp))
    return hypotheses


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
    """Token ids per sentence, without ``<bos>``/``<eos>``; at most ``max_len`` tokens each.

    The tokens of ``greedy_hypotheses`` without their scores: the argmax of the logits, so no
    softmax is computed (it differs only where float rounding of the log-softmax ties two tokens).
    """
    limits = (batch_size, bos_id, eos_id, max_len)
    return _greedy_loop(model, state, limits, False, device)[0]
