"""Padding, fixed-length truncation and length-bucketed batch sampling.

rnnlab pads each batch only to its own longest sequence and groups sentences of similar length, so
that almost no compute is spent on padding. The textbook's fixed ``num_steps`` mode is kept as
``truncate_pad`` for exact reproduction of the d2l recipe.

Bucketing, as done by ``bucket_batches``::

    shuffled ids ─┬─ chunk of 50·B ids ─ sort by length ─ cut into batches of B ─┐
                  ├─ chunk …                                                   ├─ shuffle batches
                  └─ chunk …                                                   ┘

The chunk keeps randomness between epochs while sentences inside one batch have nearly equal length.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import torch
from torch import Tensor

BUCKET_CHUNK_BATCHES = 50


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad to the longest sequence: ids (B, T) and lengths (B,).

    All tokens go into the padded tensor in one masked write (row-major, like the mask): one tensor
    per sentence cost more than a small model's decoding step for a batch of hundreds.
    """
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    max_len = int(lengths.max()) if len(sequences) else 0
    ids = torch.full((len(sequences), max_len), pad_id, dtype=torch.long)
    if max_len:
        filled = torch.arange(max_len) < lengths.unsqueeze(1)  # (B, T), True on real tokens
        ids[filled] = torch.tensor(list(chain.from_iterable(sequences)), dtype=torch.long)
    return ids, lengths


def truncate_pad(line: Sequence[int], num_steps: int, pad_id: int) -> list[int]:
    """The textbook's fixed-length mode: cut to ``num_steps`` or pad up to it."""
    if len(line) > num_steps:
        return list(line[:num_steps])
    return list(line) + [pad_id] * (num_steps - len(line))


def bucket_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool = True,
    bucket: bool = True,
    seed: int = 0,
) -> list[list[int]]:
    """Split example indices into batches; see the module docstring for the bucketing scheme.

    Deterministic for a given ``seed``, which callers derive from the run seed and the epoch so that
    a resumed run sees exactly the batches an uninterrupted one would.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    generator = torch.Generator().manual_seed(seed)
    n = len(lengths)
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    if not bucket:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    batches: list[list[int]] = []
    chunk = batch_size * BUCKET_CHUNK_BATCHES if shuffle else max(n, 1)
    for start in range(0, n, chunk):
        ids = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(ids[i : i + batch_size] for i in range(0, len(ids), batch_size))
    if shuffle:
        perm = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in perm]
    return batches


def sorted_batches(
    lengths: Sequence[int], batch_size: int, *, max_tokens: int = 0
) -> list[list[int]]:
    """Batches of indices sorted by length, for inference: callers restore the input order.

    A batch holds at most ``batch_size`` indices and, with ``max_tokens`` > 0, at most as many as
    keep its padded size (count × longest length) within ``max_tokens``; a longer item still gets a
    batch of its own. Work that grows with the padded size, such as an attention decoder's energies
    over every source position, then stays bounded in the long tail of a file's lengths, where the
    sentence count alone would pad hundreds of rows to the longest one.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in order:  # ascending, so item i is the longest of its batch
        if batch and (
            len(batch) == batch_size
            or (max_tokens > 0 and (len(batch) + 1) * lengths[i] > max_tokens)
        ):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches
