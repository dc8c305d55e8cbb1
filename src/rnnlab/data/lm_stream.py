"""Minibatches from one long token stream: the textbook's two schemes for language models.

Both schemes first skip a random ``offset`` in ``[0, bptt)`` (drawn from ``(seed, epoch)``), so that the
cut points differ between epochs, and predict token ``t + 1`` from tokens ``≤ t``.

Sequential partitioning (state carried across batches, truncated BPTT)::

    ids:  [ o skipped | x₀ x₁ … x_{B·L-1} | x_{B·L} (last target) | < B tokens dropped ]

    the B·L inputs are cut into B equal streams, one row each:

              batch 0        batch 1        batch 2 (may be shorter)
    row 0   [x₀   … x₃ ]  [x₄    … x₇  ]  [x₈    x₉  ]
    row 1   [x₁₀  … x₁₃]  [x₁₄   … x₁₇ ]  [x₁₈   x₁₉]      (B = 3, L = 10, bptt = 4)
    row 2   [x₂₀  … x₂₃]  [x₂₄   … x₂₇ ]  [x₂₈   x₂₉]

    row b of batch k continues row b of batch k − 1, so the model's final state of one batch is the
    initial state of the next, detached from the graph: gradients flow back at most ``bptt`` steps.
    Targets are the inputs shifted by one: the targets of row b are x_{bL+1} … x_{(b+1)L}.

Random sampling (state reset for every batch)::

    ids:  [ o skipped | piece 0 | piece 1 | … | piece n−1 | tail dropped ]   each piece: bptt inputs

    pieces are shuffled and grouped B at a time (the last batch may have fewer rows); each piece's
    targets are its inputs shifted by one, so neighbouring pieces share no target.

Coverage: with either scheme every target position after the offset is used exactly once per epoch,
up to a tail shorter than ``B`` tokens (sequential) or ``bptt`` tokens (random).
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

StreamBatch = tuple[Tensor, Tensor]
"""(inputs (B, T), targets (B, T)) token ids."""


def epoch_offset(seed: int, epoch: int, bptt: int) -> int:
    """How many leading tokens an epoch skips: a pure function of ``(seed, epoch)``."""
    return random.Random(seed * 1000 + epoch).randrange(bptt)


def sequential_batches(
    ids: Tensor, *, batch_size: int, bptt: int, offset: int = 0
) -> list[StreamBatch]:
    """Cut ``ids`` (N,) into ``batch_size`` parallel streams and those into ``bptt``-long batches.

    Raises ``ValueError`` when the text is too short for one token per stream.
    """
    _check(batch_size, bptt)
    if (ids.numel() - offset - 1) // batch_size < 1:
        offset = 0
    length = (ids.numel() - offset - 1) // batch_size  # L, tokens per stream
    if length < 1:
        raise ValueError(
            f"{ids.numel()} tokens are too few for {batch_size} parallel streams "
            "(lower train.batch_size)"
        )
    span = batch_size * length
    inputs = ids[offset : offset + span].view(batch_size, length)  # (B, L)
    targets = ids[offset + 1 : offset + 1 + span].view(batch_size, length)  # (B, L)
    return [
        (inputs[:, start : start + bptt], targets[:, start : start + bptt])
        for start in range(0, length, bptt)
    ]


def random_batches(
    ids: Tensor, *, batch_size: int, bptt: int, offset: int = 0, seed: int = 0
) -> list[StreamBatch]:
    """Non-overlapping ``bptt``-long pieces of ``ids`` (N,), shuffled by ``seed``, ``batch_size`` a batch.

    Raises ``ValueError`` when the text is shorter than one piece.
    """
    _check(batch_size, bptt)
    if (ids.numel() - offset - 1) // bptt < 1:
        offset = 0
    count = (ids.numel() - offset - 1) // bptt  # pieces
    if count < 1:
        raise ValueError(f"{ids.numel()} tokens are too few for one piece of train.bptt={bptt}")
    span = count * bptt
    inputs = ids[offset : offset + span].view(count, bptt)  # (n, T)
    targets = ids[offset + 1 : offset + 1 + span].view(count, bptt)  # (n, T)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return [
        (inputs[rows], targets[rows])
        for rows in (order[start : start + batch_size] for start in range(0, count, batch_size))
    ]


def _check(batch_size: int, bptt: int) -> None:
    if batch_size < 1 or bptt < 1:
        raise ValueError(f"batch_size and bptt must be positive (got {batch_size}, {bptt})")
