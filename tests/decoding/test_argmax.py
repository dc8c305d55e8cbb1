import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.decoding.argmax import BLOCK, MIN_BLOCKED_ELEMENTS, first_argmax

# Few distinct values, so that ties, infinities and NaN are common in the blocks and in the tail.
PALETTE = torch.tensor([-math.inf, -1.0, 0.0, 0.5, 2.0, math.inf, math.nan])


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 40),
    columns=st.integers(2 * BLOCK, 5 * BLOCK + 7),
    palette_size=st.integers(2, len(PALETTE)),
    seed=st.integers(0, 2**31),
)
def test_first_argmax_equals_torch_argmax_with_ties_infinities_and_nan(
    rows, columns, palette_size, seed
):
    generator = torch.Generator().manual_seed(seed)
    palette = PALETTE[torch.randperm(len(PALETTE), generator=generator)[:palette_size]]
    picks = torch.randint(palette_size, (rows, columns), generator=generator)
    # Repeated to reach the blocked path's size; the copies check the same rows again.
    repeats = -(-MIN_BLOCKED_ELEMENTS // (rows * columns))
    scores = palette[picks].repeat(repeats, 1)
    assert torch.equal(first_argmax(scores), scores.argmax(-1))


def test_first_argmax_on_decoder_sized_random_scores():
    generator = torch.Generator().manual_seed(0)
    for rows, columns, dtype in [(500, 2254, torch.float32), (128, 10_000, torch.bfloat16)]:
        scores = torch.randn(rows, columns, generator=generator).to(dtype)
        assert torch.equal(first_argmax(scores), scores.argmax(-1))


def test_first_argmax_of_small_or_strided_scores_is_plain_argmax():
    scores = torch.randn(3, 4 * BLOCK)
    assert torch.equal(first_argmax(scores), scores.argmax(-1))
    transposed = torch.randn(4 * BLOCK, 600).t()
    assert torch.equal(first_argmax(transposed), transposed.argmax(-1))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31), dtype=st.sampled_from([torch.bfloat16, torch.float16]))
def test_first_argmax_of_16_bit_scores_is_their_own_argmax(seed, dtype):
    """16-bit scores are searched in float32; the cast is exact, so ties (frequent in 8 bits of
    mantissa) and NaN resolve as ``torch.argmax`` of the 16-bit tensor resolves them."""
    generator = torch.Generator().manual_seed(seed)
    scores = (torch.randn(64, 4052, generator=generator) * 3).round().to(dtype)
    scores[3, 1000] = math.nan
    assert torch.equal(first_argmax(scores), scores.argmax(-1))
