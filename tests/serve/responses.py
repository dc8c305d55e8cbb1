"""Helpers of the HTTP tests: what every refusal must look like, and where a server listens."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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


def post_all_at_once(
    url: str, requests: list[tuple[str, dict[str, Any]]], *, timeout: float
) -> list[httpx.Response]:
    """POST every (path, JSON body) from its own thread and connection, released together by a
    barrier so that they reach the server's queue concurrently; responses in request order."""
    barrier = threading.Barrier(len(requests))

    def send(path_and_body: tuple[str, dict[str, Any]]) -> httpx.Response:
        path, body = path_and_body
        with httpx.Client(base_url=url, timeout=timeout) as client:
            barrier.wait()
            return client.post(path, json=body)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))
