"""``rnnlab train`` refuses a run directory another trainer is writing, and takes over a dead one's."""

from __future__ import annotations

from pathlib import Path

from rnnlab.cli import main
from tests.training.test_run_lock import dead_pid, hold_lock_in_child

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
