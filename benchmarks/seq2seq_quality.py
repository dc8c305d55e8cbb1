"""Translation quality runs: train each recipe, score the test split, translate the textbook sentences.

    python benchmarks/seq2seq_quality.py                       # all recipes
    python benchmarks/seq2seq_quality.py --only textbook       # one recipe
    python benchmarks/seq2seq_quality.py --set train.max_minutes=5   # shorter budget for every recipe

Each recipe is an ordinary config in configs/seq2seq/; runs go to runs/bench-<name>. Prints a table
and writes benchmarks/results/seq2seq_quality.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "textbook": "configs/seq2seq/fra-eng-textbook.yaml",
    "demo": "configs/seq2seq/fra-eng.yaml",
    "large": "configs/seq2seq/fra-eng-large.yaml",
    "multi30k-gru": "configs/seq2seq/multi30k-de-en-gru.yaml",
}
TEXTBOOK_SENTENCES = ["go .", "i lost .", "he's calm .", "i'm home ."]


def rnnlab(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "rnnlab", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"rnnlab {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def run_recipe(name: str, config: str, overrides: list[str]) -> dict:
    import yaml

    run = f"runs/bench-{name}"
    sets = [x for o in overrides for x in ("--set", o)]
    started = time.perf_counter()
    rnnlab("train", "seq2seq", "--config", config, "--out", run, "--overwrite", *sets)
    train_minutes = (time.perf_counter() - started) / 60
    test = yaml.safe_load((ROOT / run / "config.yaml").read_text())["data"]["test"]
    started = time.perf_counter()
    metrics = json.loads(rnnlab("evaluate", run, "--data", test, "--json"))
    decode_seconds = time.perf_counter() - started
    english = "\n".join(TEXTBOOK_SENTENCES) + "\n"
    translations = rnnlab("translate", run, stdin=english).splitlines() if "fra" in config else []
    return {
        "recipe": name,
        "config": config,
        "train_minutes_wall": round(train_minutes, 1),
        "test_bleu": round(metrics["bleu"], 2),
        "test_bleu_lowercase": round(metrics["bleu_lowercase"], 2),
        "test_d2l_bleu": round(metrics["d2l_bleu"], 4),
        "test_loss": round(metrics["loss"], 4),
        "test_sentences": metrics["sentences"],
        "evaluate_seconds": round(decode_seconds, 1),
        "signature": metrics["signature"],
        "translations": dict(zip(TEXTBOOK_SENTENCES, translations, strict=False)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", choices=sorted(RECIPES))
    parser.add_argument("--set", action="append", default=[], help="override for every recipe")
    args = parser.parse_args()
    results = []
    for name in args.only or list(RECIPES):
        result = run_recipe(name, RECIPES[name], args.set)
        results.append(result)
        print(json.dumps(result, ensure_ascii=False), flush=True)
    print(f"\n{'recipe':<14}{'minutes':>8}{'BLEU':>8}{'BLEU lc':>9}{'d2l':>8}")
    for r in results:
        print(
            f"{r['recipe']:<14}{r['train_minutes_wall']:>8}{r['test_bleu']:>8}"
            f"{r['test_bleu_lowercase']:>9}{r['test_d2l_bleu']:>8}"
        )
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "seq2seq_quality.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
