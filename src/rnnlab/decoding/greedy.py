"""Batched greedy search over the step protocol.

The whole batch decodes together; sentences that emitted ``<eos>`` leave the batch (their rows are
dropped from the state) once they are a quarter of it, so finished sentences soon stop costing
compute, without a copy of the state at every step that ends one — the textbook decodes one
sentence at a time instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from rnnlab.decoding.argmax import first_argmax
from rnnlab.decoding.banned import ban, banned_index
from rnnlab.decoding.hypothesis import Hypothesis, length_penalty


class StepModel(Protocol):
    def step(self, tokens: Tensor, state: Any, *, normalize: bool = True) -> tuple[Tensor, Any]: ...

    def select_state(self, state: Any, indices: Tensor) -> Any: ...


DROP_FINISHED_SHARE = 0.25
"""Finished sentences stay in the batch, their outputs ignored, until they are this share of its
rows; then they all leave in one ``select_state``. Dropping rows copies the whole decoder state, an
attention model's memory and keys included: on Multi30k's val sentences (batches of about 500 of up
to 47 source pieces, float32 memory) those copies took a fifth of greedy search's time when every
step that ended a sentence dropped it. The finished rows computed meanwhile cost less than that."""


def _greedy_loop(
    model: StepModel,
    state: Any,
    limits: tuple[int, int, int, int],
    scored: bool,
    device: torch.device | str,
    banned: Sequence[int],
) -> tuple[list[list[int]], list[bool], list[float]]:
    """Tokens per sentence (without ``<eos>``), whether each ended, and their summed log-probs.

    Unscored, the loop asks the model for logits (``normalize=False``) and reads only their argmax:
    the softmax over the vocabulary costs as much as a small model's recurrent step. The summed
    log-probabilities are then all 0. ``limits`` is (batch size, ``<bos>``, ``<eos>``, max length).
    """
    batch_size, bos_id, eos_id, max_len = limits
    never = banned_index(banned, device)
    # Tokens go into one (B, max_len) tensor, one indexed write per step, and become lists once at
    # the end: appending to B Python lists at every step cost more than a small model's step.
    emitted = torch.full((batch_size, max(max_len, 0)), -1, dtype=torch.long, device=device)
    log_prob = torch.zeros(batch_size, device=device)  # (B,) summed over the emitted tokens
    rows = torch.arange(batch_size, device=device)  # the sentence of each row of the state
    running = torch.ones(batch_size, dtype=torch.bool, device=device)  # not yet ended, per row
    finished_rows = 0  # rows whose sentence has ended but that are still in the state
    tokens = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)
    for t in range(max_len):
        if rows.numel() == finished_rows:
            break
        scores, state = model.step(tokens, state, normalize=scored)  # (R, V)
        tokens = first_argmax(ban(scores, never))  # (R,)
        written = running if finished_rows else slice(None)
        emitted[rows[written], t] = tokens[written]
        if scored:
            step_log_prob = scores.gather(1, tokens.unsqueeze(1)).squeeze(1)
            log_prob.index_add_(0, rows[written], step_log_prob[written])
        ends_now = tokens == eos_id
        if finished_rows:
            ends_now &= running
        if not bool(ends_now.any()):
            continue
        running = running & ~ends_now
        finished_rows = rows.numel() - int(running.sum())
        if finished_rows >= DROP_FINISHED_SHARE * rows.numel():
            keep = running.nonzero(as_tuple=True)[0]
            rows, tokens, running = rows[keep], tokens[keep], running[keep]
            state = model.select_state(state, keep)
            finished_rows = 0
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
    banned: Sequence[int] = (),
) -> list[Hypothesis]:
    """The greedy output of every sentence with its log-probability and score.

    The score is what beam search with one beam would rank by (the same normalisation), so a caller
    sees one meaning of ``score`` whichever search ran. ``banned`` ids are never emitted
    (``rnnlab.decoding.banned``).
    """
    limits = (batch_size, bos_id, eos_id, max_len)
    outputs, ended, log_probs = _greedy_loop(model, state, limits, True, device, banned)
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
    banned: Sequence[int] = (),
) -> list[list[int]]:
    """Token ids per sentence, without ``<bos>``/``<eos>``; at most ``max_len`` tokens each.

    The tokens of ``greedy_hypotheses`` without their scores: the argmax of the logits, so no
    softmax is computed (it differs only where float rounding of the log-softmax ties two tokens).
    """
    limits = (batch_size, bos_id, eos_id, max_len)
    return _greedy_loop(model, state, limits, False, device, banned)[0]
