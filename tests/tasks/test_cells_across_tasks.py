"""Every task trains with every cell and both implementations, through the one layer factory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnlab.cli import main

ROOT = Path(__file__).resolve().parents[2]
CELLS = ["rnn", "gru", "lstm", "peephole_lstm", "coupled_lstm"]


def _train(task: str, config: str | None, out: Path, sets: list[str]) -> list[dict]:
    argv = ["train", task, "--out", str(out)]
    if config:
        argv += ["--config", str(ROOT / config)]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("impl", ["fused", "scratch"])
@pytest.mark.parametrize("cell", CELLS)
def test_seq2seq_with_every_cell(reverse_corpus, tmp_path, cell, impl):
    records = _train(
        "seq2seq",
        None,
        tmp_path / "run",
        [
            f"data.train={reverse_corpus['train']}",
            f"data.valid={reverse_corpus['valid']}",
            "data.max_examples=200",
            "data.min_freq=1",
            f"model.cell={cell}",
            f"model.rnn_impl={impl}",
            "model.attention=bahdanau",
            "model.bidirectional_encoder=true",
            "model.hidden_size=16",
            "model.embed_size=8",
            "train.max_steps=3",
            "train.valid_every=3",
            "train.log_every=1",
        ],
    )
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    assert any("valid_bleu" in r for r in records)


@pytest.mark.parametrize("cell", ["gru", "peephole_lstm"])
def test_language_model_with_scratch_cells(tmp_path, cell):
    records = _train(
        "lm",
        "configs/lm/timemachine-char.yaml",
        tmp_path / "run",
        [
            f"model.cell={cell}",
            "model.rnn_impl=scratch",
            "model.hidden_size=16",
            "train.max_steps=3",
            "train.log_every=1",
            "train.valid_every=3",
        ],
    )
    assert any("valid_ppl" in r for r in records)


@pytest.mark.parametrize("cell", ["lstm", "coupled_lstm"])
def test_tagger_with_scratch_cells(tmp_path, cell):
    records = _train(
        "tagger",
        "configs/tagger/ud-ewt-sample.yaml",
        tmp_path / "run",
        [
            f"model.cell={cell}",
            "model.rnn_impl=scratch",
            "model.hidden_size=16",
            "train.max_steps=3",
            "train.log_every=1",
            "train.valid_every=3",
        ],
    )
    assert any("valid_accuracy" in r for r in records)
