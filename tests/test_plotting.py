"""Learning curves: ``rnnlab plot`` overlays runs (one line per run per panel, a legend), and every
training run leaves ``curves.png``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnlab.cli import main
from rnnlab.plotting import CURVES_SIZE, DPI, RunCurves, plot_learning_curves

REPO = Path(__file__).resolve().parents[1]
TM = REPO / "data" / "timemachine"


EXPECTED = (int(CURVES_SIZE[0] * DPI), int(CURVES_SIZE[1] * DPI))


def records(scale: float) -> list[dict]:
    out = []
    for step in range(1, 7):
        out.append({"step": step * 10, "minutes": step / 2, "train_loss": scale / step, "lr": 0.01})
        if step % 2 == 0:
            out.append({"step": step * 10, "minutes": step / 2, "valid_loss": scale / step + 0.1,
                        "valid_bleu": 10.0 * step})  # fmt: skip
    return out


def test_one_line_per_run_in_each_panel(tmp_path: Path, monkeypatch, png_size):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig))
    runs = [RunCurves(f"run{i}", records(1.0 + i), "valid_bleu") for i in range(3)]
    path = plot_learning_curves(runs, tmp_path / "curves.png", x="minutes")
    assert png_size(path) == EXPECTED
    loss_ax, metric_ax, lr_ax = figures[0].axes
    assert len(loss_ax.lines) == 6  # per run: training (solid) and validation (dashed)
    assert [line.get_linestyle() for line in loss_ax.lines] == ["-", "--"] * 3
    assert len(metric_ax.lines) == len(lr_ax.lines) == 3
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["run0", "run1", "run2"]
    assert list(metric_ax.lines[1].get_xdata()) == [1.0, 2.0, 3.0]  # minutes, validations only
    assert list(metric_ax.lines[1].get_ydata()) == [20.0, 40.0, 60.0]
    assert metric_ax.get_xlabel() == "training minutes"
    plt.close("all")


def test_run_names_and_tokens_are_drawn_as_typed(tmp_path: Path, png_size):
    """Text between two dollar signs stays text: matplotlib's mathtext refuses ``$^$`` at
    ``savefig``, so both pictures are written only if neither reads its labels as math."""
    import matplotlib.pyplot as plt
    import torch

    from rnnlab.plotting import attention_figure_size, plot_attention

    label = "run $^$"
    path = plot_learning_curves([RunCurves(label, records(1.0), "valid_bleu")], tmp_path / "c.png")
    assert png_size(path) == EXPECTED
    tokens = label.split()
    weights = torch.full((2, len(tokens)), 1.0 / len(tokens))
    heatmap = plot_attention(weights, tokens, ["$", "^$"], tmp_path / "a.png", title=label)
    width, height = attention_figure_size(len(tokens), 2)
    assert png_size(heatmap) == (int(width * DPI), int(height * DPI))
    assert plt.rcParams["text.parse_math"]  # matplotlib's own setting, back as it was


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    runs = []
    for lr in ("0.01", "0.002"):
        out = tmp_path_factory.mktemp("plot") / f"lr{lr}"
        sets = [
            f"data.train={TM / 'train.txt'}",
            f"data.valid={TM / 'valid.txt'}",
            "data.max_examples=80",
            "model.embed_size=8",
            "model.hidden_size=16",
            "train.max_steps=6",
            "train.log_every=2",
            "train.valid_every=3",
            f"train.lr={lr}",
        ]
        assert (
            main(["train", "lm", "--out", str(out)] + [a for s in sets for a in ("--set", s)]) == 0
        )
        runs.append(out)
    return runs


def test_every_run_writes_curves_png(two_runs: list[Path], png_size):
    for run in two_runs:
        assert png_size(run / "curves.png") == EXPECTED
        logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert all("minutes" in r for r in logged)


def test_plot_command_overlays_runs(two_runs: list[Path], tmp_path: Path, png_size):
    out = tmp_path / "both.png"
    assert main(["plot", *map(str, two_runs), "--out", str(out), "--x", "minutes"]) == 0
    assert png_size(out) == EXPECTED


def test_plot_of_a_directory_that_is_not_a_run_exits_2(tmp_path: Path, capsys):
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnlab: error:") and "not an rnnlab run directory" in err
