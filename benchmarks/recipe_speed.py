"""Training tokens/s of every shipped recipe in float32 and in bfloat16, side by side on one device.

    PYTHONPATH=src python benchmarks/recipe_speed.py                  # CUDA when present, else CPU
    PYTHONPATH=src python benchmarks/recipe_speed.py --device cpu --threads 2 --recipes ptb-word

Each recipe's config is read as ``rnnlab train`` reads it (its data from ``../shared/data``) and its
first epoch's batches prepared once. Two models start from the config's seed, one trained with
``train.precision: fp32`` and one with ``bf16``, through the task-agnostic ``Trainer`` in alternating
windows of ``--steps`` steps (``harness.paired_windows``) after ``--warmup`` steps each; the figure is
the median over windows, the ratio the median of the windows' ratios. A recipe whose data is missing,
or a precision this device cannot run, is reported as such. The EWT recipe's pretrained vectors
(``runs/vectors/…``, made by the command in its config) are left out where they have not been made:
they only initialise the embedding table, so the step costs the same but for the vocabulary they add.

Prints a table and writes ``benchmarks/results/recipe-speed-<time>.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

from rnnlab.config import read_yaml  # noqa: E402
from rnnlab.errors import RnnlabError  # noqa: E402
from rnnlab.rundir import load_task_config, task_class  # noqa: E402
from rnnlab.training.trainer import Trainer, resolve_device, set_threads  # noqa: E402

REPO = HERE.parent
RECIPES = {
    "ptb-word": "configs/lm/ptb-word.yaml",
    "ud-ewt-upos": "configs/tagger/ud-ewt-upos.yaml",
    "multi30k-de-en-attention": "configs/seq2seq/multi30k-de-en-attention.yaml",
    "multi30k-de-en-gru": "configs/seq2seq/multi30k-de-en-gru.yaml",
    "fra-eng": "configs/seq2seq/fra-eng.yaml",
}
PRECISIONS = ("fp32", "bf16")


def _settings(config_path: Path) -> tuple[list[str], str]:
    """``--set`` overrides that let a recipe run here, and a note saying what they leave out."""
    data = read_yaml(config_path)
    vectors = (data.get("model") or {}).get("pretrained_embeddings")
    if vectors and not (REPO / vectors).exists():
        leave_out = ["model.pretrained_embeddings=", "data.extend_vocab_from_embeddings=false"]
        return leave_out, f"without {vectors} (not made)"
    return [], ""


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_recipe(
    name: str, device: torch.device, *, warmup: int, steps: int, windows: int
) -> dict[str, Any]:
    config_path = REPO / RECIPES[name]
    overrides, note = _settings(config_path)
    task_name = read_yaml(config_path)["task"]
    try:
        config = load_task_config(task_name, str(config_path), overrides)
    except (RnnlabError, OSError) as exc:
        return {"skipped": str(exc)}
    with tempfile.TemporaryDirectory() as workdir:
        try:
            task = task_class(task_name)(config, Path(workdir))
            task.prepare_training()
        except (RnnlabError, OSError) as exc:
            return {"skipped": str(exc)}
        batches = list(task.train_batches(0))
        trainers: dict[str, Trainer] = {}
        failed: dict[str, str] = {}
        for precision in PRECISIONS:
            torch.manual_seed(config.seed)
            run_dir = Path(workdir) / precision
            run_dir.mkdir()
            trainers[precision] = Trainer(
                task=task,
                model=task.build_model(),
                config=replace(config.train, precision=precision),
                run_dir=run_dir,
                device=device,
            )
        position = {precision: 0 for precision in PRECISIONS}

        def run_steps(precision: str, count: int) -> float:
            tokens = 0
            for _ in range(count):
                batch = batches[position[precision] % len(batches)]
                position[precision] += 1
                tokens += trainers[precision]._train_step(batch)
            _synchronize(device)
            return float(tokens)

        for precision in PRECISIONS:
            try:
                run_steps(precision, warmup)
            except RuntimeError as exc:  # bf16 where this device has no kernel for it
                failed[precision] = str(exc).splitlines()[0][:200]
        result: dict[str, Any] = {"note": note, "batches_per_epoch": len(batches)}
        if failed:
            result["failed"] = failed
        if "fp32" in failed:
            return result
        if "bf16" in failed:
            fp32 = [harness.timed(lambda: run_steps("fp32", steps)) for _ in range(windows)]
            result["fp32_tokens_per_sec"] = sorted(w / s for w, s in fp32)[len(fp32) // 2]
            return result
        paired = harness.paired_windows(
            candidate=lambda: harness.timed(lambda: run_steps("bf16", steps)),
            baseline=lambda: harness.timed(lambda: run_steps("fp32", steps)),
            repeats=windows,
        )
        summary = paired.summary()
        result.update(
            fp32_tokens_per_sec=summary["baseline_median"],
            bf16_tokens_per_sec=summary["candidate_median"],
            bf16_over_fp32=summary["ratio"],
            windows=summary,
        )
        return result


def table(device: str, results: dict[str, dict[str, Any]]) -> str:
    rows = [("recipe", "device", "fp32 tok/s", "bf16 tok/s", "bf16/fp32", "note")]
    for name, res in results.items():
        if "skipped" in res:
            rows.append((name, device, "", "", "", f"skipped: {res['skipped']}"))
            continue
        fp32 = res.get("fp32_tokens_per_sec")
        bf16 = res.get("bf16_tokens_per_sec")
        ratio = res.get("bf16_over_fp32")
        notes = [res["note"]] if res["note"] else []
        notes += [f"{p} failed: {why}" for p, why in res.get("failed", {}).items()]
        rows.append(
            (
                name,
                device,
                f"{fp32:,.0f}" if fp32 else "",
                f"{bf16:,.0f}" if bf16 else "",
                f"{ratio:.2f}x" if ratio else "",
                "; ".join(notes),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES))
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="steps per timing window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 warm-up steps, 1 window of 3 steps")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.steps, args.windows = 2, 3, 1
    set_threads(args.threads)
    device = resolve_device(args.device, "--device")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else harness.cpu_model()
    print(f"device: {device} ({name}); machine: {json.dumps(harness.machine_info())}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for recipe in args.recipes:
        started = time.perf_counter()
        results[recipe] = time_recipe(
            recipe, device, warmup=args.warmup, steps=args.steps, windows=args.windows
        )
        print(f"{recipe}: {time.perf_counter() - started:.0f} s", flush=True)
    print(table(device.type, results))
    out = HERE / "results" / f"recipe-speed-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    info = {"device": str(device), "device_name": name, **harness.machine_info()}
    out.write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
