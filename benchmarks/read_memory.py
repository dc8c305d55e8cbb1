"""Peak memory of preparing training data: the full Tatoeba fra-eng corpus read, counted and encoded.

Each measurement runs in a fresh process (peak RSS cannot be reset within one), importing rnnlab from
the source tree given for its variant, so two versions of the readers are compared in one run,
alternating, with medians reported::

    git archive main src | tar -x -C /tmp/rnnlab-main
    python benchmarks/read_memory.py --variant before=/tmp/rnnlab-main/src --variant after=src

Two figures per run: the growth of peak RSS over the process after imports (what the machine sees),
and the peak of Python allocations under ``tracemalloc`` (what the readers hold, without allocator
slack; a separate process, since tracing slows reading). The operation is
``Seq2SeqTask.prepare_training()`` with the task's defaults (textbook preprocessing, word vocabularies,
min_freq 2, max_len 50) on every pair of ``fra.txt.gz``, and no validation file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "tatoeba-fra-eng" / "fra.txt.gz"

CHILD = r"""
import json, resource, sys, tempfile, time, tracemalloc
from pathlib import Path
from rnnlab.config import from_dict
from rnnlab.tasks.seq2seq import Seq2SeqTask
from rnnlab.tasks.seq2seq_config import Seq2SeqConfig
import torch  # imported before the baseline: its RSS is not the readers'

corpus, trace = sys.argv[1], sys.argv[2] == "trace"
config = from_dict(Seq2SeqConfig, {"data": {"train": corpus, "valid": ""}})
with tempfile.TemporaryDirectory() as run_dir:
    task = Seq2SeqTask(config, Path(run_dir))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    task.prepare_training()
    seconds = time.perf_counter() - started
    traced = tracemalloc.get_traced_memory()[1] if trace else 0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pairs = len(task.train_data.src)
print(json.dumps({"rss_growth_mb": (after - before) / 1024, "traced_peak_mb": traced / 2**20,
                  "seconds": seconds, "pairs": pairs, "rnnlab": __import__("rnnlab").__file__}))
"""


def measure(src: str, corpus: Path, mode: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(corpus), mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=SRC_DIR")
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds (medians)")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()
    variants = dict(item.split("=", 1) for item in args.variant)
    results: dict[str, dict[str, list[float]]] = {n: {} for n in variants}
    for round_ in range(args.repeat):
        for mode in ("rss", "trace"):
            for name, src in variants.items():
                figures = measure(src, args.corpus, mode)
                key = "rss_growth_mb" if mode == "rss" else "traced_peak_mb"
                results[name].setdefault(key, []).append(figures[key])
                if mode == "rss":
                    results[name].setdefault("seconds", []).append(figures["seconds"])
                print(f"round {round_ + 1} {name} {mode}: {json.dumps(figures)}", flush=True)
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    baseline = next(iter(variants))
    for name in variants:
        line = [f"{name:>8}:"]
        for key, values in results[name].items():
            median = statistics.median(values)
            ratio = median / statistics.median(results[baseline][key])
            line.append(f"{key} {median:.1f} (×{ratio:.2f} of {baseline})")
        print("  ".join(line))


if __name__ == "__main__":
    main()
