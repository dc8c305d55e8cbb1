"""Speed of rnnlab's from-scratch recurrent layers against torch.nn's fused ones, on CPU.

For GRU and LSTM at hidden 256 and 512 (batch 64, 30 steps, input size = hidden) it times one
forward plus backward pass of ``rnnlab.nn`` (scratch) and ``torch.nn`` (fused) holding the same
weights. The two are timed alternately within one run, so a busy machine slows both alike, and the
ratio scratch/fused is of the medians over the repeats. ``--eager`` adds the scratch layers with
their time loops uncompiled (plain Python), to show what TorchScript buys.

    python benchmarks/bench_rnn_impl.py [--repeats 30] [--eager] [--threads 2] [--out PATH]

Prints a table and writes benchmarks/results/rnn_impl.json. On a machine shared with other jobs, two
threads time badly (each kernel waits for both threads to be scheduled); ``--threads 1`` then gives
the steadier ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

import rnnlab.nn as rl
from rnnlab.nn import lstm_loops, rnn_loops

RESULTS = Path(__file__).parent / "results" / "rnn_impl.json"
BATCH, STEPS = 64, 30


def step_timer(module: nn.Module, x: torch.Tensor) -> Callable[[], float]:
    """A callable that runs forward + backward once and returns its wall time in seconds."""

    def run() -> float:
        module.zero_grad(set_to_none=True)
        start = time.perf_counter()
        output, _ = module(x)
        output.sum().backward()
        return time.perf_counter() - start

    return run


@contextmanager
def eager_loops():
    """Swap the compiled time loops for their plain-Python versions while inside the block."""
    saved = []
    for module in (lstm_loops, rnn_loops):
        for name in dir(module):
            if name.isupper() and name.endswith(("_FORWARD", "_BACKWARD")):
                saved.append((module, name, getattr(module, name)))
                setattr(module, name, getattr(module, name.lower()))
    try:
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def measure(cell: str, hidden: int, repeats: int, warmup: int, eager: bool) -> dict:
    torch.manual_seed(0)
    fused = getattr(nn, cell)(hidden, hidden)
    scratch = getattr(rl, cell)(hidden, hidden)
    scratch.load_state_dict(fused.state_dict())
    x = torch.randn(STEPS, BATCH, hidden)
    timers = {"fused": step_timer(fused, x), "scratch": step_timer(scratch, x)}
    if eager:
        eager_scratch = step_timer(scratch, x)

        def eager_timer() -> float:
            with eager_loops():
                return eager_scratch()

        timers["scratch_eager"] = eager_timer
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(warmup):  # TorchScript profiles and optimises on the first calls
        for timer in timers.values():
            timer()
    for _ in range(repeats):
        for name, timer in timers.items():
            times[name].append(timer())
    row = {"cell": cell, "hidden": hidden, "batch": BATCH, "steps": STEPS, "repeats": repeats}
    for name, values in times.items():
        row[f"{name}_ms"] = 1e3 * statistics.median(values)
        row[f"{name}_min_ms"] = 1e3 * min(values)
    row["ratio"] = row["scratch_ms"] / row["fused_ms"]
    if eager:
        row["eager_ratio"] = row["scratch_eager_ms"] / row["fused_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--eager", action="store_true", help="also time the uncompiled loops")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    rows = [
        measure(cell, hidden, args.repeats, args.warmup, args.eager)
        for cell in ("GRU", "LSTM")
        for hidden in (256, 512)
    ]
    load_after = os.getloadavg()

    header = f"{'cell':<5} {'H':>4} {'fused ms':>9} {'scratch ms':>11} {'scratch/fused':>14}"
    if args.eager:
        header += f" {'eager ms':>9} {'eager/fused':>12}"
    print(
        f"forward+backward, batch {BATCH}, T {STEPS}, input = hidden, CPU, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(header)
    for r in rows:
        line = f"{r['cell']:<5} {r['hidden']:>4} {r['fused_ms']:>9.2f} {r['scratch_ms']:>11.2f}"
        line += f" {r['ratio']:>13.2f}x"
        if args.eager:
            line += f" {r['scratch_eager_ms']:>9.2f} {r['eager_ratio']:>11.2f}x"
        print(line)
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
