"""Tiny trained runs of every task, trained once per test session through ``rnnlab train``.

The inference and serving tests share them (fixtures in ``tests/conftest.py``): a reverse-the-symbols
translator with Bahdanau attention (it learns the task well enough to check outputs), a tagger on the
bundled EWT sample and a character-level language model that memorises a pangram.
"""

from __future__ import annotations

from pathlib import Path

from tests.cli_runner import call_main

REPO = Path(__file__).resolve().parents[1]
EWT_SAMPLE = REPO / "data" / "ud-ewt-sample"


def _sets(settings: dict[str, object]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def _train(task: str, out: Path, *args: str) -> Path:
    code = call_main("train", task, "--out", out, *args)
    assert code == 0, f"training the tiny {task} run failed"
    return out


def train_translator(root: Path) -> Path:
    from tests.conftest import reverse_pairs, write_tsv

    train = write_tsv(root / "train.tsv", reverse_pairs(2000, seed=1, max_len=6))
    valid = write_tsv(root / "valid.tsv", reverse_pairs(60, seed=2, max_len=6))
    settings = {
        "data.train": train,
        "data.valid": valid,
        "data.tsv_langs": "[en, fr]",
        "data.min_freq": 1,
        "model.embed_size": 16,
        "model.hidden_size": 32,
        "model.num_layers": 1,
        "model.attention": "bahdanau",
        "model.bidirectional_encoder": "true",
        "train.batch_size": 32,
        "train.lr": 0.01,
        "train.epochs": 3,
        "train.num_threads": 1,
        "train.device": "cpu",
    }
    return _train("seq2seq", root / "reverse", *_sets(settings))


def train_tagger(root: Path, **overrides: object) -> Path:
    """The tiny tagger; ``overrides`` are further ``--set`` settings (``seed=7``)."""
    settings: dict[str, object] = {
        "data.train": EWT_SAMPLE / "train.conllu",
        "data.valid": EWT_SAMPLE / "dev.conllu",
        "data.max_examples": 200,
        "train.max_steps": 30,
        "train.valid_every": 30,
        "model.hidden_size": 16,
        "model.embed_size": 16,
        "train.num_threads": 1,
        "train.device": "cpu",
    }
    settings.update(overrides)
    config = ("--config", str(REPO / "configs/tagger/ud-ewt-sample.yaml"))
    return _train("tagger", root / "pos", *config, *_sets(settings))


def train_language_model(root: Path) -> Path:
    from tests.conftest import PANGRAM, _tiny_run_args

    text = root / "pangram.txt"
    text.write_text(PANGRAM * 30, encoding="utf-8")
    return _train("lm", root / "pangram", *_tiny_run_args(text, text))
