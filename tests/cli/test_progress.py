"""What a person sees while training and decoding: a live bar on a terminal, plain lines in a pipe.

The terminal case runs the real command under a pseudo-terminal (``pty``), the way a shell would.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from ..conftest import reverse_pairs, write_tsv

TINY = [
    "data.preprocess=none",
    "data.min_freq=1",
    "model.embed_size=8",
    "model.hidden_size=8",
    "model.num_layers=1",
    "train.batch_size=8",
    "train.epochs=1",
    "train.log_every=5",
    "train.num_threads=1",
]


def train_argv(tmp_path: Path) -> list[str]:
    train = write_tsv(tmp_path / "train.tsv", reverse_pairs(400, seed=1))
    valid = write_tsv(tmp_path / "valid.tsv", reverse_pairs(20, seed=2))
    argv = [sys.executable, "-m", "rnnlab", "train", "seq2seq", "--out", str(tmp_path / "run")]
    for item in [f"data.train={train}", f"data.valid={valid}", *TINY]:
        argv += ["--set", item]
    return argv


def run_in_terminal(argv: list[str], stdin_text: str = "") -> str:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal; return everything it wrote."""
    leader, follower = pty.openpty()
    # A real terminal has a size; a bare pty reports 0 × 0, where no bar fits.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    process = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    assert process.stdin is not None
    process.stdin.write(stdin_text.encode())
    process.stdin.close()
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=300)
    os.close(leader)
    assert process.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_training_shows_a_live_bar_with_rate_and_loss_on_a_terminal(tmp_path):
    screen = run_in_terminal(train_argv(tmp_path))
    assert screen.startswith("preparing the training data from "), screen  # before the wait
    bar_frames = [frame for frame in screen.split("\r") if "epoch 1/1" in frame]
    assert len(bar_frames) >= 3, screen  # drawn, then redrawn as it advances
    assert any("it/s" in frame or "s/it" in frame for frame in bar_frames), screen
    assert any("loss " in frame for frame in bar_frames), screen
    assert "valid_bleu=" in screen  # validation records still reach the terminal


def test_piped_training_output_is_plain_lines(tmp_path):
    result = subprocess.run(
        train_argv(tmp_path), capture_output=True, text=True, timeout=300, check=True
    )
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert not any(line.startswith("preparing") for line in lines)  # a terminal's status line
    assert any(line.startswith("step=5 ") and "train_loss=" in line for line in lines)
    assert any("valid_bleu=" in line for line in lines)


@pytest.fixture
def trained_run(tmp_path) -> Path:
    subprocess.run(train_argv(tmp_path), capture_output=True, timeout=300, check=True)
    return tmp_path / "run"


def test_translate_and_evaluate_show_a_bar_on_a_terminal(trained_run, tmp_path):
    sentences = "".join(f"{s}\n" for s, _ in reverse_pairs(50, seed=4))
    screen = run_in_terminal(
        [sys.executable, "-m", "rnnlab", "translate", str(trained_run)], sentences
    )
    assert "\r" in screen and "translating" in screen, screen
    valid = tmp_path / "valid.tsv"
    screen = run_in_terminal(
        [sys.executable, "-m", "rnnlab", "evaluate", str(trained_run), "--data", str(valid)]
    )
    assert "decoding" in screen and "bleu" in screen, screen
