"""``rnnlab.serve.metrics``: what the server's Prometheus metrics count, read as Prometheus reads them.

Every exposition here is parsed with prometheus_client's own text parser
(``text_string_to_metric_families``), never by splitting lines. ``ServeMetrics`` is checked
directly against plain-Python tallies of what was observed (``collections.Counter``, and the
Prometheus rule that a histogram bucket ``le`` counts observations ≤ ``le``). A real server on
loopback is then checked against the requests this file sent it: the change in every counter
between two scrapes equals what the client saw, requests made one after another and many at once.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from rnnlab.serve.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, ServeMetrics
from tests.serve.conftest import ServerProcess

TRANSLATE = "/v1/models/{name}/translate"
GENERATE = "/v1/models/{name}/generate"
Key = tuple[str, tuple[tuple[str, str], ...]]
"""A sample: its name and its labels, sorted."""


def parse(exposition: str) -> dict[Key, float]:
    """Every sample of a text exposition, by name and labels, via prometheus_client's parser."""
    samples: dict[Key, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def key(name: str, **labels: str) -> Key:
    return (name, tuple(sorted(labels.items())))


def requests_by_endpoint_and_status(samples: dict[Key, float]) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["endpoint"], dict(labels)["status"]): value
        for (name, labels), value in samples.items()
        if name == "rnnlab_requests_total"
    }


def change(before: dict[Key, float], after: dict[Key, float], name: str, **labels: str) -> float:
    return after.get(key(name, **labels), 0.0) - before.get(key(name, **labels), 0.0)


# --- ServeMetrics, directly ----------------------------------------------------------------------


def test_the_exposition_has_the_four_metrics_with_their_types() -> None:
    metrics = ServeMetrics()
    metrics.observe_request("/healthz", 200, 0.01)
    metrics.batch_size.labels("m").observe(3)
    metrics.queue_depth.labels("m").set(2)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    # prometheus_client also writes a `<name>_created` timestamp gauge per counter and histogram.
    ours = {name: f for name, f in families.items() if not name.endswith("_created")}
    assert {name: f.type for name, f in ours.items()} == {
        "rnnlab_requests": "counter",
        "rnnlab_request_duration_seconds": "histogram",
        "rnnlab_batch_sentences": "histogram",
        "rnnlab_queue_depth": "gauge",
    }
    assert all(f.documentation for f in ours.values())
    assert metrics.content_type == CONTENT_TYPE_LATEST


def test_each_server_has_a_registry_of_its_own() -> None:
    # The process-wide default registry would refuse a second set of the same metric names, and
    # one server's counts would leak into another's.
    first, second = ServeMetrics(), ServeMetrics()
    first.observe_request("/healthz", 200, 0.01)
    assert key("rnnlab_requests_total", endpoint="/healthz", status="200") in parse(
        first.render().decode()
    )
    assert requests_by_endpoint_and_status(parse(second.render().decode())) == {}


def test_requests_are_counted_by_endpoint_and_status() -> None:
    observed = [
        ("/healthz", 200),
        ("/v1/models/{name}/translate", 200),
        ("/v1/models/{name}/translate", 200),
        ("/v1/models/{name}/translate", 413),
        ("unmatched", 404),
        ("/healthz", 200),
    ]
    metrics = ServeMetrics()
    for endpoint, status in observed:
        metrics.observe_request(endpoint, status, 0.001)
    expected = {(endpoint, str(status)): n for (endpoint, status), n in Counter(observed).items()}
    assert requests_by_endpoint_and_status(parse(metrics.render().decode())) == expected


def check_histogram(
    samples: dict[Key, float],
    name: str,
    labels: dict[str, str],
    values: list[float],
    buckets: tuple,
) -> None:
    """Prometheus histograms: bucket ``le`` counts observations ≤ le, cumulatively, to +Inf."""
    for bound in [*buckets, math.inf]:
        le = "+Inf" if bound == math.inf else str(float(bound))
        want = sum(1 for value in values if value <= bound)
        assert samples[key(f"{name}_bucket", **labels, le=le)] == want, le
    assert samples[key(f"{name}_count", **labels)] == len(values)
    assert samples[key(f"{name}_sum", **labels)] == pytest.approx(sum(values))


def test_latency_histogram_buckets_are_cumulative_and_inclusive() -> None:
    # Observations on bucket bounds (0.005, 1) land in that bucket; 45 s is past every bound.
    durations = [0.0004, 0.005, 0.0051, 0.2, 1, 45.0]
    metrics = ServeMetrics()
    for seconds in durations:
        metrics.observe_request("/v1/models/{name}/tag", 200, seconds)
    samples = parse(metrics.render().decode())
    check_histogram(
        samples,
        "rnnlab_request_duration_seconds",
        {"endpoint": "/v1/models/{name}/tag"},
        durations,
        LATENCY_BUCKETS,
    )


def test_batch_size_histogram_and_queue_depth_are_per_model() -> None:
    sizes = {"fra": [1, 2, 3, 64, 65], "pos": [512, 1000]}
    metrics = ServeMetrics()
    for model, values in sizes.items():
        for size in values:
            metrics.batch_size.labels(model).observe(size)
    metrics.queue_depth.labels("fra").set(7)
    metrics.queue_depth.labels("pos").set(0)
    samples = parse(metrics.render().decode())
    for model, values in sizes.items():
        check_histogram(samples, "rnnlab_batch_sentences", {"model": model}, values, BATCH_BUCKETS)
    assert samples[key("rnnlab_queue_depth", model="fra")] == 7
    assert samples[key("rnnlab_queue_depth", model="pos")] == 0


# --- a real server -------------------------------------------------------------------------------

BODY_LIMIT = 1024


@pytest.fixture(scope="module")
def metrics_server(start_server, translator_run: Path, lm_run: Path) -> ServerProcess:
    """A server of this file's own, so no other test's requests land between two scrapes."""
    return start_server(
        f"reverse={translator_run}",
        f"tm={lm_run}",
        "--max-queue", "4",
        "--max-wait-ms", "10",
        "--max-request-bytes", str(BODY_LIMIT),
    )  # fmt: skip


@pytest.fixture
def client(metrics_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=metrics_server.url, timeout=60) as client:
        yield client


def scrape(client: httpx.Client) -> dict[Key, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return parse(response.text)


def timed_requests(samples: dict[Key, float]) -> float:
    """Requests counted so far, apart from scrapes of /metrics."""
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "rnnlab_request_duration_seconds_count" and labels != (("endpoint", "/metrics"),)
    )


def scrape_once_counted(
    client: httpx.Client, before: dict[Key, float], requests: int
) -> tuple[dict[Key, float], int]:
    """Scrape until ``requests`` more requests are counted than in ``before``; the samples and
    how many scrapes that took.

    A request is counted when its handler returns, which for a file streamed from disk can be just
    after the client has the whole answer; a bounded number of scrapes (not a clock) waits for it.
    """
    for scrapes in range(1, 201):
        after = scrape(client)
        if timed_requests(after) - timed_requests(before) >= requests:
            return after, scrapes
    raise AssertionError(f"{requests} requests were never all counted")


def test_counters_count_the_requests_made(client: httpx.Client) -> None:
    before = scrape(client)
    statuses: Counter[tuple[str, str]] = Counter()

    def send(endpoint: str, response: httpx.Response) -> None:
        statuses[(endpoint, str(response.status_code))] += 1

    translate = "/v1/models/reverse/translate"
    for lines in (["a b"], ["a b", "c d"], ["a", "b", "c"]):  # 6 sentences in 3 batches
        send(TRANSLATE, client.post(translate, json={"text": lines}))
    send(TRANSLATE, client.post(translate, content=b"{"))
    send(TRANSLATE, client.post(translate, content=b""))
    send(TRANSLATE, client.post(translate, content=b" " * (BODY_LIMIT + 1)))
    send(TRANSLATE, client.get(translate))
    # An unknown model is counted under the route template, never under its own name.
    send(TRANSLATE, client.post("/v1/models/nope/translate", json={"text": ["a"]}))
    send(TRANSLATE, client.post("/v1/models/x%0Ay/translate", json={"text": ["a"]}))
    generate = "/v1/models/tm/generate"
    send(GENERATE, client.post(generate, json={"prefix": "the", "length": 5, "temperature": 0}))
    send(GENERATE, client.post(generate, json={"prefix": "t", "length": 5, "seed": 3}))
    send(GENERATE, client.post(generate, json={"prefix": "XYZ", "length": 5}))  # unseen: 422
    # Unknown paths share one label, however many different ones there are.
    for path in ("/nothing", "/v1/nothing", "/v1/models/reverse", "/admin/../etc"):
        send("unmatched", client.get(path))
    send("/healthz", client.get("/healthz"))
    after, scrapes = scrape_once_counted(client, before, sum(statuses.values()))

    assert statuses == Counter(
        {
            (TRANSLATE, "200"): 3,
            (TRANSLATE, "400"): 2,
            (TRANSLATE, "413"): 1,
            (TRANSLATE, "405"): 1,
            (TRANSLATE, "404"): 2,
            (GENERATE, "200"): 2,
            (GENERATE, "422"): 1,
            ("unmatched", "404"): 4,
            ("/healthz", "200"): 1,
        }
    ), "the server answered differently than this test expects"
    counted_before = requests_by_endpoint_and_status(before)
    counted = {
        label: value - counted_before.get(label, 0.0)
        for label, value in requests_by_endpoint_and_status(after).items()
    }
    # A scrape is counted once its answer is sent, so the last one sees every one before it.
    assert counted.pop(("/metrics", "200")) == scrapes
    assert {label: n for label, n in counted.items() if n} == dict(statuses)

    # Each request is timed exactly once.
    for endpoint in {endpoint for endpoint, _ in statuses}:
        timed = change(before, after, "rnnlab_request_duration_seconds_count", endpoint=endpoint)
        assert timed == sum(n for (e, _), n in statuses.items() if e == endpoint), endpoint

    # Requests one after another cannot share a batch: one batch per request that reached the
    # model (the unseen-character prefix reaches it, and fails there, in its own slot).
    assert change(before, after, "rnnlab_batch_sentences_count", model="reverse") == 3
    assert change(before, after, "rnnlab_batch_sentences_sum", model="reverse") == 6
    assert change(before, after, "rnnlab_batch_sentences_count", model="tm") == 3
    assert change(before, after, "rnnlab_batch_sentences_sum", model="tm") == 3
    for model in ("reverse", "tm"):
        assert after[key("rnnlab_queue_depth", model=model)] == 0


def test_many_concurrent_requests_add_up(metrics_server: ServerProcess) -> None:
    # The queue holds 4 sentences: some of these 40 requests may be refused with 503. Whatever the
    # split, the counters must agree with what the clients saw.
    lines = [["a b c"], ["h g"], ["e"], ["d e f", "a"]] * 10
    barrier = threading.Barrier(len(lines))

    def send(text: list[str]) -> httpx.Response:
        with httpx.Client(base_url=metrics_server.url, timeout=60) as client:
            barrier.wait()
            return client.post("/v1/models/reverse/translate", json={"text": text})

    with httpx.Client(base_url=metrics_server.url, timeout=60) as client:
        before = scrape(client)
        with ThreadPoolExecutor(len(lines)) as pool:
            responses = list(pool.map(send, lines))
        after, _ = scrape_once_counted(client, before, len(lines))

    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= {200, 503}, statuses
    answered = sum(len(text) for text, r in zip(lines, responses, strict=True) if r.is_success)
    for status, n in statuses.items():
        assert (
            change(before, after, "rnnlab_requests_total", endpoint=TRANSLATE, status=str(status))
            == n
        )
    assert change(
        before, after, "rnnlab_request_duration_seconds_count", endpoint=TRANSLATE
    ) == len(lines)
    # Every sentence of every answered request was decoded in some batch, and nothing else was.
    assert change(before, after, "rnnlab_batch_sentences_sum", model="reverse") == answered
    assert after[key("rnnlab_queue_depth", model="reverse")] == 0


def test_a_client_that_leaves_mid_body_is_not_counted_as_a_server_error(
    metrics_server: ServerProcess, client: httpx.Client
) -> None:
    host, port = metrics_server.url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"text": ["a b c"]}).encode()
    head = (
        b"POST /v1/models/reverse/translate HTTP/1.1\r\nHost: test\r\n"
        b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    )
    before = scrape(client)
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(head + body[:5])
    # The server notices the disconnect in its own time: wait until the request is counted under
    # some status, then look at which.
    after, _ = scrape_once_counted(client, before, 1)
    assert change(before, after, "rnnlab_request_duration_seconds_count", endpoint=TRANSLATE) == 1
    assert change(before, after, "rnnlab_requests_total", endpoint=TRANSLATE, status="500") == 0


def test_a_static_asset_is_not_counted_as_unmatched(client: httpx.Client) -> None:
    before = scrape(client)
    assert client.get("/static/app.js").status_code == 200
    after, _ = scrape_once_counted(client, before, 1)
    assert change(before, after, "rnnlab_requests_total", endpoint="unmatched", status="200") == 0
