"""Training the Multi30k attention recipe with one step of the Bahdanau loop under ``torch.compile``.

The shipped decoder runs its teacher-forced loop eagerly: per step an attention (query projection,
energies, masked softmax, context) and a GRU cell, the rest hoisted out of the loop. Here the same
step is compiled (``torch.compile(dynamic=True)``, so batch size and source length do not recompile)
and called T times per batch. Both systems train copies of one model on the recipe's batches in
alternating timed windows of one process; the figure is the median of per-window ratios.

    python benchmarks/bench_compile_step.py --threads 1      # needs a C++ compiler (inductor)

Only the recipe's shape is covered: one GRU layer, additive attention, float32.
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
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from bench_attention import CPU, build_trainers  # noqa: E402

from rnnlab.nn.state import hidden_of  # noqa: E402
from rnnlab.training.trainer import Trainer  # noqa: E402


def attention_gru_step(
    top: Tensor,
    gates_t: Tensor,
    keys: Tensor,
    memory: Tensor,
    padding: Tensor,
    w_query: Tensor,
    energy: Tensor,
    w_context: Tensor,
    w_hh: Tensor,
    b_hh: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """s_{t-1} (B, H) and the embeddings' gates (B, 3H) → s_t, context (B, C), weights (B, 1, S)."""
    query = F.linear(top, w_query).unsqueeze(1)  # (B, 1, A)
    scores = F.linear(torch.tanh(query.unsqueeze(2) + keys.unsqueeze(1)), energy).squeeze(-1)
    weights = torch.softmax(scores.masked_fill(padding, float("-inf")), dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0)  # (B, 1, S)
    context = torch.bmm(weights, memory).squeeze(1)  # (B, C)
    i_r, i_z, i_n = (gates_t + F.linear(context, w_context)).chunk(3, -1)
    h_r, h_z, h_n = F.linear(top, w_hh, b_hh).chunk(3, -1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (top - n), context, weights


compiled_step = torch.compile(attention_gru_step, dynamic=True)


def compiled_recur(  # type: ignore[no-untyped-def]
    self, tgt_in, embedded, state, padding, feedback
):
    """``BahdanauDecoder._recur_stepwise`` with its loop body compiled (teacher forcing only)."""
    stepper = self.stepper
    weights = stepper.weights(self.rnn)
    w_embedded, w_context = stepper.split_input(weights, self.embed_size)
    embedded_gates = F.linear(embedded, w_embedded, weights[0].b_ih).unbind(1)
    top = hidden_of(state.hidden)[-1]
    attention = self.attention
    outputs, contexts, all_weights = [], [], []
    for gates_t in embedded_gates:
        top, context, step_weights = compiled_step(
            top,
            gates_t,
            state.keys,
            state.memory,
            padding,
            attention.query_layer.weight,
            attention.energy_layer.weight,
            w_context,
            weights[0].w_hh,
            weights[0].b_hh,
        )
        outputs.append(top)
        contexts.append(context)
        all_weights.append(step_weights)
    return (
        torch.stack(outputs, 1),
        torch.stack(contexts, 1),
        embedded,
        top.unsqueeze(0),
        torch.cat(all_weights, 1),
    )


def speed(threads: int, windows: int, window_steps: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        task, built, batches = build_trainers(Path(tmp), [])
        eager = built["hoisted"]
        model = copy.deepcopy(eager.model)
        model.decoder._recur_stepwise = types.MethodType(compiled_recur, model.decoder)
        (Path(tmp) / "compiled").mkdir()
        trainers = {
            "eager": eager,
            "compiled": Trainer(
                task=task,
                model=model,
                config=eager.config,
                run_dir=Path(tmp) / "compiled",
                device=CPU,
            ),
        }
        position = {name: 0 for name in trainers}

        def window(name: str, steps: int) -> float:
            trainer, tokens = trainers[name], 0
            started = time.perf_counter()
            for _ in range(steps):
                tokens += trainer._train_step(batches[position[name] % len(batches)])
                position[name] += 1
            return tokens / (time.perf_counter() - started)

        started = time.perf_counter()
        window("compiled", 3)  # compiles
        compile_seconds = time.perf_counter() - started
        window("compiled", 3)
        window("eager", 3)
        rates: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(windows):
            for name in trainers:
                rates[name].append(window(name, window_steps))
        ratios = [c / e for c, e in zip(rates["compiled"], rates["eager"], strict=True)]
        return {
            "threads": threads,
            "windows": windows,
            "window_steps": window_steps,
            "machine": harness.machine_info(),
            "first_window_seconds_with_compilation": round(compile_seconds, 1),
            "tokens_per_sec_median": {k: round(statistics.median(v)) for k, v in rates.items()},
            "compiled / eager": round(statistics.median(ratios), 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--window-steps", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(speed(args.threads, args.windows, args.window_steps), indent=1))


if __name__ == "__main__":
    main()
