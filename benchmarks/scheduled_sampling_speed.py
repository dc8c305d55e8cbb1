"""The speed cost of scheduled sampling: training steps with ε < 1 against teacher forcing.

Scheduled sampling feeds the model's previous prediction, so the decoder runs one position at a time
and projects every position to the vocabulary an extra time (for the argmax). For the context decoder
and Luong without input feeding that replaces one fused call over the whole target; Bahdanau and
Luong with input feeding already loop. Both variants train the same model on the same batches in
alternating timed windows (``harness.paired_windows``); the figure is the median ratio of
target tokens per second, scheduled / teacher forcing.

    python benchmarks/scheduled_sampling_speed.py --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import machine_info, paired_windows, timed  # noqa: E402

from rnnlab.models.seq2seq import build_seq2seq  # noqa: E402
from rnnlab.tasks.seq2seq_config import Seq2SeqModelConfig  # noqa: E402

DECODERS = {
    "context": ("none", True),
    "bahdanau": ("bahdanau", True),
    "luong_input_feed": ("luong_general", True),
    "luong_no_feed": ("luong_general", False),
}


def measure(attention: str, input_feed: bool, args: argparse.Namespace) -> dict[str, object]:
    """Paired windows of training steps at ε = 0.5 (candidate) and ε = 1 (baseline)."""
    torch.manual_seed(0)
    cfg = Seq2SeqModelConfig(
        attention=attention,  # type: ignore[arg-type]
        input_feed=input_feed,
        embed_size=args.hidden,
        hidden_size=args.hidden,
        num_layers=1,
        dropout=0.2,
        embed_dropout=0.2,
        bidirectional_encoder=attention != "none",
    )
    model = build_seq2seq(cfg, src_vocab_size=args.vocab, tgt_vocab_size=args.vocab).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    src = torch.randint(4, args.vocab, (args.batch, args.length))
    lengths = torch.full((args.batch,), args.length)
    tgt = torch.randint(4, args.vocab, (args.batch, args.length))

    def window(epsilon: float) -> float:
        for _ in range(args.steps):
            features = model.forward_scheduled(src, lengths, tgt, teacher_forcing=epsilon)
            logits = model.project(features)  # (B, T, V)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return float(args.steps * tgt.numel())

    window(1.0), window(0.5)  # warm-up
    windows = paired_windows(
        lambda: timed(lambda: window(0.5)), lambda: timed(lambda: window(1.0)), args.repeats
    )
    return windows.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="training steps per window")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=14, help="source and target tokens")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, object] = {"machine": machine_info(), "settings": vars(args)}
    for name, (attention, input_feed) in DECODERS.items():
        summary = measure(attention, input_feed, args)
        results[name] = summary
        print(f"{name}: scheduled / teacher forcing = {summary['ratio']:.2f}", file=sys.stderr)
    results["load_average_end"] = machine_info()["load_average_1m"]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
