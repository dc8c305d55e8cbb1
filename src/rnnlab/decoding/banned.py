"""Tokens a search never emits: a translation holds neither ``<pad>`` nor ``<bos>``.

Training never asks the decoder for either (``<pad>`` targets are masked out of the loss and
``<bos>`` is only an input), so their probabilities are small but not zero. A wide beam or a weak
model still picks them, and since detokenizing drops them, two hypotheses that differ only by one
would read as the same text. Their log-probabilities are set to −inf after normalisation (as in
fairseq), so every other token keeps the probability the model gives it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def banned_index(ids: Sequence[int], device: torch.device | str) -> Tensor | None:
    """The ids as a tensor for ``ban``, or None when there are none (nothing to do per step)."""
    return torch.tensor(sorted(set(ids)), dtype=torch.long, device=device) if ids else None


def ban(scores: Tensor, index: Tensor | None) -> Tensor:
    """Set the columns ``index`` of (R, V) step scores to −inf, in place; returns ``scores``.

    In place, because a beam's scores are megabytes at every step: a model's ``step`` returns a
    tensor of its own (not a view shared by its rows), as every rnnlab model does.
    """
    if index is not None:
        scores.index_fill_(1, index, float("-inf"))
    return scores
