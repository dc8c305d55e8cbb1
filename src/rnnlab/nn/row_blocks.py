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

Narrow features in float32, blocked or not, are projected straight into the result, bias included,
by one matrix product of the features with a column of ones appended against the weight with the
bias appended; the log-softmax then runs in place. ``F.linear`` would first copy the bias into a
fresh output and then add the product to it, and the log-softmax would write a second copy. At 1
thread, 32 → 3,820 words: 2,560 rows in blocks took 12 ms instead of 20 with the log-softmax;
greedy search's 512 rows of logits 1.0 ms instead of 1.7. Features of 256 and 512 units gained
nothing (0.95–1.06×), so they keep ``F.linear``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.nn.capture import capturing_graph

ROW_BLOCK = 128
"""Rows per block: a block of a few thousand words' scores stays in the core's L2 cache."""
MAX_NARROW_FEATURES = 128
"""Features up to this width are projected in blocks; wider ones did not gain."""
MIN_ROWS = 1024
"""Fewer rows are projected in one call: beam search's B·K rows gain, greedy search's B do not."""


def _eager_without_autograd(features: Tensor) -> bool:
    """On CPU, run eagerly without autograd: a traced or exported graph keeps one call, which holds
    for every batch size, and ``out=`` records no gradient."""
    if capturing_graph():
        return False
    return features.device.type == "cpu" and not torch.is_grad_enabled()


def _in_blocks(features: Tensor) -> bool:
    """Narrow features of many rows."""
    rows, width = features.shape
    return width <= MAX_NARROW_FEATURES and rows >= MIN_ROWS


def _bias_folded(output: nn.Linear, features: Tensor) -> bool:
    """Narrow features projected in float32 (``out=`` takes no autocast)."""
    return (
        features.size(1) <= MAX_NARROW_FEATURES
        and not torch.is_autocast_enabled(features.device.type)
        and features.dtype == output.weight.dtype == torch.float32
    )


def step_scores(output: nn.Linear, features: Tensor, normalize: bool) -> Tensor:
    """``output(features)`` (R, H) → (R, V): logits, or float32 log-probabilities if ``normalize``.

    The log-softmax runs in float32 whatever the autocast precision of the logits.
    """
    if not _eager_without_autograd(features):
        return _one_call(output, features, normalize)
    if _bias_folded(output, features):
        return _folded_in_place(output, features, normalize)
    if not _in_blocks(features):
        return _one_call(output, features, normalize)
    rows = features.size(0)
    scores: Tensor | None = None
    for start in range(0, rows, ROW_BLOCK):
        logits = output(features[start : start + ROW_BLOCK])
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


def _one_call(output: nn.Linear, features: Tensor, normalize: bool) -> Tensor:
    logits = output(features)
    return torch.log_softmax(logits.float(), dim=-1) if normalize else logits


def _folded_in_place(output: nn.Linear, features: Tensor, normalize: bool) -> Tensor:
    """The logits of each block (or of all rows, if few) written into the result by one product,
    bias included, and normalised there."""
    rows = features.size(0)
    block = ROW_BLOCK if _in_blocks(features) else rows
    weight = output.weight  # (V, H)
    if output.bias is not None:
        weight = torch.cat([weight, output.bias.unsqueeze(1)], dim=1)  # (V, H + 1)
        features = torch.cat([features, features.new_ones(rows, 1)], dim=1)  # (R, H + 1)
    weight_t = weight.t()
    scores = features.new_empty((rows, weight.size(0)))
    for start in range(0, rows, block):
        out = scores[start : start + block]
        torch.mm(features[start : start + block], weight_t, out=out)
        if normalize:
            torch.log_softmax(out, dim=-1, out=out)
    return scores
