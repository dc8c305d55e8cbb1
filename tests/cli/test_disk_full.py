"""A full disk during training: exit 2 with one line naming the path; what was written stays usable."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from safetensors.torch import save

from rnnlab import atomic
from rnnlab.cli import main
from rnnlab.training import checkpoint as ckpt
from tests.test_atomic import faulty_os

from .test_seq2seq_cli import train


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines, "no message"
    assert lines[-1].startswith("rnnlab: error: ") and "Traceback" not in "\n".join(lines)
    return lines[-1]


def test_checkpoint_on_a_full_disk(reverse_corpus, tmp_path: Path, monkeypatch, capsys):
    run = tmp_path / "run"
    calls = {"n": 0}

    def fills_up_after_the_first_checkpoint(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] <= 3:  # step 4: best/model, last/model, last/trainer_state
            return REAL_SAVE_FILE(tensors, path, metadata=metadata)
        data = save(tensors, metadata=metadata)
        Path(path).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(ckpt, "save_file", fills_up_after_the_first_checkpoint)
    code = train(reverse_corpus, run, "train.valid_every=4", "train.max_steps=8")
    assert code == 2
    message = one_error_line(capsys)
    assert message.startswith(f"rnnlab: error: {run}/")
    assert "cannot write (no space left on device)" in message
    assert ckpt.load_last(run).trainer_meta["trainer"]["step"] == 4
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no torn scratch dirs

    monkeypatch.undo()  # space freed: the run resumes from its last checkpoint
    assert main(["train", "--resume", str(run), "--set", "train.max_steps=8"]) == 0
    assert ckpt.load_last(run).trainer_meta["trainer"]["step"] == 8


REAL_SAVE_FILE = ckpt.save_file


def test_metrics_log_on_a_full_disk(reverse_corpus, tmp_path: Path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setattr(atomic, "os", faulty_os(fail_on_call=3))
    code = train(reverse_corpus, run, "train.log_every=1", "train.max_steps=5")
    assert code == 2
    message = one_error_line(capsys)
    assert message.startswith(f"rnnlab: error: {run / 'metrics.jsonl'}: cannot write (no space")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]  # the half-written third line was cut back
