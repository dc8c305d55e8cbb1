"""Padding, truncation and batch sampling against hand-worked cases and brute-force properties.

What tests/data/test_parallel.py already checks (``pad_batch`` equals ``pad_sequence``,
bucketing covers every index once, is seeded and cuts padding, ``sorted_batches``' token budget)
is not repeated. Added here: the edge cases of ``pad_batch``; ``truncate_pad`` against the
one-line "pad, then cut" formula; ``bucket_batches`` in each of its four modes against the batches
they must give (plain slices, one global stable sort by length, and, for the shuffled buckets, the
slices of the length order whatever the seed, and batch sizes counted per chunk of 50 batches);
the argument checks; and empty inputs.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.data.batching import (
    BUCKET_CHUNK_BATCHES,
    bucket_batches,
    pad_batch,
    sorted_batches,
    truncate_pad,
)

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)


def slices(items: list[int], size: int) -> list[list[int]]:
    """``items`` cut into consecutive pieces of ``size`` (the last one may be shorter)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def length_order(lengths: list[int]) -> list[int]:
    """Indices by ascending length, ties in index order (Python's sort is stable)."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


# -- pad_batch ----------------------------------------------------------------------------------
def test_pad_batch_of_no_sentences_is_empty():
    ids, lengths = pad_batch([], pad_id=0)
    assert ids.shape == (0, 0) and lengths.shape == (0,)
    assert ids.dtype == torch.long and lengths.dtype == torch.long


def test_pad_batch_of_empty_sentences_has_no_columns():
    ids, lengths = pad_batch([[], [], []], pad_id=7)
    assert ids.shape == (3, 0) and lengths.tolist() == [0, 0, 0]


def test_pad_batch_takes_tuples_and_leaves_them_alone():
    sequences = ((4, 5), (6,), ())
    ids, lengths = pad_batch(sequences, pad_id=1)
    assert ids.tolist() == [[4, 5], [6, 1], [1, 1]] and lengths.tolist() == [2, 1, 0]
    assert ids.dtype == torch.long and sequences == ((4, 5), (6,), ())


# -- truncate_pad -------------------------------------------------------------------------------
@PROPERTY
@given(
    line=st.lists(st.integers(0, 50), max_size=12),
    num_steps=st.integers(0, 15),
    pad_id=st.integers(-1, 3),
)
def test_truncate_pad_is_pad_then_cut(line: list[int], num_steps: int, pad_id: int):
    original = list(line)
    result = truncate_pad(line, num_steps, pad_id)
    # Padding with num_steps pads and keeping the first num_steps is the whole recipe in one line.
    assert result == (line + [pad_id] * num_steps)[:num_steps]
    result.append(99)
    assert line == original  # a fresh list: the caller's line is never aliased or changed


def test_truncate_pad_by_hand():
    assert truncate_pad([3, 4], 2, 0) == [3, 4]  # exactly num_steps: unchanged
    assert truncate_pad([], 2, 9) == [9, 9]
    assert truncate_pad((1, 2, 3), 0, 0) == []


# -- bucket_batches -----------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [0, -3])
def test_bucket_batches_refuses_a_batch_size_below_one(batch_size: int):
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        bucket_batches([1, 2, 3], batch_size)


def test_no_shuffle_no_bucket_gives_consecutive_slices():
    batches = bucket_batches([5, 1, 4, 2, 3, 9, 8], 3, shuffle=False, bucket=False)
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]


def test_no_shuffle_with_buckets_sorts_the_whole_data_by_length_by_hand():
    lengths = [5, 1, 4, 1, 3, 9, 4]
    # By length, ties by index: 1 (1), 1 (3), 3 (4), 4 (2), 4 (6), 5 (0), 9 (5).
    batches = bucket_batches(lengths, 3, shuffle=False)
    assert batches == [[1, 3, 4], [2, 6, 0], [5]]


@PROPERTY
@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=300), batch_size=st.integers(1, 8))
def test_no_shuffle_with_buckets_is_one_stable_sort_cut_into_batches(
    lengths: list[int], batch_size: int
):
    # Without shuffling there is no point in chunks: the whole data is one bucket.
    batches = bucket_batches(lengths, batch_size, shuffle=False, seed=123)
    assert batches == slices(length_order(lengths), batch_size)


@PROPERTY
@given(
    lengths=st.lists(st.integers(1, 20), max_size=100),
    batch_size=st.integers(1, 8),
    seed=st.integers(0, 2**31),
)
def test_shuffle_without_buckets_is_a_permutation_cut_into_full_batches(
    lengths: list[int], batch_size: int, seed: int
):
    batches = bucket_batches(lengths, batch_size, bucket=False, seed=seed)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert [len(batch) for batch in batches] == [len(s) for s in slices(lengths, batch_size)]


@PROPERTY
@given(
    size=st.integers(1, 120),
    batch_size=st.integers(1, 6),
    seed=st.integers(0, 2**31),
    data=st.data(),
)
def test_shuffled_buckets_within_one_chunk_are_slices_of_the_length_order(
    size: int, batch_size: int, seed: int, data: st.DataObject
):
    # With distinct lengths and at most one chunk (50 batches) of data, the shuffle only decides
    # the order of the batches: their contents are slices of the length order, whatever the seed.
    size = min(size, batch_size * BUCKET_CHUNK_BATCHES)
    lengths = data.draw(st.permutations(list(range(1, size + 1))))
    batches = bucket_batches(lengths, batch_size, seed=seed)
    expected = slices(length_order(lengths), batch_size)
    assert sorted(map(sorted, batches)) == sorted(map(sorted, expected))


@PROPERTY
@given(
    lengths=st.lists(st.integers(1, 30), max_size=400),
    batch_size=st.integers(1, 3),
    seed=st.integers(0, 2**31),
)
def test_shuffled_buckets_over_several_chunks_are_full_but_for_one_per_chunk(
    lengths: list[int], batch_size: int, seed: int
):
    # Batch sizes 1-3 make chunks of 50-150 sentences, so up to 8 chunks of up to 400 sentences.
    batches = bucket_batches(lengths, batch_size, seed=seed)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    chunk = batch_size * BUCKET_CHUNK_BATCHES
    chunk_sizes = [min(chunk, len(lengths) - start) for start in range(0, len(lengths), chunk)]
    # Each chunk is cut on its own, so it adds ⌈its size / B⌉ batches, all full but its last.
    assert len(batches) == sum(math.ceil(n / batch_size) for n in chunk_sizes)
    assert all(1 <= len(batch) <= batch_size for batch in batches)
    short = sorted(len(batch) for batch in batches if len(batch) < batch_size)
    assert short == sorted(n % batch_size for n in chunk_sizes if n % batch_size)


@pytest.mark.parametrize(
    ("shuffle", "bucket"),
    [
        (True, True),
        (True, False),
        (False, False),
        (False, True),
    ],
)
def test_no_data_gives_no_batches(shuffle: bool, bucket: bool):
    assert bucket_batches([], 4, shuffle=shuffle, bucket=bucket) == []


# -- sorted_batches -----------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [0, -1])
def test_sorted_batches_refuses_a_batch_size_below_one(batch_size: int):
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        sorted_batches([3, 1], batch_size)


def test_sorted_batches_of_nothing_is_nothing():
    assert sorted_batches([], 4) == [] and sorted_batches([], 4, max_tokens=10) == []


def test_batches_of_one_hold_every_item_alone_in_length_order():
    assert sorted_batches([30, 10, 20], 1, max_tokens=5) == [[1], [2], [0]]
