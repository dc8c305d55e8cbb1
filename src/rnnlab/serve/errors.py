"""An error a client caused, answered as ``{"error": "<one line>"}`` with an HTTP status."""

from __future__ import annotations


class ApiError(Exception):
    """A refused request: ``status`` is the HTTP status, the message is one line for the client."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
