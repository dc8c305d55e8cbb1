"""Dropout with one mask per sequence: the same features dropped at every time step.

Standard dropout draws a new mask at every position, so a recurrent layer sees each feature of a
sentence dropped at some positions and kept at others; over a sentence the noise averages out.
Variational dropout (Gal & Ghahramani 2016) draws one mask per sequence and feature and applies it
at every time step, so a feature is missing for the whole sentence and the layer above must tag
without it. Reimers & Gurevych (2017) found it the most effective regulariser of BiLSTM sequence
taggers. Here it applies to a layer's inputs and outputs, not to the recurrent connections, which
the fused kernels do not expose.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SequenceDropout(nn.Module):
    """Zero each feature of a (B, T, F) batch for a whole sequence with probability ``p``.

    Kept features are scaled by 1 / (1 − p), as in ``nn.Dropout``, so expectations are unchanged
    and evaluation is the identity.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, inputs: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return inputs
        batch, _, features = inputs.shape
        keep = torch.empty(batch, 1, features, device=inputs.device, dtype=inputs.dtype)
        keep.bernoulli_(1.0 - self.p).div_(1.0 - self.p)
        return inputs * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


__all__ = ["SequenceDropout"]
