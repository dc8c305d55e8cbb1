"""A bug hunt against ``rnnlab serve`` as a real process on loopback, talked to over real HTTP.

What the other serving tests do not cover: concurrent requests to every endpoint at once checked
against the library, exported taggers and language models served beside their runs, sampling
settings at their extremes, pipelined and HTTP/1.0 requests, a body battery for the tag and generate
endpoints, clients that leave after their body was read, and the batching wait of generations.

References are independent of the server: ``rnnlab.load(run)`` (translate, tag, generate), the
README's serving section, RFC 9110/9112, the training text of the tiny language model (a pangram)
and the server's own Prometheus counters read with ``prometheus_client``'s parser. Defects still
open are ``xfail(strict=True)`` with the source function at fault in the reason.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

import rnnlab
from tests.serve.conftest import ServerProcess
from tests.serve.responses import error_of, host_and_port, post_all_at_once

TRANSLATE = "/v1/models/reverse/translate"
TAG = "/v1/models/pos/tag"
GENERATE = "/v1/models/tm/generate"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported_lm(lm_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    from rnnlab.export.onnx import export_run
    from rnnlab.rundir import open_run

    run = open_run(lm_run, device="cpu")
    return export_run(run.task, run.model, tmp_path_factory.mktemp("hunt_export") / "tm")


@pytest.fixture(scope="module")
def mixed_server(
    start_server, translator_run, tagger_run, lm_run, exported_tagger, exported_lm
) -> ServerProcess:
    """Every task as a run, the tagger and language model also as exports; default limits."""
    return start_server(
        f"reverse={translator_run}",
        f"pos={tagger_run}",
        f"tm={lm_run}",
        f"xpos={exported_tagger}",
        f"xtm={exported_lm}",
        "--max-wait-ms", "30",
    )  # fmt: skip


@pytest.fixture(scope="module")
def waiting_server(start_server, translator_run, lm_run) -> ServerProcess:
    """A server whose batches wait the longest the README allows (a minute) for company."""
    return start_server(f"reverse={translator_run}", f"tm={lm_run}", "--max-wait-ms", "60000")


@pytest.fixture(scope="module")
def library(translator_run, tagger_run, lm_run) -> dict[str, Any]:
    torch.set_num_threads(1)
    return {
        "reverse": rnnlab.load(translator_run, device="cpu"),
        "pos": rnnlab.load(tagger_run, device="cpu"),
        "tm": rnnlab.load(lm_run, device="cpu"),
    }


@pytest.fixture(scope="module")
def shared(server: ServerProcess) -> Iterator[httpx.Client]:
    """The session's shared server (8 sentences, 60 characters, 2048 bytes, a queue of 6)."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def mixed(mixed_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mixed_server.url, timeout=60) as client:
        yield client


# --- helpers -------------------------------------------------------------------------------------


def read_all(payload: bytes, url: str) -> bytes:
    """Send ``payload`` and read until the server closes the connection."""
    received = b""
    with socket.create_connection(host_and_port(url), timeout=30) as raw:
        raw.sendall(payload)
        while chunk := raw.recv(65536):
            received += chunk
    return received


def split_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """HTTP/1.1 responses with Content-Length, one after another: (status, headers, body)."""
    responses = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        length = int(headers["content-length"])
        responses.append((status, headers, rest[:length]))
        data = rest[length:]
    return responses


def scrape(url: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def translate_request(lines: list[str]) -> bytes:
    body = json.dumps({"text": lines}).encode()
    return (
        f"POST {TRANSLATE} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# --- concurrent requests to every endpoint equal the library -------------------------------------

ODD_LINES = ["a\x00b \x01c", "é e\u0301 ß", "\U0001f600 a", "a\u200bb \ufeff", "a\u2028b c", ""]

TRANSLATE_SETTINGS: list[dict[str, Any]] = [
    {},
    {"beam": 3, "n_best": 2},
    {"attention": True},
    {"beam": 2, "length_penalty": 1.5, "attention": True},
    {"max_len": 2},
    {"beam": 4, "n_best": 4, "max_len": 3, "length_penalty": 0},
]


def _bodies() -> list[tuple[str, dict[str, Any]]]:
    sentences = [["a b c", "h g"], ["d e f g", "", "b"], ODD_LINES[:3], ODD_LINES[3:]]
    bodies: list[tuple[str, dict[str, Any]]] = []
    for i, settings in enumerate(TRANSLATE_SETTINGS * 2):
        bodies.append((TRANSLATE, {"text": sentences[i % len(sentences)], **settings}))
    bodies += [
        (TAG, {"text": ["The dog barked .", "", "Is it late ?"]}),
        (TAG, {"tokens": [["The", "cat"], [], ["a\x00b", "\U0001f600"]]}),
        (TAG, {"text": ODD_LINES}),
        (GENERATE, {"prefix": "the", "length": 20, "temperature": 0}),
        (GENERATE, {"prefix": "t", "length": 25, "temperature": 0.8, "top_k": 5, "seed": 3}),
        (GENERATE, {"prefix": "quick", "length": 10, "temperature": 1.2, "seed": 11}),
    ]
    return bodies


def _expected(library: dict[str, Any], path: str, body: dict[str, Any]) -> dict[str, Any]:
    """What the server should answer, computed by the library."""
    if path == TRANSLATE:
        options = {k: v for k, v in body.items() if k != "text"}
        results = library["reverse"].translate(body["text"], **options)
        return {
            "translations": [
                {
                    "text": t.text,
                    "tokens": t.tokens,
                    "score": t.score,
                    "n_best": t.n_best,
                    "attention": None if t.attention is None else t.attention.out_tokens,
                }
                for t in results
            ]
        }
    if path == TAG:
        sentences = body.get("text", body.get("tokens"))
        return {"sentences": [s.tags for s in library["pos"].tag(sentences)]}
    options = {k: v for k, v in body.items() if k != "prefix"}
    return {"text": library["tm"].generate(body["prefix"], **options)}


def test_concurrent_requests_to_every_endpoint_equal_the_library(
    mixed_server: ServerProcess, library: dict[str, Any]
) -> None:
    bodies = _bodies()
    responses = post_all_at_once(mixed_server.url, bodies, timeout=120)

    for (path, body), response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, (body, response.text)
        got, want = response.json(), _expected(library, path, body)
        if path == TAG:
            assert [s["tags"] for s in got["sentences"]] == want["sentences"], body
        elif path == GENERATE:
            assert got == want, body
        else:
            n_best = body.get("n_best", 1)
            for g, w in zip(got["translations"], want["translations"], strict=True):
                assert (g["text"], g["tokens"]) == (w["text"], w["tokens"]), body
                assert g["score"] == pytest.approx(w["score"], rel=1e-4, abs=1e-5)
                if n_best > 1:
                    assert [h["text"] for h in g["n_best"]] == [t for t, _ in w["n_best"]]
                else:
                    assert "n_best" not in g
                if w["attention"] is None:
                    assert "attention" not in g
                else:
                    assert g["attention"]["out_tokens"] == w["attention"]
                    rows = torch.tensor(g["attention"]["weights"])
                    assert rows.sum(-1) == pytest.approx(1.0, abs=1e-4)


# --- exports served beside their runs ------------------------------------------------------------


def test_an_exported_tagger_tags_like_its_run(mixed: httpx.Client, library: dict[str, Any]) -> None:
    lines = ["The dog barked at the cat .", "", "Is it too late now to say sorry ?", *ODD_LINES]
    for body in ({"text": lines[:8]}, {"tokens": [line.split() for line in lines[:8]]}):
        by_run = mixed.post(TAG, json=body).json()
        by_export = mixed.post("/v1/models/xpos/tag", json=body).json()
        assert by_export == by_run
        assert [s["tags"] for s in by_run["sentences"]] == [
            s.tags for s in library["pos"].tag([line.split() for line in lines[:8]])
        ]


def test_an_exported_lm_generates_and_refuses_like_its_run(
    mixed: httpx.Client, library: dict[str, Any]
) -> None:
    greedy = {"prefix": "the lazy", "length": 30, "temperature": 0}
    by_export = mixed.post("/v1/models/xtm/generate", json=greedy)
    assert by_export.json() == {
        "text": library["tm"].generate("the lazy", length=30, temperature=0)
    }
    for prefix in ("", "XYZ", "the\r", "\u2028"):
        body = {"prefix": prefix, "length": 3}
        run_error = error_of(mixed.post(GENERATE, json=body), 422)
        assert error_of(mixed.post("/v1/models/xtm/generate", json=body), 422) == run_error


def test_exported_models_describe_themselves_like_their_runs(
    mixed: httpx.Client, library: dict[str, Any]
) -> None:
    models = {m["name"]: m for m in mixed.get("/v1/models").json()["models"]}
    for run_name, export_name in (("pos", "xpos"), ("tm", "xtm")):
        facts = library[run_name].describe()
        assert {key: models[run_name].get(key) for key in facts} == facts
        # The README: "names, tasks, languages, vocabulary sizes, cell, attention".
        assert {key: models[export_name].get(key) for key in facts} == facts, export_name


# --- sampling at its extremes --------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "tm",
        "xtm",
    ],
)
def test_top_k_1_is_the_most_probable_token_at_any_accepted_temperature(
    mixed: httpx.Client, library: dict[str, Any], model: str
) -> None:
    # Top-k keeps the k most probable tokens; with k = 1 the sample is the greedy choice whatever
    # the temperature (dividing by T > 0 keeps the order). The server accepts any finite T.
    greedy = library["tm"].generate("t", length=25, temperature=0)
    for temperature in (1e30, 1e39, 1e300):
        body = {"prefix": "t", "length": 25, "temperature": temperature, "top_k": 1, "seed": 1}
        response = mixed.post(f"/v1/models/{model}/generate", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["text"] == greedy, temperature


@pytest.mark.parametrize(
    "model",
    [
        "tm",
        "xtm",
    ],
)
def test_sampled_text_has_no_pad_or_bos_markup(mixed: httpx.Client, model: str) -> None:
    # Translation never emits <pad> or <bos> (rnnlab.decoding.banned; the runtime's `banned`): they
    # are no text. A sample at a lively temperature from a model trained on a pangram must not
    # contain them either.
    for seed in range(10):
        body = {"prefix": "t", "length": 60, "temperature": 3.0, "seed": seed}
        response = mixed.post(f"/v1/models/{model}/generate", json=body)
        assert response.status_code == 200, response.text
        text = response.json()["text"]
        assert "<pad>" not in text and "<bos>" not in text, (seed, text)


# --- queue limits and clients that leave ---------------------------------------------------------


def test_a_request_no_queue_could_hold_is_not_told_to_retry(shared: httpx.Client) -> None:
    # The shared server admits 8 sentences per request but queues 6. Nothing else is queued now.
    assert shared.get("/readyz").status_code == 200
    response = shared.post(TRANSLATE, json={"text": ["a b"] * 7})
    assert response.status_code != 503, response.text
    assert "retry-after" not in response.headers
    assert 400 <= response.status_code < 500
    error_of(response, response.status_code)


def test_a_client_gone_before_its_batch_is_not_decoded_and_counted_499(
    waiting_server: ServerProcess,
) -> None:
    url = waiting_server.url
    before = scrape(url)
    with socket.create_connection(host_and_port(url), timeout=30) as raw:
        raw.sendall(translate_request(["a b", "c d", "e f"]))
        # Its three sentences wait (up to a minute) for company: the body has been read.
        for _ in range(500):
            if sample(scrape(url), "rnnlab_queue_depth", model="reverse") == 3:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the request never reached the queue")
    # The client is gone. The server should notice, answer nobody and drop the sentences.
    counted = 0.0
    for _ in range(300):
        after = scrape(url)
        counted = sample(
            after, "rnnlab_request_duration_seconds_count", endpoint="/v1/models/{name}/translate"
        ) - sample(
            before, "rnnlab_request_duration_seconds_count", endpoint="/v1/models/{name}/translate"
        )
        if counted:
            break
        time.sleep(0.02)
    assert counted == 1, (
        "the abandoned request was neither answered 499 nor dropped: its sentences still wait "
        "in the queue to be decoded for nobody"
    )

    def change(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    endpoint = "/v1/models/{name}/translate"
    assert change("rnnlab_requests_total", endpoint=endpoint, status="499") == 1
    assert change("rnnlab_requests_total", endpoint=endpoint, status="200") == 0
    assert change("rnnlab_batch_sentences_sum", model="reverse") == 0


def test_a_generation_does_not_wait_for_company_it_cannot_have(
    waiting_server: ServerProcess, library: dict[str, Any]
) -> None:
    # --max-wait-ms is 60000 here. A generation runs alone, so it should not wait at all: 20 s is
    # only the bound that keeps the test from waiting the minute out.
    body = {"prefix": "the", "length": 5, "temperature": 0}
    try:
        response = httpx.post(f"{waiting_server.url}{GENERATE}", json=body, timeout=20)
    except httpx.ReadTimeout:
        pytest.fail("a lone generation waited for a batch that no request can join")
    assert response.json() == {"text": library["tm"].generate("the", length=5, temperature=0)}


# --- HTTP framing and methods --------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(server: ServerProcess) -> None:
    # RFC 9112 §9.3.2: a server MUST send responses in the order the pipelined requests came.
    lines = [["a b"], ["c d e"], ["h"]]
    payload = b"".join(translate_request(text) for text in lines)
    payload += b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    responses = split_responses(read_all(payload, server.url))
    assert [status for status, _, _ in responses] == [200, 200, 200, 200]
    texts = [json.loads(body)["translations"][0]["text"] for _, _, body in responses[:3]]
    assert texts == ["b a", "e d c", "h"]
    assert json.loads(responses[3][2]) == {"status": "ok"}


def test_an_http_1_0_request_without_host_is_answered(server: ServerProcess) -> None:
    body = json.dumps({"text": ["a b c"]}).encode()
    payload = f"POST {TRANSLATE} HTTP/1.0\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    [(status, headers, content)] = split_responses(read_all(payload, server.url))
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(content)["translations"][0]["text"] == "c b a"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v1/models", "/metrics", "/"])
def test_options_on_a_read_endpoint_is_405_with_allow(shared: httpx.Client, path: str) -> None:
    response = shared.options(path)
    error_of(response, 405)
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "HEAD"} <= allowed and "OPTIONS" not in allowed


def test_head_on_the_page_is_get_without_content(shared: httpx.Client) -> None:
    # RFC 9110 §9.3.2: HEAD is GET without content; Content-Length is the GET's.
    get, head = shared.get("/"), shared.head("/")
    assert get.status_code == head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert int(head.headers["content-length"]) == len(get.content)


# --- a body battery for the tag and generate endpoints ------------------------------------------


@pytest.mark.parametrize(
    "path,content,status,message",
    [
        (TAG, b'{"tokens": [["a"], "b"]}', 400, "tokens[1] must be a list of strings"),
        (TAG, b'{"tokens": [[1]]}', 400, "tokens[0] must be a list of strings"),
        (TAG, b'{"tokens": "a b"}', 400, "tokens must be a list of lists"),
        (TAG, b'{"text": "a b"}', 400, "text must be a list of strings"),
        (TAG, b'{"text": ["a"], "beam": 2}', 400, "unknown field 'beam'"),
        (TAG, b'{"text": ["a"]} {"text": ["b"]}', 400, "not valid JSON"),
        (TAG, b'{"text": ["a"]}\x00', 400, "not valid JSON"),
        (TAG, b'{"tokens": [["a\\u00a0b"]]}', 422, "tokens[0] has an empty word"),
        (TAG, b'{"tokens": [[""]]}', 422, "tokens[0] has an empty word"),
        (TAG, b'{"text": [' + b'"a",' * 8 + b'"a"]}', 413, "9 sentences in one request"),
        (GENERATE, b'{"prefix": ["t"]}', 400, "prefix must be a string"),
        (GENERATE, b'{"length": 3}', 400, "prefix must be a string"),
        (GENERATE, b'{"prefix": "t", "length": 1.5}', 400, "length must be an integer"),
        (GENERATE, b'{"prefix": "t", "length": true}', 400, "length must be an integer"),
        (GENERATE, b'{"prefix": "t", "length": 61}', 422, "length must be between 0 and 60"),
        (GENERATE, b'{"prefix": "t", "temperature": "1"}', 400, "temperature must be a number"),
        (GENERATE, b'{"prefix": "t", "temperature": 1e400}', 422, "finite number"),
        (GENERATE, b'{"prefix": "t", "temperature": NaN}', 400, "not valid JSON"),
        (GENERATE, b'{"prefix": "t", "top_k": -1}', 422, "top_k must be 0"),
        (GENERATE, b'{"prefix": "t", "top_k": 2.0}', 400, "top_k must be an integer"),
        (GENERATE, b'{"prefix": "t", "seed": -1}', 422, "seed must be between"),
        (GENERATE, b'{"prefix": "t", "seed": 9223372036854775808}', 422, "seed must be between"),
        (GENERATE, b'{"prefix": "t", "seed": "1"}', 400, "seed must be an integer"),
        (GENERATE, b'{"prefix": "t", "text": ["a"]}', 400, "unknown field 'text'"),
        (TRANSLATE, b'{"text": ["a"], "n_best": 0}', 422, "n_best must be between 1"),
        (TRANSLATE, b'{"text": ["a"], "n_best": -1}', 422, "n_best must be between 1"),
        (TRANSLATE, b'{"text": ["a"], "n_best": 1.0}', 400, "n_best must be an integer"),
        (TRANSLATE, b'{"text": ["a"], "n_best": false}', 400, "n_best must be an integer"),
        (TRANSLATE, b'{"text": ["a"], "beam": 1e400}', 400, "beam must be an integer"),
        (TRANSLATE, b'{"text": ["a"], "beam": 99999999999999999999}', 422, "beam must be between"),
        (TRANSLATE, b'{"text": ["a"], "max_len": 0}', 422, "max_len must be between 1 and 60"),
        (TRANSLATE, b'{"text": ["a"], "max_len": 61}', 422, "max_len must be between 1 and 60"),
        (TRANSLATE, b'{"text": ["a"], "max_len": true}', 400, "max_len must be an integer"),
        (TRANSLATE, b'{"text": ["a"], "length_penalty": -0.5}', 422, "length_penalty"),
        (TRANSLATE, b'{"text": ["a"], "length_penalty": "1"}', 400, "length_penalty must be"),
        (TRANSLATE, b'{"text": ["a"], "attention": null}', 400, "attention must be true"),
        (TRANSLATE, b'{"text": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400, ""),
        (TRANSLATE, b'{"text": ["a"]', 400, "not valid JSON"),
        (TRANSLATE, '{"text": ["é"]}'.encode("latin-1"), 400, "not valid JSON"),
    ],
)
def test_every_malformed_body_is_a_json_4xx(
    shared: httpx.Client, path: str, content: bytes, status: int, message: str
) -> None:
    response = shared.post(path, content=content, headers={"Content-Type": "application/json"})
    assert message in error_of(response, status)


def test_null_means_the_default_only_where_a_field_has_none(shared: httpx.Client) -> None:
    # max_len, length_penalty and seed default to "none given": null is that default. The
    # translation must equal the one without the fields.
    plain = shared.post(TRANSLATE, json={"text": ["a b c"]}).json()
    nulls = {"text": ["a b c"], "max_len": None, "length_penalty": None}
    assert shared.post(TRANSLATE, json=nulls).json() == plain
    greedy = {"prefix": "the", "length": 5, "temperature": 0}
    assert shared.post(GENERATE, json={**greedy, "seed": None}).json() == (
        shared.post(GENERATE, json=greedy).json()
    )
