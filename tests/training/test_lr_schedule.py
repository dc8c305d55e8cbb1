"""train.lr_schedule / train.warmup_steps: the factor by hand, and the learning rates a real run
records step by step, after a resume and when ranks' clocks differ."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rnnlab.cli import main
from rnnlab.training.lr_schedule import LrSchedule, run_progress


@pytest.mark.parametrize(
    ("kind", "progress", "expected"),
    [
        ("constant", 0.7, 1.0),
        ("linear", 0.0, 1.0),
        ("linear", 0.25, 0.75),
        ("linear", 1.0, 0.0),
        ("linear", 1.7, 0.0),
        ("cosine", 0.0, 1.0),
        ("cosine", 0.5, 0.5),
        ("cosine", 0.25, (1 + math.sqrt(0.5)) / 2),
        ("cosine", 1.0, 0.0),
    ],
)
def test_annealing_factor_by_hand(kind, progress, expected):
    assert LrSchedule(kind).factor(1000, progress) == pytest.approx(expected, abs=1e-12)


def test_warmup_rises_linearly_then_hands_over():
    assert not LrSchedule().varies and LrSchedule(warmup_steps=1).varies
    schedule = LrSchedule("linear", warmup_steps=4)
    assert [schedule.factor(s, 0.0) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert schedule.factor(2, 0.5) == pytest.approx(0.75 * 0.5)


def test_progress_is_the_furthest_of_steps_and_minutes():
    assert run_progress(step=10, planned_steps=100, train_seconds=0, max_minutes=0) == 0.1
    assert run_progress(step=10, planned_steps=100, train_seconds=30, max_minutes=1) == 0.5
    assert run_progress(step=80, planned_steps=100, train_seconds=30, max_minutes=1) == 0.8
    assert run_progress(step=5, planned_steps=0, train_seconds=0, max_minutes=0) == 0.0


def _train(corpus: dict[str, Path], out: Path, *extra: str, resume: bool = False) -> list[dict]:
    argv = (
        ["train", "seq2seq", "--resume", str(out)]
        if resume
        else ["train", "seq2seq", "--out", str(out)]
    )
    sets = [
        f"data.train={corpus['train']}",
        f"data.valid={corpus['valid']}",
        "data.preprocess=none",
        "data.min_freq=1",
        "model.embed_size=8",
        "model.hidden_size=16",
        "model.num_layers=1",
        "train.batch_size=64",
        "train.lr=0.01",
        "train.epochs=100",
        "train.log_every=1",
        *extra,
    ]
    if not resume:
        for item in sets:
            argv += ["--set", item]
    assert main(argv) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "lr" in r]


def test_a_linear_run_records_the_planned_learning_rates(reverse_corpus, tmp_path):
    records = _train(
        reverse_corpus,
        tmp_path / "run",
        "train.max_steps=10",
        "train.lr_schedule=linear",
        "train.warmup_steps=2",
    )
    # The lr logged at step s is the one step s ran with: warm-up, then linear to 0 at step 10.
    expected = [0.01 * min(1.0, s / 2) * (1 - (s - 1) / 10) for s in range(1, 11)]
    assert [r["lr"] for r in records] == pytest.approx(expected)


def test_a_resumed_run_follows_the_plan_of_its_config(reverse_corpus, tmp_path):
    full = _train(
        reverse_corpus, tmp_path / "full", "train.max_steps=12", "train.lr_schedule=cosine"
    )
    _train(reverse_corpus, tmp_path / "split", "train.max_steps=6", "train.lr_schedule=cosine")
    config = tmp_path / "split" / "config.yaml"
    config.write_text(config.read_text().replace("max_steps: 6", "max_steps: 12"))
    resumed = _train(reverse_corpus, tmp_path / "split", resume=True)
    # Steps 7-12 follow the 12-step plan the resumed config names, as in the uninterrupted run.
    assert [r["lr"] for r in resumed[6:]] == pytest.approx([r["lr"] for r in full[6:]])
    assert resumed[-1]["lr"] < 0.01 * 0.02


def test_the_constant_schedule_leaves_the_rate_alone(reverse_corpus, tmp_path):
    records = _train(reverse_corpus, tmp_path / "run", "train.max_steps=3")
    assert [r["lr"] for r in records] == [0.01, 0.01, 0.01]


class _OtherRankAhead:
    """A two-rank context whose other rank has trained 3 seconds longer."""

    enabled = True

    def all_reduce_max(self, values):
        return torch.maximum(values, torch.tensor([0.0, 0.0, values[2].item() + 3.0]).to(values))


def test_ranks_agree_on_the_training_clock_that_keys_the_schedule():
    from rnnlab.config import TrainConfig
    from rnnlab.training.trainer import Trainer, TrainerState

    trainer = Trainer.__new__(Trainer)
    trainer.config = TrainConfig(max_minutes=1.0, lr_schedule="linear")
    trainer.state = TrainerState(train_seconds=10.0)
    trainer.distributed = _OtherRankAhead()
    trainer.should_stop = lambda: False
    trainer.device = torch.device("cpu")
    assert trainer._stop_flags() == (False, False)
    assert trainer.state.train_seconds == 13.0  # every rank now anneals by the same clock
