"""rnnlab.nn.describe: the parameter table mirrors named_parameters and totals the element counts."""

from __future__ import annotations

import pytest
from torch import nn

import rnnlab.nn as rl


@pytest.mark.parametrize(
    "module",
    [
        rl.LSTM(4, 8, num_layers=2, bidirectional=True, proj_size=3),
        rl.PeepholeLSTM(4, 8),
        rl.GRUCell(4, 8, bias=False),
        nn.Sequential(nn.Embedding(10, 4), rl.CoupledLSTM(4, 6)),
    ],
    ids=["lstm_proj", "peephole", "gru_cell", "sequential"],
)
def test_rows_match_named_parameters(module):
    rows = rl.parameter_table(module)
    assert [(name, shape) for name, shape, _ in rows] == [
        (name, tuple(p.shape)) for name, p in module.named_parameters()
    ]
    assert all(
        count == p.numel() for (_, _, count), p in zip(rows, module.parameters(), strict=True)
    )
    total = sum(p.numel() for p in module.parameters())
    text = rl.describe(module)
    lines = text.splitlines()
    assert lines[-1].split()[0] == "total"
    assert int(lines[-1].split()[-1].replace(",", "")) == total
    for name, _, count in rows:
        assert any(line.split()[0] == name and f"{count:,}" in line for line in lines)


def test_known_counts():
    rows = dict((name, (shape, count)) for name, shape, count in rl.parameter_table(rl.LSTM(4, 8)))
    assert rows["weight_ih_l0"] == ((32, 4), 128)
    assert rows["weight_hh_l0"] == ((32, 8), 256)
    assert sum(count for _, count in rows.values()) == 128 + 256 + 32 + 32
    coupled = rl.parameter_table(rl.CoupledLSTM(4, 8))
    assert coupled[0] == ("weight_ih_l0", (24, 4), 96)
