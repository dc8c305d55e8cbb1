"""Batched beam search over the step protocol, with the GNMT length penalty (Wu et al. 2016).

All live hypotheses of all sentences form one batch of B·K rows, so every step is one ``model.step``
call and a handful of tensor operations; finished hypotheses stay in tensors until the search ends
(``rnnlab.decoding.finished``)::

    rows:  sentence 0: beams 0..K-1 │ sentence 1: beams 0..K-1 │ …        (B·K rows)
    step:  log P(y | prefix) (B·K, V) + beam scores ─ the 2K best extensions per sentence (B, 2K)
           ├─ candidates ending in <eos> among the top K → that sentence's n best finished ones
           └─ the best K candidates not ending in <eos>  → next beams (state rows reordered)

Scores are sums of log-probabilities; finished hypotheses are ranked by score / lp(|Y|), with
lp(|Y|) = ((5 + |Y|) / 6)^α and |Y| counting ``<eos>`` (α = 0: raw log-probability). A sentence is
done once it has ``n_best`` finished hypotheses and its best live beam scores below the worst of them
by one of two rules (``stop``):

* ``exact`` — even if all its future tokens had probability 1: its score is divided by lp(``max_len``),
  the largest penalty it could reach. Searching on could only add hypotheses ranked below the answer,
  so the answer is that of an unbounded search. (Waiting for K finished ones, as fairseq does, returns
  the same ``n_best`` later.)
* ``heuristic`` — if it ended at the next step: its score is divided by lp(t + 2) for a beam of t + 1
  tokens, as Hugging Face's ``early_stopping=False`` does. With α > 0 a longer hypothesis may still
  have won, so the answer can differ; with α = 0 both rules are the same. On the Multi30k recipe
  (α 0.6, 1,014 val sentences) the exact rule kept a sentence for 95 rows of steps against 75 with
  this one, which ran 1.37× faster at one thread and 1.16× at two, and gave the exact rule's output
  for 1,004 of them.

A done sentence leaves the batch, as in greedy search. At ``max_len`` steps the live beams are finished
without ``<eos>``. With K = 1 and α = 0 this is exactly greedy search, except where tokens tie for the
best score: greedy search takes the first, as ``torch.argmax`` does, and the ranking of
``rnnlab.decoding.extensions`` leaves the order of equal scores unspecified, as ``torch.topk`` does.

Log-probabilities must not be NaN (only a diverged model makes them): ``torch.topk`` ranks NaN first,
so such a candidate becomes the best live beam and ends its sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rnnlab.decoding.banned import ban, banned_index
from rnnlab.decoding.extensions import best_extensions
from rnnlab.decoding.finished import FinishedHypotheses
from rnnlab.decoding.greedy import StepModel
from rnnlab.decoding.hypothesis import Hypothesis, length_penalty

BEAM_STOPS: tuple[str, ...] = ("exact", "heuristic")
BEAM_SCORES_BYTES = 16 << 20
"""The most a step's float32 scores (B·K, V) may take: ``beam_batch_size`` keeps B below it."""


def beam_batch_size(batch_size: int, beam_size: int, vocab_size: int, *, attention: bool) -> int:
    """Sentences that beam search decodes together where greedy search would take ``batch_size``.

    With attention, ``batch_size // beam_size``: the B·K rows and their (B·K, S, A) energies stay the
    size of greedy search's batch. Without it, as many as keep the step's (B·K, V) scores within
    ``BEAM_SCORES_BYTES``: a block above glibc's largest mmap threshold (32 MiB) comes from a fresh
    ``mmap`` at every step, whose first touch faults page by page. On the textbook config (32 units,
    3,820 words, 1,000 sentences, 1 thread) 204 sentences at a time instead of 512 made beam 5 1.48×
    faster on an untrained model, whose beams never end, and as fast on a trained one; 102 at a
    time was 0.80× as fast on the trained one.
    """
    if attention:
        batch_size //= beam_size
    return max(1, min(batch_size, BEAM_SCORES_BYTES // (4 * beam_size * vocab_size)))


@torch.no_grad()
def beam_search_hypotheses(
    model: StepModel,
    state: Any,
    *,
    batch_size: int,
    beam_size: int,
    bos_id: int,
    eos_id: int,
    max_len: int,
    length_penalty_alpha: float = 0.0,
    n_best: int | None = None,
    device: torch.device | str = "cpu",
    stop: str = "exact",
    banned: Sequence[int] = (),
) -> list[list[Hypothesis]]:
    """The ``n_best`` (default ``beam_size``) best hypotheses per sentence, best first.

    ``banned`` ids are never emitted (``rnnlab.decoding.banned``).
    """
    k = beam_size
    n_best = k if n_best is None else n_best
    if k < 1 or not 1 <= n_best <= k:
        raise ValueError(f"need 1 <= n_best <= beam_size (got {n_best} and {k})")
    if stop not in BEAM_STOPS:
        raise ValueError(
            f"unknown beam stop rule {stop!r}; expected one of {', '.join(BEAM_STOPS)}"
        )
    alpha = length_penalty_alpha
    finished = FinishedHypotheses(batch_size, n_best, device)
    never = banned_index(banned, device)

    # The first step reads one row per sentence (only beam 0 is live, and all K beams would be
    # copies of it); its candidates then fill K rows per sentence: row b·K + j is beam j of b.
    width = 1  # state rows per sentence: 1 before the first step, K after
    active = torch.arange(batch_size, device=device)  # original sentence of each live block
    tokens = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)
    history = torch.empty((batch_size, 0), dtype=torch.long, device=device)  # (B·width, t)
    # Only beam 0 is live at the start, so the first step does not pick K copies of one token.
    scores = torch.full((batch_size, k), float("-inf"), device=device)
    scores[:, 0] = 0.0

    for t in range(max_len):
        log_probs, state = model.step(tokens, state)  # (B_a·width, V)
        ban(log_probs, never)
        # The 2K best extensions of each sentence's beams (K of them may end in <eos>).
        cand_scores, cand_row, cand_token = best_extensions(log_probs, scores[:, :width], 2 * k)
        ends = (cand_token == eos_id) & torch.isfinite(cand_scores)  # (B_a, 2K)

        # Finish <eos> candidates ranked among the top K (fairseq's rule: with K = 1 only a
        # top-ranked <eos> ends the search, which is what makes beam 1 equal greedy).
        ended = ends[:, :k]
        ending = ended.any(1).nonzero(as_tuple=True)[0]  # blocks with a hypothesis ending here
        if ending.numel():
            ended_rows = ending.unsqueeze(1) * width + cand_row[ending, :k]  # (E, K)
            finished.add(
                active[ending],
                cand_scores[ending, :k].masked_fill(~ended[ending], float("-inf")),
                history[ended_rows.flatten()].view(ending.numel(), k, t),
                length_penalty(t + 1, alpha),
            )

        # Next beams: the K best candidates that do not end in <eos>. The candidates are sorted and
        # at most one per beam ends in <eos>, so these are the first K others of each row (found
        # without a second ``topk``, whose scalar loop costs microseconds per row on CPU). Dead
        # (-inf) candidates, which may repeat a pair when the vocabulary is tiny, count as others.
        live = ~ends
        first_k = live & (live.cumsum(1) <= k)  # (B_a, 2K), K per row
        pick = first_k.nonzero()[:, 1].view(-1, k)  # (B_a, K), row-major order keeps the ranking
        scores = cand_scores.gather(1, pick)
        beam = cand_row.gather(1, pick)
        tokens_bk = cand_token.gather(1, pick)  # (B_a, K)
        rows = (torch.arange(active.numel(), device=device).unsqueeze(1) * width + beam).view(-1)
        history = torch.cat([history.index_select(0, rows), tokens_bk.view(-1, 1)], dim=1)
        tokens = tokens_bk.view(-1)
        state = model.select_state(state, rows)
        width = k

        if t == max_len - 1:
            break
        # A sentence is done once n_best finished hypotheses exist and the best live beam would score
        # below the worst of them: exact, even if all its future tokens had probability 1 (scores
        # only fall, and dividing a negative score by the largest lp gives its highest value);
        # heuristic, if it ended at the next step. The bound is divided in float64, as finished
        # scores are: a float32 quotient may round one step below the score the beam would finish
        # with, and stop a sentence that beam still wins.
        bound_len = max_len if stop == "exact" else t + 2
        best_live = scores[:, 0].double() / length_penalty(bound_len, alpha)  # (B_a,)
        done = (best_live < finished.nth_best(active)) | ~torch.isfinite(best_live)
        if bool(done.any()):
            keep_blocks = (~done).nonzero(as_tuple=True)[0]
            keep_rows = (keep_blocks.unsqueeze(1) * k + torch.arange(k, device=device)).view(-1)
            active, scores = active[keep_blocks], scores[keep_blocks]
            history, tokens = history[keep_rows], tokens[keep_rows]
            if active.numel() == 0:
                break
            state = model.select_state(state, keep_rows)

    # Beams still live after max_len steps end without <eos>.
    if active.numel():
        finished.add(
            active,
            scores[:, :width],
            history.view(active.numel(), width, history.size(1)),
            length_penalty(history.size(1), alpha),
        )
    return finished.hypotheses()


def beam_search(
    model: StepModel,
    state: Any,
    *,
    batch_size: int,
    beam_size: int,
    n_best: int = 1,
    bos_id: int,
    eos_id: int,
    max_len: int,
    length_penalty: float = 0.0,
    device: torch.device | str = "cpu",
    stop: str = "exact",
    banned: Sequence[int] = (),
) -> list[list[list[int]]]:
    """Token ids of the ``n_best`` best hypotheses per sentence, best first (see the module doc)."""
    hyps = beam_search_hypotheses(
        model,
        state,
        batch_size=batch_size,
        beam_size=beam_size,
        bos_id=bos_id,
        eos_id=eos_id,
        max_len=max_len,
        length_penalty_alpha=length_penalty,
        n_best=n_best,
        device=device,
        stop=stop,
        banned=banned,
    )
    return [[h.tokens for h in sentence] for sentence in hyps]


__all__ = [
    "BEAM_SCORES_BYTES",
    "BEAM_STOPS",
    "Hypothesis",
    "beam_batch_size",
    "beam_search",
    "beam_search_hypotheses",
    "length_penalty",
]
