"""The language model: weight tying, one-hot input, variational dropout, the step protocol,
truncated BPTT, sampling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rnnlab.decoding.sampling import sample, sampling_logits
from rnnlab.models.language_model import RNNLanguageModel, build_language_model
from rnnlab.tasks.lm import LanguageModelTask
from rnnlab.tasks.lm_config import LMConfig


def test_tied_weights_share_one_matrix_and_need_equal_sizes():
    model = RNNLanguageModel(vocab_size=20, embed_size=8, hidden_size=8, tie_weights=True)
    assert model.output.weight is model.embedding.weight
    with pytest.raises(ValueError, match="embed_size == model.hidden_size"):
        RNNLanguageModel(vocab_size=20, embed_size=8, hidden_size=9, tie_weights=True)
    with pytest.raises(ValueError, match="one_hot"):
        RNNLanguageModel(vocab_size=20, embed_size=8, hidden_size=8, tie_weights=True, one_hot=True)


def test_one_hot_input_feeds_the_vocabulary_to_the_rnn():
    model = RNNLanguageModel(vocab_size=20, embed_size=8, hidden_size=8, one_hot=True, cell="rnn")
    assert model.embedding is None and model.rnn.weight_ih_l0.shape == (8, 20)
    features, _ = model(torch.randint(0, 20, (3, 5)))
    assert features.shape == (3, 5, 8)


@pytest.mark.parametrize("variational", [False, True])
def test_variational_dropout_drops_a_feature_for_a_whole_row(variational):
    """With model.variational_dropout a training row loses the same embedding features at every
    position (the per-token mask almost never does); evaluation keeps every feature."""
    torch.manual_seed(0)
    config = LMConfig()
    config.model.embed_size, config.model.dropout = 64, 0.5
    config.model.variational_dropout = variational
    model = build_language_model(config.model, vocab_size=30)
    tokens = torch.randint(0, 30, (32, 40))  # 2,048 row masks; 0.5⁴⁰ for a per-token row
    dropped = model.train().embed(tokens) == 0  # (B, T, E)
    whole_rows = dropped.all(dim=1)  # (B, E): features dropped at every position
    assert dropped.float().mean().item() == pytest.approx(0.5, abs=0.05)
    if variational:
        assert torch.equal(whole_rows, dropped[:, 0])
        assert 0 < whole_rows.sum() < whole_rows.numel()
    else:
        assert not whole_rows.any()
    assert not (model.eval().embed(tokens) == 0).any()


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_steps_equal_one_forward_pass(cell):
    torch.manual_seed(0)
    model = RNNLanguageModel(vocab_size=13, embed_size=6, hidden_size=7, num_layers=2, cell=cell)
    model.eval()
    tokens = torch.randint(0, 13, (3, 9))
    features, _ = model(tokens)
    expected = torch.log_softmax(model.project(features), -1)  # (B, T, V)
    state = model.start(3)
    for t in range(9):
        log_probs, state = model.step(tokens[:, t], state)
        torch.testing.assert_close(log_probs, expected[:, t], rtol=1e-5, atol=1e-5)


def _task(tmp_path: Path, cell: str, batching: str = "sequential") -> LanguageModelTask:
    config = LMConfig()
    config.data.batching = batching
    config.model.cell = cell
    config.model.num_layers = 2
    config.train.batch_size = 3
    config.train.bptt = 7
    return LanguageModelTask(config, tmp_path)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_carried_state_equals_one_unbroken_pass_per_stream(tmp_path, cell):
    torch.manual_seed(0)
    task = _task(tmp_path, cell)
    task.train_ids = torch.randint(0, 12, (200,))
    model = RNNLanguageModel(vocab_size=12, embed_size=6, hidden_size=8, num_layers=2, cell=cell)
    model.eval()
    batches = task.train_batches(epoch=0)
    assert len(batches) > 3
    total, carry = 0.0, None
    for batch in batches:
        out = task.batch_loss(model, batch, carry)
        total += float(out.loss_sum.detach())
        carry = out.carry
        for tensor in carry if isinstance(carry, tuple) else (carry,):
            assert not tensor.requires_grad  # detached: gradients stop at the batch boundary
    # the same streams in one forward pass each
    inputs = torch.cat([b.inputs for b in batches], dim=1)  # (B, L)
    targets = torch.cat([b.targets for b in batches], dim=1)  # (B, L)
    features, _ = model(inputs)
    logits = model.project(features)
    unbroken = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), reduction="sum"
    )
    assert total == pytest.approx(float(unbroken.detach()), rel=1e-5)


def test_random_batching_resets_the_state(tmp_path):
    torch.manual_seed(0)
    task = _task(tmp_path, "gru", batching="random")
    task.train_ids = torch.randint(0, 12, (200,))
    model = RNNLanguageModel(vocab_size=12, embed_size=6, hidden_size=8, cell="gru").eval()
    batch = task.train_batches(epoch=0)[0]
    fresh = task.batch_loss(model, batch, None)
    assert fresh.carry is None
    ignored = task.batch_loss(model, batch, torch.ones(1, batch.inputs.size(0), 8))
    assert float(ignored.loss_sum.detach()) == pytest.approx(float(fresh.loss_sum.detach()))


def test_top_k_and_temperature_shape_the_distribution():
    log_probs = torch.log_softmax(torch.tensor([[3.0, 2.0, 1.0, 0.0]]), -1)
    logits = sampling_logits(log_probs, top_k=2)
    assert torch.isinf(logits[0, 2:]).all() and torch.isfinite(logits[0, :2]).all()
    sharp = torch.softmax(sampling_logits(log_probs, temperature=0.5), -1)
    assert sharp[0, 0] > torch.softmax(log_probs, -1)[0, 0]
    with pytest.raises(ValueError):
        sampling_logits(log_probs, temperature=0.0)


def test_batched_sampling_is_reproducible_and_top1_is_greedy():
    torch.manual_seed(0)
    model = RNNLanguageModel(vocab_size=30, embed_size=8, hidden_size=16).eval()
    start = torch.tensor([5, 5, 5])

    def draw(seed, **kw):
        gen = torch.Generator().manual_seed(seed)
        return sample(model, model.start(3), start, length=20, generator=gen, **kw)

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)
    rows = draw(1)
    assert len(rows) == 3 and all(len(r) == 20 for r in rows) and rows[0] != rows[1]
    greedy = sample(model, model.start(3), start, length=20, greedy=True)
    assert draw(3, top_k=1) == greedy
    assert sample(model, model.start(3), start, length=0) == [[], [], []]
