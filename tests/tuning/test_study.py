"""A tiny study end to end: trials are run directories, a second call continues the study, the median
pruner stops a trial, a failing trial is recorded and the study goes on, Ctrl-C leaves it resumable."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from rnnlab.cli import main
from rnnlab.rundir import open_run
from rnnlab.training.trainer import Trainer
from rnnlab.tuning.study import load_study

REPO = Path(__file__).resolve().parents[2]
TM = REPO / "data" / "timemachine"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    config = {
        "task": "lm",
        "seed": 3,
        "data": {
            "train": str(TM / "train.txt"),
            "valid": str(TM / "valid.txt"),
            "max_examples": 150,
        },
        "model": {"embed_size": 8, "hidden_size": 16},
        "train": {"epochs": 1, "max_steps": 8, "valid_every": 4, "batch_size": 8, "bptt": 16},
    }
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    # tie_weights with embed 8 ≠ hidden 16 is a config error: those trials must fail, not stop the study.
    (tmp_path / "space.yaml").write_text(
        "train.lr: {type: float, low: 1.0e-5, high: 0.3, log: true}\n"
        "model.tie_weights: {type: categorical, choices: [false, true]}\n",
        encoding="utf-8",
    )
    return {
        "config": tmp_path / "lm.yaml",
        "space": tmp_path / "space.yaml",
        "out": tmp_path / "study",
    }


def tune(files: dict[str, Path], trials: int) -> int:
    return main(
        [
            "tune",
            "--config", str(files["config"]),
            "--space", str(files["space"]),
            "--trials", str(trials),
            "--out", str(files["out"]),
            "--startup-trials", "1",
        ]
    )  # fmt: skip


def test_study_runs_continues_prunes_and_records_failures(files, capsys, png_size):
    out = files["out"]
    assert tune(files, 3) == 0
    study = load_study(out)
    assert len(study.trials) == 3
    states = [t.state for t in study.trials]
    assert states[0] == optuna.trial.TrialState.COMPLETE
    assert optuna.trial.TrialState.PRUNED in states
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and "tie_weights" in failed[0].user_attrs["error"]
    # Every trial is an ordinary run directory: the completed one evaluates.
    run = open_run(out / "trial-000", device="cpu")
    assert run.task.evaluate(run.model, str(TM / "valid.txt"), run.device)["perplexity"] > 1
    # best.yaml is the best trial's complete config.
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best == yaml.safe_load((out / "trial-000" / "config.yaml").read_text())
    assert best["train"]["lr"] == pytest.approx(study.best_params["train.lr"])
    for name in ("history.png", "importance.png"):
        assert png_size(out / name) == (700, 450)

    # The same command with --trials 4 continues the study to 4 trials, with new parameters.
    assert tune(files, 4) == 0
    study = load_study(out)
    assert len(study.trials) == 4
    params = [tuple(t.params.values()) for t in study.trials]
    assert len(set(params)) == 4
    assert (out / "trial-003" / "config.yaml").is_file()

    capsys.readouterr()
    assert main(["tune", "--out", str(out), "--report"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["trial", "state", "valid_ppl", "minutes"]
    assert [line.split()[1] for line in table[1:5]] == [t.state.name.lower() for t in study.trials]
    assert table[-1].startswith("best: trial 0")


def test_ctrl_c_leaves_the_study_resumable(files, monkeypatch, capsys):
    fit = Trainer.fit
    calls = {"n": 0}

    def interrupted_second_trial(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", interrupted_second_trial)
    (files["space"]).write_text("train.lr: {type: float, low: 1.0e-3, high: 0.01, log: true}\n")
    assert tune(files, 2) == 130
    study = load_study(files["out"])
    assert [t.user_attrs.get("interrupted", False) for t in study.trials] == [False, True]
    monkeypatch.setattr(Trainer, "fit", fit)
    assert tune(files, 2) == 0
    study = load_study(files["out"])
    # The interrupted trial does not count: one more trial ran to reach 2.
    assert len(study.trials) == 3
    assert (
        study.trials[2].state == optuna.trial.TrialState.COMPLETE
        or study.trials[2].state == optuna.trial.TrialState.PRUNED
    )


def test_unknown_space_key_stops_before_any_trial(files, capsys):
    files["space"].write_text("train.lrate: {type: float, low: 0.001, high: 0.1}\n")
    assert tune(files, 3) == 2
    err = capsys.readouterr().err
    assert "did you mean train.lr?" in err and str(files["space"]) in err
    assert not (files["out"] / "trial-000").exists()


def test_a_nan_loss_fails_the_trial_and_the_study_goes_on(files, capsys):
    # An absurd learning rate drives the weights to inf/NaN within a few Adam steps.
    files["space"].write_text("train.lr: {type: categorical, choices: [1.0e+30]}\n")
    assert tune(files, 2) == 0
    study = load_study(files["out"])
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    assert "not finite" in study.trials[0].user_attrs["error"]
    assert not (files["out"] / "best.yaml").exists()


def test_a_trial_whose_own_values_break_a_new_run_check_fails(files, tmp_path, capsys):
    """The base config passes ``check_new_run``; a searched value that breaks it (tied output
    weights with frozen embeddings) fails that trial, as a rejected config does."""
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("".join(f"{w} {' '.join(['0.1'] * 16)}\n" for w in "the time a"))
    config = yaml.safe_load(files["config"].read_text(encoding="utf-8"))
    config["data"]["tokenizer"] = "word"
    config["model"].update(embed_size=16, tie_weights=True, pretrained_embeddings=str(vectors))
    files["config"].write_text(yaml.safe_dump(config), encoding="utf-8")
    files["space"].write_text(
        "model.freeze_embeddings: {type: categorical, choices: [true]}\n", encoding="utf-8"
    )
    assert tune(files, 1) == 0
    study = load_study(files["out"])
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
    assert "model.tie_weights with model.freeze_embeddings" in study.trials[0].user_attrs["error"]
