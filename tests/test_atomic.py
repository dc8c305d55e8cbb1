"""A full disk while writing leaves the previous file or directory and is one line naming the path.

ENOSPC is real where it can be: ``/dev/full`` fails every write with it. Where a write cannot be
pointed there (the middle of an append), a faulty ``os.write`` simulates it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from rnnlab import atomic
from rnnlab.atomic import WriteFailed, append_text, atomic_write_text, building_dir

needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")


def faulty_os(fail_on_call: int) -> SimpleNamespace:
    """``os`` whose ``fail_on_call``-th ``write`` writes half of its bytes, then fails with ENOSPC."""
    calls = {"write": 0}

    def write(fd: int, data) -> int:
        calls["write"] += 1
        if calls["write"] >= fail_on_call:
            os.write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)

    names = {name: getattr(os, name) for name in dir(os) if not name.startswith("__")}
    return SimpleNamespace(**{**names, "write": write})


def assert_disk_full(exc: pytest.ExceptionInfo[WriteFailed], path: Path) -> None:
    message = str(exc.value)
    assert message.startswith(f"{path}: cannot write (no space left on device)")
    assert "\n" not in message


@needs_dev_full
def test_atomic_write_keeps_the_old_file_on_a_full_disk(tmp_path: Path, monkeypatch):
    target = tmp_path / "vocab.json"
    target.write_text("old", encoding="utf-8")
    scratch = tmp_path / ".vocab.json.tmp"
    scratch.symlink_to("/dev/full")  # the new version lands on a full disk
    monkeypatch.setattr(atomic, "temporary_name", lambda path: scratch)
    with pytest.raises(WriteFailed) as exc:
        atomic_write_text(target, "new " * 10_000)
    assert_disk_full(exc, target)
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.json"]


@needs_dev_full
def test_append_to_a_full_disk_names_the_file(tmp_path: Path):
    log = tmp_path / "metrics.jsonl"
    log.symlink_to("/dev/full")
    with pytest.raises(WriteFailed) as exc:
        append_text(log, '{"step": 1}\n')
    assert_disk_full(exc, log)


def test_append_failing_half_way_leaves_no_partial_line(tmp_path: Path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    append_text(log, '{"step": 1}\n')
    monkeypatch.setattr(atomic, "os", faulty_os(fail_on_call=1))
    with pytest.raises(WriteFailed) as exc:
        append_text(log, '{"step": 2, "train_loss": 1.5}\n')
    assert_disk_full(exc, log)
    assert log.read_text() == '{"step": 1}\n'


def test_building_dir_keeps_the_previous_directory(tmp_path: Path):
    target = tmp_path / "export"
    with building_dir(target) as build:
        (build / "a.txt").write_text("first")
    with pytest.raises(WriteFailed) as exc, building_dir(target) as build:
        (build / "a.txt").write_text("second, half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert_disk_full(exc, target)
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
