"""Recurrent building blocks: masks, the layer factory, and from-scratch cells and layers."""

from rnnlab.nn.factory import CELLS, IMPLS, has_cell_state, make_rnn
from rnnlab.nn.masking import length_mask, masked_softmax, sequence_mask

__all__ = [
    "CELLS",
    "IMPLS",
    "has_cell_state",
    "length_mask",
    "make_rnn",
    "masked_softmax",
    "sequence_mask",
]
