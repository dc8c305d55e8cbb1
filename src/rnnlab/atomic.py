"""Writing files so that a full disk or a kill never leaves a torn one.

A long run meets two faults while writing: the process is killed, or the disk fills up (ENOSPC,
EDQUOT). Either must leave the previous version of a checkpoint, a metrics log or an export intact.
Whole files and directories are therefore written under a temporary name and renamed into place
(a rename within one filesystem is atomic and needs no new space); an append that fails is cut back
to where it started. A failed write is a ``WriteFailed``: one line naming the path, no traceback.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from rnnlab.errors import RnnlabError


class WriteFailed(RnnlabError):
    """A file or directory could not be written (disk full, quota, permissions)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: cannot write ({reason}); the previous version is kept")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def reported_as(path: str | Path, *errors: type[BaseException]) -> Iterator[None]:
    """Turn an ``OSError`` (and any of ``errors``) raised inside into ``WriteFailed(path)``."""
    caught: tuple[type[BaseException], ...] = (OSError, *errors)
    try:
        yield
    except RnnlabError:
        raise
    except caught as exc:
        raise WriteFailed(path, _reason(exc)) from None


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """``.NAME.PID.RANDOM.tmp`` beside ``path``: this writer's own scratch file."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step; on failure the old file is untouched.

    The temporary file's name is this writer's own (process and a random part), so two processes
    replacing the same file never write into, or rename away, each other's.
    """
    path = Path(path)
    temp = temporary_name(path)
    try:
        with reported_as(path):
            with temp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one step; on failure the old file is untouched."""
    atomic_write_bytes(path, text.encode("utf-8"))


def append_text(path: str | Path, text: str) -> None:
    """Append ``text``; a write that fails half-way is cut back so no partial line remains."""
    path = Path(path)
    data = memoryview(text.encode("utf-8"))
    with reported_as(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                while data:
                    data = data[os.write(fd, data) :]
            except OSError:
                with suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)


def fresh_build_dir(target: Path) -> Path:
    """An empty ``.NAME.tmp`` beside ``target``, in which a replacement is assembled."""
    build = target.with_name(f".{target.name}.tmp")
    with reported_as(build):
        if build.exists():
            shutil.rmtree(build)
        build.mkdir(parents=True)
    return build


def atomic_replace_dir(build: Path, target: Path) -> None:
    """Move the finished directory ``build`` to ``target``, replacing it without a torn state.

    Between the two renames only ``.NAME.old`` exists; readers fall back to it. A ``.NAME.old``
    left alone by an earlier kill there is the only copy, so it goes only once ``target`` exists.
    """
    fsync_dir(build)
    old = target.with_name(f".{target.name}.old")
    with reported_as(target):
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(build, target)
    fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def building_dir(target: Path, *errors: type[BaseException]) -> Iterator[Path]:
    """Assemble a replacement for ``target`` in a scratch directory, then swap it in.

    Any failure inside (``OSError`` or one of ``errors``) removes the scratch directory and is raised
    as ``WriteFailed(target)``; ``target`` keeps its previous contents.
    """
    build = fresh_build_dir(target)
    try:
        with reported_as(target, *errors):
            yield build
        atomic_replace_dir(build, target)
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)


__all__ = [
    "WriteFailed",
    "append_text",
    "atomic_replace_dir",
    "atomic_write_text",
    "building_dir",
    "fresh_build_dir",
    "fsync_dir",
    "reported_as",
]
