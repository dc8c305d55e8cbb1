"""``rnnlab.serve.app`` and ``rnnlab.serve.server`` against real HTTP on loopback.

Hunts for requests that break the server's contract: every refusal is ``{"error": "<one line>"}``
with the 4xx status the README's serving section gives (400 not JSON, 404 unknown model, 405 wrong
method, 413 body over the limit, 422 out of range, 503 with ``Retry-After`` when the queue is full),
never a 500 or a hang. The references are independent of the server: the README's status rules,
RFC 9110 for methods and headers (405 carries ``Allow``, HEAD is GET without content,
``Retry-After`` is a number of seconds), ``urllib.parse.unquote`` for what a percent-encoded model
name means, ``str.split`` for how tag text becomes words, and the library's own ``translate`` for
what an answer should be. The client is httpx, or a raw socket where a client must misbehave.

Most tests share the session's server from ``conftest.py`` (limits: 8 sentences, 60 characters,
2048 bytes, a queue of 6). The queue-full test runs its own server in this process, with a
translator that blocks until the test lets it go, so the queue fills deterministically.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

import rnnlab
import rnnlab.serve
from rnnlab.errors import RnnlabError
from rnnlab.serve.app import create_app
from rnnlab.serve.metrics import ServeMetrics
from rnnlab.serve.models import ModelRegistry, ModelSpec
from rnnlab.serve.server import _Server, bind
from rnnlab.serve.settings import ServeSettings
from tests.serve.conftest import ServerProcess
from tests.serve.responses import error_of, host_and_port, post_all_at_once

TRANSLATE = "/v1/models/reverse/translate"
TAG = "/v1/models/pos/tag"
GENERATE = "/v1/models/tm/generate"
GET_ENDPOINTS = ["/healthz", "/readyz", "/v1/models", "/metrics"]
POST_ENDPOINTS = [TRANSLATE, TAG, GENERATE]
BODY_LIMIT = 2048  # --max-request-bytes of the shared server in conftest.py


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def raw_exchange(url: str, payload: bytes) -> bytes:
    """Send ``payload`` on a fresh connection and read until the server closes or goes quiet.

    The socket timeout only keeps a hang from hanging the suite; an answer never depends on it.
    """
    received = b""
    with socket.create_connection(host_and_port(url), timeout=10) as raw:
        raw.sendall(payload)
        with contextlib.suppress(TimeoutError):
            while b"\r\n\r\n" not in received or not _complete(received):
                chunk = raw.recv(65536)
                if not chunk:
                    break
                received += chunk
    return received


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return match is not None and len(body) >= int(match.group(1))


def status_of(raw_response: bytes) -> int:
    status_line = raw_response.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), raw_response[:200]
    return int(status_line.split()[1])


# --- Content-Type and bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        # What `curl -d` sends, and the README's examples use `curl -d`.
        "application/x-www-form-urlencoded",
        "text/plain",
    ],
)
def test_a_json_body_is_read_whatever_its_content_type(
    client: httpx.Client, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = client.post(TRANSLATE, content=b'{"text": ["a b"]}', headers=headers)
    assert response.status_code == 200, response.text
    assert [t["text"] for t in response.json()["translations"]] == ["b a"]


def test_a_form_encoded_body_is_not_json(client: httpx.Client) -> None:
    response = client.post(TRANSLATE, data={"text": "a b"})
    assert "not valid JSON" in error_of(response, 400)


def chunks_of(data: bytes, size: int = 512) -> Iterator[bytes]:
    """``data`` as an iterator, which httpx sends chunked, without a Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", POST_ENDPOINTS)
def test_an_empty_body_is_a_400(client: httpx.Client, path: str, chunked: bool) -> None:
    content = chunks_of(b"") if chunked else b""
    assert "not valid JSON" in error_of(client.post(path, content=content), 400)


def padded_body(size: int) -> bytes:
    """A valid translate body of exactly ``size`` bytes (JSON allows trailing whitespace)."""
    body = b'{"text": ["a b"]}'
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_body_limit_is_inclusive(client: httpx.Client, chunked: bool) -> None:
    at_limit = padded_body(BODY_LIMIT)
    over_limit = padded_body(BODY_LIMIT + 1)

    def send(body: bytes) -> httpx.Response:
        return client.post(TRANSLATE, content=chunks_of(body) if chunked else body)

    accepted = send(at_limit)
    assert accepted.status_code == 200, accepted.text
    assert "2048" in error_of(send(over_limit), 413)
    # The refused body does not poison the kept-alive connection for the next request.
    assert send(at_limit).json()["translations"][0]["text"] == "b a"


def test_a_declared_oversized_body_is_refused_before_it_is_sent(server: ServerProcess) -> None:
    # Only the headers go out: the server must answer from Content-Length alone, not wait for a
    # megabyte that never comes (what a client using `Expect: 100-continue` relies on).
    head = (
        f"POST {TRANSLATE} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000000\r\n\r\n"
    ).encode()
    response = raw_exchange(server.url, head)
    assert status_of(response) == 413
    body = json.loads(response.partition(b"\r\n\r\n")[2])
    assert set(body) == {"error"} and "1000000" in body["error"]


def test_a_malformed_content_length_is_a_client_error(server: ServerProcess) -> None:
    # uvicorn's HTTP parser refuses this before the app sees it (its body is plain text, not the
    # app's JSON shape); what matters here is a 400 and no hang.
    body = b'{"text": ["a b"]}'
    head = f"POST {TRANSLATE} HTTP/1.1\r\nHost: test\r\nContent-Length: 1x7\r\n\r\n".encode()
    assert status_of(raw_exchange(server.url, head + body)) == 400


# --- methods -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", POST_ENDPOINTS)
def test_other_methods_on_a_post_endpoint_are_405(
    client: httpx.Client, path: str, method: str
) -> None:
    error_of(client.request(method, path), 405)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
@pytest.mark.parametrize("path", GET_ENDPOINTS)
def test_other_methods_on_a_get_endpoint_are_405(
    client: httpx.Client, path: str, method: str
) -> None:
    error_of(client.request(method, path, content=b"{}"), 405)


@pytest.mark.parametrize("path", POST_ENDPOINTS)
def test_head_on_a_post_endpoint_is_405_without_content(client: httpx.Client, path: str) -> None:
    # RFC 9110 §9.3.2: a response to HEAD carries no content, whatever its status.
    response = client.head(path)
    assert response.status_code == 405 and response.content == b""


@pytest.mark.parametrize(
    "method,path,allowed", [("GET", TRANSLATE, "POST"), ("POST", "/healthz", "GET")]
)
def test_a_405_says_which_methods_are_allowed(
    client: httpx.Client, method: str, path: str, allowed: str
) -> None:
    # RFC 9110 §15.5.6: the origin server MUST generate an Allow header field in a 405 response.
    response = client.request(method, path)
    assert response.status_code == 405
    assert allowed in [m.strip() for m in response.headers.get("allow", "").split(",")]


@pytest.mark.parametrize("path", GET_ENDPOINTS)
def test_head_on_a_get_endpoint_is_get_without_content(client: httpx.Client, path: str) -> None:
    # RFC 9110 §9.1: general-purpose servers MUST support GET and HEAD; §9.3.2: HEAD is GET
    # without the content. Load balancers probe health endpoints with HEAD.
    get = client.get(path)
    head = client.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


# --- model names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoded",
    ["nope", "REVERSE", "%C3%A9", "a%20b", "%0A", "%00", "%22%27%3C", "%FF", "x" * 3000],
    ids=["plain", "other-case", "e-acute", "space", "newline", "nul", "quotes", "bad-utf8", "long"],
)
@pytest.mark.parametrize("action", ["translate", "tag", "generate"])
def test_an_unknown_model_name_is_a_one_line_404(
    client: httpx.Client, action: str, encoded: str
) -> None:
    message = error_of(client.post(f"/v1/models/{encoded}/{action}", json={"text": ["a"]}), 404)
    # The name the server looked up is the percent-decoded one (invalid UTF-8 becomes U+FFFD, as
    # unquote does); it is quoted, so a newline or NUL in it cannot break the one-line message.
    assert repr(urllib.parse.unquote(encoded)) in message


def test_a_name_with_an_encoded_slash_is_a_json_404(client: httpx.Client) -> None:
    # %2F decodes to a path separator, so no route matches; the refusal is still JSON.
    error_of(client.post("/v1/models/rev%2Ferse/translate", json={"text": ["a"]}), 404)


@pytest.mark.parametrize("path", ["/v1/models/", "/v1/models/reverse/translate/"])
def test_a_trailing_slash_is_a_json_404_not_a_redirect_to_the_host_header(
    client: httpx.Client, path: str
) -> None:
    """Starlette would redirect to an absolute URL built from the Host header the client sent."""
    response = client.request(
        "POST" if path.endswith("translate/") else "GET",
        path,
        json={"text": ["a"]},
        headers={"Host": "attacker.example"},
    )
    assert "location" not in response.headers
    message = error_of(response, 404)
    assert path.rstrip("/") in message


@pytest.mark.parametrize("path", ["/nope/", "/static/"])
def test_the_trailing_slash_404_hints_only_at_a_path_that_exists(
    client: httpx.Client, path: str
) -> None:
    message = error_of(client.get(path), 404)
    assert "without the final slash" not in message
    assert client.get(path.rstrip("/")).status_code == 404


def test_the_page_and_its_static_files_are_the_shipped_ones(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    static = Path(rnnlab.serve.__file__).parent / "static"
    for name in ("app.js", "style.css"):
        assert f'"/static/{name}"' in page.text  # the page links it
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.content == (static / name).read_bytes()


def test_percent_encoded_letters_name_the_same_model(client: httpx.Client) -> None:
    # RFC 3986 §6.2.2.2: an encoded unreserved character is the character itself.
    response = client.post("/v1/models/rev%65rse/translate", json={"text": ["a b"]})
    assert response.status_code == 200 and response.json()["translations"][0]["text"] == "b a"


# --- unicode and control characters --------------------------------------------------------------

# Six lines: the shared server queues at most six sentences per model.
ODD_LINES = [
    "a\x00b \x01\x1fc \x7f",  # NUL, controls (str.split splits at \x1f, not \x01), DEL
    "é e\u0301 ß",  # precomposed and combining accents
    "\U0001f600 \u4e2d\u6587",  # astral plane and CJK
    "a\u200bb \ufeff\u0085",  # zero-width space and BOM (words to str.split), NEL (a space)
    "a\u2028b\u00a0c \t ",  # line separator, no-break space, tab (whitespace to str.split)
    " \t ",  # whitespace only
]


def test_translate_answers_every_odd_line(client: httpx.Client) -> None:
    response = client.post(TRANSLATE, json={"text": ODD_LINES, "attention": True})
    assert response.status_code == 200, response.text
    translations = response.json()["translations"]
    assert len(translations) == len(ODD_LINES)
    # A line with no words has nothing to translate.
    assert translations[-1]["text"] == "" and translations[-1]["tokens"] == []


def test_tag_splits_odd_text_like_str_split(client: httpx.Client) -> None:
    response = client.post(TAG, json={"text": ODD_LINES})
    assert response.status_code == 200, response.text
    sentences = response.json()["sentences"]
    assert [s["tokens"] for s in sentences] == [line.split() for line in ODD_LINES]
    assert all(len(s["tags"]) == len(s["tokens"]) for s in sentences)


def test_tag_tokens_keep_control_characters(client: httpx.Client) -> None:
    words = [["a\x00b", "\x01", "\U0001f600"]]
    response = client.post(TAG, json={"tokens": words})
    assert response.status_code == 200, response.text
    assert response.json()["sentences"][0]["tokens"] == words[0]


@pytest.mark.parametrize("prefix", ["the\x00", "\u2028", "\U0001f600"])
def test_generate_refuses_characters_it_never_saw(client: httpx.Client, prefix: str) -> None:
    message = error_of(client.post(GENERATE, json={"prefix": prefix, "length": 3}), 422)
    assert "never seen" in message


def test_generate_refuses_a_lone_surrogate_as_malformed_text(client: httpx.Client) -> None:
    body = json.dumps({"prefix": "\ud800", "length": 3}).encode()  # written as the escape \ud800
    message = error_of(client.post(GENERATE, content=body), 400)
    assert message == "prefix is not valid Unicode (a lone surrogate)"


@pytest.mark.parametrize(
    "body", [{"text": ["\ud800 a"]}, {"tokens": [["\udfff"]]}], ids=["text", "tokens"]
)
def test_a_lone_surrogate_is_not_a_server_error(client: httpx.Client, body: dict[str, Any]) -> None:
    # json.dumps writes the surrogate as the escape \ud800: a well-formed JSON text (RFC 8259
    # grammar), so the client deserves a 4xx refusal or an answer, not a 500.
    response = client.post(TAG, content=json.dumps(body).encode())
    assert response.status_code == 400, response.text
    assert "is not valid Unicode (a lone surrogate)" in response.json()["error"]


# --- numbers the parser accepts but the model cannot use -----------------------------------------


@pytest.mark.parametrize("temperature", [1e-300, 5e-324])
def test_a_tiny_positive_temperature_is_not_a_server_error(
    client: httpx.Client, temperature: float
) -> None:
    body = {"prefix": "t", "length": 5, "temperature": temperature, "seed": 1}
    response = client.post(GENERATE, json=body)
    assert response.status_code in (200, 422), response.text


@pytest.mark.parametrize("beam,length_penalty", [(1, 1e308), (3, 1000)])
def test_a_large_length_penalty_is_not_a_server_error(
    client: httpx.Client, beam: int, length_penalty: float
) -> None:
    body = {"text": ["a b c"], "beam": beam, "length_penalty": length_penalty}
    response = client.post(TRANSLATE, json=body)
    assert response.status_code in (200, 422), response.text


# --- many clients, and clients that go away ------------------------------------------------------


def test_many_small_concurrent_requests_all_get_an_answer(server: ServerProcess) -> None:
    # The shared server queues at most 6 sentences per model: concurrent requests beyond that are
    # refused with 503 and Retry-After, and every other one gets its own right answer.
    bodies = [(TRANSLATE, {"text": ["a b c"]}), (TAG, {"tokens": [["The", "dog"]]})] * 24
    responses = post_all_at_once(server.url, bodies, timeout=60)
    for (path, _), response in zip(bodies, responses, strict=True):
        if response.status_code == 503:
            assert "busy" in error_of(response, 503)
            assert response.headers["retry-after"].isdigit()  # RFC 9110 §10.2.3: delay-seconds
        elif path == TRANSLATE:
            assert response.status_code == 200, response.text
            assert response.json()["translations"][0]["text"] == "c b a"
        else:
            assert response.status_code == 200, response.text
            assert response.json()["sentences"][0]["tokens"] == ["The", "dog"]


def test_clients_that_go_away_leave_the_server_answering(server: ServerProcess) -> None:
    body = json.dumps({"text": ["a b c"]}).encode()
    head = f"POST {TRANSLATE} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    payloads = [
        (head + "Content-Length: 500\r\n\r\n").encode(),  # headers, then gone
        (head + "Content-Length: 500\r\n\r\n").encode() + body[:5],  # part of the body
        (head + "Transfer-Encoding: chunked\r\n\r\n5\r\n").encode() + body[:5] + b"\r\n",
        (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body,  # gone before the answer
        f"POST {TRANSLATE} HTTP/1.1\r\nHost: te".encode(),  # half the headers
    ]
    for payload in payloads * 3:
        with socket.create_connection(host_and_port(server.url)) as raw:
            raw.sendall(payload)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post(TRANSLATE, json={"text": ["a b c", "h g"]})
        assert [t["text"] for t in response.json()["translations"]] == ["c b a", "g h"]
        assert client.get("/healthz").json() == {"status": "ok"}


# --- a full queue, made deterministic with a translator that waits for the test ----------------


@dataclass
class GatedServer:
    """A server in this process whose translator blocks each batch until ``release`` is set."""

    url: str
    entered: threading.Event
    release: threading.Event
    max_queue: int


@contextlib.contextmanager
def running(app_server: uvicorn.Server, sock: socket.socket) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=app_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        app_server.should_exit = True
        thread.join(30)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition``; the deadline only keeps a broken server from hanging the suite."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


def is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz").status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def gated_server(translator_run: Path) -> Iterator[GatedServer]:
    translator = rnnlab.load(translator_run, device="cpu")
    entered, release = threading.Event(), threading.Event()
    translate = translator.translate

    def gated_translate(lines: list[str], **options: Any) -> Any:
        entered.set()
        release.wait(60)
        return translate(lines, **options)

    translator.translate = gated_translate  # type: ignore[method-assign]
    # No batching wait: the first request's batch starts (and blocks) as soon as it arrives.
    settings, metrics = ServeSettings(max_wait_ms=0, max_queue=3), ServeMetrics()
    registry = ModelRegistry(
        [ModelSpec("reverse", translator_run)],
        settings=settings,
        metrics=metrics,
        loader=lambda path: translator,
    )
    sock = bind("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        create_app(registry, settings, metrics), log_level="warning", lifespan="on"
    )
    with running(_Server(config), sock):
        url = f"http://{host}:{port}"
        wait_until(lambda: is_ready(url), "the gated server is ready")
        yield GatedServer(url, entered, release, settings.max_queue)
        release.set()


def queue_depth(url: str, model: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == "rnnlab_queue_depth" and sample.labels == {"model": model}:
                return sample.value
    raise AssertionError(f"no rnnlab_queue_depth sample for {model}")


def test_a_full_queue_is_a_503_with_retry_after_and_then_drains(gated_server: GatedServer) -> None:
    url = f"{gated_server.url}{TRANSLATE}"
    answers: dict[str, httpx.Response] = {}

    def post_in_background(name: str, lines: list[str]) -> threading.Thread:
        def post() -> None:
            answers[name] = httpx.post(url, json={"text": lines}, timeout=60)

        thread = threading.Thread(target=post)
        thread.start()
        return thread

    # One request decodes (and blocks); a second fills the queue to exactly its limit.
    decoding = post_in_background("decoding", ["a b"])
    wait_until(gated_server.entered.is_set, "the first batch reaches the model")
    waiting = post_in_background("waiting", ["a b c", "d e", "h"][: gated_server.max_queue])
    wait_until(
        lambda: queue_depth(gated_server.url, "reverse") == gated_server.max_queue,
        "the queue is full",
    )
    refused = httpx.post(url, json={"text": ["f g"]}, timeout=60)
    assert "busy" in error_of(refused, 503)
    assert refused.headers["retry-after"].isdigit()  # RFC 9110 §10.2.3: delay-seconds
    # The server still answers what does not need the queue.
    assert httpx.get(f"{gated_server.url}/healthz").json() == {"status": "ok"}

    gated_server.release.set()
    decoding.join(60)
    waiting.join(60)
    assert answers["decoding"].json()["translations"][0]["text"] == "b a"
    assert [t["text"] for t in answers["waiting"].json()["translations"]] == ["c b a", "e d", "h"]
    # Retried once the queue drained, the refused request is answered.
    retried = httpx.post(url, json={"text": ["f g"]}, timeout=60)
    assert retried.status_code == 200 and retried.json()["translations"][0]["text"] == "g f"
    assert queue_depth(gated_server.url, "reverse") == 0


# --- server.py: the listening socket and signals -------------------------------------------------


def test_bind_listens_on_the_address_it_was_given() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        host, port = sock.getsockname()[:2]
        assert host == "127.0.0.1" and port > 0
        # Inheritable so that uvicorn's worker processes could share it.
        assert sock.get_inheritable()
        with socket.create_connection((host, port), timeout=10):
            pass  # listening: the kernel accepts the connection into the backlog
    finally:
        sock.close()


def test_bind_to_a_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RnnlabError) as caught:
            bind("127.0.0.1", port)
    message = str(caught.value)
    assert message.startswith(f"cannot listen on 127.0.0.1:{port}: ") and "\n" not in message


def test_bind_to_an_unknown_host_is_a_one_line_error() -> None:
    # .invalid is reserved never to resolve (RFC 2606 §2).
    with pytest.raises(RnnlabError) as caught:
        bind("no-such-host.invalid", 0)
    message = str(caught.value)
    assert message.startswith("cannot listen on no-such-host.invalid:0: ") and "\n" not in message


@pytest.mark.parametrize("port", [65536, 65536 + 65535])
def test_bind_refuses_a_port_outside_0_to_65535(port: int) -> None:
    sock: socket.socket | None = None
    try:
        with pytest.raises(RnnlabError):
            sock = bind("127.0.0.1", port)
    finally:
        if sock is not None:
            sock.close()


def test_signals_are_captured_only_while_serving_in_the_main_thread() -> None:
    server = _Server(uvicorn.Config(lambda scope, receive, send: None))
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with server.capture_signals():
        for sig in before:
            assert signal.getsignal(sig) == server.handle_exit
    assert {sig: signal.getsignal(sig) for sig in before} == before

    # In another thread (a server run by a test) the main thread's handlers stay as they were.
    seen: dict[int, Any] = {}

    def in_thread() -> None:
        with server.capture_signals():
            seen.update({sig: signal.getsignal(sig) for sig in before})

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(10)
    assert seen == before
