"""One writer per run directory: ``RUN/.lock`` holds the writing process's pid.

Two trainers writing one run directory (a second ``rnnlab train --out SAME``, a ``--resume`` of a run
that is still training, a job scheduler that restarts a job whose first attempt is alive) would
interleave checkpoints and metrics. The lock is an advisory ``flock`` on ``RUN/.lock``: the kernel
releases it when its holder dies however it dies, so a lock file left by a killed trainer is simply
taken over, while a live holder's pid (written in the file) is named in the refusal.

    RUN/.lock     "<pid> <hostname>\\n"    flock'ed while a trainer writes RUN

A ``flock`` is per machine on most network filesystems; a run directory on a shared filesystem
written from two machines at once is not detected. Windows has no ``flock``: ``fcntl`` is imported
when a lock is taken, so reading and decoding with finished runs works there, and training says
in one line to use WSL.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from rnnlab.errors import RnnlabError

LOCK_FILE = ".lock"


class RunLocked(RnnlabError):
    """Another live process is writing the run directory."""


class RunLock:
    """The exclusive right to write one run directory, held from ``acquire`` to ``release``."""

    def __init__(self, run_dir: Path, fd: int, notice: str | None) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = fd
        self.notice = notice
        """One line to show when a lock left by a dead process was taken over; else None."""

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        """Lock ``run_dir`` (which must exist) or raise ``RunLocked`` naming the holder's pid."""
        try:
            import fcntl
        except ImportError:
            raise RnnlabError(
                "training needs POSIX file locks, which this system lacks; on Windows run rnnlab "
                "under WSL (Windows Subsystem for Linux)"
            ) from None
        run_dir = Path(run_dir)
        path = run_dir / LOCK_FILE
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RnnlabError(f"{path}: cannot create the run lock ({exc.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunLocked(
                    f"{run_dir}: another trainer is writing this run directory "
                    f"(pid {holder or 'unknown'}, lock {path}); wait for it or stop it"
                ) from None
            # A holder that released between our open and our flock may have unlinked the file;
            # a lock on an unlinked file protects nothing, so start again on the current one.
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_holder(fd)
        notice = (
            f"{path}: taking over the lock of process {previous}, which is no longer running"
            if previous
            else None
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        return cls(run_dir, fd, notice)

    def release(self) -> None:
        """Remove the lock file and let go (idempotent)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """The pid recorded in a lock file ("" when empty or unreadable)."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", errors="replace").split()
    except OSError:
        return ""
    return text[0] if text else ""


__all__ = ["LOCK_FILE", "RunLock", "RunLocked"]
