"""Shared pieces for the language-model tests: a repetitive text and a tiny-run config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
PANGRAM = "the quick brown fox jumps over the lazy dog\n"


@pytest.fixture(autouse=True)
def _one_thread():
    """The suite shares 2 cores with other jobs; tiny models gain nothing from more threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def pangram_file(tmp_path: Path) -> Path:
    path = tmp_path / "pangram.txt"
    path.write_text(PANGRAM * 30, encoding="utf-8")
    return path


def _tiny_run_args(train: Path, valid: Path, **overrides: object) -> list[str]:
    settings: dict[str, object] = {
        "data.train": train,
        "data.valid": valid,
        "data.clean": "none",
        "model.hidden_size": 64,
        "model.embed_size": 16,
        "train.batch_size": 4,
        "train.bptt": 32,
        "train.epochs": 8,
        "train.lr": 0.01,
        "train.log_every": 1,
        "train.num_threads": 1,
        "train.device": "cpu",
    }
    settings.update(overrides)
    args: list[str] = []
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.fixture
def tiny_run_args():
    """``--set`` arguments for a small character-level GRU that trains in a few seconds."""
    return _tiny_run_args
