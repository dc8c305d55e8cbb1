"""The training lifecycle as a user meets it: interrupt, resume, limits, overrides, tune and plot.

Every run is a tiny character-level GRU on a repeated pangram (21 steps an epoch), trained through
``rnnlab.cli.main`` in this process. Interrupts are made deterministic: Ctrl-C (SIGINT) and
SIGTERM are real signals the process sends itself from inside the trainer at a chosen point. A
resumed run is compared with an uninterrupted one of the same seed (``metrics.jsonl`` without
timings, and the weights).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

import rnnlab.training.checkpoint as ckpt
from rnnlab.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USER_ERROR
from rnnlab.tasks.lm import LanguageModelTask
from tests.cli_runner import call_main
from tests.conftest import PANGRAM

TIMINGS = ("tokens_per_sec", "minutes")


def sets(settings: dict[str, object]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def lm_args(text: Path, **overrides: object) -> list[str]:
    """A GRU language model of 2k parameters: 21 steps an epoch, validation every 5 steps."""
    settings: dict[str, object] = {
        "data.train": text,
        "data.valid": text,
        "data.clean": "none",
        "model.hidden_size": 16,
        "model.embed_size": 8,
        "model.dropout": 0.3,
        "train.batch_size": 4,
        "train.bptt": 16,
        "train.epochs": 1,
        "train.valid_every": 5,
        "train.log_every": 1,
        "train.num_threads": 1,
        "train.device": "cpu",
    }
    settings.update({key.replace("__", "."): value for key, value in overrides.items()})
    return sets(settings)


def rnnlab(*argv: object) -> int:
    return call_main(*argv)


def records(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS} for line in lines]


def assert_same_records(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [(r["step"], sorted(r)) for r in got] == [(r["step"], sorted(r)) for r in expected]
    for a, b in zip(got, expected, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), (a, b)


def weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_file(str(run / which / "model.safetensors"))


def assert_same_weights(a: Path, b: Path, which: str = "last") -> None:
    wa, wb = weights(a, which), weights(b, which)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=1e-6, msg=name)


def assert_resume_equals_uninterrupted(run: Path, whole: Path) -> None:
    """``--resume`` of an interrupted ``run`` ends as the uninterrupted ``whole`` run did."""
    assert rnnlab("train", "--resume", run) == 0
    assert_same_records(records(run), records(whole))
    assert_same_weights(run, whole)
    assert_same_weights(run, whole, "best")


def trainer_state(run: Path) -> dict[str, Any]:
    with safe_open(str(run / "last" / "trainer_state.safetensors"), framework="pt") as handle:
        return json.loads(handle.metadata()["trainer"])["trainer"]


def on_call(number: int, action: Callable[[], None], wrapped: Callable[..., Any]) -> Any:
    """``wrapped``, except that its ``number``-th call runs ``action`` first."""
    calls = {"n": 0}

    def call(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == number:
            action()
        return wrapped(*args, **kwargs)

    return call


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lifecycle")


@pytest.fixture(scope="module")
def text(root: Path) -> Path:
    path = root / "pangram.txt"
    path.write_text(PANGRAM * 30, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def whole(root: Path, text: Path) -> tuple[Path, str]:
    """The uninterrupted run (one epoch, 21 steps) and what it printed."""
    run = root / "whole"
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        assert rnnlab("train", "lm", "--out", run, *lm_args(text)) == 0
    return run, printed.getvalue()


@pytest.fixture(scope="module")
def capped(root: Path, text: Path) -> Path:
    """A run that ended at ``train.max_steps=3``, before its first validation."""
    run = root / "capped"
    assert rnnlab("train", "lm", "--out", run, *lm_args(text, train__max_steps=3)) == 0
    return run


# ---------------------------------------------------------------------------------------------------
# Interrupt, then --resume: the same run as an uninterrupted one


def ctrl_c() -> None:
    """What a terminal sends on Ctrl-C, delivered to this process at a chosen point."""
    os.kill(os.getpid(), signal.SIGINT)


def ctrl_c_twice() -> None:
    ctrl_c()
    ctrl_c()


def test_ctrl_c_during_a_step_then_resume_equals_uninterrupted(
    whole: tuple[Path, str],
    text: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    run = tmp_path / "run"
    # Ctrl-C lands after the 7th step's forward and backward pass, before its optimizer step.
    monkeypatch.setattr(
        torch.nn.utils, "clip_grad_norm_", on_call(7, ctrl_c, torch.nn.utils.clip_grad_norm_)
    )
    capsys.readouterr()
    assert rnnlab("train", "lm", "--out", run, *lm_args(text)) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "stopping after this step" in err and err.rstrip().endswith("rnnlab: interrupted")
    assert trainer_state(run)["step"] == 7  # the step under way was finished, then saved
    assert not (run / ".lock").exists()
    monkeypatch.undo()
    assert_resume_equals_uninterrupted(run, whole[0])


def test_ctrl_c_during_the_first_validation_then_resume_equals_uninterrupted(
    whole: tuple[Path, str], text: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    run = tmp_path / "run"
    monkeypatch.setattr(
        LanguageModelTask, "validate", on_call(1, ctrl_c, LanguageModelTask.validate)
    )
    assert rnnlab("train", "lm", "--out", run, *lm_args(text)) == EXIT_INTERRUPTED
    assert trainer_state(run)["step"] == 5  # the validation was finished, best/ written
    monkeypatch.undo()
    assert rnnlab("train", "--resume", run) == 0
    valid = [r for r in records(run) if "valid_loss" in r]
    assert_same_records(valid, [r for r in records(whole[0]) if "valid_loss" in r])
    assert_same_weights(run, whole[0], "best")


def test_a_second_ctrl_c_quits_at_once_and_keeps_the_last_whole_checkpoint(
    whole: tuple[Path, str],
    text: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    run = tmp_path / "run"
    # Both presses land as best/ is about to be written at the second validation (step 10).
    monkeypatch.setattr(ckpt, "save_model", on_call(2, ctrl_c_twice, ckpt.save_model))
    capsys.readouterr()
    assert rnnlab("train", "lm", "--out", run, *lm_args(text)) == EXIT_INTERRUPTED
    assert "the checkpoint of step 5 is kept" in capsys.readouterr().err
    state = trainer_state(run)
    assert state["step"] == 5  # nothing of the half-done step 10 was saved
    with safe_open(str(run / "best" / "model.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()["rnnlab"])["valid_ppl"] == state["best_metric"]
    monkeypatch.undo()
    assert_resume_equals_uninterrupted(run, whole[0])


def test_sigterm_during_the_first_validation_then_resume_equals_uninterrupted(
    whole: tuple[Path, str], text: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    run = tmp_path / "run"

    def sigterm() -> None:  # what Slurm sends while the run validates at step 5
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(
        LanguageModelTask, "validate", on_call(1, sigterm, LanguageModelTask.validate)
    )
    assert rnnlab("train", "lm", "--out", run, *lm_args(text)) == EXIT_TERMINATED
    monkeypatch.undo()
    state = trainer_state(run)
    assert state["step"] == 5 and state["best_metric"] is not None
    assert not (run / ".lock").exists()
    assert_resume_equals_uninterrupted(run, whole[0])


def test_console_prints_exactly_the_metrics_records(whole: tuple[Path, str]):
    run, printed = whole
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    logged = [json.loads(line) for line in lines]
    shown = [line for line in printed.splitlines() if line.startswith("step=")]
    assert len(logged) == 21 + 4  # a record per step, a validation every 5 steps
    assert [line.split()[:2] for line in shown] == [
        [f"step={r['step']}", f"epoch={r['epoch']:.4g}"] for r in logged
    ]
    assert [[p.split("=")[0] for p in line.split()] for line in shown] == [list(r) for r in logged]


# ---------------------------------------------------------------------------------------------------
# Limits: a run that ended stays ended


def test_resume_of_a_run_that_reached_max_steps_trains_no_further(capped: Path, tmp_path: Path):
    run = shutil.copytree(capped, tmp_path / "run")
    before = records(run)
    assert rnnlab("train", "--resume", run) == 0
    assert trainer_state(run)["step"] == 3
    assert records(run) == before
    assert_same_weights(run, capped)


def test_resume_of_an_early_stopped_run_trains_no_further(text: Path, tmp_path: Path):
    run = tmp_path / "run"
    # lr 0: the second validation cannot improve on the first, so patience 1 stops at step 4.
    args = lm_args(text, train__lr=0, train__valid_every=2, train__patience=1)
    assert rnnlab("train", "lm", "--out", run, *args) == 0
    assert trainer_state(run)["early_stopped"] and trainer_state(run)["step"] == 4
    assert rnnlab("train", "--resume", run) == 0
    assert trainer_state(run)["step"] == 4


def test_time_budget_ending_on_a_validation_step_validates_once(text: Path, tmp_path: Path):
    run = tmp_path / "run"
    args = lm_args(
        text,
        train__max_minutes=1e-7,  # spent by the first step
        train__valid_every=1,
        train__patience=1,
        train__lr_decay=0.5,
    )
    assert rnnlab("train", "lm", "--out", run, *args) == 0
    assert [r["step"] for r in records(run) if "valid_loss" in r] == [1]
    state = trainer_state(run)
    assert state["step"] == 1 and state["lr_scale"] == 1.0 and not state["early_stopped"]


# ---------------------------------------------------------------------------------------------------
# --set on resume, and a run whose setup failed


def test_resume_with_a_new_learning_rate_uses_it(capped: Path, tmp_path: Path):
    run = shutil.copytree(capped, tmp_path / "run")
    assert rnnlab("train", "--resume", run, *sets({"train.lr": 0.05, "train.max_steps": 5})) == 0
    resumed = [r for r in records(run) if r["step"] > 3 and "lr" in r]
    assert resumed and all(r["lr"] == 0.05 for r in resumed)


def test_a_run_whose_data_was_missing_can_be_started_again(
    text: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    run = tmp_path / "run"
    missing = tmp_path / "missing.txt"
    capsys.readouterr()
    assert rnnlab("train", "lm", "--out", run, *lm_args(missing, train__max_steps=1)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnlab: error: ") and str(missing) in err and "\n" not in err
    assert rnnlab("train", "lm", "--out", run, *lm_args(text, train__max_steps=1)) == 0


# ---------------------------------------------------------------------------------------------------
# tune and plot


def test_tune_with_a_step_budget_shorter_than_an_epoch_completes_its_trial(
    text: Path, tmp_path: Path
):
    pytest.importorskip("optuna")
    from optuna.trial import TrialState

    from rnnlab.tuning.study import load_study

    config = tmp_path / "lm.yaml"
    config.write_text(
        "task: lm\n"
        f"data: {{train: {text}, valid: {text}, clean: none}}\n"
        "model: {hidden_size: 16, embed_size: 8}\n"
        "train: {batch_size: 4, bptt: 16, epochs: 1, num_threads: 1, device: cpu}\n",
        encoding="utf-8",
    )
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {type: float, low: 0.001, high: 0.01, log: true}\n")
    out = tmp_path / "study"
    argv = ["tune", "--config", config, "--space", space, "--trials", 1, "--out", out]
    assert rnnlab(*argv, "--set", "train.max_steps=3") == 0
    assert [t.state for t in load_study(out).trials] == [TrialState.COMPLETE]


def test_sigterm_to_tune_stops_the_trial_cleanly(text: Path, tmp_path: Path):
    pytest.importorskip("optuna")
    import subprocess
    import sys
    import time

    from rnnlab.tuning.study import load_study

    config = tmp_path / "lm.yaml"
    config.write_text(
        "task: lm\n"
        f"data: {{train: {text}, valid: {text}, clean: none}}\n"
        "model: {hidden_size: 16, embed_size: 8}\n"
        "train: {batch_size: 4, bptt: 16, epochs: 100, valid_every: 5, num_threads: 1, "
        "device: cpu}\n",
        encoding="utf-8",
    )
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {type: float, low: 0.001, high: 0.01, log: true}\n")
    out = tmp_path / "study"
    argv = ["tune", "--config", config, "--space", space, "--trials", "1", "--out", out]
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", *map(str, argv)],
        env={
            **os.environ,
            "PYTHONPATH": str(Path(__file__).parents[2] / "src"),
            "OMP_NUM_THREADS": "1",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "trial-000" / "last").is_dir() and time.monotonic() < deadline:
            assert process.poll() is None, "tune ended before it could be stopped"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == EXIT_TERMINATED, err[-2000:]
    assert "Traceback" not in err
    assert [t.state.name for t in load_study(out).trials] != ["RUNNING"]


def test_plot_of_a_run_without_validation_records(
    capped: Path, tmp_path: Path, png_size: Callable[[Path], tuple[int, int]]
):
    assert not any("valid_loss" in r for r in records(capped))
    for x in ("step", "minutes"):
        out = tmp_path / f"{x}.png"
        assert rnnlab("plot", capped, "--out", out, "--x", x) == 0
        assert png_size(out) == (1500, 450)


def test_overwrite_of_a_run_replaces_it_whole(capped: Path, text: Path, tmp_path: Path):
    run = shutil.copytree(capped, tmp_path / "run")
    (run / "best" / "stale.txt").write_text("old\n", encoding="utf-8")
    args = lm_args(text, train__max_steps=2, train__valid_every=2)
    assert rnnlab("train", "lm", "--out", run, "--overwrite", *args) == 0
    assert trainer_state(run)["step"] == 2
    assert [r["step"] for r in records(run)] == [1, 2, 2]
    assert not (run / "best" / "stale.txt").exists() and not (run / ".replaced").exists()
    assert not (run / ".lock").exists()
    assert rnnlab("train", "lm", "--out", run, *args) == EXIT_USER_ERROR  # no --overwrite


def test_overrides_given_on_resume_stay_with_the_run(capped: Path, tmp_path: Path):
    run = shutil.copytree(capped, tmp_path / "run")
    assert rnnlab("train", "--resume", run, *sets({"train.max_steps": 5})) == 0
    assert trainer_state(run)["step"] == 5
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["max_steps"] == 5
    assert rnnlab("train", "--resume", run) == 0  # a requeued plain resume: the run has ended
    assert trainer_state(run)["step"] == 5
