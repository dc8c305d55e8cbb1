"""A step's scores projected in blocks of rows equal those of one call over all rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlab.nn.row_blocks import MAX_NARROW_FEATURES, MIN_ROWS, ROW_BLOCK, step_scores


class CountingProjection(nn.Linear):
    """A linear layer that records the rows of each call (the float32 path calls ``torch.mm``)."""

    def __init__(self, width: int, vocab: int, bias: bool = True) -> None:
        super().__init__(width, vocab, bias=bias)
        self.rows: list[int] = []

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self.rows.append(features.size(0))
        return super().forward(features)


def reference(project: nn.Linear, features: torch.Tensor, normalize: bool) -> torch.Tensor:
    logits = nn.functional.linear(features, project.weight, project.bias)
    return torch.log_softmax(logits.float(), dim=-1) if normalize else logits


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("rows", [MIN_ROWS, MIN_ROWS + 1])  # whole blocks; a short last block
def test_narrow_float32_features_are_projected_in_blocks_to_the_same_scores(normalize, rows, bias):
    torch.manual_seed(0)
    project = CountingProjection(32, 2254, bias=bias)
    features = torch.randn(rows, 32)
    with torch.no_grad():
        got = step_scores(project, features, normalize)
        expected = reference(project, features, normalize)
    assert project.rows == []  # products with the bias folded in, not the layer's call
    assert got.dtype == torch.float32 and got.shape == (rows, 2254)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    if normalize:  # the in-place log-softmax normalised every row
        torch.testing.assert_close(got.exp().sum(-1), torch.ones(rows))


@pytest.mark.parametrize("normalize", [True, False])
def test_with_autograd_all_rows_are_projected_in_one_call_that_keeps_the_gradient(normalize):
    torch.manual_seed(0)
    project = CountingProjection(32, 300)
    features = torch.randn(MIN_ROWS + 1, 32, requires_grad=True)
    got = step_scores(project, features, normalize)
    assert project.rows == [MIN_ROWS + 1]
    expected = reference(project, features, normalize)
    torch.testing.assert_close(got, expected)
    (grad,) = torch.autograd.grad(got.sum(), features)
    (expected_grad,) = torch.autograd.grad(expected.sum(), features)
    torch.testing.assert_close(grad, expected_grad)


@pytest.fixture
def products(monkeypatch) -> list[int]:
    """The rows of every ``torch.mm`` call while the test runs."""
    rows: list[int] = []
    mm = torch.mm

    def counting_mm(a, b, **kwargs):
        rows.append(a.size(0))
        return mm(a, b, **kwargs)

    monkeypatch.setattr(torch, "mm", counting_mm)
    return rows


@pytest.mark.parametrize("rows", [MIN_ROWS - 1, MIN_ROWS + 1, 3])
def test_narrow_float32_features_take_one_product_per_block_or_one_for_few_rows(rows, products):
    project = CountingProjection(32, 50)
    features = torch.randn(rows, 32)
    with torch.no_grad():
        got = step_scores(project, features, True)
    blocks = [len(b) for b in features.split(ROW_BLOCK)] if rows >= MIN_ROWS else [rows]
    assert products == blocks and project.rows == []
    torch.testing.assert_close(got, reference(project, features, True))


@pytest.mark.parametrize("rows", [MIN_ROWS - 1, MIN_ROWS, 3])
def test_wide_features_are_projected_by_the_layer_in_one_call(rows):
    project = CountingProjection(MAX_NARROW_FEATURES + 1, 50)
    features = torch.randn(rows, MAX_NARROW_FEATURES + 1)
    with torch.no_grad():
        got = step_scores(project, features, True)
    assert project.rows == [rows]
    torch.testing.assert_close(got, reference(project, features, True))


def test_under_bf16_autocast_logits_keep_their_dtype_and_log_probs_are_float32():
    torch.manual_seed(0)
    project = CountingProjection(32, 300)
    features = torch.randn(MIN_ROWS + 1, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = step_scores(project, features, False)
        log_probs = step_scores(project, features, True)
        expected = nn.functional.linear(features, project.weight, project.bias)
    assert project.rows == 2 * [len(block) for block in features.split(ROW_BLOCK)]
    assert logits.dtype == torch.bfloat16 and torch.equal(logits, expected)
    assert log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs, torch.log_softmax(expected.float(), -1))


def test_an_exported_step_projects_in_one_call_so_the_graph_holds_for_any_batch_size():
    class Step(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.output = nn.Linear(32, 100)

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return step_scores(self.output, features, True)

    step = Step().requires_grad_(False)
    rows = torch.export.Dim("rows")
    program = torch.export.export(
        step, (torch.randn(MIN_ROWS, 32),), dynamic_shapes={"features": {0: rows}}
    )
    linears = [n for n in program.graph.nodes if "linear" in str(n.target)]
    assert len(linears) == 1
    for count in (5, MIN_ROWS + 1):
        features = torch.randn(count, 32)
        torch.testing.assert_close(program.module()(features), step(features))
