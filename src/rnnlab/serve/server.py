"""Run the app under uvicorn on a socket bound first, so a busy port is a one-line error.

SIGTERM and SIGINT stop accepting connections, let in-flight requests finish, stop the model
workers and return normally (exit status 0); uvicorn's own handler would re-raise the signal after
the graceful stop, which ends the process with the signal's status instead.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from rnnlab.errors import RnnlabError
from rnnlab.serve.app import create_app
from rnnlab.serve.metrics import ServeMetrics
from rnnlab.serve.models import Loader, ModelRegistry, ModelSpec
from rnnlab.serve.settings import ServeSettings

GRACEFUL_SHUTDOWN_S = 60


HANDLED = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    early_signals: list[int]
    """Signals received after the socket was bound but before uvicorn's handlers were in place:
    replayed to them, so a stop sent right after the startup line is a graceful one too."""
    handlers_after: dict[signal.Signals, Any]
    """The handlers from before the early ones, put back when uvicorn stops: a second SIGTERM
    while shutdown waits (for a model still loading, say) then ends the process as it would."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only (a server run by a test, say)
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED}
        previous.update(getattr(self, "handlers_after", {}))
        for sig in getattr(self, "early_signals", []):
            self.handle_exit(sig, None)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; a port in use (or a bad host) is a one-line user error."""
    if not 0 <= port <= 65535:  # the OS would take it modulo 2^16 and listen somewhere else
        raise RnnlabError(f"--port {port}: a TCP port is between 0 and 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise RnnlabError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    if sys.platform == "win32":
        # On Windows SO_REUSEADDR would let this socket share a port another server listens on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart despite TIME_WAIT
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise RnnlabError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve(
    specs: list[ModelSpec],
    sock: socket.socket,
    *,
    settings: ServeSettings,
    loader: Loader,
    log_level: str = "info",
    announce: Callable[[], None] = lambda: None,
) -> str | None:
    """Serve until a signal; the one-line reason when a model failed to load, else None.

    ``announce`` (the startup line) runs once SIGTERM and SIGINT are caught: a signal from then
    on stops the server gracefully, even before uvicorn has started."""
    early: list[int] = []
    main_thread = threading.current_thread() is threading.main_thread()
    original = (
        {sig: signal.signal(sig, lambda s, _: early.append(s)) for sig in HANDLED}
        if main_thread
        else {}
    )
    try:
        announce()
        return _serve(
            specs,
            sock,
            settings=settings,
            loader=loader,
            log_level=log_level,
            early=early,
            handlers_after=original,
        )
    finally:
        for sig, handler in original.items():
            signal.signal(sig, handler)


def _serve(
    specs: list[ModelSpec],
    sock: socket.socket,
    *,
    settings: ServeSettings,
    loader: Loader,
    log_level: str,
    early: list[int],
    handlers_after: dict[signal.Signals, Any],
) -> str | None:
    metrics = ServeMetrics()
    registry = ModelRegistry(specs, settings=settings, metrics=metrics, loader=loader)
    failures: list[str] = []
    servers: list[_Server] = []

    def stop_on_failure(message: str) -> None:
        failures.append(message)
        for server in servers:
            server.should_exit = True

    config = uvicorn.Config(
        create_app(registry, settings, metrics, on_load_failure=stop_on_failure),
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )
    servers.append(_Server(config))
    servers[0].early_signals = early
    servers[0].handlers_after = handlers_after
    servers[0].run(sockets=[sock])
    return failures[0] if failures else None
