"""Data-parallel training takes exactly the optimizer steps of one process with the same global batch."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
WORDS = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]


def write_reverse_task(
    folder: Path, *, pairs: int = 72, batch_size: int = 18, epochs: int = 5
) -> Path:
    """A tiny reverse-the-sentence corpus and a config with no dropout (dropout draws differ by rank)."""
    rng = random.Random(0)
    lines = []
    for _ in range(pairs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 7))]
        lines.append(" ".join(words) + "\t" + " ".join(reversed(words)))
    (folder / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = folder / "tiny.yaml"
    config.write_text(
        f"""task: seq2seq
seed: 3
data: {{train: {folder / "train.tsv"}, valid: "", preprocess: none, min_freq: 1, max_len: 10}}
model: {{embed_size: 8, hidden_size: 16, num_layers: 2, dropout: 0.0}}
train: {{epochs: {epochs}, batch_size: {batch_size}, lr: 0.01, log_every: 1, device: cpu, num_threads: 1}}
""",
        encoding="utf-8",
    )
    return config


def rnnlab(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "rnnlab", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=1e-6, msg=name)


def train_losses(run: Path) -> list[float]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in records if "train_loss" in r]


def test_two_processes_take_the_single_process_steps_and_resume_with_one(tmp_path):
    config = write_reverse_task(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    # 72 pairs / 18 = 4 global batches per epoch (9 rows per rank); 7 steps cross an epoch end.
    common = ["train", "seq2seq", "--config", str(config)]
    rnnlab(*common, "--out", str(one), "--set", "train.max_steps=7")
    rnnlab(*common, "--out", str(two), "--nproc", "2", "--set", "train.max_steps=5")
    # The two-process run continues in one process: the same steps as the uninterrupted run.
    rnnlab("train", "--resume", str(two), "--set", "train.max_steps=7")
    losses_one, losses_two = train_losses(one), train_losses(two)
    assert len(losses_one) == len(losses_two) == 7
    for a, b in zip(losses_one, losses_two, strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    assert_same_weights(one, two)
