"""Shared fixtures: tiny synthetic corpora, tiny trained runs, and the pieces task tests build on."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from rnnlab.tasks.tagger import TaggerTask
from rnnlab.tasks.tagger_config import TaggerConfig

SYMBOLS = ["a", "b", "c", "d", "e", "f", "g", "h"]


def reverse_pairs(
    n: int, *, seed: int, min_len: int = 2, max_len: int = 5
) -> list[tuple[str, str]]:
    """Source: random symbol strings; target: the same symbols reversed."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        tokens = [rng.choice(SYMBOLS) for _ in range(rng.randint(min_len, max_len))]
        pairs.append((" ".join(tokens), " ".join(reversed(tokens))))
    return pairs


def write_tsv(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


@pytest.fixture
def reverse_corpus(tmp_path: Path) -> dict[str, Path]:
    return {
        "train": write_tsv(tmp_path / "train.tsv", reverse_pairs(6000, seed=1)),
        "valid": write_tsv(tmp_path / "valid.tsv", reverse_pairs(100, seed=2)),
        "test": write_tsv(tmp_path / "test.tsv", reverse_pairs(100, seed=3)),
    }


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture
def png_size():
    return _png_size


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def translator_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained reverse-task translator with attention, shared by the whole session."""
    from tests.tiny_runs import train_translator

    return train_translator(tmp_path_factory.mktemp("translator_run"))


@pytest.fixture(scope="session")
def tagger_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny tagger trained on the bundled EWT sample, shared by the whole session."""
    from tests.tiny_runs import train_tagger

    return train_tagger(tmp_path_factory.mktemp("tagger_run"))


@pytest.fixture(scope="session")
def exported_tagger(tagger_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tagger run exported once (ONNX); tests that damage it work on a copy."""
    from rnnlab.export.onnx import export_run
    from rnnlab.rundir import open_run

    run = open_run(tagger_run, device="cpu")
    return export_run(run.task, run.model, tmp_path_factory.mktemp("export") / "tagger")


@pytest.fixture(scope="session")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny character-level language model that memorised a pangram, shared by the session."""
    from tests.tiny_runs import train_language_model

    return train_language_model(tmp_path_factory.mktemp("lm_run"))


# Language models: a repetitive text and a tiny-run config.
PANGRAM = "the quick brown fox jumps over the lazy dog\n"


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


# Taggers: tiny data files and prepared tasks.
DATA = Path(__file__).parent / "data" / "tagged"
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "ud-ewt-sample"


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
