"""Beam search on a trained translator: greedy, beam search that stops a sentence once its best
hypothesis is settled (``decode.beam_stop: exact``), the same search waiting for K finished
hypotheses (the older rule), and ``beam_stop: heuristic``, which stops once no live beam would win by
ending at the next step.

    python benchmarks/bench_beam_stop.py runs/m30k --data ../shared/data/multi30k/val --threads 1
    python benchmarks/bench_beam_stop.py runs/m30k --data ../shared/data/multi30k/val --precision bf16

Waiting for K finished hypotheses is what ``n_best`` = K asks for, and its best hypothesis is the
one ``n_best`` 1 returns (checked here, sentence by sentence), so the two are timed as two searches
of one model. Systems alternate round by round in one process; the figures are medians of rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

import rnnlab  # noqa: E402


def measure(
    translator: Any, data: str, *, beam: int, alpha: float | None, rounds: int
) -> dict[str, Any]:
    """Sentences/s of the three searches over ``data``'s sources; ``alpha`` None: the run's."""
    task, model = translator.task, translator.model
    if alpha is None:
        alpha = task.config.decode.length_penalty
    sources = [task.encode_source(pair.src) for pair in task.read_pairs(data)]
    systems = {
        "greedy": dict(beam_size=1),
        "beam_settled": dict(beam_size=beam, n_best=1, length_penalty=alpha, beam_stop="exact"),
        "beam_wait_k": dict(beam_size=beam, n_best=beam, length_penalty=alpha),
        "beam_heuristic": dict(
            beam_size=beam, n_best=1, length_penalty=alpha, beam_stop="heuristic"
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in systems}
    outputs: dict[str, list[list[list[int]]]] = {}
    for _ in range(rounds):
        for name, decode in systems.items():
            started = time.perf_counter()
            outputs[name] = task.translate_ids(model, sources, translator.device, **decode)
            seconds[name].append(time.perf_counter() - started)
    per_sec = {name: len(sources) / statistics.median(s) for name, s in seconds.items()}

    def same(a: str, b: str) -> str:
        agree = sum(x[0] == y[0] for x, y in zip(outputs[a], outputs[b], strict=True))
        return f"{agree}/{len(sources)}"

    return {
        "data": data,
        "sentences": len(sources),
        "threads": torch.get_num_threads(),
        "beam": beam,
        "length_penalty": alpha,
        "precision": task.config.decode.precision,
        "rounds": rounds,
        "machine": harness.machine_info(),
        "sentences_per_sec": {name: round(v, 1) for name, v in per_sec.items()},
        "ratios": {
            "beam_settled / greedy": round(per_sec["beam_settled"] / per_sec["greedy"], 3),
            "beam_wait_k / greedy": round(per_sec["beam_wait_k"] / per_sec["greedy"], 3),
            "beam_settled / beam_wait_k": round(
                per_sec["beam_settled"] / per_sec["beam_wait_k"], 3
            ),
            "beam_heuristic / greedy": round(per_sec["beam_heuristic"] / per_sec["greedy"], 3),
            "beam_heuristic / beam_settled": round(
                per_sec["beam_heuristic"] / per_sec["beam_settled"], 3
            ),
        },
        "same_best_hypothesis": same("beam_settled", "beam_wait_k"),
        "heuristic_same_as_settled": same("beam_heuristic", "beam_settled"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", help="a seq2seq run directory")
    parser.add_argument("--data", required=True, help="source/target file(s) the run can read")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--length-penalty", type=float, default=None, help="default: the run's")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--precision", choices=("fp32", "bf16", "auto"), default=None, help="default: the run's"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    translator = rnnlab.load(args.run)
    if args.precision is not None:
        translator.task.config.decode.precision = args.precision
    result = measure(
        translator,
        args.data,
        beam=args.beam,
        alpha=args.length_penalty,
        rounds=args.rounds,
    )
    print(json.dumps({"run": args.run, **result}, indent=1))


if __name__ == "__main__":
    main()
