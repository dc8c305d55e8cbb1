"""Masks over padded batches.

Every batch in rnnlab is right-padded: sequence ``b`` holds ``lengths[b]`` valid items followed by
padding. These helpers turn lengths into masks so that padding never reaches a loss, a softmax or a
metric.
"""

from __future__ import annotations

import torch
from torch import Tensor


def length_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Boolean mask (B, T) that is True at valid positions ``t < lengths[b]``."""
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def sequence_mask(x: Tensor, valid_len: Tensor, value: float = 0) -> Tensor:
    """Return a copy of ``x`` with every position ``>= valid_len`` along axis 1 set to ``value``.

    The textbook (d2l) semantics: ``x`` is (B, T, ...) and ``valid_len`` is (B,). Trailing dimensions
    are masked whole, so on a (B, T, V) tensor whole rows of V entries are replaced.
    """
    mask = length_mask(valid_len.to(x.device), x.size(1))  # (B, T)
    mask = mask.view(*mask.shape, *([1] * (x.dim() - 2)))
    return x.masked_fill(~mask, value)


def masked_softmax(scores: Tensor, valid_lens: Tensor | None) -> Tensor:
    """Softmax over the last axis that gives exactly zero weight to positions ``>= valid_lens``.

    ``scores`` is (B, Q, K) or (B, K); ``valid_lens`` is (B,) (one length per batch row). Filling with
    ``-inf`` rather than the textbook's ``-1e6`` makes the padded weights exactly 0, not merely tiny.
    A row with length 0 would be all ``-inf``; it gets uniform zeros instead of NaN.
    """
    if valid_lens is None:
        return torch.softmax(scores, dim=-1)
    mask = length_mask(valid_lens.to(scores.device), scores.size(-1))  # (B, K)
    if scores.dim() == 3:
        mask = mask.unsqueeze(1)  # (B, 1, K)
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.nan_to_num(weights, nan=0.0)
