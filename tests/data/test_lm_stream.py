"""Both minibatch schemes cover the stream as documented, and are deterministic per (seed, epoch)."""

from __future__ import annotations

import pytest
import torch

from rnnlab.data.lm_stream import epoch_offset, random_batches, sequential_batches


@pytest.mark.parametrize(
    ("n", "batch_size", "bptt", "offset"),
    [(103, 4, 5, 0), (103, 4, 5, 3), (50, 7, 3, 2), (20, 1, 32, 0)],
)
def test_sequential_covers_every_target_once(n, batch_size, bptt, offset):
    ids = torch.arange(n)  # ids are positions, so batches show which tokens they use
    batches = sequential_batches(ids, batch_size=batch_size, bptt=bptt, offset=offset)
    length = (n - offset - 1) // batch_size
    targets = torch.cat([y.flatten() for _, y in batches]).tolist()
    assert sorted(targets) == list(range(offset + 1, offset + 1 + batch_size * length))
    assert n - (offset + 1 + batch_size * length) < batch_size  # the dropped tail
    for x, y in batches:
        assert x.shape == y.shape and x.size(0) == batch_size and x.size(1) <= bptt
        assert torch.equal(y, x + 1)  # the target is always the next token
    # row b of batch k continues row b of batch k - 1
    for (x0, _), (x1, _) in zip(batches, batches[1:], strict=False):
        assert torch.equal(x1[:, 0], x0[:, -1] + 1)


@pytest.mark.parametrize(("n", "batch_size", "bptt", "offset"), [(103, 4, 5, 0), (103, 3, 5, 4)])
def test_random_covers_every_target_once(n, batch_size, bptt, offset):
    ids = torch.arange(n)
    batches = random_batches(ids, batch_size=batch_size, bptt=bptt, offset=offset, seed=1)
    count = (n - offset - 1) // bptt
    targets = torch.cat([y.flatten() for _, y in batches]).tolist()
    assert sorted(targets) == list(range(offset + 1, offset + 1 + count * bptt))
    assert n - (offset + 1 + count * bptt) < bptt
    assert sum(x.size(0) for x, _ in batches) == count
    for x, y in batches:
        assert torch.equal(y, x + 1)
        assert torch.equal(x[:, 1:], x[:, :-1] + 1)  # each row is a contiguous piece


def test_random_order_depends_only_on_seed():
    ids = torch.arange(500)
    first = random_batches(ids, batch_size=4, bptt=5, seed=7)
    again = random_batches(ids, batch_size=4, bptt=5, seed=7)
    other = random_batches(ids, batch_size=4, bptt=5, seed=8)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_epoch_offset_is_deterministic_and_in_range():
    offsets = [epoch_offset(42, epoch, 32) for epoch in range(20)]
    assert offsets == [epoch_offset(42, epoch, 32) for epoch in range(20)]
    assert all(0 <= o < 32 for o in offsets) and len(set(offsets)) > 1


def test_too_short_text_is_an_error():
    with pytest.raises(ValueError, match="too few"):
        sequential_batches(torch.arange(3), batch_size=8, bptt=4)
    with pytest.raises(ValueError, match="too few"):
        random_batches(torch.arange(3), batch_size=8, bptt=4)
