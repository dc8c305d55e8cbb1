"""Dropout for recurrent models: a faster ``nn.Dropout`` on a CPU, and one mask per sequence.

``Dropout`` and ``dropout`` are ``nn.Dropout`` and ``F.dropout`` with another way to draw the mask on a
CPU. There, ``F.dropout`` draws it with ``bernoulli_``, which runs on one thread and took 8 ms for a
(32, 35, 512) batch of the PTB recipe, about a tenth of its training step; comparing uniform numbers
with p draws the same distribution and made forward and backward together 1.9–3.0× faster (B, T, F
batches of the PTB and Multi30k recipes, float32 and bfloat16, 1 and 2 threads). Elsewhere (CUDA)
``F.dropout`` is used unchanged: its kernel is fused.

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
import torch.nn.functional as F
from torch import Tensor, nn


def dropout(inputs: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(inputs, p, training)``: each value zeroed with probability ``p``, the kept ones
    scaled by 1 / (1 − p); on a CPU the mask comes from uniform numbers compared with ``p``."""
    if not training or p == 0.0:
        return inputs
    if inputs.device.type != "cpu" or not 0.0 < p < 1.0:
        return F.dropout(inputs, p, training=True)
    return inputs * _scaled_keep_mask(inputs.shape, p, inputs)


def _scaled_keep_mask(shape: torch.Size | tuple[int, ...], p: float, like: Tensor) -> Tensor:
    """A mask of ``shape`` in ``like``'s dtype and device: 0 with probability ``p``, else 1 / (1 − p).

    Drawn as float32 uniforms whatever the dtype: bfloat16 ones would take only 256 values.
    """
    keep = torch.rand(shape, device=like.device).ge_(p).mul_(1.0 / (1.0 - p))
    return keep.to(like.dtype)


class Dropout(nn.Module):
    """``nn.Dropout`` through ``dropout``: the same module, with the faster mask on a CPU."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, inputs: Tensor) -> Tensor:
        return dropout(inputs, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


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
        return inputs * _scaled_keep_mask((batch, 1, features), self.p, inputs)

    def extra_repr(self) -> str:
        return f"p={self.p}"


__all__ = ["Dropout", "SequenceDropout", "dropout"]
