"""A payload for the "never unpickle a file a user hands over" tests: loading it leaves a trace."""

from __future__ import annotations

from pathlib import Path


class CreatesAFileWhenUnpickled:
    """Unpickling this runs ``open(marker, "w")``: the marker shows whether anything unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")
