"""``train.ema_decay``: the exponential moving average of the weights, by hand and through runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from rnnlab.cli import main
from rnnlab.errors import ConfigError
from rnnlab.training.weight_average import WeightAverage

TINY = [
    "data.preprocess=none",
    "data.min_freq=1",
    "model.embed_size=8",
    "model.hidden_size=16",
    "model.num_layers=1",
    "model.dropout=0",
    "train.batch_size=32",
    "train.log_every=1",
    "train.lr=0.01",
]


def _train(corpus: dict[str, Path], out: Path, *extra: str) -> None:
    argv = ["train", "seq2seq", "--out", str(out)]
    for item in [f"data.train={corpus['train']}", f"data.valid={corpus['valid']}", *TINY, *extra]:
        argv += ["--set", item]
    assert main(argv) == 0


def _resume(run: Path, steps: int) -> None:
    assert main(["train", "--resume", str(run), "--set", f"train.max_steps={steps}"]) == 0


def test_the_average_follows_the_formula_worked_by_hand():
    layer = nn.Linear(1, 1, bias=False)
    average = WeightAverage(layer, decay=0.9)
    expected = None
    for n, value in enumerate([2.0, -1.0, 4.0, 0.5, 3.0]):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update(layer)
        if expected is None:  # the first update copies the weights
            expected = value
        else:  # d = min(0.9, (1 + n) / (10 + n)) after n updates
            d = min(0.9, (1 + n) / (10 + n))
            expected = d * expected + (1 - d) * value
        assert average.model.weight.item() == pytest.approx(expected, rel=1e-6)
    assert layer.weight.item() == 3.0  # the trained weights are left alone


def test_the_decay_warms_up_to_the_configured_value():
    average = WeightAverage(nn.Linear(1, 1), decay=0.999)
    assert average.current_decay(0) == pytest.approx(0.1)
    assert average.current_decay(90) == pytest.approx(91 / 100)
    assert average.current_decay(100_000) == 0.999


@pytest.mark.parametrize("decay", [1.0, -0.5, 2.0])
def test_a_decay_outside_0_1_is_a_config_error(decay):
    with pytest.raises(ConfigError, match="train.ema_decay"):
        WeightAverage(nn.Linear(1, 1), decay=decay)


def test_a_bad_decay_on_the_command_line_exits_2_with_one_line(reverse_corpus, tmp_path, capsys):
    argv = ["train", "seq2seq", "--out", str(tmp_path / "run")]
    for item in [f"data.train={reverse_corpus['train']}", *TINY, "train.ema_decay=1.5"]:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()  # refused before any data is read or model built
    assert err == "rnnlab: error: train.ema_decay: 1.5 is not in [0, 1); 0 turns it off"


def test_runs_keep_the_average_of_their_steps_and_resume_it_exactly(reverse_corpus, tmp_path):
    steps, decay = 4, 0.8
    # One step at a time: last/ after each holds that step's raw weights.
    split = tmp_path / "split"
    _train(reverse_corpus, split, "train.max_steps=1", f"train.ema_decay={decay}")
    raw = [load_file(str(split / "last" / "model.safetensors"))]
    for step in range(2, steps + 1):
        _resume(split, step)
        raw.append(load_file(str(split / "last" / "model.safetensors")))
    # The same run without stopping, validated once, at its last step.
    full = tmp_path / "full"
    _train(
        reverse_corpus,
        full,
        f"train.max_steps={steps}",
        f"train.valid_every={steps}",
        f"train.ema_decay={decay}",
    )
    full_raw = load_file(str(full / "last" / "model.safetensors"))
    assert all(torch.equal(full_raw[k], raw[-1][k]) for k in full_raw)

    by_hand = {k: v.clone() for k, v in raw[0].items()}
    for n, weights in enumerate(raw[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        by_hand = {k: d * by_hand[k] + (1 - d) * weights[k] for k in by_hand}
    best = load_file(str(full / "best" / "model.safetensors"))
    for run_state in (
        load_file(str(full / "last" / "trainer_state.safetensors")),
        load_file(str(split / "last" / "trainer_state.safetensors")),
    ):
        assert run_state["ema.n_averaged"].item() == steps
        for key, value in by_hand.items():
            torch.testing.assert_close(run_state[f"ema.module.{key}"], value)
    for key, value in by_hand.items():
        torch.testing.assert_close(best[key], value)
    # The average is not the last step's weights (the test would be empty if it were).
    assert any(not torch.allclose(best[k], raw[-1][k]) for k in best)


def test_validation_reads_the_average(reverse_corpus, tmp_path):
    import json

    import rnnlab

    run = tmp_path / "run"
    _train(
        reverse_corpus,
        run,
        "train.max_steps=6",
        "train.valid_every=6",
        "train.ema_decay=0.9",
    )
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    valid_loss = next(r["valid_loss"] for r in logged if "valid_loss" in r)
    translator = rnnlab.load(run)  # best/: the average
    task = translator.task
    data = task.encode_pairs(task.read_pairs(str(reverse_corpus["valid"])))
    nll, count = task.teacher_forced_nll(translator.model, data, translator.device)
    assert nll / count == pytest.approx(valid_loss, rel=1e-5)
