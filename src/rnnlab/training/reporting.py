"""How the trainer tells the outside world what it is doing, without printing itself.

The library calls a ``Reporter``; the CLI decides whether that means a tqdm bar on a terminal or plain
log lines in a CI log.
"""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...

    def set_postfix_str(self, text: str) -> None: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    def record(self, record: dict[str, Any]) -> None:
        """A training or validation record (also written to metrics.jsonl)."""

    def message(self, text: str) -> None:
        """A human-readable line (model summary, checkpoint saved, early stop)."""

    def progress(self, total: int, desc: str, initial: int = 0) -> Progress:
        """A progress bar over ``total`` items."""


class _NullProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class SilentReporter:
    """The library default: reports nothing."""

    def record(self, record: dict[str, Any]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def progress(self, total: int, desc: str, initial: int = 0) -> Progress:
        return _NullProgress()
