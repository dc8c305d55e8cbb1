"""ε schedules against hand-computed values; ε in metrics.jsonl; a scheduled run with ε ≡ 1 has the
losses of a teacher-forced run, bit for bit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rnnlab.cli import main
from rnnlab.errors import ConfigError
from rnnlab.training.scheduled_sampling import check_schedule, teacher_forcing_probability


def test_schedules_match_bengio_2015():
    eps = teacher_forcing_probability
    assert eps("none", 10_000, k=0, minimum=0) == 1.0
    assert eps("linear", 0, k=100, minimum=0) == 1.0
    assert eps("linear", 25, k=100, minimum=0) == 0.75
    assert eps("linear", 90, k=100, minimum=0.2) == 0.2
    assert eps("exponential", 3, k=0.5, minimum=0) == 0.125
    assert eps("inverse_sigmoid", 0, k=10, minimum=0) == pytest.approx(10 / 11)
    assert eps("inverse_sigmoid", 50, k=10, minimum=0) == pytest.approx(10 / (10 + math.exp(5)))
    assert eps("inverse_sigmoid", 10**9, k=10, minimum=0.1) == 0.1


@pytest.mark.parametrize(
    ("kind", "k", "needle"),
    [("linear", 0, "k > 0"), ("exponential", 1.5, "0 < k < 1"), ("inverse_sigmoid", 0.5, "k ≥ 1")],
)
def test_bad_k_is_a_config_error(kind, k, needle):
    with pytest.raises(ConfigError, match=needle):
        check_schedule(kind, k, 0.0)


def train(out: Path, corpus: dict[str, Path], *sets: str) -> list[dict]:
    base = [
        f"data.train={corpus['train']}",
        f"data.valid={corpus['valid']}",
        "data.max_examples=300",
        "model.embed_size=8",
        "model.hidden_size=16",
        "model.attention=luong_general",
        "model.input_feed=false",
        "train.max_steps=6",
        "train.log_every=1",
        "train.batch_size=16",
        *sets,
    ]
    args = ["train", "seq2seq", "--out", str(out)] + [a for s in base for a in ("--set", s)]
    assert main(args) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if "train_loss" in json.loads(x)]


def test_epsilon_one_run_equals_teacher_forcing_and_epsilon_is_logged(tmp_path, reverse_corpus):
    forced = train(tmp_path / "tf", reverse_corpus)
    held = train(
        tmp_path / "ss1",
        reverse_corpus,
        "train.scheduled_sampling=linear",
        "train.ss_k=2",
        "train.ss_min_teacher_forcing=1.0",
    )
    assert [r["train_loss"] for r in held] == [r["train_loss"] for r in forced]
    assert all(r["teacher_forcing"] == 1.0 for r in held)
    assert "teacher_forcing" not in forced[0]

    decayed = train(
        tmp_path / "ss",
        reverse_corpus,
        "train.scheduled_sampling=linear",
        "train.ss_k=4",
        "train.ss_min_teacher_forcing=0.1",
    )
    assert [r["teacher_forcing"] for r in decayed] == [1.0, 0.75, 0.5, 0.25, 0.1, 0.1]
    assert decayed[0]["train_loss"] == forced[0]["train_loss"]  # step 0: ε = 1
    assert decayed[3]["train_loss"] != forced[3]["train_loss"]
