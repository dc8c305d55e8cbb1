"""The speed suite behind ``make bench``: every figure as a ratio against a baseline timed in the same run.

    python benchmarks/run_all.py            # both configurations (about 10–15 minutes on 2 cores)
    python benchmarks/run_all.py --quick    # smoke mode, a minute or two
    python benchmarks/run_all.py --configs realistic --threads 2

Prints a table and writes ``benchmarks/results/bench-<time>.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_by_lengths  # noqa: E402
import bench_seq2seq  # noqa: E402
import bench_tasks  # noqa: E402
import harness  # noqa: E402

TARGETS = {
    ("realistic", "train_ratio"): 2.5,
    ("realistic", "peak_fraction"): 0.60,
    ("textbook", "greedy_ratio"): 50.0,
    ("realistic", "greedy_sentences_per_sec"): 1000.0,
}


def memory_in_subprocess(config: str, system: str, quick: bool, threads: int) -> Any:
    command = [sys.executable, str(HERE / "bench_seq2seq.py"), "--config", config]
    command += ["--memory", system, "--threads", str(threads)]
    if quick:
        command.append("--quick")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), *sys.path])}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    rows = [("config", "figure", "rnnlab", "textbook", "ratio", "target")]
    for name, res in results["seq2seq"].items():
        train, dec = res["train"], res["decode"]
        tps = train["tokens_per_sec"]
        rows.append(
            (
                name,
                "train target tok/s",
                fmt(tps["candidate_median"]),
                fmt(tps["baseline_median"]),
                f"{tps['ratio']:.2f}x",
                "≥2.5x" if name == "realistic" else "",
            )
        )
        rows.append(
            (
                name,
                "train GFLOP/s (non-pad)",
                fmt(train["rnnlab_gflops"], 2),
                fmt(train["textbook_gflops"], 2),
                "",
                "",
            )
        )
        rows.append(
            (
                name,
                f"  % of matmul peak {train['matmul_peak_gflops']:.0f} GFLOP/s",
                f"{100 * train['rnnlab_peak_fraction']:.1f}%",
                f"{100 * train['textbook_peak_fraction']:.1f}%",
                "",
                "≥60%" if name == "realistic" else "",
            )
        )
        rows.append(
            (
                name,
                f"valid loss after {train['steps_each']} steps",
                fmt(train["valid_loss_rnnlab"], 3),
                fmt(train["valid_loss_textbook"], 3),
                "",
                "≤ textbook",
            )
        )
        greedy = dec["greedy_sentences_per_sec"]
        rows.append(
            (
                name,
                "greedy sent/s",
                fmt(greedy["candidate_median"]),
                fmt(greedy["baseline_median"]),
                f"{greedy['ratio']:.1f}x",
                "≥50x" if name == "textbook" else "≥1000 sent/s",
            )
        )
        if isinstance(dec.get("beam5_sentences_per_sec"), dict):
            beam = dec["beam5_sentences_per_sec"]
            rows.append(
                (
                    name,
                    "beam-5 sent/s (ratio to greedy)",
                    fmt(beam["candidate_median"]),
                    "",
                    f"{beam['ratio']:.2f}x",
                    "≥0.33x",
                )
            )
        else:
            rows.append((name, "beam-5", dec.get("beam5", ""), "", "", ""))
        onnx = dec.get("onnx")
        if isinstance(onnx, dict):
            g = onnx["greedy_sentences_per_sec"]
            rows.append(
                (
                    name,
                    "ONNX Runtime greedy sent/s",
                    fmt(g["candidate_median"]),
                    f"eager {fmt(g['baseline_median'])}",
                    f"{g['ratio']:.2f}x",
                    f"same output {onnx['identical_translations']}",
                )
            )
        else:
            rows.append((name, "ONNX Runtime greedy", str(onnx), "", "", ""))
        mem = res.get("peak_rss_mb", {})
        if mem:
            rows.append(
                (
                    name,
                    "peak RSS MB, 5 train steps + decoding",
                    fmt(mem.get("rnnlab")),
                    fmt(mem.get("textbook")),
                    "",
                    "",
                )
            )
    for name, res in results["tasks"].items():
        if isinstance(res, dict):
            rows.append((name, "train tok/s", fmt(res["tokens_per_sec"]), "", "", res["config"]))
        else:
            rows.append((name, "train tok/s", res, "", "", ""))
    by_lengths = results.get("tagger_by_lengths")
    if isinstance(by_lengths, dict):
        for part in ("train", "tag"):
            paired = by_lengths[part]["by_lengths_vs_packed"]
            rows.append(
                (
                    "tagger (sample)",
                    f"{part} tok/s, LSTM by lengths vs packed",
                    fmt(paired["candidate_median"]),
                    fmt(paired["baseline_median"]),
                    f"{paired['ratio']:.2f}x",
                    "",
                )
            )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny windows")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["textbook", "realistic"],
        choices=sorted(bench_seq2seq.CONFIGS),
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the RSS subprocesses")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    started = time.time()
    results: dict[str, Any] = {"machine": harness.machine_info(), "quick": args.quick}
    print(f"machine: {results['machine']}", flush=True)
    results["seq2seq"] = {}
    for name in args.configs:
        print(f"[{time.time() - started:6.0f}s] seq2seq {name} …", flush=True)
        res = bench_seq2seq.run_config(
            name, quick=args.quick, data=str(HERE.parent / "data/fra-eng/train.tsv.gz")
        )
        if not args.no_memory:
            res["peak_rss_mb"] = {
                system: memory_in_subprocess(name, system, args.quick, threads)
                for system in ("rnnlab", "textbook")
            }
        results["seq2seq"][name] = res
    print(f"[{time.time() - started:6.0f}s] other tasks …", flush=True)
    results["tasks"] = bench_tasks.run(quick=args.quick)
    print(f"[{time.time() - started:6.0f}s] tagger by lengths …", flush=True)
    results["tagger_by_lengths"] = bench_by_lengths.run(
        str(HERE.parent / "configs/tagger/ud-ewt-sample.yaml"),
        [],
        windows=2 if args.quick else 5,
        window_batches=5 if args.quick else 20,
    )
    results["machine_after"] = harness.machine_info()
    results["seconds"] = round(time.time() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / time.strftime("bench-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print()
    print(table(results))
    print(
        f"\n{results['seconds']:.0f} s; threads {threads}; "
        f"load {results['machine']['load_average_1m']} → {results['machine_after']['load_average_1m']}; "
        f"JSON: {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
