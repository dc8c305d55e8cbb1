"""Where a recipe's training step spends its time: torch.profiler over a few steps of any config.

    PYTHONPATH=src python benchmarks/profile_step.py configs/tagger/ud-ewt-upos.yaml \
        [--set KEY=VALUE ...] [--warmup 20] [--steps 40] [--threads 1] [--rows 25]

Prepares the config's training data as ``rnnlab train`` does, runs ``--warmup`` steps, then profiles
``--steps`` more through the task-agnostic ``Trainer`` and prints the training tokens/s of the
profiled steps and the operators by self CPU time. The first batches of epoch 0 are used, so two runs
of one config profile the same batches.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from rnnlab.config import read_yaml
from rnnlab.rundir import load_task_config, task_class
from rnnlab.training.trainer import Trainer, resolve_device, set_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=25, help="operators to list")
    args = parser.parse_args()

    task_name = read_yaml(args.config).get("task")
    if task_name is None:
        parser.error(f"{args.config} names no task")
    config = load_task_config(task_name, args.config, args.set)
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        task = task_class(config.task)(config, Path(workdir))
        task.prepare_training()
        torch.manual_seed(config.seed)
        trainer = Trainer(
            task=task,
            model=task.build_model(),
            config=config.train,
            run_dir=Path(workdir),
            device=resolve_device(config.train.device),
        )
        batches = task.train_batches(0)
        needed = args.warmup + args.steps
        batches = (batches * (needed // max(len(batches), 1) + 1))[:needed]
        for batch in batches[: args.warmup]:
            trainer._train_step(batch)
        tokens = 0
        with profile(activities=[ProfilerActivity.CPU]) as profiled:
            started = time.perf_counter()
            for batch in batches[args.warmup :]:
                tokens += trainer._train_step(batch)
            seconds = time.perf_counter() - started
    print(
        f"{args.config}: {args.steps} steps, {tokens / seconds:,.0f} training tokens/s under the "
        f"profiler, {torch.get_num_threads()} thread(s)"
    )
    print(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
