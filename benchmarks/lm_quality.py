"""Language-model quality: The Time Machine at character level, the textbook's models and a larger one.

Trains each model with ``rnnlab train lm`` (one CPU thread, a fixed wall-clock budget each), then
scores the best checkpoint with ``rnnlab evaluate`` on the validation split and on the training text
(the textbook reports perplexity on training text). Prints a table; writes JSON under
``benchmarks/results/``.

    python benchmarks/lm_quality.py                 # all models, 2.5 minutes each
    python benchmarks/lm_quality.py --minutes 1 --only gru lstm

The PTB word-level benchmark is one long run of the shipped config (see ``configs/lm/ptb-word.yaml``):

    rnnlab train lm --config configs/lm/ptb-word.yaml --out runs/ptb --set train.max_minutes=25
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

TEXTBOOK = {  # d2l: one-hot input, hidden 32; perplexity on the training text
    "rnn": 7.2,
    "gru": 6.6,
    "lstm": 6.7,
    "gru-2layer": 6.1,
}

SMALL = [
    "model.one_hot=true",
    "model.hidden_size=32",
    "model.dropout=0.0",
    "train.batch_size=32",
    "train.bptt=32",
    "train.lr=0.01",
    "train.epochs=40",
]

MODELS: dict[str, list[str]] = {
    "rnn": [*SMALL, "model.cell=rnn", "model.num_layers=1"],
    "gru": [*SMALL, "model.cell=gru", "model.num_layers=1"],
    "lstm": [*SMALL, "model.cell=lstm", "model.num_layers=1"],
    "gru-2layer": [*SMALL, "model.cell=gru", "model.num_layers=2"],
    "gru-256 (shipped config)": [],
}


def rnnlab(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "rnnlab", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"rnnlab {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def run_model(name: str, overrides: list[str], minutes: float) -> dict[str, float | str]:
    run = RESULTS / "lm_quality" / name.split()[0]
    sets = [*overrides, f"train.max_minutes={minutes}", "train.num_threads=1", "train.device=cpu"]
    started = time.perf_counter()
    rnnlab(
        "train", "lm", "--config", "configs/lm/timemachine-char.yaml", "--out", str(run),
        "--overwrite", *[x for s in sets for x in ("--set", s)],
    )  # fmt: skip
    seconds = time.perf_counter() - started
    scores = {}
    for split in ("train", "valid"):
        out = rnnlab("evaluate", str(run), "--data", f"data/timemachine/{split}.txt", "--json")
        scores[split] = json.loads(out)["perplexity"]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_sec"] for r in records if "tokens_per_sec" in r]
    epochs = max(r.get("epoch", 0) for r in records)
    return {
        "model": name,
        "train_ppl": scores["train"],
        "valid_ppl": scores["valid"],
        "textbook_train_ppl": TEXTBOOK.get(name, float("nan")),
        "epochs": epochs,
        "seconds": round(seconds, 1),
        "tokens_per_sec": sum(speeds) / max(len(speeds), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.5, help="training budget per model")
    parser.add_argument("--only", nargs="*", help="model names to run (default: all)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    header = (
        f"{'model':<26}{'train ppl':>10}{'valid ppl':>10}{'textbook':>10}{'epochs':>8}{'tok/s':>9}"
    )
    print(header)
    for name, overrides in MODELS.items():
        if args.only and name.split()[0] not in args.only:
            continue
        row = run_model(name, overrides, args.minutes)
        rows.append(row)
        print(
            f"{name:<26}{row['train_ppl']:>10.2f}{row['valid_ppl']:>10.2f}"
            f"{row['textbook_train_ppl']:>10.1f}{row['epochs']:>8.1f}{row['tokens_per_sec']:>9.0f}",
            flush=True,
        )
    (RESULTS / "lm_quality.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
