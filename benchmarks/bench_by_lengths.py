"""Tagger speed with its recurrent stack run by lengths on the padded kernel, against packed sequences.

``rnnlab.nn.by_lengths`` runs a ``torch.nn.LSTM`` over padded batches (oneDNN's fused kernel on a
CPU) and reverses the backward direction within each length, where the tagger used to pack its
batches (a loop of small products per time step); GRUs and RNNs take the same path while training.
Both paths give the same outputs; this times training steps (loss, backward, Adam) and tagging of
the recipe's batches in alternating windows of one process, so the ratio is taken under the same load.

    python benchmarks/bench_by_lengths.py --config configs/tagger/ud-ewt-upos.yaml \\
        --set model.pretrained_embeddings=runs/vectors/en-w2v-lower.txt --threads 1
    python benchmarks/bench_by_lengths.py --config configs/tagger/ud-ewt-upos.yaml --set model.cell=gru
    python benchmarks/bench_by_lengths.py --config configs/tagger/ud-ewt-sample.yaml   # bundled data

Prints one JSON object: training and tagging tokens/s of both paths (medians over windows) and the
median of the per-window ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from rnnlab.nn import by_lengths  # noqa: E402
from rnnlab.rundir import load_task_config  # noqa: E402
from rnnlab.tasks import TASKS  # noqa: E402

RUNS_PADDED = by_lengths.runs_padded


def use_packing(packed: bool) -> None:
    by_lengths.runs_padded = (lambda rnn, inputs: False) if packed else RUNS_PADDED  # type: ignore[assignment]


def run(
    config_path: str, overrides: list[str], *, windows: int = 5, window_batches: int = 20
) -> dict[str, Any]:
    """Training and tagging tokens/s of both paths, timed in alternating windows."""
    config = load_task_config("tagger", config_path, overrides)
    task = TASKS["tagger"](config, Path(tempfile.mkdtemp(prefix="bench-by-lengths-")))
    task.prepare_training()
    task.read_training_data()
    torch.manual_seed(config.seed)
    model = task.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    cursor = itertools.cycle(task.train_batches(0))

    def train_window() -> float:
        model.train()
        tokens = 0
        for _ in range(window_batches):
            batch = next(cursor)
            out = task.batch_loss(model, batch, None)
            optimizer.zero_grad()
            (out.loss_sum / out.num_tokens).backward()
            optimizer.step()
            tokens += out.num_tokens
        return float(tokens)

    sentences = task.train_data.words[: 64 * window_batches] if task.train_data else []

    def tag_window() -> float:
        model.eval()
        task.tag(model, sentences, torch.device("cpu"), batch_size=config.decode.batch_size)
        return float(sum(len(s) for s in sentences))

    def as_system(window: Callable[[], float], packed: bool) -> Callable[[], tuple[float, float]]:
        def timed_window() -> tuple[float, float]:
            use_packing(packed)
            return harness.timed(window)

        return timed_window

    use_packing(False)
    train_window()  # warm-up of both paths
    use_packing(True)
    train_window()
    results: dict[str, Any] = {"machine": harness.machine_info(), "config": config_path}
    try:
        for name, window in (("train", train_window), ("tag", tag_window)):
            paired = harness.paired_windows(
                as_system(window, packed=False), as_system(window, packed=True), windows
            )
            results[name] = {"unit": "tokens/s", "by_lengths_vs_packed": paired.summary()}
    finally:
        use_packing(False)
    results["load_average_1m_after"] = harness.machine_info()["load_average_1m"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tagger/ud-ewt-upos.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-batches", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = run(args.config, args.set, windows=args.windows, window_batches=args.window_batches)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
