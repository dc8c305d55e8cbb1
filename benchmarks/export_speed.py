"""Eager PyTorch against ONNX Runtime (fp32 and int8) on a trained translator: speed, BLEU, memory, size.

    PYTHONPATH=src python benchmarks/export_speed.py RUN \
        --data ../shared/data/multi30k/test_2016_flickr [--threads 1 2] [--repeats 1] [--out FILE]

Exports RUN twice (fp32 and ``--quantize int8``) into a temporary folder, then translates every
sentence of the test set with each engine × search (greedy, beam 5) × thread count. Each
measurement runs in its own process, so its peak resident memory (``ru_maxrss``) is its own and an
ONNX Runtime process never imports torch; the order of engines alternates between repeats. Each
process times translation only (not loading), once after a 20-sentence warm-up, and reports
sentences/s and sacreBLEU of the same output. Figures are medians over ``--repeats``; ratios are
against eager greedy at the same thread count, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = ("eager", "onnx-fp32", "onnx-int8")
SEARCHES = {"greedy": 1, "beam5": 5}


def worker(args: argparse.Namespace) -> None:
    """One measurement: load one engine, translate the test set, print one JSON line."""
    sources_text = [
        line.split("\t")[0] for line in Path(args.sources).read_text("utf-8").splitlines()
    ]
    references = Path(args.references).read_text("utf-8").splitlines()
    beam = SEARCHES[args.search]
    threads = args.threads[0]
    if args.engine == "eager":
        import torch

        from rnnlab.rundir import open_run

        torch.set_num_threads(threads)
        run = open_run(args.run, device="cpu")
        task = run.task
        sources = [task.encode_source(s) for s in sources_text]

        def translate(batch: list[list[int]]) -> list[str]:
            decoded = task.translate_ids(run.model, batch, run.device, beam_size=beam)
            return [task.detokenize(h[0]) for h in decoded]

    else:
        sys.path.insert(0, args.folder)
        import runtime  # the copy in the export folder: numpy + onnxruntime only

        translator = runtime.load(args.folder, num_threads=threads)
        sources = [translator.encode_source(s) for s in sources_text]

        def translate(batch: list[list[int]]) -> list[str]:
            decoded = translator.translate_ids(batch, beam=beam)
            return [translator.detokenize(h[0].tokens) for h in decoded]

    translate(sources[:20])
    started = time.perf_counter()
    hyps = translate(sources)
    seconds = time.perf_counter() - started
    import sacrebleu

    bleu = sacrebleu.corpus_bleu(hyps, [references]).score
    print(
        json.dumps(
            {
                "seconds": seconds,
                "sentences_per_s": len(sources) / seconds,
                "bleu": bleu,
                "peak_rss_mb": peak_rss_mb(),
                "torch_imported": "torch" in sys.modules,
            }
        )
    )


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ``ru_maxrss`` would include the parent's, as
    Linux keeps it across ``execve``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def folder_size(folder: Path, suffix: str = ".onnx") -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(suffix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--data", required=True, help="aligned test prefix (PREFIX.de, PREFIX.en)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="first N sentences only (0 = all)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per measurement")
    parser.add_argument("--out", default="benchmarks/results/export_speed.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--search", choices=list(SEARCHES), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--sources", help=argparse.SUPPRESS)
    parser.add_argument("--references", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from rnnlab.export.onnx import export_run
    from rnnlab.rundir import open_run

    run = open_run(args.run, device="cpu")
    task = run.task
    pairs = list(task.read_pairs(args.data))  # read twice below: sources, then references
    if args.limit:
        pairs = pairs[: args.limit]
    work = Path(tempfile.mkdtemp(prefix="export-speed-"))
    (work / "src.txt").write_text("".join(p.src + "\n" for p in pairs), "utf-8")
    references = task.encode_pairs(pairs).references
    (work / "ref.txt").write_text("".join(r + "\n" for r in references), "utf-8")
    folders = {}
    export_seconds = {}
    for engine, quantize in (("onnx-fp32", None), ("onnx-int8", "int8")):
        started = time.perf_counter()
        folders[engine] = export_run(task, run.model, work / engine, quantize=quantize)
        export_seconds[engine] = time.perf_counter() - started
    sizes = {engine: folder_size(folder) for engine, folder in folders.items()}

    results: dict[str, list[dict]] = {}
    for repeat in range(args.repeats):
        for threads in args.threads:
            for search in SEARCHES:
                engines = ENGINES if repeat % 2 == 0 else tuple(reversed(ENGINES))
                for engine in engines:
                    command = [
                        sys.executable, __file__, args.run, "--data", args.data, "--worker",
                        "--engine", engine, "--search", search, "--threads", str(threads),
                        "--sources", str(work / "src.txt"), "--references", str(work / "ref.txt"),
                        "--folder", str(folders.get(engine, "")),
                    ]  # fmt: skip
                    env = dict(os.environ)
                    if engine != "eager":
                        env["PYTHONPATH"] = ""  # the export folder alone
                    load = os.getloadavg()[0]
                    done = subprocess.run(
                        command, capture_output=True, text=True, env=env, timeout=args.timeout
                    )
                    if done.returncode != 0:
                        raise SystemExit(done.stderr[-3000:])
                    figures = json.loads(done.stdout.strip().splitlines()[-1])
                    figures["load_1min"] = load
                    key = f"{engine}/{search}/t{threads}"
                    results.setdefault(key, []).append(figures)
                    print(key, json.dumps(figures), file=sys.stderr, flush=True)

    summary = {}
    for key, runs in results.items():
        summary[key] = {
            name: statistics.median(r[name] for r in runs)
            for name in ("sentences_per_s", "bleu", "peak_rss_mb", "seconds", "load_1min")
        }
    for threads in args.threads:
        base = summary[f"eager/greedy/t{threads}"]["sentences_per_s"]
        for search in SEARCHES:
            for engine in ENGINES:
                entry = summary[f"{engine}/{search}/t{threads}"]
                entry["x_eager_greedy"] = entry["sentences_per_s"] / base
                entry["x_same_engine_greedy"] = (
                    entry["sentences_per_s"]
                    / summary[f"{engine}/greedy/t{threads}"]["sentences_per_s"]
                )
                entry["x_fp32_same_search"] = (
                    entry["sentences_per_s"]
                    / summary[f"onnx-fp32/{search}/t{threads}"]["sentences_per_s"]
                )
    report = {
        "run": args.run,
        "sentences": len(pairs),
        "export_bytes": sizes,
        "int8_size_ratio": sizes["onnx-int8"] / sizes["onnx-fp32"],
        "export_seconds": export_seconds,
        "summary": summary,
        "runs": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1), "utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
