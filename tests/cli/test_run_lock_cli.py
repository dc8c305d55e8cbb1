"""``rnnlab train`` refuses a run directory another trainer is writing, and takes over a dead one's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rnnlab.cli import main
from tests.training.test_run_lock import REPO, dead_pid, hold_lock_in_child

from .test_seq2seq_cli import train


def test_second_writer_is_refused_naming_the_pid(reverse_corpus, tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert train(reverse_corpus, run, "train.max_steps=2") == 0
    before = sorted(p.name for p in run.iterdir())
    holder = hold_lock_in_child(run)
    try:
        for argv in (
            ["train", "--resume", str(run), "--set", "train.max_steps=4"],
            ["train", "seq2seq", "--out", str(run), "--overwrite"],
        ):
            capsys.readouterr()
            assert main(argv) == 2
            lines = capsys.readouterr().err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), lines
            assert f"pid {holder.pid}" in lines[0] and str(run) in lines[0]
    finally:
        holder.communicate("")
    assert sorted(p.name for p in run.iterdir()) == before  # --overwrite did not clear it


def test_lock_left_by_a_dead_trainer_is_taken_over(reverse_corpus, tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert train(reverse_corpus, run, "train.max_steps=2") == 0
    pid = dead_pid()
    (run / ".lock").write_text(f"{pid} elsewhere\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "train.max_steps=4"]) == 0
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if "taking over the lock" in line]
    assert len(notices) == 1 and f"process {pid}" in notices[0]
    assert not (run / ".lock").exists()


def test_second_writer_with_nproc_is_refused_once(reverse_corpus, tmp_path: Path):
    run = tmp_path / "run"
    assert train(reverse_corpus, run, "train.max_steps=2") == 0
    holder = hold_lock_in_child(run)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "rnnlab", "train", "--resume", str(run), "--nproc", "2"],
            env={**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        holder.communicate("")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("rnnlab: error: ")]
    assert len(errors) == 1 and f"pid {holder.pid}" in errors[0]  # rank 0 speaks, rank 1 stops
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
