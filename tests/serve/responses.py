"""Helpers of the HTTP tests: what every refusal must look like, and where a server listens."""

from __future__ import annotations

import httpx


def error_of(response: httpx.Response, status: int) -> str:
    """The one-line message of a refusal, after checking its status and JSON shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert body["error"] and len(body["error"].splitlines()) == 1
    return body["error"]


def host_and_port(url: str) -> tuple[str, int]:
    """``http://HOST:PORT`` → (HOST, PORT), for a raw socket to the server."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)
