"""``rnnlab.nn.pretrained``: copying vectors into embedding rows and freezing chosen rows.

References: the numpy vectors themselves (copied exactly, in the embedding's dtype), an untouched
clone of the other rows, the embedding gradient written out by hand as one-hot(ids)ᵀ · upstream,
repeated descent steps over accumulated gradients, and a ``state_dict`` round trip for the resume
path. (``tests/tasks/test_pretrained_embeddings.py`` checks whole training runs through the CLI;
this file checks the two functions on an ``nn.Embedding`` directly.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.nn.pretrained import FROZEN_BUFFER, freeze_rows, load_rows

ROWS, SIZE, PAD = 6, 3, 0


def make_embedding(dtype: torch.dtype = torch.float32) -> nn.Embedding:
    torch.manual_seed(0)
    return nn.Embedding(ROWS, SIZE, padding_idx=PAD).to(dtype)


def vectors_for(ids: list[int]) -> dict[int, np.ndarray]:
    """float64 vectors, as a text file parsed with numpy gives them, keyed out of order."""
    rng = np.random.default_rng(0)
    return {row: rng.standard_normal(SIZE) for row in reversed(ids)}


def hand_gradient(ids: Tensor, upstream: Tensor) -> Tensor:
    """d(sum(E[ids] · upstream))/dE = one_hot(ids)ᵀ · upstream: (N,), (N, E) → (V, E)."""
    return F.one_hot(ids, ROWS).to(upstream.dtype).T @ upstream


def backward_through(embedding: nn.Embedding, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Backward of sum(E[ids] · upstream) over ids using every row; returns (ids, upstream)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([0, 1, 2, 3, 4, 5, 1, 4])  # (N,), rows 1 and 4 twice
    upstream = torch.randn(len(ids), SIZE, generator=generator, dtype=embedding.weight.dtype)
    (embedding(ids) * upstream).sum().backward()
    return ids, upstream


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_load_rows_copies_vectors_zeroes_pad_and_leaves_the_rest(dtype: torch.dtype) -> None:
    embedding = make_embedding(dtype)
    before = embedding.weight.detach().clone()
    vectors = vectors_for([4, 1, 2])
    found = load_rows(embedding, vectors, pad_id=PAD)
    weight = embedding.weight.detach()
    for row, vector in vectors.items():
        assert torch.equal(weight[row], torch.from_numpy(vector).to(dtype))
    assert found.dtype == torch.bool and found.tolist() == [False, True, True, False, True, False]
    assert torch.count_nonzero(weight[PAD]) == 0
    assert torch.equal(weight[[3, 5]], before[[3, 5]])  # rows without a vector keep their init
    assert weight.dtype == dtype and embedding.weight.requires_grad


def test_load_rows_without_vectors_only_zeroes_pad() -> None:
    embedding = make_embedding()
    with torch.no_grad():
        embedding.weight[2].fill_(7.0)  # pad is not always row 0 (and not padding_idx here)
    before = embedding.weight.detach().clone()
    found = load_rows(embedding, {}, pad_id=2)
    assert not bool(found.any()) and found.shape == (ROWS,)
    assert torch.count_nonzero(embedding.weight[2]) == 0
    others = [row for row in range(ROWS) if row != 2]
    assert torch.equal(embedding.weight.detach()[others], before[others])


def test_frozen_rows_get_zero_gradient_and_the_others_the_true_one() -> None:
    embedding = make_embedding(torch.float64)
    frozen = torch.tensor([False, True, False, False, True, False])
    freeze_rows(embedding, frozen)
    ids, upstream = backward_through(embedding)
    expected = hand_gradient(ids, upstream)
    expected[PAD] = 0  # padding_idx's own rule, independent of freezing
    expected[frozen] = 0
    assert embedding.weight.grad is not None
    assert torch.equal(embedding.weight.grad, expected)
    assert embedding.weight.grad[2].abs().sum() > 0  # a free row really got a gradient


def test_frozen_rows_stay_exactly_through_accumulated_steps() -> None:
    """Several steps, each accumulating two backward passes (micro-batches), updated by plain
    gradient descent written out here (``torch.optim`` is avoided: constructing an optimizer
    imports ``torch._dynamo``, many seconds on this CPU). The hook acts on every pass, so frozen
    rows see an exactly zero gradient and never move; Adam's moments of a zero gradient stay zero
    in the same way."""
    embedding = make_embedding()
    frozen = load_rows(embedding, vectors_for([1, 3]), pad_id=PAD)
    freeze_rows(embedding, frozen)
    start = embedding.weight.detach().clone()
    for step in range(3):
        embedding.weight.grad = None
        backward_through(embedding, seed=2 * step)
        backward_through(embedding, seed=2 * step + 1)  # accumulates into .grad
        assert embedding.weight.grad is not None
        assert torch.count_nonzero(embedding.weight.grad[frozen]) == 0
        with torch.no_grad():
            embedding.weight -= 0.1 * embedding.weight.grad
    weight = embedding.weight.detach()
    assert torch.equal(weight[frozen], start[frozen])
    free = ~frozen
    free[PAD] = False
    assert bool((weight[free] != start[free]).all(dim=1).all())  # every free row learnt


def test_mask_is_a_saved_copy_not_the_callers_tensor() -> None:
    embedding = make_embedding()
    mask = torch.tensor([False, True, False, False, False, False])
    freeze_rows(embedding, mask)
    mask[3] = True  # the caller reusing its tensor must not freeze another row
    assert embedding.state_dict()[FROZEN_BUFFER].tolist() == [False, True] + [False] * 4
    backward_through(embedding)
    assert embedding.weight.grad is not None and embedding.weight.grad[3].abs().sum() > 0


def test_resumed_embedding_freezes_the_rows_its_checkpoint_names() -> None:
    """A model rebuilt for resuming has no vectors: it freezes with an empty mask, which loading
    the checkpoint fills; the hook must read the loaded mask."""
    trained = make_embedding()
    frozen = torch.tensor([False, False, True, False, True, False])
    freeze_rows(trained, frozen)
    checkpoint = trained.state_dict()

    rebuilt = nn.Embedding(ROWS, SIZE, padding_idx=PAD)
    freeze_rows(rebuilt)
    assert not bool(getattr(rebuilt, FROZEN_BUFFER).any())  # all rows free before loading
    rebuilt.load_state_dict(checkpoint)
    ids, upstream = backward_through(rebuilt)
    assert rebuilt.weight.grad is not None
    assert torch.count_nonzero(rebuilt.weight.grad[frozen]) == 0
    free = ~frozen
    free[PAD] = False
    assert torch.equal(rebuilt.weight.grad[free], hand_gradient(ids, upstream)[free])


def test_freezing_survives_a_dtype_change() -> None:
    """``model.double()`` (or ``.to``) after freezing keeps the hook and the boolean mask."""
    embedding = make_embedding()
    frozen = torch.tensor([False, True, True, False, False, False])
    freeze_rows(embedding, frozen)
    embedding.double()
    assert getattr(embedding, FROZEN_BUFFER).dtype == torch.bool
    backward_through(embedding)
    assert embedding.weight.grad is not None and embedding.weight.grad.dtype == torch.float64
    assert torch.count_nonzero(embedding.weight.grad[frozen]) == 0
    assert embedding.weight.grad[3].abs().sum() > 0
