"""The best extensions of each sentence's beams: beam search's candidate ranking, fast on CPU.

At every step beam search needs, per sentence, the ``count`` best pairs (beam j, token v) by
``score[j] + log_prob[j, v]``. Ranking all W·V pairs of a sentence is exact but slow: ``torch.topk``
over the last dimension of a CPU tensor is a scalar loop costing microseconds per row, which on a
small model is more than the step itself. Two rankings give the same answer:

* ``per_row`` — the ``count`` best tokens of each beam (a beam's score is one constant added to all
  of its tokens, so its share of the answer is among them), then the best ``count`` of those W·count;
* ``blocked`` — the maximum of every whole block of ``BLOCK`` columns (``amax``, vectorised), the
  ``count`` best blocks of the sentence by ``score + block maximum``, and the best ``count`` of their
  ``count · BLOCK`` entries and of the columns after the last whole block (the tail, in every beam)::

      log_probs (B·W, V) ─ view (B·W, V // BLOCK, BLOCK) ─ amax ─ + score → (B, W · V // BLOCK)
                         ─ topk: the ``count`` best blocks of each sentence → their entries, copied
                         ─ (B, count · BLOCK) ┬ tail entries (B, W · V % BLOCK)
                                              └ topk: the ``count`` best extensions

  An extension among the ``count`` best outside the tail lies in a block whose maximum is at least
  its own value, and fewer than ``count`` blocks can have a larger maximum (each holds a larger
  extension), so its block is among the ``count`` best. ``topk`` then runs over B rows of
  W·V / BLOCK and count · BLOCK + W · V % BLOCK columns instead of B·W rows of V.

Both return the same scores; which of two equal scores comes first is not specified (as for
``torch.topk``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.decoding.argmax import BLOCK

Extensions = tuple[Tensor, Tensor, Tensor]
"""Scores (B, count), best first; the beam (row in its sentence) and the token of each."""


def best_extensions(log_probs: Tensor, scores: Tensor, count: int) -> Extensions:
    """The ``count`` best extensions of each sentence's W beams, best first.

    ``log_probs`` (B·W, V) holds each beam's next-token log-probabilities, rows grouped by sentence;
    ``scores`` (B, W) the beams' scores so far. Fewer than ``count`` pairs: ``-inf`` fills the rest
    (with some valid beam and token).
    """
    if _blocked_applies(log_probs, scores.size(1), count):
        return _blocked(log_probs, scores, count)
    return _per_row(log_probs, scores, count)


def _blocked_applies(log_probs: Tensor, width: int, count: int) -> bool:
    """Whether each sentence has ``count`` blocks to rank (and the device is one where it pays)."""
    blocks = -(-log_probs.size(-1) // BLOCK)
    return (
        log_probs.device.type == "cpu"
        and log_probs.is_contiguous()
        and log_probs.size(-1) >= 2 * BLOCK
        and width * blocks >= count
    )


def _per_row(log_probs: Tensor, scores: Tensor, count: int) -> Extensions:
    batch, width = scores.shape
    per_row = min(count, log_probs.size(-1))
    row_scores, row_tokens = log_probs.topk(per_row, dim=-1)  # (B·W, per_row)
    candidates = (scores.unsqueeze(-1) + row_scores.view(batch, width, per_row)).flatten(1)
    if candidates.size(1) < count:  # tiny vocabularies: dead candidates keep ``count`` columns
        candidates = F.pad(candidates, (0, count - candidates.size(1)), value=float("-inf"))
    best, index = candidates.topk(count, dim=-1)  # (B, count), sorted
    index = index.clamp(max=width * per_row - 1)  # a padding column stands for some real pair
    tokens = row_tokens.view(batch, width * per_row).gather(1, index)
    return best, index // per_row, tokens


def _blocked(log_probs: Tensor, scores: Tensor, count: int) -> Extensions:
    batch, width = scores.shape
    vocab = log_probs.size(-1)
    whole = vocab // BLOCK
    covered, tail = whole * BLOCK, vocab - whole * BLOCK
    blocked = log_probs[:, :covered].unflatten(1, (whole, BLOCK))  # (B·W, whole, BLOCK), a view
    block_scores = (scores.unsqueeze(-1) + blocked.amax(-1).view(batch, width, whole)).flatten(1)
    picked = min(count, width * whole)  # all blocks of a sentence, if it has fewer than ``count``
    best_blocks = block_scores.topk(picked, dim=-1).indices  # (B, picked)
    block_beam = best_blocks // whole
    rows = torch.arange(batch, device=log_probs.device).unsqueeze(1) * width + block_beam
    # The picked blocks' entries, copied whole by one indexing call, plus their beam's score.
    entries = blocked[rows, best_blocks % whole] + scores.gather(1, block_beam).unsqueeze(-1)
    candidates = entries.flatten(1)  # (B, picked · BLOCK)
    if tail:  # the columns after the last whole block are candidates in every beam
        tail_scores = scores.unsqueeze(-1) + log_probs[:, covered:].view(batch, width, tail)
        candidates = torch.cat([candidates, tail_scores.flatten(1)], dim=1)
    best, position = candidates.topk(count, dim=-1)  # (B, count), sorted
    slot = (position // BLOCK).clamp(max=picked - 1)
    beam = block_beam.gather(1, slot)
    token = best_blocks.gather(1, slot) % whole * BLOCK + position % BLOCK
    if tail:
        past = (position - picked * BLOCK).clamp(min=0)  # index among the tail candidates
        in_tail = position >= picked * BLOCK
        beam = torch.where(in_tail, past // tail, beam)
        token = torch.where(in_tail, covered + past % tail, token)
    return best, beam, token
