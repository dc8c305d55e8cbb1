"""From a bidirectional encoder's final states to a unidirectional decoder's initial state.

A bidirectional encoder of L layers ends with 2·L states, ordered as ``torch.nn`` does (layer-major:
row ``2·l + d`` is layer ``l``, direction ``d``); the decoder runs one direction with L layers. The
bridge concatenates each layer's forward and backward states and maps them back to H::

    h (2·L, B, H) ─ view (L, 2, B, H) ─ per layer [h_fwd ; h_bwd] (L, B, 2H) ─ linear ─ tanh ─ (L, B, H)

For LSTMs the cell state c gets its own linear map, through the same tanh (Cho et al. 2014's and
Bahdanau et al. 2015's decoders start from ``tanh(W h)`` of the encoder's summary in the same way).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.nn.state import RecurrentState


def merge_directions(hidden: Tensor, num_directions: int) -> Tensor:
    """Final states (L·D, B, H) → (L, B, D·H), each layer's directions side by side."""
    layers_dirs, batch, size = hidden.shape
    num_layers = layers_dirs // num_directions
    merged = hidden.view(num_layers, num_directions, batch, size).permute(0, 2, 1, 3)
    return merged.reshape(num_layers, batch, num_directions * size)  # (L, B, D·H)


class Bridge(nn.Module):
    """Map a bidirectional encoder's (2·L, B, H) final state (or (h, c) pair) to (L, B, H)."""

    def __init__(self, *, hidden_size: int, cell_state: bool) -> None:
        super().__init__()
        self.hidden_layer = nn.Linear(2 * hidden_size, hidden_size)
        self.cell_layer = nn.Linear(2 * hidden_size, hidden_size) if cell_state else None

    def forward(self, state: RecurrentState) -> RecurrentState:
        if isinstance(state, tuple):
            if self.cell_layer is None:
                raise ValueError("this bridge was built for a GRU/RNN state, got an (h, c) pair")
            h, c = state
            return (
                torch.tanh(self.hidden_layer(merge_directions(h, 2))),
                torch.tanh(self.cell_layer(merge_directions(c, 2))),
            )
        return torch.tanh(self.hidden_layer(merge_directions(state, 2)))
