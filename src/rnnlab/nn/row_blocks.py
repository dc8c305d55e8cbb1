"""A decoding step's scores over the vocabulary, projected in blocks of rows when that is faster.

Beam search projects many rows (B·K) of the decoder's features onto the vocabulary at every step.
When the features are narrow (the textbook's 32 units), the product does little arithmetic per
logit it writes, and on CPU one call over all rows was 1.3–2× slower than the same product done
128 rows at a time (torch 2.13 with MKL, 1 thread: 32 → 3,820 words over 1,500–2,560 rows); the
log-softmax of a block just written then also reads it from cache. Wide features (256 units) gained
nothing, nor did greedy search's 512 rows (between 0.87× and 1.16× in alternating rounds at 1 and 2
threads), so wide features, fewer than ``MIN_ROWS`` rows and other devices are projected in one call::

    features (R, H) ─ rows 0..127   ─ project ─ [log-softmax] ─┐
                    ─ rows 128..255 ─ project ─ [log-softmax] ─┼─ scores (R, V)
                    ─ …                                         ─┘
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

ROW_BLOCK = 128
"""Rows per block: a block of a few thousand words' scores stays in the core's L2 cache."""
MAX_NARROW_FEATURES = 128
"""Features up to this width are projected in blocks; wider ones did not gain."""
MIN_ROWS = 1024
"""Fewer rows are projected in one call: beam search's B·K rows gain, greedy search's B do not."""


def _in_blocks(features: Tensor) -> bool:
    """Narrow features of many rows on CPU, run eagerly: a traced or exported graph keeps one call,
    which holds for every batch size."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
        return False
    rows, width = features.shape
    return features.device.type == "cpu" and width <= MAX_NARROW_FEATURES and rows >= MIN_ROWS


def step_scores(project: Callable[[Tensor], Tensor], features: Tensor, normalize: bool) -> Tensor:
    """``project(features)`` (R, H) → (R, V): logits, or float32 log-probabilities if ``normalize``.

    The log-softmax runs in float32 whatever the autocast precision of the logits.
    """
    if not _in_blocks(features):
        logits = project(features)
        return torch.log_softmax(logits.float(), dim=-1) if normalize else logits
    rows = features.size(0)
    scores: Tensor | None = None
    for start in range(0, rows, ROW_BLOCK):
        logits = project(features[start : start + ROW_BLOCK])
        if scores is None:  # the vocabulary size and the logits' dtype are known from here on
            dtype = torch.float32 if normalize else logits.dtype
            scores = logits.new_empty((rows, logits.size(-1)), dtype=dtype)
        out = scores[start : start + ROW_BLOCK]
        if normalize:
            torch.log_softmax(logits.float(), dim=-1, out=out)
        else:
            out.copy_(logits)
    assert scores is not None  # features has at least MIN_ROWS rows
    return scores
