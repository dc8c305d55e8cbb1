"""The internals of ``rnnlab serve``: the batch queue, the metrics, the CLI flags, the registry's
readiness and the server's shutdown.

References are independent of the code under test: ``rnnlab.load(run)`` (translate, tag, generate)
for every answer, ``prometheus_client``'s own text parser for ``/metrics``, a real HTTP client (or a
raw socket) against a real server on loopback, the README's serving section and RFC 3986 for URLs.
``BatchQueue`` is also driven directly with a fake model whose batches the test records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

import rnnlab
from rnnlab.cli import main
from rnnlab.serve.app import create_app
from rnnlab.serve.batching import BatchQueue, QueueFull
from rnnlab.serve.metrics import ServeMetrics
from rnnlab.serve.models import ModelRegistry, ModelSpec
from rnnlab.serve.server import bind
from rnnlab.serve.settings import ServeSettings
from tests.serve.conftest import ServerProcess
from tests.serve.responses import error_of, host_and_port, post_all_at_once

TRANSLATE = "/v1/models/reverse/translate"
TAG = "/v1/models/pos/tag"
GENERATE = "/v1/models/tm/generate"
TRANSLATE_ROUTE = "/v1/models/{name}/translate"
TAG_ROUTE = "/v1/models/{name}/tag"
GENERATE_ROUTE = "/v1/models/{name}/generate"
MAX_BATCH = 4
SYMBOLS = "abcdefgh"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# --- helpers -------------------------------------------------------------------------------------


def scrape(url: str) -> Samples:
    """Every sample of ``/metrics``, read with prometheus_client's parser."""
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def timed(samples: Samples) -> float:
    """Requests counted so far, scrapes of /metrics left out."""
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "rnnlab_request_duration_seconds_count" and labels != (("endpoint", "/metrics"),)
    )


def scrape_until_counted(url: str, before: Samples, requests: int) -> tuple[Samples, int]:
    """Scrape until ``requests`` more requests than in ``before`` are counted (a request is counted
    just after its answer is sent); the samples and how many scrapes it took."""
    for scrapes in range(1, 301):
        after = scrape(url)
        if timed(after) - timed(before) >= requests:
            return after, scrapes
        time.sleep(0.01)
    raise AssertionError(f"{requests} requests were never all counted")


def poll(condition: Callable[[], bool], what: str, tries: int = 600) -> None:
    """Poll ``condition``; the bound only keeps a broken server from hanging the suite."""
    for _ in range(tries):
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"never: {what}")


def sentence(rng: random.Random, low: int = 1, high: int = 6) -> str:
    return " ".join(rng.choice(SYMBOLS) for _ in range(rng.randint(low, high)))


def raw_translate(lines: list[str], path: str = TRANSLATE) -> bytes:
    body = json.dumps({"text": lines}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def read_response(raw: socket.socket) -> tuple[int, dict[str, Any]]:
    data = b""
    while chunk := raw.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def library(translator_run: Path, tagger_run: Path, lm_run: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    return {
        "reverse": rnnlab.load(translator_run, device="cpu"),
        "pos": rnnlab.load(tagger_run, device="cpu"),
        "tm": rnnlab.load(lm_run, device="cpu"),
    }


@pytest.fixture(scope="module")
def hunt_server(start_server, translator_run, tagger_run, lm_run) -> ServerProcess:
    """All three tasks, small batches and a batching wait long enough for requests to meet."""
    return start_server(
        f"reverse={translator_run}",
        f"pos={tagger_run}",
        f"tm={lm_run}",
        "--max-batch-sentences", str(MAX_BATCH),
        "--max-wait-ms", "150",
    )  # fmt: skip


def expected_translations(library: dict[str, Any], body: dict[str, Any]) -> list[dict[str, Any]]:
    options = {k: v for k, v in body.items() if k != "text"}
    return [
        {"text": t.text, "n_best": [text for text, _ in t.n_best], "score": t.score}
        for t in library["reverse"].translate(body["text"], **options)
    ]


def check_translations(got: dict[str, Any], body: dict[str, Any], library: dict[str, Any]) -> None:
    want = expected_translations(library, body)
    translations = got["translations"]
    assert [t["text"] for t in translations] == [w["text"] for w in want], body
    for g, w in zip(translations, want, strict=True):
        assert g["score"] == pytest.approx(w["score"], rel=1e-4, abs=1e-5), body
        if body.get("n_best", 1) > 1:
            assert [h["text"] for h in g["n_best"]] == w["n_best"], body
        else:
            assert "n_best" not in g
        assert ("attention" in g) == bool(body.get("attention")), body


# --- BatchQueue, driven directly -----------------------------------------------------------------


def recording_queue(
    batches: list[tuple[Hashable, list[Any]]], **settings: Any
) -> tuple[BatchQueue, dict[str, Any]]:
    """A queue whose model answers (key, payload) and records every batch it was given."""

    def run_batch(key: Hashable, payloads: list[Any]) -> list[Any]:
        batches.append((key, list(payloads)))
        return [(key, payload) for payload in payloads]

    options = {"max_batch": 3, "max_wait_s": 0.01, "max_queue": 10_000, **settings}
    return BatchQueue(run_batch=run_batch, **options), options


def test_random_submissions_are_batched_by_key_within_the_limit_and_answered_to_their_owner():
    batches: list[tuple[Hashable, list[Any]]] = []
    rng = random.Random(11)
    keys: list[Hashable] = ["greedy", ("beam", 3), ("beam", 3, "n_best", 2), ("max_len", 2)]

    async def scenario() -> list[tuple[Hashable, list[str], list[Any]]]:
        queue, _ = recording_queue(batches)
        queue.start()
        pending = []
        for i in range(80):
            key = rng.choice(keys)
            payloads = [f"{i}.{j}" for j in range(rng.randint(1, 5))]
            pending.append((key, payloads, asyncio.ensure_future(queue.submit(key, payloads))))
            if rng.random() < 0.3:
                await asyncio.sleep(rng.choice([0, 0.002]))
        answered = [(key, payloads, await future) for key, payloads, future in pending]
        assert queue.depth == 0
        await queue.stop()
        return answered

    answered = asyncio.run(scenario())
    owner = {payload: key for key, payloads, _ in answered for payload in payloads}
    for key, payloads, results in answered:
        assert results == [(key, payload) for payload in payloads]
    decoded = [payload for _, payloads in batches for payload in payloads]
    assert Counter(decoded) == Counter(list(owner)), "a sentence was decoded twice or never"
    for key, payloads in batches:
        assert 1 <= len(payloads) <= 3, "a batch exceeded max_batch"
        assert {owner[p] for p in payloads} == {key}, "a batch mixed decoding settings"
    # Within one key, sentences are decoded in the order they arrived (FIFO, nobody overtaken).
    for key in keys:
        order = [p for k, ps in batches if k == key for p in ps]
        arrival = [p for k, ps, _ in answered if k == key for p in ps]
        assert order == arrival, key


def test_a_failed_batch_fails_only_its_requests_and_the_worker_goes_on():
    seen: list[list[int]] = []

    def run_batch(key: Hashable, payloads: list[int]) -> list[int]:
        seen.append(list(payloads))
        if key == "boom":
            raise RuntimeError("model crashed")
        return [p + 1 for p in payloads]

    async def scenario() -> tuple[list[Any], int]:
        queue = BatchQueue(run_batch=run_batch, max_batch=8, max_wait_s=0.01, max_queue=100)
        queue.start()
        results = await asyncio.gather(
            queue.submit("boom", [1, 2]),
            queue.submit("ok", [3]),
            queue.submit("boom", [4]),
            return_exceptions=True,
        )
        after = await queue.submit("ok", [10, 20])
        depth = queue.depth
        await queue.stop()
        return [*results, after], depth

    results, depth = asyncio.run(scenario())
    assert isinstance(results[0], RuntimeError) and isinstance(results[2], RuntimeError)
    assert results[1] == [4] and results[3] == [11, 21]
    assert depth == 0


def test_withdrawn_sentences_free_their_queue_places_at_once():
    entered, release = threading.Event(), threading.Event()

    def run_batch(key: Hashable, payloads: list[int]) -> list[int]:
        entered.set()
        release.wait(30)
        return [p * 10 for p in payloads]

    async def scenario() -> tuple[int, Any]:
        queue = BatchQueue(run_batch=run_batch, max_batch=8, max_wait_s=0.0, max_queue=3)
        queue.start()
        try:
            decoding = asyncio.ensure_future(queue.submit("k", [1]))
            await asyncio.to_thread(entered.wait, 30)  # the model is busy with [1]
            withdrawn = asyncio.ensure_future(queue.submit("k", [2, 3, 4]))
            while queue.depth < 3:
                await asyncio.sleep(0.001)
            withdrawn.cancel()  # its client went away
            with contextlib.suppress(asyncio.CancelledError):
                await withdrawn
            depth = queue.depth
            later = asyncio.ensure_future(queue.submit("k", [5, 6]))
            await asyncio.sleep(0)
            release.set()
            outcome: Any
            try:
                outcome = await later
            except QueueFull:
                outcome = "QueueFull"
            assert await decoding == [10]
            return depth, outcome
        finally:
            release.set()
            await queue.stop()

    depth, outcome = asyncio.run(scenario())
    assert (depth, outcome) == (0, [50, 60])


# --- a real server: concurrency, batch limits, metrics -------------------------------------------


def test_concurrent_distinct_requests_each_get_their_own_answer(
    hunt_server: ServerProcess, library: dict[str, Any]
) -> None:
    rng = random.Random(2024)
    settings: list[dict[str, Any]] = [
        {},
        {"max_len": 1},
        {"max_len": 2},
        {"beam": 3},
        {"beam": 3, "n_best": 3},
        {"beam": 3, "length_penalty": 0},
        {"beam": 3, "length_penalty": 5.0},
        {"attention": True},
    ]
    bodies: list[tuple[str, dict[str, Any]]] = []
    for i in range(32):
        text = [sentence(rng) for _ in range(rng.randint(1, 3))]
        bodies.append((TRANSLATE, {"text": text, **settings[i % len(settings)]}))
    words = ["The", "dog", "barked", "at", "the", "cat", ".", "Is", "it", "late", "now", "?"]
    for _ in range(6):
        text = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 7))) for _ in range(2)]
        bodies.append((TAG, {"text": text}))
    for seed in range(4):
        bodies.append((GENERATE, {"prefix": "th", "length": 12, "temperature": 1.5, "seed": seed}))
    url = hunt_server.url
    before = scrape(url)
    responses = post_all_at_once(url, bodies, timeout=120)
    after, _ = scrape_until_counted(url, before, len(bodies))

    for (path, body), response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, (body, response.text)
        if path == TRANSLATE:
            check_translations(response.json(), body, library)
        elif path == TAG:
            want = [s.tags for s in library["pos"].tag(body["text"])]
            assert [s["tags"] for s in response.json()["sentences"]] == want, body
        else:
            options = {k: v for k, v in body.items() if k != "prefix"}
            assert response.json() == {"text": library["tm"].generate(body["prefix"], **options)}

    def change(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    sentences = {
        "reverse": sum(len(b["text"]) for p, b in bodies if p == TRANSLATE),
        "pos": sum(len(b["text"]) for p, b in bodies if p == TAG),
        "tm": sum(1 for p, _ in bodies if p == GENERATE),
    }
    for model, count in sentences.items():
        batches = change("rnnlab_batch_sentences_count", model=model)
        assert change("rnnlab_batch_sentences_sum", model=model) == count, model
        # --max-batch-sentences 4: every batch lands in the bucket le=4 (buckets are cumulative).
        assert change("rnnlab_batch_sentences_bucket", model=model, le=f"{MAX_BATCH:.1f}") == (
            batches
        ), model
        assert value(after, "rnnlab_queue_depth", model=model) == 0, model
    assert change("rnnlab_batch_sentences_count", model="tm") == sentences["tm"]
    # Eight different decoding settings: at least eight batches for the translator.
    assert change("rnnlab_batch_sentences_count", model="reverse") >= len(settings)


def test_a_request_larger_than_a_batch_is_split_and_answered_in_order(
    hunt_server: ServerProcess, library: dict[str, Any]
) -> None:
    rng = random.Random(5)
    body = {"text": [sentence(rng) for _ in range(MAX_BATCH * 2 + 1)], "beam": 2}
    before = scrape(hunt_server.url)
    response = httpx.post(f"{hunt_server.url}{TRANSLATE}", json=body, timeout=60)
    after, _ = scrape_until_counted(hunt_server.url, before, 1)
    assert response.status_code == 200, response.text
    check_translations(response.json(), body, library)
    count = value(after, "rnnlab_batch_sentences_count", model="reverse") - value(
        before, "rnnlab_batch_sentences_count", model="reverse"
    )
    total = value(after, "rnnlab_batch_sentences_sum", model="reverse") - value(
        before, "rnnlab_batch_sentences_sum", model="reverse"
    )
    assert (count, total) == (3, MAX_BATCH * 2 + 1)


def test_an_empty_request_is_answered_without_a_batch(hunt_server: ServerProcess) -> None:
    url = hunt_server.url
    before = scrape(url)
    translated = httpx.post(f"{url}{TRANSLATE}", json={"text": []}, timeout=30)
    tagged = httpx.post(f"{url}{TAG}", json={"tokens": []}, timeout=30)
    after, _ = scrape_until_counted(url, before, 2)
    assert translated.json() == {"translations": []}
    assert tagged.json() == {"sentences": []}
    for model in ("reverse", "pos"):
        assert value(after, "rnnlab_batch_sentences_count", model=model) == value(
            before, "rnnlab_batch_sentences_count", model=model
        )


def test_counters_add_up_for_a_concurrent_mix_of_answers_and_refusals(
    hunt_server: ServerProcess,
) -> None:
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        (TRANSLATE_ROUTE, TRANSLATE, {"text": ["a b"]}),
        (TRANSLATE_ROUTE, TRANSLATE, {"text": ["c d", "e"], "beam": 2}),
        (TRANSLATE_ROUTE, TRANSLATE, {"text": ["a"], "beam": 0}),  # 422
        (TRANSLATE_ROUTE, TRANSLATE, {"text": "a b"}),  # 400
        (TRANSLATE_ROUTE, "/v1/models/nobody/translate", {"text": ["a"]}),  # 404
        (TRANSLATE_ROUTE, "/v1/models/pos/translate", {"text": ["a"]}),  # 404: a tagger
        (TAG_ROUTE, TAG, {"text": ["The dog ."]}),
        (TAG_ROUTE, TAG, {"tokens": [[""]]}),  # 422
        (GENERATE_ROUTE, GENERATE, {"prefix": "the", "length": 4, "temperature": 0}),
        (GENERATE_ROUTE, GENERATE, {"prefix": "XYZ", "length": 4}),  # 422 from the model
        ("unmatched", "/v2/models", None),
        ("/healthz", "/healthz", None),
        ("/readyz", "/readyz", None),
        ("/v1/models", "/v1/models", None),
    ]
    url = hunt_server.url
    barrier = threading.Barrier(len(requests))

    def send(request: tuple[str, str, dict[str, Any] | None]) -> int:
        _, path, body = request
        with httpx.Client(base_url=url, timeout=60) as client:
            barrier.wait()
            response = client.get(path) if body is None else client.post(path, json=body)
            return response.status_code

    before = scrape(url)
    callers = [_Caller(send, request) for request in requests]
    statuses = [caller.result() for caller in callers]
    after, scrapes = scrape_until_counted(url, before, len(requests))

    assert statuses == [200, 200, 422, 400, 404, 404, 200, 422, 200, 422, 404, 200, 200, 200]
    seen = Counter(
        (endpoint, str(status)) for (endpoint, _, _), status in zip(requests, statuses, strict=True)
    )
    counted = {
        (dict(labels)["endpoint"], dict(labels)["status"]): v - before.get((name, labels), 0.0)
        for (name, labels), v in after.items()
        if name == "rnnlab_requests_total"
    }
    assert counted.pop(("/metrics", "200")) == scrapes
    assert {k: v for k, v in counted.items() if v} == dict(seen)
    # Only what reached a model was batched: 3 translated sentences, 1 tagged, 2 generations.
    for model, sentences in (("reverse", 3), ("pos", 1), ("tm", 2)):
        assert (
            value(after, "rnnlab_batch_sentences_sum", model=model)
            - value(before, "rnnlab_batch_sentences_sum", model=model)
            == sentences
        ), model
        assert value(after, "rnnlab_queue_depth", model=model) == 0, model


class _Caller:
    """Run ``function(argument)`` on a thread; ``result()`` joins it."""

    def __init__(self, function: Callable[[Any], Any], argument: Any) -> None:
        self._out: list[Any] = []
        self._thread = threading.Thread(target=lambda: self._out.append(function(argument)))
        self._thread.start()

    def result(self) -> Any:
        self._thread.join(120)
        assert self._out, "the request never finished"
        return self._out[0]


# --- a client that leaves: its sentences must leave the queue too --------------------------------


@pytest.fixture(scope="module")
def patient_server(start_server, translator_run, lm_run) -> ServerProcess:
    """Batches wait 30 s for company; at most 3 sentences may wait per model."""
    return start_server(
        f"reverse={translator_run}",
        f"tm={lm_run}",
        "--max-wait-ms", "30000",
        "--max-queue", "3",
    )  # fmt: skip


def test_a_departed_clients_sentences_leave_the_queue_gauge_and_its_places(
    patient_server: ServerProcess, library: dict[str, Any]
) -> None:
    url = patient_server.url
    before = scrape(url)
    with socket.create_connection(host_and_port(url), timeout=30) as raw:
        raw.sendall(raw_translate(["a b", "c d", "e f"]))
        poll(lambda: value(scrape(url), "rnnlab_queue_depth", model="reverse") == 3, "queued")
    poll(
        lambda: (
            value(scrape(url), "rnnlab_requests_total", endpoint=TRANSLATE_ROUTE, status="499")
            > value(before, "rnnlab_requests_total", endpoint=TRANSLATE_ROUTE, status="499")
        ),
        "the departure is counted as 499",
    )
    depth = value(scrape(url), "rnnlab_queue_depth", model="reverse")
    body = {"prefix": "the", "length": 4, "temperature": 0}
    response = httpx.post(f"{url}{GENERATE}", json=body, timeout=90)
    # Nobody waits for anything now: the queue is empty and the lone generation is answered.
    assert (depth, response.status_code) == (0, 200), response.text
    assert response.json() == {"text": library["tm"].generate("the", length=4, temperature=0)}


# --- readiness with several models ---------------------------------------------------------------


def test_not_ready_while_any_model_still_loads(translator_run: Path, tagger_run: Path) -> None:
    release = threading.Event()
    loaded: list[Path] = []

    def loader(path: Path) -> Any:
        if path == tagger_run:
            release.wait(30)
        model = rnnlab.load(path, device="cpu", threads=1)
        loaded.append(path)
        return model

    settings, metrics = ServeSettings(), ServeMetrics()
    registry = ModelRegistry(
        [ModelSpec("reverse", translator_run), ModelSpec("pos", tagger_run)],
        settings=settings,
        metrics=metrics,
        loader=loader,
    )
    sock = bind("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    config = uvicorn.Config(
        create_app(registry, settings, metrics), log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        poll(up, "the server answers")
        poll(lambda: translator_run in loaded, "the first model is loaded")
        ready = httpx.get(f"{url}/readyz")
        assert "loading" in error_of(ready, 503)
        assert ready.headers["retry-after"].isdigit()
        models = httpx.get(f"{url}/v1/models").json()["models"]
        assert [(m["name"], m["ready"]) for m in models] == [("reverse", False), ("pos", False)]
        busy = httpx.post(f"{url}{TRANSLATE}", json={"text": ["a b"]})
        assert "still loading" in error_of(busy, 503)

        release.set()
        poll(lambda: httpx.get(f"{url}/readyz").status_code == 200, "ready")
        models = httpx.get(f"{url}/v1/models").json()["models"]
        assert [(m["name"], m["ready"]) for m in models] == [("reverse", True), ("pos", True)]
        answer = httpx.post(f"{url}{TRANSLATE}", json={"text": ["a b c"]}, timeout=30)
        assert answer.json()["translations"][0]["text"] == "c b a"
        depths = {
            s.labels["model"]: s.value
            for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
            for s in f.samples
            if s.name == "rnnlab_queue_depth"
        }
        assert depths == {"reverse": 0, "pos": 0}
    finally:
        release.set()
        server.should_exit = True
        thread.join(30)


# --- SIGTERM with requests in flight on every model ----------------------------------------------


def test_sigterm_finishes_every_request_in_flight_on_every_model(
    start_server, translator_run, tagger_run, lm_run, library: dict[str, Any]
) -> None:
    server = start_server(
        f"reverse={translator_run}",
        f"pos={tagger_run}",
        f"tm={lm_run}",
        "--max-wait-ms", "2500",
    )  # fmt: skip
    url = server.url
    bodies = [
        (TRANSLATE, {"text": ["a b c"]}),
        (TRANSLATE, {"text": ["d e", "f"], "beam": 2, "n_best": 2}),
        (TAG, {"text": ["The dog barked ."]}),
        (GENERATE, {"prefix": "the", "length": 6, "temperature": 0}),
    ]
    # A client whose body is only half sent when the signal comes.
    half = socket.create_connection(host_and_port(url), timeout=60)
    payload = raw_translate(["h g f"])
    half.sendall(payload[:-4])
    callers = [
        _Caller(lambda pb: httpx.post(url + pb[0], json=pb[1], timeout=60), b) for b in bodies
    ]
    try:
        # The three translate sentences and the tagged one wait for company (2.5 s).
        poll(
            lambda: (
                (s := scrape(url))
                and value(s, "rnnlab_queue_depth", model="reverse") == 3
                and value(s, "rnnlab_queue_depth", model="pos") == 1
            ),
            "the requests are queued",
        )
        server.process.send_signal(signal.SIGTERM)
        half.sendall(payload[-4:])
        status, answer = read_response(half)
    finally:
        half.close()
    responses = [caller.result() for caller in callers]
    assert server.process.wait(60) == 0
    assert status == 200 and answer["translations"][0]["text"] == "f g h"
    for (path, body), response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, (body, response.text)
        if path == TRANSLATE:
            check_translations(response.json(), body, library)
        elif path == TAG:
            want = [s.tags for s in library["pos"].tag(body["text"])]
            assert [s["tags"] for s in response.json()["sentences"]] == want
        else:
            assert response.json() == {
                "text": library["tm"].generate("the", length=6, temperature=0)
            }
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz")


# --- the serve command line ----------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something already listens on: if a check let a flag through, ``serve`` stops at
    binding instead of serving in the test process."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


def serve_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int | str | None, str]:
    capsys.readouterr()
    try:
        code: int | str | None = main(["serve", *args])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "flags,fragment",
    [
        (["--port", "http"], "--port"),
        (["--max-queue", "many"], "--max-queue"),
        (["--max-batch-sentences", "2.5"], "--max-batch-sentences"),
        (["--max-wait-ms", "1e9"], "--max-wait-ms"),
        (["--max-wait-ms", "-0.5"], "--max-wait-ms"),
        (["--max-chars", "-1"], "--max-chars"),
        (["--threads", "two"], "--threads"),
    ],
)
def test_nonsense_flags_are_one_line_errors_with_status_2(
    capsys: pytest.CaptureFixture[str],
    translator_run: Path,
    busy_port: int,
    flags: list[str],
    fragment: str,
) -> None:
    code, err = serve_cli(capsys, str(translator_run), "--port", str(busy_port), *flags)
    assert code == 2, err
    assert err.startswith("rnnlab: error: ") and err.count("\n") == 1, err
    assert fragment in err and "Traceback" not in err


@pytest.mark.parametrize(
    "specs,fragment",
    [
        (["{run}", "reverse={run}"], "'reverse' is empty or used twice"),
        (["x={run}", "x={run}/"], "'x' is empty or used twice"),
        (["{run}/."], None),  # named after its directory: reverse, fine up to the busy port
        (["a b={run}"], "'a b' is part of its URLs"),
        (["x*y={run}"], "'x*y' is part of its URLs"),
        (["x?y={run}"], "'x?y' is part of its URLs"),
        (["ñ={run}"], "'ñ' is part of its URLs"),
    ],
)
def test_model_names_are_checked_before_anything_listens(
    capsys: pytest.CaptureFixture[str],
    translator_run: Path,
    busy_port: int,
    specs: list[str],
    fragment: str | None,
) -> None:
    args = [spec.format(run=translator_run) for spec in specs]
    code, err = serve_cli(capsys, *args, "--port", str(busy_port))
    assert code == 2 and err.startswith("rnnlab: error: ") and err.count("\n") == 1, err
    assert (fragment or "cannot listen on") in err


def test_a_negative_threads_is_refused_before_serving(
    capsys: pytest.CaptureFixture[str], translator_run: Path
) -> None:
    # (--device tpu takes the same path: refused only once the model loads.) With the defect the
    # server runs in this process until the load fails, which stops it.
    code, err = serve_cli(capsys, str(translator_run), "--port", "0", "--threads", "-1")
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), lines
    assert "--threads" in lines[0]


def test_sigterm_right_after_the_startup_line_exits_0(translator_run: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", "serve", str(translator_run), "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert first.startswith("rnnlab: serving "), first
        # The server says it serves (its socket already accepts connections): from now on the
        # README's promise holds, "SIGTERM ... finishes the requests in flight and exits 0".
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
        assert process.returncode == 0, (process.returncode, rest)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_the_startup_line_is_a_usable_url_for_an_ipv6_host(start_server, translator_run) -> None:
    server = start_server(str(translator_run), "--host", "::1", ready=False)
    try:
        port = server.url.rsplit(":", 1)[1]
        assert server.url == f"http://[::1]:{port}"
        poll(lambda: httpx.get(f"{server.url}/healthz").status_code == 200, "the server answers")
    finally:
        server.stop()
