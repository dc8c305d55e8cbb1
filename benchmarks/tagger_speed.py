"""Tagging speed of a trained tagger run: tokens per second over a tagged file.

    PYTHONPATH=src python benchmarks/tagger_speed.py RUN --data dev.conllu [--threads 1]
        [--batch-size 256] [--repeats 3]

Times ``TaggerTask.tag`` (batching, the model and decoding; not file reading) on every sentence of
the file, best of ``--repeats`` runs after one warm-up, and prints one JSON line with the accuracy
of the same predictions, so a speed figure always comes with the quality it was measured at.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from rnnlab.metrics.tagging import TaggingScores
from rnnlab.rundir import open_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--data", required=True, help="tagged file (CoNLL-U, word_tag, two_column)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    run = open_run(args.run, device=args.device)
    task = run.task
    sentences = task.read_sentences(args.data)
    words = [s.words for s in sentences]
    tokens = sum(len(w) for w in words)

    predicted = task.tag(run.model, words, run.device, batch_size=args.batch_size)  # warm-up
    timings = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        predicted = task.tag(run.model, words, run.device, batch_size=args.batch_size)
        timings.append(time.perf_counter() - started)

    scores = TaggingScores()
    for sentence, tags in zip(sentences, predicted, strict=True):
        scores.add(
            sentence.tags,
            tags,
            oov=[w not in task.train_words for w in sentence.words],
            known_tags=frozenset(task.tagset.itos),
        )
    best = min(timings)
    print(
        json.dumps(
            {
                "run": args.run,
                "data": args.data,
                "crf": task.config.model.crf,
                "sentences": len(words),
                "tokens": tokens,
                "threads": args.threads,
                "batch_size": args.batch_size,
                "seconds": round(best, 3),
                "tokens_per_sec": round(tokens / best, 1),
                "accuracy": round(scores.accuracy, 4),
                "oov_accuracy": round(scores.oov_accuracy, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
