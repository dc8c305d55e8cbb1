"""Shared fixtures: tiny synthetic parallel corpora written to temporary files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

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
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny character-level language model that memorised a pangram, shared by the session."""
    from tests.tiny_runs import train_language_model

    return train_language_model(tmp_path_factory.mktemp("lm_run"))
