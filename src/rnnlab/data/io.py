"""Reading text files line by line, with errors that point at the file and line.

``.gz`` files are read transparently. Bytes that are not UTF-8 are reported with their line number
instead of a ``UnicodeDecodeError`` traceback from somewhere inside a reader.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

from rnnlab.errors import DataError


def _open_bytes(path: Path):
    if path.suffix.lower() == ".gz":  # DATA.TXT.GZ from a case-insensitive filesystem too
        return gzip.open(path, "rb")
    return path.open("rb")


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line, without the trailing newline.

    Raises ``DataError`` for a missing file, a directory, a broken gzip stream or non-UTF-8 bytes.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    if path.is_dir():
        raise DataError(path, "is a directory, expected a text file")
    try:
        with _open_bytes(path) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        path, f"not UTF-8 text (byte {exc.start + 1}: {exc.reason})", number
                    ) from None
                if number == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                yield number, text.rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(path, f"cannot read ({exc})") from None


def resolve_existing(path: str | Path) -> Path | None:
    """``path`` itself or ``path + '.gz'``, whichever exists first; None if neither."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None
