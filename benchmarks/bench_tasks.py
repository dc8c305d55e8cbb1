"""Training tokens/second of the other tasks (language model, tagger), when this tree has them.

The tasks are written on other branches; this looks them up in ``rnnlab.tasks.TASKS`` at run time and
trains each from the first config in ``configs/<task>/`` for a few timed steps through the
task-agnostic ``Trainer``. A task, config or data file that is missing is reported as skipped.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from rnnlab.config import load_config
from rnnlab.errors import RnnlabError
from rnnlab.tasks import TASKS
from rnnlab.training.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent


def time_task(name: str, config_path: Path, *, steps: int, windows: int) -> dict[str, Any]:
    config = load_config(TASKS[name].config_class, config_path)
    with tempfile.TemporaryDirectory() as workdir:
        task = TASKS[name](config, Path(workdir))
        task.prepare_training()
        torch.manual_seed(0)
        trainer = Trainer(
            task=task,
            model=task.build_model(),
            config=config.train,
            run_dir=Path(workdir),
            device=torch.device("cpu"),
        )
        batches = task.train_batches(0)
        needed = 1 + steps * windows
        batches = (batches * (needed // max(len(batches), 1) + 1))[:needed]
        trainer._train_step(batches[0])
        rates = []
        for w in range(windows):
            started, tokens = time.perf_counter(), 0
            for batch in batches[1 + w * steps : 1 + (w + 1) * steps]:
                tokens += trainer._train_step(batch)
            rates.append(tokens / (time.perf_counter() - started))
    return {
        "config": str(config_path.relative_to(REPO)),
        "tokens_per_sec": statistics.median(rates),
    }


def run(*, quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in ("lm", "tagger"):
        if name not in TASKS:
            results[name] = f"skipped: rnnlab.tasks.TASKS has no {name!r} in this tree"
            continue
        configs = sorted((REPO / "configs" / name).glob("*.yaml"))
        if not configs:
            results[name] = f"skipped: no configs/{name}/*.yaml"
            continue
        try:
            results[name] = time_task(
                name, configs[0], steps=3 if quick else 10, windows=1 if quick else 3
            )
        except (RnnlabError, OSError) as exc:
            results[name] = f"skipped: {exc}"
    return results
