"""Side-by-side speed figures of issue 13, each a ratio against a baseline timed in the same run.

    python benchmarks/bench_speed.py --threads 1 --only decode      # one section
    python benchmarks/bench_speed.py --threads 2                    # all sections

Sections (every one alternates its systems window by window, see ``harness``; medians of the
per-window ratios, by wall-clock time and by this process's CPU time, which is the steadier of the two
on an oversubscribed machine):

* ``decode``   — beam-5 against greedy sentences/s, and the Cho context decoder stepping with its
  context projected once per sentence against the fused per-step call, on the textbook and realistic
  sizes of ``bench_seq2seq.py`` and on the Multi30k attention recipe's sizes (freshly initialised
  models on real source sentences: every sentence runs ``max_len`` steps in both searches);
* ``bf16``     — ``train.precision: bf16`` against fp32, training the realistic config;
* ``softmax``  — ``model.softmax: adaptive`` against ``full`` on the PTB recipe's sizes, fp32 and bf16.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from rnnlab.config import from_dict  # noqa: E402
from rnnlab.decoding.beam import beam_batch_size, beam_search  # noqa: E402
from rnnlab.decoding.greedy import greedy_search  # noqa: E402
from rnnlab.models.seq2seq import build_seq2seq  # noqa: E402
from rnnlab.tasks.lm import LanguageModelTask  # noqa: E402
from rnnlab.tasks.lm_config import LMConfig  # noqa: E402
from rnnlab.tasks.seq2seq import Seq2SeqTask  # noqa: E402
from rnnlab.tasks.seq2seq_config import Seq2SeqConfig, Seq2SeqModelConfig  # noqa: E402
from rnnlab.training.trainer import Trainer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
CPU = torch.device("cpu")

Window = Callable[[], float]
"""Runs one timed window and returns the units of work it did."""


def alternate(systems: dict[str, Window], windows: int, pairs: list[tuple[str, str]]) -> dict:
    """Time ``systems`` in alternating windows; medians per system and of per-window ratios."""
    for run in systems.values():  # warm-up
        run()
    wall: dict[str, list[float]] = {name: [] for name in systems}
    cpu: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(windows):
        for name, run in systems.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            work = run()
            wall[name].append(work / (time.perf_counter() - started))
            cpu[name].append(work / (time.process_time() - cpu_started))

    def ratio(rates: dict[str, list[float]], a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True)), 3)

    return {
        "per_sec_median": {k: round(statistics.median(v), 1) for k, v in wall.items()},
        "per_cpu_sec_median": {k: round(statistics.median(v), 1) for k, v in cpu.items()},
        "ratios_wall": {f"{a} / {b}": ratio(wall, a, b) for a, b in pairs},
        "ratios_cpu": {f"{a} / {b}": ratio(cpu, a, b) for a, b in pairs},
        "load_average_1m_after": round(harness.machine_info()["load_average_1m"], 2),  # type: ignore[arg-type]
    }


# -- decoding ----------------------------------------------------------------------------------

DECODE_MODELS = {
    "textbook": dict(embed_size=32, hidden_size=32, num_layers=2, attention="none"),
    "realistic": dict(embed_size=256, hidden_size=512, num_layers=2, attention="none"),
    "attention": dict(
        embed_size=256,
        hidden_size=256,
        num_layers=1,
        attention="bahdanau",
        bidirectional_encoder=True,
    ),
}
VOCAB = {"textbook": (2491, 3820), "realistic": (2491, 3820), "attention": (7853, 5893)}


def decode_sources(name: str, count: int) -> list[list[int]]:
    """Real source lengths (fra-eng valid or Multi30k val), ids drawn at random from the vocabulary."""
    if name == "attention":
        path = SHARED / "multi30k" / "val.de.gz"
        import gzip

        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        lengths = [len(line.split()) + 1 for line in lines]
    else:
        lines = (REPO / "data" / "fra-eng" / "valid.tsv").read_text(encoding="utf-8").splitlines()
        lengths = [min(len(line.split("\t")[0].split()), 9) + 1 for line in lines]
    generator = torch.Generator().manual_seed(0)
    src_vocab = VOCAB[name][0]
    return [
        torch.randint(4, src_vocab, (n,), generator=generator).tolist() for n in lengths[:count]
    ]


class ContextPerStep:
    """The step protocol of a model whose Cho decoder projects its context at every step."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def start(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Any:
        return replace(self.model.start(src, src_lengths), context_gates=None)

    def step(self, tokens: torch.Tensor, state: Any, *, normalize: bool = True) -> Any:
        return self.model.step(tokens, state, normalize=normalize)

    def select_state(self, state: Any, indices: torch.Tensor) -> Any:
        return self.model.select_state(state, indices)


def decode_section(windows: int, sentences: int, max_len: int) -> dict[str, Any]:
    from rnnlab.data.batching import pad_batch

    out: dict[str, Any] = {"sentences": sentences, "max_len": max_len}
    for name, sizes in DECODE_MODELS.items():
        torch.manual_seed(0)
        model = build_seq2seq(
            Seq2SeqModelConfig(dropout=0.0, **sizes),  # type: ignore[arg-type]
            src_vocab_size=VOCAB[name][0],
            tgt_vocab_size=VOCAB[name][1],
        ).eval()
        sources = decode_sources(name, sentences)
        # translate_ids decodes length-sorted batches; these keep the file order, with as many
        # sentences as it takes: 512 for greedy search, ``beam_batch_size`` for beam search.
        beam_batch = beam_batch_size(512, 5, VOCAB[name][1], attention=sizes["attention"] != "none")

        def search(
            step_model: Any,
            beam: int,
            sources: list[list[int]] = sources,
            beam_batch: int = beam_batch,
        ) -> Window:
            count, size = len(sources), 512 if beam == 1 else beam_batch
            batches = [pad_batch(sources[i : i + size], 0) for i in range(0, len(sources), size)]

            def run() -> float:
                with torch.no_grad():
                    for src, lengths in batches:
                        state = step_model.start(src, lengths)
                        common = dict(
                            bos_id=2, eos_id=3, max_len=max_len, batch_size=len(src), banned=(0, 2)
                        )
                        if beam == 1:
                            greedy_search(step_model, state, **common)
                        else:
                            beam_search(step_model, state, beam_size=beam, **common)
                return float(count)

            return run

        systems = {"greedy": search(model, 1), "beam5": search(model, 5)}
        pairs = [("beam5", "greedy")]
        if sizes["attention"] == "none":
            systems["greedy-context-per-step"] = search(ContextPerStep(model), 1)
            pairs.append(("greedy", "greedy-context-per-step"))
        out[name] = {**alternate(systems, windows, pairs), "beam_batch_sentences": beam_batch}
    return out


# -- training: bf16 and the adaptive softmax ----------------------------------------------------


def trainer_windows(
    task: Any, model: torch.nn.Module, variants: dict[str, dict[str, Any]], steps: int
) -> dict[str, Window]:
    """One Trainer per variant (same initial weights), each stepping through the same batches."""
    batches = task.train_batches(0)
    systems: dict[str, Window] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, changes in variants.items():
            system_model = changes.pop("model", None) or copy.deepcopy(model)
            train_config = replace(task.config.train, **changes)
            trainer = Trainer(
                task=task,
                model=system_model,
                config=train_config,
                run_dir=Path(tmp),
                device=CPU,
            )
            position = [0]

            def run(trainer: Trainer = trainer, position: list[int] = position) -> float:
                tokens = 0
                for _ in range(steps):
                    batch = batches[position[0] % len(batches)]
                    tokens += trainer._train_step(batch)
                    trainer.carry = None
                    position[0] += 1
                return float(tokens)

            systems[name] = run
    return systems


def bf16_section(windows: int) -> dict[str, Any]:
    config = from_dict(
        Seq2SeqConfig,
        {
            "task": "seq2seq",
            "data": {
                "train": str(REPO / "data/fra-eng/train.tsv.gz"),
                "valid": "",
                "max_examples": 20000,
                "max_len": 9,
            },  # fmt: skip
            "model": {"embed_size": 256, "hidden_size": 512, "num_layers": 2, "dropout": 0.1},
            "train": {"batch_size": 128, "lr": 0.001},
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        task = Seq2SeqTask(config, Path(tmp))
        task.prepare_training()
        torch.manual_seed(0)
        model = task.build_model()
        systems = trainer_windows(
            task, model, {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"}}, steps=4
        )
        return {"realistic": alternate(systems, windows, [("bf16", "fp32")])}


def softmax_section(windows: int) -> dict[str, Any]:
    base = {
        "task": "lm",
        "data": {
            "train": str(SHARED / "ptb/ptb.train.txt.gz"),
            "valid": "",
            "tokenizer": "word",
            "clean": "none",
            "min_freq": 1,
        },  # fmt: skip
        "model": {
            "cell": "lstm",
            "embed_size": 256,
            "hidden_size": 256,
            "num_layers": 2,
            "dropout": 0.2,
            "tie_weights": False,
        },  # fmt: skip
        "train": {"batch_size": 32, "bptt": 35, "lr": 0.003},
    }
    config = from_dict(LMConfig, base)
    with tempfile.TemporaryDirectory() as tmp:
        task = LanguageModelTask(config, Path(tmp))
        task.prepare_training()
        torch.manual_seed(0)
        full = task.build_model()
        adaptive_config = copy.deepcopy(config)
        adaptive_config.model.softmax = "adaptive"
        task.config = adaptive_config
        torch.manual_seed(0)
        adaptive = task.build_model()
        variants = {
            "full": {"model": full},
            "adaptive": {"model": adaptive},
            "full-bf16": {"model": copy.deepcopy(full), "precision": "bf16"},
            "adaptive-bf16": {"model": copy.deepcopy(adaptive), "precision": "bf16"},
        }
        systems = trainer_windows(task, full, variants, steps=5)
        pairs = [("adaptive", "full"), ("full-bf16", "full"), ("adaptive-bf16", "full")]
        return {
            "ptb": alternate(systems, windows, pairs),
            "cutoffs": adaptive_config.model.cutoffs,
            "vocab": len(task.vocab or []),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--only", choices=["decode", "bf16", "softmax"], default=None)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--max-len", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"threads": args.threads, "machine": harness.machine_info()}
    sections = {
        "decode": lambda: decode_section(args.windows, args.sentences, args.max_len),
        "bf16": lambda: bf16_section(args.windows),
        "softmax": lambda: softmax_section(args.windows),
    }
    for name, run in sections.items():
        if args.only in (None, name):
            result[name] = run()
            print(json.dumps({name: result[name]}), file=sys.stderr, flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
