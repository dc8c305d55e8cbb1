"""The best extensions of each sentence's beams: beam search's candidate ranking, fast on CPU.

At every step beam search needs, per sentence, the ``count`` best pairs (beam j, token v) by
``score[j] + log_prob[j, v]``. Ranking all W·V pairs of a sentence is exact but slow: ``torch.topk``
over the last dimension of a CPU tensor is a scalar loop costing microseconds per row, which on a
small model is more than the step itself. Two rankings give the same answer:

* ``per_row`` — the ``count`` best tokens of each beam (a beam's score is one constant added to all
  of its tokens, so its share of the answer is among them), then the best ``count`` of those W·count;
* ``blocked`` — the maximum of every block of ``BLOCK`` columns (``amax``, vectorised), the ``count``
  best blocks of the sentence by ``score + block maximum``, and the best ``count`` of their
  ``count · BLOCK`` entries::

      log_probs (B·W, V) ─ view (B·W, V / BLOCK, BLOCK) ─ amax ─ + score → (B, W · V / BLOCK)
                         ─ topk: the ``count`` best blocks of each sentence → gather their entries
                         ─ (B, count · BLOCK) ─ topk: the ``count`` best extensions

  An extension among the ``count`` best lies in a block whose maximum is at least its own value, and
  fewer than ``count`` blocks can have a larger maximum (each holds a larger extension), so its block
  is among the ``count`` best. ``topk`` then runs over B rows of W·V / BLOCK and count · BLOCK
  columns instead of B·W rows of V.

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
    covered = whole * BLOCK
    block_max = log_probs[:, :covered].unflatten(1, (whole, BLOCK)).amax(-1)  # (B·W, whole)
    if covered < vocab:  # the last, shorter block
        block_max = torch.cat([block_max, log_probs[:, covered:].amax(-1, keepdim=True)], dim=1)
    blocks = block_max.size(1)
    block_scores = (scores.unsqueeze(-1) + block_max.view(batch, width, blocks)).flatten(1)
    best_blocks = block_scores.topk(count, dim=-1).indices  # (B, count)
    beam = best_blocks // blocks
    column = (best_blocks % blocks * BLOCK).unsqueeze(-1) + torch.arange(
        BLOCK, device=log_probs.device
    )  # (B, count, BLOCK)
    # Index into the sentence's W·V log-probabilities; columns past the vocabulary read its last
    # entry and are masked out below.
    flat = (beam * vocab).unsqueeze(-1) + column.clamp(max=vocab - 1)
    entries = log_probs.view(batch, width * vocab).gather(1, flat.flatten(1))
    entries = (scores.gather(1, beam).unsqueeze(-1) + entries.view_as(flat)).masked_fill(
        column >= vocab, float("-inf")
    )
    best, position = entries.flatten(1).topk(count, dim=-1)  # (B, count), sorted
    picked = flat.flatten(1).gather(1, position)
    return best, picked // vocab, picked % vocab
