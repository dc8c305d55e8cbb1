"""SIGTERM mid-epoch saves a checkpoint and exits like Ctrl-C; the resumed run equals an uninterrupted one.

A real signal is sent to a real ``rnnlab train`` process (and to ``rnnlab train --nproc 2``, which
passes it through torchrun to its workers), once training records show it is inside the first epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from tests.training.test_distributed import (
    assert_same_weights,
    rnnlab,
    train_losses,
    write_reverse_task,
)

REPO = Path(__file__).resolve().parents[2]
BATCHES_PER_EPOCH = 600


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def steps_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def terminate_mid_epoch(
    args: list[str], run: Path, *, ctrl_c: bool = False
) -> subprocess.CompletedProcess[str]:
    """Start training, send SIGTERM once a few steps are logged, wait for a clean exit.

    ``ctrl_c``: SIGINT to the whole process group instead, as a terminal sends it on Ctrl-C (under
    ``--nproc`` the workers then get it twice: from the terminal and from torchrun).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", *args],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=ctrl_c,
    )
    deadline = time.monotonic() + 240
    while steps_logged(run) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "training ended before it could be interrupted"
    if ctrl_c:
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def trainer_state(run: Path) -> dict:
    with safe_open(str(run / "last" / "trainer_state.safetensors"), framework="pt") as handle:
        return json.loads(handle.metadata()["trainer"])["trainer"]


def assert_same_run(a: Path, b: Path) -> None:
    losses_a, losses_b = train_losses(a), train_losses(b)
    assert len(losses_a) == len(losses_b)
    for x, y in zip(losses_a, losses_b, strict=True):
        assert x == pytest.approx(y, rel=1e-5)
    assert_same_weights(a, b)


@pytest.mark.parametrize("nproc", [1, 2], ids=["one-process", "nproc-2"])
def test_sigterm_saves_and_resume_equals_uninterrupted(tmp_path: Path, nproc: int):
    # A long first epoch of tiny steps.
    config = write_reverse_task(tmp_path, pairs=BATCHES_PER_EPOCH * 4, batch_size=4, epochs=1)
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    common = ["train", "seq2seq", "--config", str(config)]
    launch = ["--nproc", "2"] if nproc > 1 else []

    done = terminate_mid_epoch([*common, "--out", str(stopped), *launch], stopped)

    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == "rnnlab: terminated"
    state = trainer_state(stopped)
    step = state["step"]
    assert f"checkpoint saved at step {step}" in done.stderr
    assert state["epoch"] == 0 and 0 < state["batch_in_epoch"] < BATCHES_PER_EPOCH  # mid-epoch
    assert steps_logged(stopped) == step  # metrics.jsonl ends at the checkpoint
    assert not (stopped / ".lock").exists()  # the run lock was released

    target = f"train.max_steps={step + 3}"
    rnnlab("train", "--resume", str(stopped), "--set", target)
    if nproc > 1:
        # The same steps without the signal: two processes up to the checkpoint's step, then one.
        # (One process throughout would sum each batch's gradient in another order: rounding-level
        # differences that grow with the number of steps, which depends on when the signal came.)
        rnnlab(*common, "--out", str(whole), *launch, "--set", f"train.max_steps={step}")
        rnnlab("train", "--resume", str(whole), "--set", target)
    else:
        rnnlab(*common, "--out", str(whole), "--set", target)
    assert_same_run(stopped, whole)


@pytest.mark.parametrize("nproc", [1, 2], ids=["one-process", "nproc-2"])
def test_ctrl_c_from_a_terminal_saves_a_whole_step(tmp_path: Path, nproc: int):
    config = write_reverse_task(tmp_path, pairs=BATCHES_PER_EPOCH * 4, batch_size=4, epochs=1)
    stopped = tmp_path / "stopped"
    launch = ["--nproc", "2"] if nproc > 1 else []
    args = ["train", "seq2seq", "--config", str(config), "--out", str(stopped), *launch]

    done = terminate_mid_epoch(args, stopped, ctrl_c=True)

    assert done.returncode == 128 + signal.SIGINT, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.count("stopping after this step") == 1  # rank 0 speaks, once
    assert done.stderr.strip().splitlines()[-1] == "rnnlab: interrupted"
    step = trainer_state(stopped)["step"]
    assert f"checkpoint saved at step {step}" in done.stderr
    assert steps_logged(stopped) == step
    rnnlab("train", "--resume", str(stopped), "--set", f"train.max_steps={step + 3}")
    assert trainer_state(stopped)["step"] == step + 3
