"""Adversarial perturbations of a model's input representations (adversarial training).

Goodfellow et al. 2015 train on each example and on the example moved a small step in the direction
that raises the loss most; Miyato et al. 2017 moved that idea from pixels to word embeddings, and
Yasunaga, Kasai & Radev 2018 ("Robust Multilingual Part-of-Speech Tagging via Adversarial
Training") to the word + character representations of a BiLSTM-CRF tagger, where it helps rare and
unseen words most. The step is the first-order worst case: along the loss gradient, of a fixed norm
per sequence.
"""

from __future__ import annotations

from torch import Tensor

from rnnlab.nn.masking import length_mask


def adversarial_perturbation(gradient: Tensor, lengths: Tensor, epsilon: float) -> Tensor:
    """The perturbation (B, T, F) of each sequence's inputs along its loss ``gradient`` (B, T, F).

    Each sequence's perturbation is its own gradient (over its ``lengths[b]`` valid positions) scaled
    to the norm ``epsilon · √(lengths[b] · F)``: a root-mean-square of ``epsilon`` per valid input
    coordinate, so that ``epsilon`` is on the scale of the representations' own values whatever the
    sentence length. Padded positions get 0. Computed in float32, returned in the gradient's dtype,
    and without a graph: the step is a constant of the adversarial loss (Goodfellow et al. 2015),
    not something to differentiate through.
    """
    dtype = gradient.dtype
    gradient = gradient.detach().float()
    mask = length_mask(lengths.to(gradient.device), gradient.size(1)).unsqueeze(2)  # (B, T, 1)
    gradient = gradient.masked_fill(~mask, 0.0)
    norms = gradient.flatten(1).norm(dim=1)  # (B,)
    sizes = (lengths.to(gradient.device).float() * gradient.size(2)).sqrt()  # (B,) √(T_b · F)
    # A sequence whose gradient vanishes (a loss already flat there) stays zero: 0 times any scale.
    scale = epsilon * sizes / norms.clamp_min(1e-30)
    return (gradient * scale.view(-1, 1, 1)).to(dtype)
