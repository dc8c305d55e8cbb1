"""Tiny run directories for export tests: a task with vocabularies, a config on disk and a model."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from rnnlab.config import from_dict
from rnnlab.rundir import create_run_dir, open_run, task_class
from rnnlab.training.trainer import Trainer

WORDS = ["a", "b", "c", "d", "e", "f", "g", "h"]
CPU = torch.device("cpu")


def reverse_lines(n: int, seed: int, *, max_words: int = 6) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, max_words))]
        lines.append(" ".join(words) + "\t" + " ".join(reversed(words)))
    return lines


def make_run(
    root: Path, task: str, config: dict[str, Any], *, train_steps: int = 0, seed: int = 0
) -> tuple[Any, torch.nn.Module]:
    """Create a run directory under ``root`` with ``config`` (a dict), a model, and best weights.

    ``train_steps`` > 0 trains that many steps (a checkpoint is written either way, so that
    ``rnnlab export RUN`` finds weights); the model returned holds the run's best weights.
    """
    cls = task_class(task)
    full = {"task": task, **config}
    full.setdefault("train", {})
    full["train"] = {
        "epochs": 1000,
        "max_steps": max(train_steps, 1),
        "device": "cpu",
        **full["train"],
    }
    cfg = from_dict(cls.config_class, full)
    run = root / "run"
    create_run_dir(run, cfg)
    instance = cls(cfg, run)
    instance.prepare_training()
    torch.manual_seed(seed)
    model = instance.build_model()
    lr = cfg.train.lr if train_steps > 0 else 0.0
    cfg.train.lr = lr
    Trainer(task=instance, model=model, config=cfg.train, run_dir=run, device=CPU).fit()
    # What ``rnnlab export RUN`` reads: the best weights (without validation, those of the first
    # epoch's end), not necessarily the last ones still in ``model``.
    return instance, open_run(run, device="cpu").model


def seq2seq_config(train: Path, *, max_len: int = 70, **model: Any) -> dict[str, Any]:
    return {
        "data": {
            "train": str(train),
            "valid": "",
            "min_freq": 1,
            "preprocess": "none",
            "max_len": max_len,
        },
        "model": {
            "embed_size": 8,
            "hidden_size": 12,
            "num_layers": 2,
            "dropout": 0.0,
            **model,
        },
        "train": {"batch_size": 32, "lr": 0.01},
        "decode": {"max_len": 12, "batch_size": 16},
    }


def eager_translate(task: Any, model: torch.nn.Module, sentences: list[str]) -> list[str]:
    """Greedy translations by the PyTorch model, through the inference API."""
    from rnnlab.inference import Translator

    translator = Translator(task=task, model=model, device=CPU)
    return [t.text for t in translator.translate(sentences)]


def eager_attention(task: Any, model: torch.nn.Module, sentence: str) -> Any:
    """The PyTorch model's attention matrix for its greedy translation of ``sentence``."""
    from rnnlab.inference import Translator

    [translation] = Translator(task=task, model=model, device=CPU).translate(
        [sentence], attention=True
    )
    return translation.attention
