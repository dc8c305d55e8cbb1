"""Training speed of a recipe with rnnlab's dropout (masks from uniform numbers on a CPU) against
``F.dropout`` (masks from ``bernoulli_``), side by side.

Two copies of the recipe's model, from one initialisation, train on the same batches in alternating
windows of one process (see ``harness``); between windows the dropout function that
``rnnlab.nn.dropout.Dropout``, ``run_by_lengths`` and the stepwise decoders call is swapped.

    python benchmarks/bench_dropout.py --task seq2seq --config configs/seq2seq/multi30k-de-en-attention.yaml
    python benchmarks/bench_dropout.py --task lm --config configs/lm/ptb-word.yaml --threads 2
    python benchmarks/bench_dropout.py --task tagger --config configs/tagger/ud-ewt-sample.yaml   # bundled

Prints one JSON object: tokens/s of both (medians over windows) and the median per-window ratio.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from rnnlab.nn import by_lengths, stepwise  # noqa: E402
from rnnlab.nn import dropout as dropout_module  # noqa: E402
from rnnlab.rundir import load_task_config  # noqa: E402
from rnnlab.tasks import TASKS  # noqa: E402
from rnnlab.training.trainer import Trainer  # noqa: E402

UNIFORM = dropout_module.dropout


def bernoulli_dropout(inputs: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout`` with the signature of ``rnnlab.nn.dropout.dropout``: the baseline."""
    return F.dropout(inputs, p, training=training)


def use(dropout: Callable[..., Tensor]) -> None:
    for module in (dropout_module, by_lengths, stepwise):
        module.dropout = dropout  # type: ignore[attr-defined]


def run(
    task_name: str, config_path: str, overrides: list[str], *, windows: int, window_batches: int
) -> dict[str, Any]:
    config = load_task_config(task_name, config_path, ["train.num_threads=0", *overrides])
    workdir = Path(tempfile.mkdtemp(prefix="bench-dropout-"))
    task = TASKS[task_name](config, workdir)
    task.prepare_training()
    task.read_training_data()
    torch.manual_seed(config.seed)
    model = task.build_model()
    trainers = {
        name: Trainer(
            task=task,
            model=copy.deepcopy(model),
            config=config.train,
            run_dir=workdir / name,
            device=torch.device("cpu"),
        )
        for name in ("uniform", "bernoulli")
    }
    dropouts = {"uniform": UNIFORM, "bernoulli": bernoulli_dropout}
    cursors = {name: itertools.cycle(task.train_batches(0)) for name in trainers}

    def window(name: str) -> tuple[float, float]:
        use(dropouts[name])
        trainer, cursor = trainers[name], cursors[name]
        return harness.timed(
            lambda: sum(trainer._train_step(next(cursor)) for _ in range(window_batches))
        )

    for name in trainers:  # warm-up
        window(name)
    result = harness.paired_windows(lambda: window("uniform"), lambda: window("bernoulli"), windows)
    use(UNIFORM)
    return {
        "task": task_name,
        "config": config_path,
        "unit": "tokens/s",
        "threads": torch.get_num_threads(),
        "uniform_vs_bernoulli": result.summary(),
        "machine": harness.machine_info(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--window-batches", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(
        args.task,
        args.config,
        args.set,
        windows=args.windows,
        window_batches=args.window_batches,
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
