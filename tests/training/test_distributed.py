"""Data-parallel training takes exactly the optimizer steps of one process with the same global batch."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
WORDS = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]


def write_reverse_task(
    folder: Path, *, pairs: int = 72, batch_size: int = 18, epochs: int = 5
) -> Path:
    """A tiny reverse-the-sentence corpus and a config with no dropout (dropout draws differ by rank)."""
    rng = random.Random(0)
    lines = []
    for _ in range(pairs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 7))]
        lines.append(" ".join(words) + "\t" + " ".join(reversed(words)))
    (folder / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = folder / "tiny.yaml"
    config.write_text(
        f"""task: seq2seq
seed: 3
data: {{train: {folder / "train.tsv"}, valid: "", preprocess: none, min_freq: 1, max_len: 10}}
model: {{embed_size: 8, hidden_size: 16, num_layers: 2, dropout: 0.0}}
train: {{epochs: {epochs}, batch_size: {batch_size}, lr: 0.01, log_every: 1, device: cpu, num_threads: 1}}
""",
        encoding="utf-8",
    )
    return config


def rnnlab(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "rnnlab", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-6000:]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


def assert_same_weights(a: Path, b: Path, atol: float = 1e-6) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=atol, msg=name)


def train_losses(run: Path) -> list[float]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in records if "train_loss" in r]


def test_two_processes_take_the_single_process_steps_and_resume_with_one(tmp_path):
    config = write_reverse_task(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    # 72 pairs / 18 = 4 global batches per epoch (9 rows per rank); 7 steps cross an epoch end.
    common = ["train", "seq2seq", "--config", str(config)]
    rnnlab(*common, "--out", str(one), "--set", "train.max_steps=7")
    rnnlab(*common, "--out", str(two), "--nproc", "2", "--set", "train.max_steps=5")
    # The two-process run continues in one process: the same steps as the uninterrupted run.
    rnnlab("train", "--resume", str(two), "--set", "train.max_steps=7")
    losses_one, losses_two = train_losses(one), train_losses(two)
    assert len(losses_one) == len(losses_two) == 7
    for a, b in zip(losses_one, losses_two, strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    assert_same_weights(one, two)


def test_adversarial_tagger_takes_the_same_steps_in_two_processes(tmp_path):
    """Each sentence's adversarial step depends on that sentence alone, so splitting the batch
    over two processes (DDP around a loss that differentiates once inside its forward; each rank
    spells only its own sentences' words) changes nothing."""
    sample = REPO / "data/ud-ewt-sample/train.conllu"
    assert sample.is_file()
    sets = [f"data.train={sample}", "data.valid=", "data.max_examples=32", "seed=5"]
    sets += ["model.hidden_size=8", "model.embed_size=8", "model.char_hidden_size=4"]
    sets += ["model.dropout=0", "model.word_dropout=0", "model.crf=true"]
    sets += ["model.adversarial_epsilon=0.1", "train.batch_size=8", "train.max_steps=4"]
    sets += ["train.device=cpu", "train.num_threads=1", "train.log_every=1"]
    common = ["train", "tagger", *[arg for s in sets for arg in ("--set", s)]]
    one, two = tmp_path / "one", tmp_path / "two"
    rnnlab(*common, "--out", str(one))
    rnnlab(*common, "--out", str(two), "--nproc", "2")
    losses_one, losses_two = train_losses(one), train_losses(two)
    assert len(losses_one) == len(losses_two) == 4
    for a, b in zip(losses_one, losses_two, strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    # Gradients summed over two ranks round differently; Adam turns that into a few 1e-6 on the
    # rows of characters seen once. A wrong step would differ by about the learning rate (2e-3).
    assert_same_weights(one, two, atol=5e-5)


def _agree(rank: int, store_file: str, speedups: list[float], results: Any) -> None:
    import torch.distributed as dist

    from rnnlab.nn import precision
    from rnnlab.training.distributed import agree_on_bf16_speedup

    dist.init_process_group(
        "gloo", init_method=f"file://{store_file}", rank=rank, world_size=len(speedups)
    )
    try:
        precision.settle_bf16_speedup("cpu", speedups[rank])  # as if this rank had timed it
        agree_on_bf16_speedup()
        results[rank] = precision.bf16_speedup("cpu")
    finally:
        dist.destroy_process_group()


def test_ranks_take_the_slowest_ranks_bf16_speedup_so_all_pick_one_precision(tmp_path):
    """Two ranks whose own timings fall either side of the line end up with the same ratio: the
    smaller one, under which ``precision: auto`` picks float32 on both."""
    import torch.multiprocessing as mp

    from rnnlab.nn.precision import BF16_MIN_SPEEDUP

    speedups = [3.0, 0.9]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_agree, args=(str(tmp_path / "store"), speedups, results), nprocs=2, join=True)
        assert dict(results) == {0: 0.9, 1: 0.9}
    assert min(speedups) < BF16_MIN_SPEEDUP <= max(speedups)


def test_more_cuda_processes_than_gpus_is_a_config_error(monkeypatch):
    """NCCL runs one process per GPU; a process without one would fail inside torch."""
    from rnnlab.errors import ConfigError
    from rnnlab.training.distributed import check_processes_fit

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_processes_fit("cuda", 1)
    check_processes_fit("cpu", 8)  # gloo on the CPU: as many processes as wanted
    with pytest.raises(ConfigError, match=r"2 processes on CUDA, but this machine has 1 CUDA"):
        check_processes_fit("cuda", 2)
