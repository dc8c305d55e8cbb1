"""Perplexity: its two fixed points, and the whole-file score equals one unbroken pass by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.metrics.perplexity import perplexity
from rnnlab.models.language_model import RNNLanguageModel
from rnnlab.tasks.lm import stream_nll

CPU = torch.device("cpu")


def test_perplexity_formula():
    assert perplexity(0.0, 10) == 1.0
    assert perplexity(10 * math.log(31), 10) == pytest.approx(31)
    assert perplexity(1e6, 1) == math.inf


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_uniform_model_has_perplexity_equal_to_vocabulary_size(cell):
    torch.manual_seed(0)
    model = RNNLanguageModel(vocab_size=17, embed_size=8, hidden_size=8, cell=cell)
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.zero_()
    ids = torch.randint(0, 17, (300,))
    nll, count = stream_nll(model, ids, CPU, chunk=64)
    assert count == 299
    assert perplexity(nll, count) == pytest.approx(17, rel=1e-5)


class NextInCycle(nn.Module):
    """Puts (numerically) all probability on ``(token + 1) % V``: a perfect model of a cyclic text."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, tokens, state=None):
        return F.one_hot(tokens, self.vocab_size).float(), state

    def project(self, features):
        return 1e4 * features.roll(1, dims=-1)

    def token_nll(self, features, targets):
        return F.cross_entropy(self.project(features), targets, reduction="sum")


def test_model_certain_of_the_truth_has_perplexity_one():
    ids = torch.arange(500) % 7
    nll, count = stream_nll(NextInCycle(7), ids, CPU, chunk=33)
    assert perplexity(nll, count) == 1.0
    # ... and a wrong certain model is infinitely perplexed
    nll, count = stream_nll(NextInCycle(7), ids.flip(0), CPU, chunk=33)
    assert perplexity(nll, count) == math.inf


@pytest.mark.parametrize(
    ("cell", "softmax"), [("gru", "full"), ("lstm", "full"), ("gru", "adaptive")]
)
def test_file_score_equals_one_unbroken_pass_by_hand(cell, softmax):
    torch.manual_seed(0)
    model = RNNLanguageModel(
        vocab_size=11, embed_size=6, hidden_size=32, num_layers=2, cell=cell,
        softmax=softmax, cutoffs=[4, 8],
    )  # fmt: skip
    model.eval()
    ids = torch.randint(0, 11, (403,))
    nll, count = stream_nll(model, ids, CPU, chunk=50)
    # by hand: one step at a time, carrying the state from the first token to the last
    state, total = model.start(1), 0.0
    with torch.no_grad():
        for t in range(ids.numel() - 1):
            log_probs, state = model.step(ids[t : t + 1], state)
            total -= float(log_probs[0, ids[t + 1]])
    assert count == 402
    assert nll == pytest.approx(total, rel=1e-5)
    assert perplexity(nll, count) == pytest.approx(math.exp(total / 402), rel=1e-5)
