"""Search spaces are checked against the task's schema before any trial starts."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from rnnlab.errors import ConfigError
from rnnlab.tasks.lm_config import LMConfig
from rnnlab.tasks.seq2seq_config import Seq2SeqConfig
from rnnlab.tuning.space import load_space

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_space_loads_and_suggests_within_bounds(tmp_path: Path):
    specs = load_space(
        write(
            tmp_path,
            "train.lr: {type: float, low: 1e-4, high: 1e-2, log: true}\n"
            "model.hidden_size: {type: int, low: 16, high: 64, step: 16}\n"
            "model.cell: {type: categorical, choices: [gru, lstm]}\n",
        ),
        LMConfig,
    )
    assert [s.key for s in specs] == ["train.lr", "model.hidden_size", "model.cell"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        lr, hidden, cell = (s.suggest(trial) for s in specs)
        assert 1e-4 <= lr <= 1e-2 and hidden in (16, 32, 48, 64) and cell in ("gru", "lstm")
        study.tell(trial, 0.0)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "train.lrr: {type: float, low: 0.1, high: 1}\n",
            "unknown config key train.lrr; did you mean train.lr?",
        ),
        ("model.hidden_size: {type: float, low: 1, high: 2}\n", "not a float setting"),
        ("model.cell: {type: categorical, choices: [gru, tree]}\n", "'tree' is not one of"),
        ("train.lr: {type: float, low: 1, high: 0.1}\n", "low 1 is above high 0.1"),
        ("train.lr: {type: float, low: 0, high: 1, log: true}\n", "log range needs low > 0"),
        ("train.lr: {type: float, lo: 0, high: 1}\n", "unknown field 'lo'; did you mean low?"),
        ("train.lr: {type: normal}\n", "type must be float, int or categorical"),
        ("seed: {type: int, low: 1, high: 5}\n", "seed cannot be searched"),
    ],
)
def test_space_errors_name_the_file_and_key(tmp_path: Path, text: str, needle: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_space(path, LMConfig)
    assert str(path) in str(err.value) and needle in str(err.value)


@pytest.mark.parametrize("task", ["seq2seq", "lm", "tagger"])
def test_shipped_spaces_fit_their_task(task: str):
    from rnnlab.tasks import TASKS

    paths = sorted((REPO / "configs" / "spaces").glob(f"{task}-*.yaml"))
    assert paths, f"no shipped search space for {task}"
    for path in paths:
        assert load_space(path, TASKS[task].config_class)


def test_task_specific_keys_are_known(tmp_path: Path):
    path = write(tmp_path, "train.ss_k: {type: float, low: 100, high: 1000}\n")
    assert load_space(path, Seq2SeqConfig)[0].key == "train.ss_k"
