"""The server's limits and batching settings, one field per ``rnnlab serve`` option."""

from __future__ import annotations

from dataclasses import dataclass

MAX_WAIT_MS = 60_000.0
"""A batch never waits longer than a minute for company: beyond that a client has long given up."""


@dataclass(frozen=True)
class ServeSettings:
    max_batch_sentences: int = 64
    """Sentences of concurrent requests decoded together (1 = no batching across requests)."""
    max_wait_ms: float = 5.0
    """How long the first sentence of a batch waits for others to join it."""
    max_request_bytes: int = 1_048_576
    """Larger request bodies are refused with 413 before they are parsed."""
    max_sentences: int = 256
    """More sentences in one request is a 413."""
    max_chars: int = 1000
    """A longer sentence or prefix (and a longer generation) is a 422."""
    max_queue: int = 1024
    """Sentences waiting per model; beyond this a request gets 503 with ``Retry-After``."""

    def __post_init__(self) -> None:
        for name in ("max_batch_sentences", "max_request_bytes", "max_sentences", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be 1 or more, got {getattr(self, name)}")
        # not (x >= 0) also refuses nan; an endless wait would leave a lone request unanswered.
        if not 0 <= self.max_wait_ms <= MAX_WAIT_MS:
            raise ValueError(f"max_wait_ms must be between 0 and {MAX_WAIT_MS:g}")
        if self.max_queue < 0:
            raise ValueError("max_queue must be 0 or more")
