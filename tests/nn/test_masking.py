import torch

import rnnlab
from rnnlab.nn.masking import length_mask, masked_softmax


def test_sequence_mask_textbook_example():
    x = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert rnnlab.sequence_mask(x, torch.tensor([1, 2])).tolist() == [[1, 0, 0], [4, 5, 0]]


def test_sequence_mask_masks_whole_trailing_rows_with_value():
    out = rnnlab.sequence_mask(torch.ones(2, 3, 4), torch.tensor([1, 2]), value=-1)
    expected = torch.ones(2, 3, 4)
    expected[0, 1:] = -1
    expected[1, 2:] = -1
    assert torch.equal(out, expected)


def test_length_mask():
    assert length_mask(torch.tensor([0, 2, 3]), 3).tolist() == [
        [False, False, False],
        [True, True, False],
        [True, True, True],
    ]


def test_masked_softmax_is_exactly_zero_on_padding_and_sums_to_one():
    scores = torch.randn(2, 3, 5)
    weights = masked_softmax(scores, torch.tensor([2, 4]))
    assert torch.all(weights[0, :, 2:] == 0) and torch.all(weights[1, :, 4:] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(weights[0, :, :2], torch.softmax(scores[0, :, :2], -1))


def test_masked_softmax_zero_length_gives_zeros_not_nan():
    weights = masked_softmax(torch.randn(1, 4), torch.tensor([0]))
    assert torch.equal(weights, torch.zeros(1, 4))
