"""Shared fixtures for the tagger tests: one CPU thread, tiny deterministic tasks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rnnlab.tasks.tagger import TaggerConfig, TaggerTask

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "ud-ewt-sample"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture
def make_task(tmp_path: Path):
    return _make_task


def _make_task(tmp_path: Path, train: Path, **model: object) -> TaggerTask:
    """A prepared task on ``train`` with a tiny model; keyword arguments set model fields."""
    config = TaggerConfig()
    config.data.train = str(train)
    config.data.valid = ""
    config.data.min_freq = 1
    config.model.embed_size = 8
    config.model.hidden_size = 8
    config.model.char_embed_size = 4
    config.model.char_hidden_size = 4
    config.model.dropout = 0.0
    for key, value in model.items():
        setattr(config.model, key, value)
    task = TaggerTask(config, tmp_path)
    task.prepare_training()
    return task
