import torch
import torch.nn.functional as F

import rnnlab
from rnnlab.training.losses import masked_token_nll, select_valid


def test_masked_softmax_ce_loss_textbook_example():
    loss = rnnlab.MaskedSoftmaxCELoss()(
        torch.ones(3, 4, 10), torch.ones((3, 4), dtype=torch.long), torch.tensor([4, 2, 0])
    )
    torch.testing.assert_close(loss, torch.tensor([2.3026, 1.1513, 0.0]), atol=1e-4, rtol=0)


def test_select_valid_gathers_rows_in_order():
    values = torch.arange(12).view(2, 3, 2)
    out = select_valid(values, torch.tensor([1, 3]))
    assert out.tolist() == [[0, 1], [6, 7], [8, 9], [10, 11]]


def _loss_and_grad(logits_param, targets, lengths):
    logits = select_valid(logits_param, lengths)
    loss = masked_token_nll(logits, select_valid(targets, lengths)) / int(lengths.sum())
    (grad,) = torch.autograd.grad(loss, logits_param)
    return loss, grad


def test_padded_targets_change_neither_loss_nor_gradients():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7, requires_grad=True)
    lengths = torch.tensor([5, 2, 3])
    targets = torch.randint(0, 7, (3, 5))
    changed = targets.clone()
    changed[1, 2:] = (changed[1, 2:] + 3) % 7
    changed[2, 3:] = (changed[2, 3:] + 1) % 7
    loss_a, grad_a = _loss_and_grad(logits, targets, lengths)
    loss_b, grad_b = _loss_and_grad(logits, changed, lengths)
    assert torch.equal(loss_a, loss_b) and torch.equal(grad_a, grad_b)
    assert torch.all(grad_a[1, 2:] == 0) and torch.all(grad_a[2, 3:] == 0)


def test_per_token_mean_matches_reference_cross_entropy():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 6)
    targets = torch.randint(0, 6, (2, 4))
    lengths = torch.tensor([4, 1])
    ours = masked_token_nll(select_valid(logits, lengths), select_valid(targets, lengths)) / 5
    reference = F.cross_entropy(
        torch.cat([logits[0], logits[1, :1]]), torch.cat([targets[0], targets[1, :1]])
    )
    torch.testing.assert_close(ours, reference)
