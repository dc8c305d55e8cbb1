"""Cross-entropy over padded batches.

Two reductions exist on purpose:

* ``MaskedSoftmaxCELoss`` is the textbook's: per sequence, the mean over *all* T positions of the
  masked token losses, so padding counts in the denominator. It is kept for parity with d2l.
* ``masked_token_nll`` is what rnnlab trains and reports with: the sum of token losses over valid
  positions, divided by the number of valid tokens by the caller. With the textbook reduction a short
  sentence in a long batch gets a smaller gradient than the same sentence in a short batch, and the
  reported loss depends on how much padding a batch happened to have; per-token means do not.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.nn.cross_entropy import summed_cross_entropy
from rnnlab.nn.masking import length_mask, sequence_mask


class MaskedSoftmaxCELoss(nn.CrossEntropyLoss):
    """Textbook masked cross-entropy: ``pred`` (B, T, V), ``label`` (B, T), ``valid_len`` (B,) → (B,)."""

    def __init__(self) -> None:
        super().__init__(reduction="none")

    def forward(self, pred: Tensor, label: Tensor, valid_len: Tensor) -> Tensor:  # type: ignore[override]
        weights = sequence_mask(torch.ones_like(label, dtype=pred.dtype), valid_len)  # (B, T)
        unweighted = super().forward(pred.permute(0, 2, 1), label)  # (B, T)
        return (unweighted * weights).mean(dim=1)


def select_valid(values: Tensor, lengths: Tensor) -> Tensor:
    """Gather the valid positions of a right-padded (B, T, ...) tensor into (N, ...), N = Σ lengths.

    Projecting and scoring only these rows is where most of the savings over the textbook recipe come
    from: the vocabulary projection is the largest matrix product, and padding would otherwise pay for it.
    """
    mask = length_mask(lengths.to(values.device), values.size(1))  # (B, T)
    return values[mask]


def masked_token_nll(
    logits: Tensor, targets: Tensor, *, label_smoothing: float = 0.0, padded: bool = False
) -> Tensor:
    """Summed cross-entropy of already-selected valid rows: ``logits`` (N, V), ``targets`` (N,).

    The log-softmax and the sum run in float32 even when the logits come out of bfloat16 autocast.
    ``padded=True``: the logits may end in rows of padding past the N targets, which are skipped
    (see ``summed_cross_entropy``).
    """
    return summed_cross_entropy(logits, targets, label_smoothing=label_smoothing, padded=padded)
