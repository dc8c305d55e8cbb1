"""Starting and stopping: one-line startup errors, readiness while loading, graceful shutdown."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

import rnnlab
from rnnlab.cli import main
from rnnlab.errors import RnnlabError
from rnnlab.serve.app import create_app
from rnnlab.serve.metrics import ServeMetrics
from rnnlab.serve.models import ModelRegistry, ModelSpec
from rnnlab.serve.server import bind, serve
from rnnlab.serve.settings import ServeSettings


def rnnlab_serve(capsys, *args: str) -> tuple[int, str]:
    """``rnnlab serve`` in this process: these errors come before any server starts."""
    code = main(["serve", *args])
    return code, capsys.readouterr().err


def test_a_path_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    code, err = rnnlab_serve(capsys, str(tmp_path / "missing"), "--port", "0")
    assert (code, err) == (2, f"rnnlab: error: {tmp_path / 'missing'}: no such run directory\n")


def test_a_port_in_use_is_a_one_line_error(translator_run, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = rnnlab_serve(capsys, str(translator_run), "--port", str(port))
    assert code == 2
    assert err == f"rnnlab: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_duplicate_names_and_bad_limits_are_one_line_errors(translator_run, capsys):
    code, err = rnnlab_serve(capsys, f"a={translator_run}", f"a={translator_run}")
    assert code == 2 and "model name 'a' is empty or used twice" in err
    code, err = rnnlab_serve(capsys, str(translator_run), "--max-batch-sentences", "0")
    assert (code, err) == (2, "rnnlab: error: --max-batch-sentences must be 1 or more, got 0\n")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_request_in_flight_and_exits_0(start_server, translator_run, sig):
    # A long batching wait keeps the request in flight when the signal arrives.
    server = start_server(str(translator_run), "--max-wait-ms", "1500")
    answers: list[httpx.Response] = []
    request = threading.Thread(
        target=lambda: answers.append(
            httpx.post(
                f"{server.url}/v1/models/{translator_run.name}/translate",
                json={"text": ["a b c"]},
                timeout=60,
            )
        )
    )
    request.start()
    time.sleep(0.5)
    assert not answers
    assert server.stop(sig) == 0
    request.join(60)
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["translations"][0]["text"] == "c b a"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz")


def _thread_server(registry: ModelRegistry, settings: ServeSettings, metrics: ServeMetrics):
    sock = bind("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        create_app(registry, settings, metrics), log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    return server, thread, f"http://{host}:{port}"


def test_not_ready_until_every_model_is_loaded(translator_run):
    release = threading.Event()

    def slow_loader(path: Path):
        release.wait(30)
        return rnnlab.load(path, device="cpu", threads=1)

    settings, metrics = ServeSettings(), ServeMetrics()
    registry = ModelRegistry(
        [ModelSpec("m", translator_run)], settings=settings, metrics=metrics, loader=slow_loader
    )
    server, thread, url = _thread_server(registry, settings, metrics)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.ConnectError:
                time.sleep(0.05)
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json() == {"error": "models are loading"}
        busy = httpx.post(f"{url}/v1/models/m/translate", json={"text": ["a"]})
        assert busy.status_code == 503 and "still loading" in busy.json()["error"]
        assert httpx.get(f"{url}/v1/models").json() == {"models": [{"name": "m", "ready": False}]}
        release.set()
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
        answer = httpx.post(f"{url}/v1/models/m/translate", json={"text": ["a b"]})
        assert answer.json()["translations"][0]["text"] == "b a"
    finally:
        release.set()
        server.should_exit = True
        thread.join(30)


def test_a_model_that_fails_to_load_stops_the_server_with_its_message(tmp_path):
    def broken_loader(path: Path):
        raise RnnlabError(f"{path}: weights do not fit the configured model")

    result: list[str | None] = []
    thread = threading.Thread(
        target=lambda: result.append(
            serve(
                [ModelSpec("m", tmp_path)],
                bind("127.0.0.1", 0),
                settings=ServeSettings(),
                loader=broken_loader,
                log_level="warning",
            )
        )
    )
    thread.start()
    thread.join(30)
    assert result == [f"{tmp_path}: weights do not fit the configured model"]
