"""Training speed of the Multi30k attention recipe: the hoisted decoder loop and bf16, side by side.

Three systems train on the same Multi30k batches from the same initial weights, in alternating timed
windows of one process (see ``harness``):

* ``per-step`` — the model as it was before this work: the decoder loop before the hoisting
  (embeddings sliced per step, the attention mask rebuilt at every step, one ``torch.nn.GRU`` call
  and one deep-output matmul per step), the encoder on packed sequences and ``torch.nn.Dropout``;
* ``hoisted`` — rnnlab's decoder (``rnnlab.models.attention_decoder``), float32;
* ``hoisted-bf16`` — the same under ``train.precision: bf16``.

    python benchmarks/bench_attention.py --threads 1          # JSON to stdout
    python benchmarks/bench_attention.py --threads 1 --profile   # also the profiler table per system
    python benchmarks/bench_attention.py --threads 1 --steady 24 # every shape compiled, as in a run
    python benchmarks/bench_attention.py --curves 400          # validation loss of fp32 and bf16 runs
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from rnnlab.config import load_config  # noqa: E402
from rnnlab.models.attention_decoder import AttentionDecoderState  # noqa: E402
from rnnlab.models.encoder import EncoderOutput, Seq2SeqEncoder  # noqa: E402
from rnnlab.nn.dropout import Dropout  # noqa: E402
from rnnlab.nn.state import hidden_of  # noqa: E402
from rnnlab.tasks.seq2seq import Seq2SeqTask  # noqa: E402
from rnnlab.tasks.seq2seq_config import Seq2SeqConfig  # noqa: E402
from rnnlab.training.trainer import Trainer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "configs" / "seq2seq" / "multi30k-de-en-attention.yaml"
CPU = torch.device("cpu")


def per_step_forward_with_attention(self, tgt_in, state, feedback=None):  # type: ignore[no-untyped-def]
    """The Bahdanau teacher-forced loop as it was before the hoisting, kept as the baseline (teacher
    forcing only: ``feedback`` is always None here)."""
    embedded = self.embed_dropout(self.embedding(tgt_in))  # (B, T, E)
    hidden = state.hidden
    features, weights = [], []
    for t in range(tgt_in.size(1)):
        query = hidden_of(hidden)[-1].unsqueeze(1)
        context, step_weights = self.attention(
            query, state.keys, state.memory, state.memory_lengths
        )
        emb_t = embedded[:, t : t + 1]
        output, hidden = self.rnn(torch.cat([emb_t, context], dim=-1), hidden)
        features.append(torch.tanh(self.pre_output(torch.cat([output, context, emb_t], -1))))
        weights.append(step_weights)
    next_state = AttentionDecoderState(
        hidden=hidden, memory=state.memory, keys=state.keys, memory_lengths=state.memory_lengths
    )
    return self.output_dropout(torch.cat(features, 1)), next_state, torch.cat(weights, 1)


def packed_encoder_forward(
    self: Seq2SeqEncoder, src: torch.Tensor, src_lengths: torch.Tensor
) -> EncoderOutput:
    """The encoder as it was before ``run_by_lengths`` ran GRUs padded: always packed."""
    embedded = self.embed_dropout(self.embedding(src))
    packed = pack_padded_sequence(
        embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False
    )
    packed_outputs, state = self.rnn(packed)
    outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=src.size(1))
    return EncoderOutput(outputs=outputs, state=state, lengths=src_lengths)


def use_torch_dropout(model: torch.nn.Module) -> None:
    """Swap rnnlab's dropout modules for ``torch.nn.Dropout`` (masks from ``bernoulli_``)."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, Dropout):
                setattr(module, name, torch.nn.Dropout(child.p))


def build_trainers(
    workdir: Path, overrides: list[str]
) -> tuple[Seq2SeqTask, dict[str, Trainer], list[Any]]:
    config = load_config(Seq2SeqConfig, RECIPE, ["train.num_threads=0", *overrides])
    task = Seq2SeqTask(config, workdir)
    task.prepare_training()
    torch.manual_seed(config.seed)
    model = task.build_model()
    trainers = {}
    for name in ("per-step", "hoisted", "hoisted-bf16"):
        system_model = copy.deepcopy(model)
        if name == "per-step":
            decoder = system_model.decoder
            decoder.forward_with_attention = types.MethodType(
                per_step_forward_with_attention, decoder
            )
            encoder = system_model.encoder
            encoder.forward = types.MethodType(packed_encoder_forward, encoder)  # type: ignore[method-assign]
            use_torch_dropout(system_model)
        train_config = copy.deepcopy(config.train)
        train_config.precision = "bf16" if name.endswith("bf16") else "fp32"
        run_dir = workdir / name
        run_dir.mkdir()
        trainers[name] = Trainer(
            task=task, model=system_model, config=train_config, run_dir=run_dir, device=CPU
        )
    return task, trainers, task.train_batches(0)


def speed(
    threads: int, windows: int, window_steps: int, profile: bool, steady: int = 0
) -> dict[str, Any]:
    """Tokens/s of each system. With ``steady`` N the windows cycle over the first N batches, each
    system having trained on all of them once first: every product's shape is then compiled (oneDNN
    builds a bfloat16 kernel per new shape, once per run for the ≤ 60 batch lengths of a real run),
    as through most of a real run; without it every window meets batches not seen before."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        task, trainers, batches = build_trainers(Path(tmp), [])
        if steady:
            batches = batches[:steady]
        position = {name: 0 for name in trainers}

        def window(name: str) -> tuple[float, float, float]:
            trainer, tokens = trainers[name], 0
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(window_steps):
                tokens += trainer._train_step(batches[position[name] % len(batches)])
                position[name] += 1
            return tokens, time.perf_counter() - started, time.process_time() - cpu_started

        for name in trainers:  # warm-up: one window, or a pass over the steady batches
            for _ in range(max(1, -(-steady // window_steps))):
                window(name)
        # Per window: tokens per wall-clock second, and per CPU-second of this process. On an
        # oversubscribed machine the second is the steadier measure of the work each system does.
        wall: dict[str, list[float]] = {name: [] for name in trainers}
        cpu: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(windows):
            for name in trainers:
                tokens, seconds, cpu_seconds = window(name)
                wall[name].append(tokens / seconds)
                cpu[name].append(tokens / cpu_seconds)

        def ratio(rates: dict[str, list[float]], a: str, b: str) -> float:
            return round(
                statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True)), 3
            )

        pairs = [("hoisted", "per-step"), ("hoisted-bf16", "per-step"), ("hoisted-bf16", "hoisted")]
        result: dict[str, Any] = {
            "threads": threads,
            "windows": windows,
            "window_steps": window_steps,
            "steady_batches": steady or None,
            "machine": harness.machine_info(),
            "tokens_per_sec_median": {k: round(statistics.median(v)) for k, v in wall.items()},
            "tokens_per_cpu_sec_median": {k: round(statistics.median(v)) for k, v in cpu.items()},
            "ratios_wall": {f"{a} / {b}": ratio(wall, a, b) for a, b in pairs},
            "ratios_cpu": {f"{a} / {b}": ratio(cpu, a, b) for a, b in pairs},
        }
        if profile:
            result["profiles"] = {
                name: profile_table(trainers[name], batches[:5]) for name in trainers
            }
        return result


def profile_table(trainer: Trainer, batches: list[Any]) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            trainer._train_step(batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)


def curves(steps: int, every: int, threads: int) -> dict[str, Any]:
    """Validation loss of fp32 and bf16 training from the same start, every ``every`` steps."""
    torch.set_num_threads(threads)
    out: dict[str, Any] = {"threads": threads, "machine": harness.machine_info()}
    with tempfile.TemporaryDirectory() as tmp:
        task, trainers, batches = build_trainers(Path(tmp), [])
        for name in ("hoisted", "hoisted-bf16"):
            trainer, points = trainers[name], []
            torch.manual_seed(0)
            started = time.perf_counter()
            for step in range(1, steps + 1):
                trainer._train_step(batches[(step - 1) % len(batches)])
                if step % every == 0:
                    assert task.valid_data is not None
                    nll, count = task.teacher_forced_nll(trainer.model, task.valid_data, CPU)
                    points.append((step, round(nll / count, 4)))
            out[name] = {"valid_loss": points, "seconds": round(time.perf_counter() - started)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-steps", type=int, default=6)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--steady", type=int, default=0, help="cycle over this many batches, all seen in warm-up"
    )
    parser.add_argument("--curves", type=int, default=0, help="steps of the fp32/bf16 curves")
    parser.add_argument("--every", type=int, default=100)
    args = parser.parse_args()
    if args.curves:
        result = curves(args.curves, args.every, args.threads)
    else:
        result = speed(args.threads, args.windows, args.window_steps, args.profile, args.steady)
    profiles = result.pop("profiles", {})
    print(json.dumps(result, indent=1))
    for name, table in profiles.items():
        print(f"\n## {name}\n{table}")


if __name__ == "__main__":
    main()
