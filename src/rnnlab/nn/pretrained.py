"""Putting pretrained vectors into an ``nn.Embedding`` and keeping chosen rows fixed while training.

Freezing works row by row, not on the whole matrix: rows that got a pretrained vector stay as they
are, while rows the file had no vector for (``<unk>``, rare training words) still learn. A gradient
hook zeroes the frozen rows' gradients, so Adam's moments for them stay zero and its update is exactly
zero. The mask is a buffer (``frozen_rows``) of the embedding, so it is saved with the weights and a
resumed run keeps freezing the same rows without reading the vector file again.

Adam's ``weight_decay`` is added to the gradient *after* hooks run, so it would still move frozen
rows; tasks refuse that combination.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

FROZEN_BUFFER = "frozen_rows"


def load_rows(embedding: nn.Embedding, vectors: Mapping[int, np.ndarray], *, pad_id: int) -> Tensor:
    """Copy ``vectors`` (row id → (E,) array) into the embedding; ``pad_id``'s row becomes zero.

    Returns the (V,) boolean mask of rows that got a vector.
    """
    weight = embedding.weight
    found = torch.zeros(weight.size(0), dtype=torch.bool)
    if vectors:
        ids = torch.tensor(sorted(vectors), dtype=torch.long)
        rows = torch.from_numpy(np.stack([vectors[i] for i in sorted(vectors)]))  # (N, E)
        with torch.no_grad():
            weight[ids.to(weight.device)] = rows.to(weight.device, weight.dtype)
        found[ids] = True
    with torch.no_grad():
        weight[pad_id].zero_()
    return found


def freeze_rows(embedding: nn.Embedding, mask: Tensor | None = None) -> None:
    """Keep the rows where ``mask`` (V,) is True fixed during training.

    Without ``mask`` the buffer starts all False, to be filled by loading a checkpoint.
    """
    if mask is None:
        mask = torch.zeros(embedding.num_embeddings, dtype=torch.bool)
    embedding.register_buffer(FROZEN_BUFFER, mask.to(embedding.weight.device).clone())

    def zero_frozen(grad: Tensor) -> Tensor:
        frozen = getattr(embedding, FROZEN_BUFFER)  # looked up per call: follows .to() and loading
        return grad.masked_fill(frozen.unsqueeze(1), 0.0)

    embedding.weight.register_hook(zero_frozen)
