"""Scheduled sampling's feedback (Bengio et al. 2015): which token each sentence reads next.

A decoder's teacher-forced loop reads gold tokens, whose embeddings and input projections it computes
for all T positions before the loop. Scheduled sampling runs that *same* loop and, before each position
after the first, asks a ``Feedback`` which sentences read their gold token and which read the model's
own prediction from the step before::

    hoisted     gold embeddings (B, T, E), their input projection (B, T, G·H)
    step t > 0  choose(gold_t, features_{t-1}) → tokens (B,), use_gold (B,)
                rows reading a prediction: embedded and projected here, one step's worth
                rows reading gold: taken from the hoisted tensors (``torch.where``)

With every row reading gold, the loop computes the very tensors teacher forcing computes, so the
features are equal bit for bit; a prediction costs one embedding and projection of its row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Feedback:
    """Per-token choice between the gold token and the model's prediction."""

    teacher_forcing: float
    """Probability ε that a sentence reads its gold token at a position."""
    project: Callable[[Tensor], Tensor]
    """Decoder features (B, H) → vocabulary logits (B, V)."""
    sample: bool = False
    """Feed a sample from the softmax instead of its argmax."""

    def choose(self, gold: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """Gold tokens (B,) and the previous step's features (B, H) → tokens to read (B,) and a
        mask (B,), True where the token is gold. Not differentiated through."""
        with torch.no_grad():
            if self.teacher_forcing >= 1.0:
                return gold, torch.ones_like(gold, dtype=torch.bool)
            logits = self.project(features).float()  # (B, V)
            if self.sample:
                predicted = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(1)
            else:
                predicted = logits.argmax(dim=-1)
            use_gold = torch.rand(gold.shape, device=gold.device) < self.teacher_forcing
            return torch.where(use_gold, gold, predicted), use_gold


def mix(use_gold: Tensor, gold: Tensor, fed: Tensor) -> Tensor:
    """Rows of ``gold`` (B, …) where ``use_gold`` (B,), else rows of ``fed``; gold rows are copied
    exactly, so an all-gold step equals teacher forcing bit for bit."""
    return torch.where(use_gold.view(-1, *([1] * (gold.dim() - 1))), gold, fed)


__all__ = ["Feedback", "mix"]
