"""One writer per run directory: a live holder is refused by pid, a dead one's lock is taken over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnnlab.training.run_lock import LOCK_FILE, RunLock, RunLocked

REPO = Path(__file__).resolve().parents[2]


def hold_lock_in_child(run: Path) -> subprocess.Popen[str]:
    """Another process that holds the lock until its stdin closes, then releases it."""
    code = (
        "import sys; from rnnlab.training.run_lock import RunLock; "
        f"lock = RunLock.acquire({str(run)!r}); print('held', flush=True); sys.stdin.read(); lock.release()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_lock_names_the_live_holder(tmp_path: Path):
    holder = hold_lock_in_child(tmp_path)
    try:
        with pytest.raises(RunLocked, match=rf"pid {holder.pid}\b"):
            RunLock.acquire(tmp_path)
    finally:
        holder.communicate("")
    # Released by the holder's exit: free again, and nothing stale to report.
    with RunLock.acquire(tmp_path) as lock:
        assert lock.notice is None
        assert (tmp_path / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / LOCK_FILE).exists()


def test_lock_of_a_killed_holder_is_taken_over_with_a_notice(tmp_path: Path):
    holder = hold_lock_in_child(tmp_path)
    holder.kill()  # no chance to clean up: the lock file stays behind
    holder.wait()
    assert (tmp_path / LOCK_FILE).exists()
    with RunLock.acquire(tmp_path) as lock:
        assert lock.notice is not None and f"process {holder.pid}" in lock.notice
        assert "\n" not in lock.notice


def test_stale_lock_file_with_dead_pid(tmp_path: Path):
    pid = dead_pid()
    (tmp_path / LOCK_FILE).write_text(f"{pid} somehost\n")
    lock = RunLock.acquire(tmp_path)
    assert lock.notice is not None and str(pid) in lock.notice
    lock.release()
    lock.release()  # idempotent


UNIX_ONLY = {"fcntl", "resource", "termios", "pwd", "grp"}


def test_no_module_of_rnnlab_imports_a_unix_only_module_when_imported():
    """Windows lacks these modules: an import at a module's top would stop ``import rnnlab``."""
    import ast

    found = []
    for path in sorted((REPO / "src" / "rnnlab").rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            found += [f"{path.relative_to(REPO)}: {n}" for n in names if n in UNIX_ONLY]
    assert found == []


def test_without_posix_locks_training_says_why_in_one_line(tmp_path: Path, monkeypatch):
    from rnnlab.errors import RnnlabError

    monkeypatch.setitem(sys.modules, "fcntl", None)  # what ``import fcntl`` finds on Windows
    with pytest.raises(RnnlabError, match="needs POSIX file locks.*WSL"):
        RunLock.acquire(tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()
