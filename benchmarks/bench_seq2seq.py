"""rnnlab's seq2seq against the textbook recipe: training and decoding speed, FLOP efficiency, memory.

Both systems are built in this process on the same token ids (rnnlab's textbook tokenizer and
vocabulary), with the same sizes, learning rate and thread count; their training steps alternate in
timed windows (see ``harness``), so a ratio is never a comparison of two different moments of a
shared machine.

    python benchmarks/bench_seq2seq.py --config realistic          # one configuration, JSON to stdout
    python benchmarks/bench_seq2seq.py --memory rnnlab --config textbook   # peak RSS of one system
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flops  # noqa: E402
import harness  # noqa: E402
import textbook_baseline as book  # noqa: E402

from rnnlab.config import from_dict  # noqa: E402
from rnnlab.tasks.seq2seq import EncodedPairs, Seq2SeqTask  # noqa: E402
from rnnlab.tasks.seq2seq_config import Seq2SeqConfig  # noqa: E402
from rnnlab.training.trainer import Trainer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported (parts of rnnlab are written on other branches)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@dataclass(frozen=True)
class BenchConfig:
    embed_size: int
    hidden_size: int
    num_layers: int
    batch_size: int
    num_steps: int
    pairs: int
    lr: float
    dropout: float = 0.1
    min_freq: int = 2
    warmup_steps: int = 2
    window_steps: int = 10
    windows: int = 5
    decode_sentences: int = 1000
    textbook_decode_every: int = 4
    """The one-sentence loop is slow: it decodes every k-th of the same sentences."""
    decode_repeats: int = 5
    decode_window_seconds: float = 0.5
    """rnnlab's searches repeat the sentences until a window lasts this long."""


CONFIGS: dict[str, BenchConfig] = {
    # d2l's sizes; 10k pairs rather than 600 so that the timed windows never repeat an epoch.
    "textbook": BenchConfig(
        embed_size=32,
        hidden_size=32,
        num_layers=2,
        batch_size=64,
        num_steps=10,
        pairs=10_000,
        lr=0.005,
        window_steps=40,
    ),
    "realistic": BenchConfig(
        embed_size=256,
        hidden_size=512,
        num_layers=2,
        batch_size=128,
        num_steps=10,
        pairs=20_000,
        lr=0.001,
        window_steps=4,
    ),
}
QUICK = dict(
    warmup_steps=1,
    window_steps=3,
    windows=2,
    decode_sentences=200,
    decode_repeats=1,
    decode_window_seconds=0.0,
    textbook_decode_every=8,
)


def config_for(name: str, quick: bool) -> BenchConfig:
    base = CONFIGS[name]
    return BenchConfig(**{**base.__dict__, **QUICK}) if quick else base


@dataclass
class Systems:
    spec: BenchConfig
    task: Seq2SeqTask
    trainer: Trainer
    textbook: book.TextbookTrainer
    textbook_arrays: tuple[torch.Tensor, ...]
    valid: EncodedPairs


def build_systems(spec: BenchConfig, workdir: Path, *, data: str) -> Systems:
    config = from_dict(
        Seq2SeqConfig,
        {
            "task": "seq2seq",
            "data": {
                "train": data,
                "valid": "",
                "max_examples": spec.pairs,
                # rnnlab truncates before <eos>, the book after it: both keep num_steps tokens.
                "max_len": spec.num_steps - 1,
                "min_freq": spec.min_freq,
            },
            "model": {
                "embed_size": spec.embed_size,
                "hidden_size": spec.hidden_size,
                "num_layers": spec.num_layers,
                "dropout": spec.dropout,
            },
            "train": {"batch_size": spec.batch_size, "lr": spec.lr, "clip_norm": 1.0},
            "decode": {"max_len": spec.num_steps},
        },
    )
    task = Seq2SeqTask(config, workdir)
    task.prepare_training()
    assert task.train_data is not None and task.src_vocab is not None and task.tgt_vocab is not None
    valid_path = REPO / "data/fra-eng/valid.tsv"
    valid = task.encode_pairs(
        itertools.islice(task.read_pairs(str(valid_path)), spec.decode_sentences)
    )
    torch.manual_seed(0)
    trainer = Trainer(
        task=task, model=task.build_model(), config=config.train, run_dir=workdir, device=CPU
    )
    torch.manual_seed(0)
    net = book.build_textbook_model(
        src_vocab_size=len(task.src_vocab),
        tgt_vocab_size=len(task.tgt_vocab),
        embed_size=spec.embed_size,
        num_hiddens=spec.hidden_size,
        num_layers=spec.num_layers,
        dropout=spec.dropout,
    )
    pad, eos = task.tgt_vocab.pad_id, task.tgt_vocab.eos_id
    X, X_len = book.build_array([s[:-1] for s in task.train_data.src], spec.num_steps, pad, eos)
    Y, Y_len = book.build_array([t[:-1] for t in task.train_data.tgt], spec.num_steps, pad, eos)
    return Systems(
        spec=spec,
        task=task,
        trainer=trainer,
        textbook=book.TextbookTrainer(net, lr=spec.lr, bos_id=task.tgt_vocab.bos_id),
        textbook_arrays=(X, X_len, Y, Y_len),
        valid=valid,
    )


# ---------------------------------------------------------------------------------------------------
# Training


def rnnlab_batches(task: Seq2SeqTask) -> Iterator[Any]:
    """Epoch after epoch; an epoch's batches are built when it starts, inside the timed window."""
    for epoch in itertools.count():
        yield from task.train_batches(epoch)


def textbook_batches(arrays: tuple[torch.Tensor, ...], batch_size: int) -> Iterator[Any]:
    for epoch in itertools.count():
        yield from book.load_array(arrays, batch_size, seed=epoch)


def train_figures(systems: Systems, peak_gflops: float) -> dict[str, Any]:
    spec, task = systems.spec, systems.task
    assert task.tgt_vocab is not None
    enc_macs = flops.encoder_macs_per_token(
        embed_size=spec.embed_size, hidden_size=spec.hidden_size, num_layers=spec.num_layers
    )
    dec_macs = flops.decoder_macs_per_token(
        embed_size=spec.embed_size,
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        vocab_size=len(task.tgt_vocab),
    )
    ours, theirs = rnnlab_batches(task), textbook_batches(systems.textbook_arrays, spec.batch_size)
    counted = {"rnnlab": [0, 0, 0.0], "textbook": [0, 0, 0.0]}  # src tokens, tgt tokens, seconds

    def rnnlab_window(steps: int, record: bool = True) -> tuple[float, float]:
        src = tgt = 0
        started = time.perf_counter()
        for _ in range(steps):
            batch = next(ours)
            src += int(batch.src_lengths.sum())
            tgt += systems.trainer._train_step(batch)
        seconds = time.perf_counter() - started
        if record:
            counted["rnnlab"] = [
                a + b for a, b in zip(counted["rnnlab"], (src, tgt, seconds), strict=True)
            ]
        return tgt, seconds

    def textbook_window(steps: int, record: bool = True) -> tuple[float, float]:
        src = tgt = 0
        started = time.perf_counter()
        for _ in range(steps):
            batch = next(theirs)
            src += int(batch[1].sum())
            tgt += systems.textbook.step(batch)
        seconds = time.perf_counter() - started
        if record:
            counted["textbook"] = [
                a + b for a, b in zip(counted["textbook"], (src, tgt, seconds), strict=True)
            ]
        return tgt, seconds

    rnnlab_window(spec.warmup_steps, record=False)
    textbook_window(spec.warmup_steps, record=False)
    windows = harness.paired_windows(
        lambda: rnnlab_window(spec.window_steps),
        lambda: textbook_window(spec.window_steps),
        spec.windows,
    )
    steps = spec.warmup_steps + spec.window_steps * spec.windows
    result: dict[str, Any] = {
        "tokens_per_sec": windows.summary(),
        "steps_each": steps,
        "macs_per_src_token": enc_macs,
        "macs_per_tgt_token": dec_macs,
        "matmul_peak_gflops": peak_gflops,
    }
    for name, (src, tgt, seconds) in counted.items():
        gflops = (
            flops.training_flops(
                enc_macs=enc_macs, dec_macs=dec_macs, src_tokens=src, tgt_tokens=tgt
            )
            / seconds
            / 1e9
        )
        result[f"{name}_gflops"] = gflops
        result[f"{name}_peak_fraction"] = gflops / peak_gflops
    # Loss per step: both models after the same number of optimizer steps, on the same valid pairs.
    total, count = task.teacher_forced_nll(systems.trainer.model, systems.valid, CPU)
    X, X_len = book.build_array([s[:-1] for s in systems.valid.src], spec.num_steps, 0, 3)
    Y, Y_len = book.build_array([t[:-1] for t in systems.valid.tgt], spec.num_steps, 0, 3)
    result["valid_loss_rnnlab"] = total / count
    result["valid_loss_textbook"] = book.token_nll(
        systems.textbook.net, X, Y, Y_len, bos_id=task.tgt_vocab.bos_id
    )
    return result


# ---------------------------------------------------------------------------------------------------
# Decoding


def decode_figures(systems: Systems) -> dict[str, Any]:
    spec, task = systems.spec, systems.task
    assert task.tgt_vocab is not None
    model = systems.trainer.model.eval()
    sources = systems.valid.src
    book_sources = [s[:-1] for s in sources[:: spec.textbook_decode_every]]

    def rnnlab_greedy() -> tuple[float, float]:
        return harness.timed_at_least(
            lambda: len(
                task.translate_ids(model, sources, CPU, beam_size=1, max_len=spec.num_steps)
            ),
            spec.decode_window_seconds,
        )

    def textbook_greedy() -> tuple[float, float]:
        def run() -> float:
            for src in book_sources:
                book.predict_seq2seq(
                    systems.textbook.net,
                    src,
                    num_steps=spec.num_steps,
                    pad_id=task.tgt_vocab.pad_id,
                    bos_id=task.tgt_vocab.bos_id,
                    eos_id=task.tgt_vocab.eos_id,
                )
            return len(book_sources)

        return harness.timed(run)

    greedy = harness.paired_windows(rnnlab_greedy, textbook_greedy, spec.decode_repeats)
    result: dict[str, Any] = {
        "sentences": len(sources),
        "textbook_sentences": len(book_sources),
        "greedy_sentences_per_sec": greedy.summary(),
    }
    if not has_module("rnnlab.decoding.beam"):
        result["beam5"] = "skipped: rnnlab.decoding.beam is not in this tree"
    else:

        def rnnlab_beam() -> tuple[float, float]:
            return harness.timed_at_least(
                lambda: len(
                    task.translate_ids(model, sources, CPU, beam_size=5, max_len=spec.num_steps)
                ),
                spec.decode_window_seconds,
            )

        beam = harness.paired_windows(rnnlab_beam, rnnlab_greedy, spec.decode_repeats)
        result["beam5_sentences_per_sec"] = beam.summary()  # ratio = beam / greedy
    result["onnx"] = onnx_figures(systems, rnnlab_greedy)
    return result


def onnx_figures(systems: Systems, rnnlab_greedy: Any) -> Any:
    if not has_module("onnxruntime"):
        return "skipped: onnxruntime is not installed"
    if not has_module("rnnlab.export.onnx"):
        return "skipped: rnnlab.export is not in this tree"
    from rnnlab.config import save_config
    from rnnlab.export.onnx import export_run
    from rnnlab.export.runtime import load

    spec, task = systems.spec, systems.task
    folder = Path(tempfile.mkdtemp(prefix="rnnlab-onnx-")) / "export"
    save_config(task.config, Path(task.run_dir) / "config.yaml")  # an export records its config
    export_run(task, systems.trainer.model.eval(), folder)
    translator = load(folder, num_threads=torch.get_num_threads())
    sources = systems.valid.src
    eager = task.translate_ids(
        systems.trainer.model, sources, CPU, beam_size=1, max_len=spec.num_steps
    )
    exported = translator.translate_ids(sources, max_len=spec.num_steps)
    same = sum(e[0] == o[0].tokens for e, o in zip(eager, exported, strict=True))

    def onnx_greedy() -> tuple[float, float]:
        return harness.timed_at_least(
            lambda: len(translator.translate_ids(sources, max_len=spec.num_steps)),
            spec.decode_window_seconds,
        )

    windows = harness.paired_windows(onnx_greedy, rnnlab_greedy, spec.decode_repeats)
    return {
        "greedy_sentences_per_sec": windows.summary(),  # ratio = onnxruntime / eager
        "identical_translations": f"{same}/{len(sources)}",
    }


# ---------------------------------------------------------------------------------------------------
# Memory: one system per process, so that ru_maxrss belongs to it alone.


def memory_figure(name: str, system: str, quick: bool, data: str) -> dict[str, Any]:
    spec = config_for(name, quick)
    with tempfile.TemporaryDirectory() as workdir:
        systems = build_systems(spec, Path(workdir), data=data)
        # Both systems are built (they share the data pipeline); only the measured one runs.
        gc.collect()
        setup_rss = harness.phase_peak_rss_mb()
        harness.reset_peak_rss()
        steps = 5
        if system == "rnnlab":
            batches = rnnlab_batches(systems.task)
            for _ in range(steps):
                systems.trainer._train_step(next(batches))
            systems.task.translate_ids(
                systems.trainer.model, systems.valid.src, CPU, beam_size=1, max_len=spec.num_steps
            )
        else:
            task = systems.task
            assert task.tgt_vocab is not None
            batches = textbook_batches(systems.textbook_arrays, spec.batch_size)
            for _ in range(steps):
                systems.textbook.step(next(batches))
            for src in systems.valid.src[:200]:
                book.predict_seq2seq(
                    systems.textbook.net,
                    src[:-1],
                    num_steps=spec.num_steps,
                    pad_id=task.tgt_vocab.pad_id,
                    bos_id=task.tgt_vocab.bos_id,
                    eos_id=task.tgt_vocab.eos_id,
                )
        phase = harness.phase_peak_rss_mb()
    return {
        "system": system,
        "config": name,
        "peak_rss_mb": phase,
        "setup_peak_rss_mb": setup_rss,
        "process_peak_rss_mb": harness.peak_rss_mb(),
    }


def run_config(name: str, *, quick: bool, data: str) -> dict[str, Any]:
    spec = config_for(name, quick)
    peaks = [harness.matmul_gflops(1024 if quick else 2048)]
    with tempfile.TemporaryDirectory() as workdir:
        systems = build_systems(spec, Path(workdir), data=data)
        result: dict[str, Any] = {"config": name, "spec": spec.__dict__}
        assert systems.task.src_vocab is not None and systems.task.tgt_vocab is not None
        result["src_vocab"], result["tgt_vocab"] = (
            len(systems.task.src_vocab),
            len(systems.task.tgt_vocab),
        )
        train = train_figures(systems, peaks[0])
        peaks.append(harness.matmul_gflops(1024 if quick else 2048))
        # The peak is measured before and after training; its median is what fractions refer to.
        peak = statistics.median(peaks)
        for system in ("rnnlab", "textbook"):
            train[f"{system}_peak_fraction"] = train[f"{system}_gflops"] / peak
        train["matmul_peak_gflops"] = peak
        train["matmul_peak_samples"] = peaks
        result["train"] = train
        result["decode"] = decode_figures(systems)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="textbook")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--data", default=str(REPO / "data/fra-eng/train.tsv.gz"))
    parser.add_argument("--memory", choices=["rnnlab", "textbook"])
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.memory:
        print(json.dumps(memory_figure(args.config, args.memory, args.quick, args.data)))
    else:
        print(json.dumps(run_config(args.config, quick=args.quick, data=args.data), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
