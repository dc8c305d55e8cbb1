"""``rnnlab serve`` as a real process on a free loopback port, talked to by a real HTTP client."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


class ServerProcess:
    """``python -m rnnlab serve ARGS --port 0``; the port is read from its first stderr line."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rnnlab", "serve", *args, "--port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
            env=env,
        )
        self.url = self._wait_for_url()

    def _wait_for_url(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"on (http://\S+)", self.log.read_text())
            if match:
                return match.group(1)
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early: {self.log.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"server did not start: {self.log.read_text()}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if httpx.get(f"{self.url}/readyz").status_code == 200:
                return
            time.sleep(0.05)
        raise AssertionError(f"server not ready: {self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory):
    """Start servers with given arguments; every one still running is stopped at the end."""
    started: list[ServerProcess] = []

    def start(*args: str, ready: bool = True) -> ServerProcess:
        log = tmp_path_factory.mktemp("server") / "stderr.log"
        server = ServerProcess([*args, "--threads", "1"], log)
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="session")
def server(start_server, translator_run, tagger_run, lm_run) -> ServerProcess:
    """One server with all three tasks and small limits, shared by the API tests."""
    return start_server(
        f"reverse={translator_run}",
        f"pos={tagger_run}",
        f"tm={lm_run}",
        "--max-sentences", "8",
        "--max-chars", "60",
        "--max-request-bytes", "2048",
        "--max-queue", "6",
        "--max-wait-ms", "20",
    )  # fmt: skip
