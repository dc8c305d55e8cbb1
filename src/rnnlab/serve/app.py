"""The HTTP API and web page of ``rnnlab serve`` (FastAPI), over the inference API.

Handlers only parse, check and shape JSON; decoding happens in each model's ``BatchQueue``. Every
refusal is ``{"error": "<one line>"}`` with its status code (see ``rnnlab.serve.requests``), and a
refused request touches nothing shared, so it cannot affect other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rnnlab.errors import RnnlabError
from rnnlab.inference import LanguageModel, Tagger, Translation, Translator
from rnnlab.serve.batching import QueueFull
from rnnlab.serve.errors import ApiError
from rnnlab.serve.metrics import ServeMetrics
from rnnlab.serve.models import ModelRegistry, ServedModel
from rnnlab.serve.requests import parse_generate, parse_json, parse_tag, parse_translate
from rnnlab.serve.settings import ServeSettings

STATIC = resources.files("rnnlab.serve") / "static"
RETRY_AFTER_S = 1
CLIENT_CLOSED = 499
READ_METHODS = ["GET", "HEAD"]
"""Load balancers probe with HEAD, which HTTP servers must answer as GET without the body
(uvicorn leaves the body out)."""


STATIC_PREFIX = "/static"


def _is_static(scope: Scope) -> bool:
    return str(scope.get("path", "")).startswith(STATIC_PREFIX + "/")


class _RequestMetrics:
    """ASGI middleware: count every response by route template and status, and time it."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None)
            if endpoint is None:  # mounted files have no route of their own
                endpoint = STATIC_PREFIX if _is_static(scope) else "unmatched"
            self.metrics.observe_request(endpoint, status, time.perf_counter() - start)


def _routed(app: FastAPI, request: Request, path: str) -> bool:
    """Whether some route of ``app`` serves ``path`` (for any method)."""
    scope = {**request.scope, "path": path}
    return any(route.matches(scope)[0] != Match.NONE for route in app.router.routes)


def _error(
    status: int,
    message: str,
    retry_after: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body of {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"body over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; nginx's 499 keeps this apart from the server's own errors.
        raise ApiError(CLIENT_CLOSED, "the client closed the connection mid-request") from None
    return b"".join(chunks)


async def _client_left(request: Request) -> None:
    """Return once the client has closed the connection (its body already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def translation_json(translation: Translation, n_best: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "text": translation.text,
        "tokens": translation.tokens,
        "score": translation.score,
    }
    if n_best > 1:
        out["n_best"] = [{"text": text, "score": score} for text, score in translation.n_best]
    if translation.attention is not None:
        matrix = translation.attention
        out["attention"] = {
            "src_tokens": matrix.src_tokens,
            "out_tokens": matrix.out_tokens,
            "weights": [[round(w, 6) for w in row] for row in matrix.weights.tolist()],
        }
    return out


def create_app(
    registry: ModelRegistry,
    settings: ServeSettings,
    metrics: ServeMetrics,
    *,
    on_load_failure: Callable[[str], None] = lambda message: None,
) -> FastAPI:
    """The application; models load in the background once it starts (``/readyz`` says when)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def load() -> None:
            try:
                await asyncio.to_thread(registry.load_all)
            except Exception:
                on_load_failure(registry.failure or "a model failed to load")
                return
            registry.start_queues()

        loading = asyncio.get_running_loop().create_task(load())
        yield
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
        await registry.stop_queues()

    # No redirect for a path with a trailing slash: Starlette's would send clients to an absolute
    # URL built from the request's Host header; a 404 naming the path without it says as much.
    app = FastAPI(
        title="rnnlab", lifespan=lifespan, docs_url=None, redoc_url=None, redirect_slashes=False
    )
    app.add_middleware(_RequestMetrics, metrics=metrics)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.retry_after)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        path = request.url.path
        if (
            exc.status_code == 404
            and path.endswith("/")
            and _routed(app, request, path.rstrip("/"))
        ):
            message = f"no endpoint {path}; without the final slash: {path.rstrip('/')}"
        return _error(exc.status_code, message, headers=exc.headers)  # 405 keeps Allow

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}")

    def served(name: str, kind: type, endpoint: str) -> ServedModel:
        entry = registry.models.get(name)
        if entry is None:
            raise ApiError(404, f"no model named {name!r}; GET /v1/models lists them")
        if entry.model is None or entry.queue is None:
            raise ApiError(503, f"model {name!r} is still loading", retry_after=RETRY_AFTER_S)
        if not isinstance(entry.model, kind):
            raise ApiError(
                404, f"model {name!r} (task {entry.model.task_name}) has no /{endpoint} endpoint"
            )
        return entry

    async def run(
        entry: ServedModel, key: Any, payloads: list[Any], request: Request, *, alone: bool = False
    ) -> list[Any]:
        """The results of ``payloads``, decoded by the model's queue; a client that leaves before
        they are ready withdraws its sentences (they are not decoded if still queued) and is
        counted as 499."""
        queue = entry.queue
        assert queue is not None
        if len(payloads) > queue.max_queue:  # no wait would make room: not worth a retry
            raise ApiError(
                413,
                f"{len(payloads)} sentences in one request; model {entry.name!r} queues at most "
                f"{queue.max_queue}",
            )
        submission = asyncio.ensure_future(queue.submit(key, payloads, alone=alone))
        departure = asyncio.ensure_future(_client_left(request))
        try:
            await asyncio.wait({submission, departure}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server is stopping: withdraw the sentences too
            submission.cancel()
            raise
        finally:
            departure.cancel()
        if not submission.done():
            submission.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await submission
            raise ApiError(CLIENT_CLOSED, "the client closed the connection before the answer")
        try:
            return submission.result()
        except QueueFull:
            raise ApiError(
                503, f"model {entry.name!r} is busy; retry shortly", retry_after=RETRY_AFTER_S
            ) from None
        except RnnlabError as exc:
            raise ApiError(422, str(exc)) from None

    async def body_of(request: Request) -> dict[str, Any]:
        return parse_json(await read_body(request, settings.max_request_bytes))

    @app.api_route("/healthz", methods=READ_METHODS)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/readyz", methods=READ_METHODS)
    async def readyz() -> JSONResponse:
        if registry.ready and all(m.queue is not None for m in registry.models.values()):
            return JSONResponse({"status": "ready"})
        if registry.failure:
            return _error(503, registry.failure)
        return _error(503, "models are loading", retry_after=RETRY_AFTER_S)

    @app.api_route("/v1/models", methods=READ_METHODS)
    async def list_models() -> dict[str, Any]:
        models = []
        for entry in registry.models.values():
            info: dict[str, Any] = {"name": entry.name, "ready": entry.queue is not None}
            if entry.model is not None:
                info.update(entry.model.describe())
            models.append(info)
        return {"models": models}

    @app.post("/v1/models/{name}/translate")
    async def translate(name: str, request: Request) -> JSONResponse:
        entry = served(name, Translator, "translate")
        parsed = parse_translate(await body_of(request), settings)
        results = await run(entry, parsed.decode, parsed.text, request)
        n_best = parsed.decode.n_best
        return JSONResponse({"translations": [translation_json(t, n_best) for t in results]})

    @app.post("/v1/models/{name}/tag")
    async def tag(name: str, request: Request) -> JSONResponse:
        entry = served(name, Tagger, "tag")
        parsed = parse_tag(await body_of(request), settings)
        results = await run(entry, ("tag",), parsed.tokens, request)
        return JSONResponse({"sentences": [{"tokens": s.tokens, "tags": s.tags} for s in results]})

    @app.post("/v1/models/{name}/generate")
    async def generate(name: str, request: Request) -> JSONResponse:
        entry = served(name, LanguageModel, "generate")
        parsed = parse_generate(await body_of(request), settings)
        [text] = await run(entry, entry.generation_key(), [parsed], request, alone=True)
        return JSONResponse({"text": text})

    @app.api_route("/metrics", methods=READ_METHODS)
    async def prometheus() -> Response:
        for entry in registry.models.values():
            if entry.queue is not None:
                metrics.queue_depth.labels(entry.name).set(entry.queue.depth)
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.api_route("/", methods=READ_METHODS)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount(STATIC_PREFIX, StaticFiles(directory=str(STATIC)), name="static")
    return app


__all__ = ["create_app", "read_body", "translation_json"]
