"""User-facing errors.

Anything a user can cause (a bad file, a wrong config value, a run directory that is not a run) is
raised as ``RnnlabError``. The CLI prints its message on one line and exits with status 2; everything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class RnnlabError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


class DataError(RnnlabError):
    """A problem in a data file, located by path and (when known) 1-based line number."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.detail = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(RnnlabError):
    """A config file or override that does not fit the schema."""
