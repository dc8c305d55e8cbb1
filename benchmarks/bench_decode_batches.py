"""Decoding batches capped by padded source tokens (``decode.batch_tokens``) against sentences alone.

Sentences are decoded in length order, ``decode.batch_size`` at a time; the last batches of a file
hold its long tail, all padded to the longest sentence, and an attention decoder reads every padded
source position at every step. This times greedy search (or ``--beam``) over a trained translator's
``--data``, or a tagger tagging it, with each budget of ``--budgets`` (0: no cap), in PyTorch and,
with ``--export``, in the ONNX Runtime runtime of an ``rnnlab export`` folder of the same run. Budgets alternate round by
round in one process (the order reversed every other round); figures are medians of rounds, and the
outputs of every budget are checked against the uncapped ones.

    python benchmarks/bench_decode_batches.py runs/m30k --data ../shared/data/multi30k/test_2016_flickr \
        --threads 1 --export runs/m30k-export
    python benchmarks/bench_decode_batches.py runs/ewt --data ../shared/data/ud-english-ewt/en_ewt-ud-dev.conllu.gz
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

import rnnlab  # noqa: E402
from rnnlab.data.batching import sorted_batches  # noqa: E402

Decode = Callable[[int], list[list[Any]]]
"""A budget → every sentence's output (the best hypothesis's token ids, or its tags)."""


def alternate(decoders: dict[str, Decode], budgets: list[int], rounds: int) -> dict[str, Any]:
    """Sentences/s of every (engine, budget), and whether each budget's outputs match budget 0's."""
    seconds: dict[tuple[str, int], list[float]] = {}
    outputs: dict[tuple[str, int], list[list[Any]]] = {}
    for round_ in range(rounds):
        order = budgets if round_ % 2 == 0 else budgets[::-1]
        for engine, decode in decoders.items():
            for budget in order:
                started = time.perf_counter()
                outputs[engine, budget] = decode(budget)
                seconds.setdefault((engine, budget), []).append(time.perf_counter() - started)
    result: dict[str, Any] = {}
    for engine in decoders:
        count = len(outputs[engine, budgets[0]])
        rates = {b: count / statistics.median(seconds[engine, b]) for b in budgets}
        result[engine] = {
            "sentences_per_sec": {str(b): round(r, 1) for b, r in rates.items()},
            "speedup_over_no_cap": {str(b): round(r / rates[0], 3) for b, r in rates.items()},
            "same_output": all(outputs[engine, b] == outputs[engine, 0] for b in budgets),
        }
    return result


def translator_decoders(
    translator: Any, args: argparse.Namespace
) -> tuple[dict[str, Decode], list[int]]:
    """Greedy (or ``--beam``) search over ``--data``'s sources, and their lengths."""
    task, model = translator.task, translator.model
    texts = [pair.src for pair in task.read_pairs(args.data)]  # read once for both engines
    sources = [task.encode_source(text) for text in texts]

    def eager(budget: int) -> list[list[int]]:
        task.config.decode.batch_tokens = budget
        hyps = task.translate_ids(
            model, sources, translator.device, beam_size=args.beam, batch_size=args.batch_size
        )
        return [sentence[0] for sentence in hyps]

    decoders: dict[str, Decode] = {"pytorch": eager}
    if args.export:
        from rnnlab.export.runtime import load

        exported = load(args.export, num_threads=args.threads)
        exported_sources = [exported.encode_source(text) for text in texts]

        def onnx_runtime(budget: int) -> list[list[int]]:
            exported.batch_tokens = budget
            hyps = exported.translate_ids(
                exported_sources, beam=args.beam, batch_size=args.batch_size
            )
            return [sentence[0].tokens for sentence in hyps]

        decoders["onnx_runtime"] = onnx_runtime
    return decoders, [len(s) for s in sources]


def tagger_decoders(tagger: Any, args: argparse.Namespace) -> tuple[dict[str, Decode], list[int]]:
    """Tagging ``--data``'s sentences (tag names as the outputs), and their lengths."""
    task, model = tagger.task, tagger.model
    sentences = [s.words for s in task.read_sentences(args.data)]

    def eager(budget: int) -> list[list[Any]]:
        task.config.decode.batch_tokens = budget
        return task.tag(model, sentences, tagger.device, batch_size=args.batch_size)

    decoders: dict[str, Decode] = {"pytorch": eager}
    if args.export:
        from rnnlab.export.runtime import load

        exported = load(args.export, num_threads=args.threads)

        def onnx_runtime(budget: int) -> list[list[Any]]:
            exported.batch_tokens = budget
            return [t.tags for t in exported.tag(sentences, batch_size=args.batch_size)]

        decoders["onnx_runtime"] = onnx_runtime
    return decoders, [len(s) for s in sentences]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", help="a seq2seq or tagger run directory")
    parser.add_argument("--data", required=True, help="a file of the run's format")
    parser.add_argument(
        "--export", help="an `rnnlab export` folder of the run: time ONNX Runtime too"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--beam", type=int, default=1, help="seq2seq: beam size (1: greedy)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the run's")
    parser.add_argument("--budgets", type=int, nargs="+", default=[0, 4096, 8192, 16384])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--precision", choices=("fp32", "bf16", "auto"), default=None, help="default: the run's"
    )
    args = parser.parse_args()
    budgets = [0, *(b for b in args.budgets if b != 0)]
    loaded = rnnlab.load(args.run, threads=args.threads)  # over the run's train.num_threads
    decode_config = loaded.task.config.decode
    args.batch_size = args.batch_size or decode_config.batch_size
    if args.precision is not None and hasattr(decode_config, "precision"):
        decode_config.precision = args.precision
    make = tagger_decoders if loaded.task_name == "tagger" else translator_decoders
    decoders, lengths = make(loaded, args)
    padded = {  # greedy search's (or tagging's) batches
        str(b): sum(
            len(ids) * max(lengths[i] for i in ids)
            for ids in sorted_batches(lengths, args.batch_size, max_tokens=b)
        )
        for b in budgets
    }
    result = {
        "run": args.run,
        "data": args.data,
        "sentences": len(lengths),
        "source_tokens": sum(lengths),
        "padded_source_tokens": padded,
        "threads": args.threads,
        "beam": args.beam,
        "batch_size": args.batch_size,
        "precision": getattr(decode_config, "precision", "fp32"),
        "rounds": args.rounds,
        "machine": harness.machine_info(),
        **alternate(decoders, budgets, args.rounds),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
