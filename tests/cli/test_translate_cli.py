"""End to end through ``rnnlab.cli.main``: beam and n-best translation, attention plots, early stop."""

from __future__ import annotations

import io
import json
import random
import struct
from pathlib import Path

import pytest

from rnnlab.cli import main
from rnnlab.plotting import DPI, attention_figure_size
from rnnlab.training.checkpoint import load_model_file

SYMBOLS = ["a", "b", "c", "d", "e", "f", "g", "h"]


def write_reverse_tsv(path: Path, n: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        tokens = [rng.choice(SYMBOLS) for _ in range(rng.randint(2, 6))]
        lines.append(f"{' '.join(tokens)}\t{' '.join(reversed(tokens))}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return str(path)


def train(run: Path, data: Path, *settings: str) -> int:
    return main(
        [
            "train",
            "seq2seq",
            "--out",
            str(run),
            "--set",
            f"data.train={write_reverse_tsv(data / 'train.tsv', 1500, 1)}",
            "--set",
            f"data.valid={write_reverse_tsv(data / 'valid.tsv', 60, 2)}",
            "--set",
            "data.tsv_langs=[en, fr]",
            "--set",
            "data.min_freq=1",
            "--set",
            "model.embed_size=16",
            "--set",
            "model.hidden_size=32",
            "--set",
            "model.num_layers=1",
            "--set",
            "train.batch_size=32",
            "--set",
            "train.lr=0.01",
            "--set",
            "train.num_threads=1",
            *(arg for s in settings for arg in ("--set", s)),
        ]
    )


@pytest.fixture(scope="module")
def attention_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("attention_run")
    run = root / "run"
    assert (
        train(
            run,
            root,
            "model.attention=bahdanau",
            "model.bidirectional_encoder=true",
            "train.epochs=3",
        )
        == 0
    )
    return run


def translate(monkeypatch, capsys, run: Path, text: str, *flags: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    status = main(["translate", str(run), *flags])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_beam_translation_reverses_and_n_best_prints_tab_separated(
    attention_run, monkeypatch, capsys
):
    status, out, _ = translate(
        monkeypatch, capsys, attention_run, "a b c d\n\nh g f\n", "--beam", "4"
    )
    assert status == 0
    assert out.splitlines() == ["d c b a", "", "f g h"]
    status, out, _ = translate(
        monkeypatch, capsys, attention_run, "a b c d\n", "--beam", "4", "--n-best", "3"
    )
    hyps = out.rstrip("\n").split("\t")
    assert status == 0 and len(hyps) == 3 and hyps[0] == "d c b a" and len(set(hyps)) == 3


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_attention_plot_is_a_png_of_the_expected_size(attention_run, monkeypatch, capsys, tmp_path):
    plot = tmp_path / "attention.png"
    status, out, err = translate(
        monkeypatch,
        capsys,
        attention_run,
        "\na b c d e f a b c d e f\nb a\n",
        "--attention-plot",
        str(plot),
    )
    assert status == 0 and str(plot) in err
    lines = out.splitlines()
    assert len(lines) == 3 and lines[0] == ""
    # The first non-empty line is plotted: 12 source words + <eos> across, the printed output
    # words + <eos> down.
    width, height = attention_figure_size(13, len(lines[1].split()) + 1)
    assert width > 6.0  # wider than the minimum figure: the size follows the sentence
    assert png_size(plot) == (round(width * DPI), round(height * DPI))


def test_attention_plot_of_a_model_without_attention_is_a_clear_error(
    tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    assert train(run, tmp_path, "train.max_steps=2", "train.valid_every=0") == 0
    capsys.readouterr()
    status, out, err = translate(
        monkeypatch, capsys, run, "a b\n", "--attention-plot", str(tmp_path / "x.png")
    )
    assert status == 2 and out == ""
    assert "needs a model with attention" in err and "model.attention: none" in err
    assert not (tmp_path / "x.png").exists()


def test_early_stopping_and_plateau_decay_on_validation_bleu(tmp_path):
    """With a learning rate too small to change any output, BLEU never improves after the first
    validation: the lr halves at each bad validation and patience 2 stops the run early."""
    run = tmp_path / "run"
    status = train(
        run,
        tmp_path,
        "train.lr=1.0e-12",
        "train.epochs=50",
        "train.valid_every=5",
        "train.log_every=5",
        "train.patience=2",
        "train.lr_decay=0.5",
        "train.lr_patience=0",
        "train.label_smoothing=0.1",
    )
    assert status == 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "valid_bleu" in r]
    assert [r["step"] for r in validations] == [5, 10, 15]  # of 50 epochs × 47 batches
    assert max(r["step"] for r in records) == 15
    lrs = [r["lr"] for r in records if "lr" in r]
    assert lrs == pytest.approx([1e-12, 1e-12, 5e-13])  # logged before each validation
    _, best = load_model_file(run / "best" / "model.safetensors")
    assert best["step"] == 5  # the best-by-BLEU weights are the first validation's
