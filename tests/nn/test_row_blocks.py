"""A step's scores projected in blocks of rows equal those of one call over all rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlab.nn.row_blocks import MAX_NARROW_FEATURES, MIN_ROWS, ROW_BLOCK, step_scores


class CountingProjection(nn.Module):
    def __init__(self, width: int, vocab: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, vocab)
        self.rows: list[int] = []

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self.rows.append(features.size(0))
        return self.linear(features)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("rows", [MIN_ROWS, MIN_ROWS + 1])  # whole blocks; a short last block
def test_narrow_features_are_projected_in_blocks_to_the_same_scores(normalize, rows):
    torch.manual_seed(0)
    project = CountingProjection(32, 2254)
    features = torch.randn(rows, 32)
    with torch.no_grad():
        got = step_scores(project, features, normalize)
        logits = project.linear(features)
    expected = torch.log_softmax(logits, dim=-1) if normalize else logits
    assert project.rows == [len(block) for block in features.split(ROW_BLOCK)]
    assert got.dtype == torch.float32 and got.shape == (rows, 2254)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


@pytest.mark.parametrize(
    ("rows", "width"), [(MIN_ROWS - 1, 32), (MIN_ROWS, MAX_NARROW_FEATURES + 1), (3, 32)]
)
def test_few_rows_or_wide_features_are_projected_in_one_call(rows, width):
    project = CountingProjection(width, 50)
    features = torch.randn(rows, width)
    with torch.no_grad():
        got = step_scores(project, features, True)
    assert project.rows == [rows]
    torch.testing.assert_close(got, torch.log_softmax(project.linear(features), -1))


def test_under_bf16_autocast_logits_keep_their_dtype_and_log_probs_are_float32():
    torch.manual_seed(0)
    project = CountingProjection(32, 300)
    features = torch.randn(MIN_ROWS + 1, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = step_scores(project, features, False)
        log_probs = step_scores(project, features, True)
        reference = project.linear(features)
    assert logits.dtype == torch.bfloat16 and torch.equal(logits, reference)
    assert log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs, torch.log_softmax(reference.float(), -1))


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
