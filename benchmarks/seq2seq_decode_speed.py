"""Decoding speed of a trained seq2seq run: sentences per second for greedy and beam search.

    python benchmarks/seq2seq_decode_speed.py RUN DATA [--beam 1 5] [--threads 1] [--repeat 2]

Times ``Seq2SeqTask.translate_ids`` alone (encoding, search, in length-sorted batches of
``decode.batch_size``); loading the run and reading the data are excluded. The best of ``--repeat``
timings is reported, because on a shared machine the slower ones measure the neighbours.
"""

from __future__ import annotations

import argparse
import time

import torch

from rnnlab.rundir import open_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("data", help="data in the run's format, e.g. a Multi30k prefix")
    parser.add_argument("--beam", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    run = open_run(args.run, device="cpu")
    task = run.task
    sources = task.encode_pairs(task.read_pairs(args.data)).src
    for beam in args.beam:
        timings = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            task.translate_ids(run.model, sources, run.device, beam_size=beam)
            timings.append(time.perf_counter() - start)
        best = min(timings)
        print(
            f"beam {beam}: {len(sources)} sentences in {best:.1f} s = "
            f"{len(sources) / best:.1f} sentences/s ({args.threads} thread(s))"
        )


if __name__ == "__main__":
    main()
