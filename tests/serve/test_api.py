"""The HTTP contract of ``rnnlab serve``: every endpoint, every refusal and its status code."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
import torch

import rnnlab
from tests.serve.responses import error_of


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def local_translator(translator_run):
    torch.set_num_threads(1)
    return rnnlab.load(translator_run, device="cpu")


def test_health_readiness_and_models(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {"reverse", "pos", "tm"}
    reverse = models["reverse"]
    assert reverse["task"] == "seq2seq" and reverse["attention"] == "bahdanau"
    assert (reverse["src_lang"], reverse["tgt_lang"]) == ("en", "fr")
    assert reverse["src_vocab_size"] == 12 and reverse["cell"] == "gru"
    assert models["pos"]["task"] == "tagger" and "NOUN" in models["pos"]["tags"]
    assert models["tm"]["task"] == "lm" and models["tm"]["tokenizer"] == "char"


def test_translate_equals_the_library(client, local_translator):
    lines = ["a b c d", "", "h g f"]
    data = client.post("/v1/models/reverse/translate", json={"text": lines}).json()
    expected = local_translator.translate(lines)
    assert [t["text"] for t in data["translations"]] == [t.text for t in expected]
    assert [t["score"] for t in data["translations"]] == pytest.approx(
        [t.score for t in expected], abs=1e-5
    )
    assert all("n_best" not in t and "attention" not in t for t in data["translations"])


def test_translate_n_best_and_attention(client, local_translator):
    body = {"text": ["a b c", "e f"], "beam": 3, "n_best": 2, "attention": True}
    data = client.post("/v1/models/reverse/translate", json=body).json()
    expected = local_translator.translate(["a b c", "e f"], beam=3, n_best=2, attention=True)
    for got, want in zip(data["translations"], expected, strict=True):
        assert [a["text"] for a in got["n_best"]] == [text for text, _ in want.n_best]
        assert got["n_best"][0] == {"text": got["text"], "score": got["score"]}
        attention = got["attention"]
        assert attention["src_tokens"] == want.attention.src_tokens
        assert attention["out_tokens"] == want.attention.out_tokens
        assert torch.tensor(attention["weights"]).sum(-1) == pytest.approx(1.0, abs=1e-4)


def test_tag_text_and_tokens(client, tagger_run):
    tagger = rnnlab.load(tagger_run, device="cpu")
    words = [["The", "dog", "barked", "."], ["Is", "it", "late", "?"]]
    expected = [s.tags for s in tagger.tag(words)]
    by_text = client.post("/v1/models/pos/tag", json={"text": [" ".join(w) for w in words]})
    by_tokens = client.post("/v1/models/pos/tag", json={"tokens": words})
    for response in (by_text, by_tokens):
        sentences = response.json()["sentences"]
        assert [s["tokens"] for s in sentences] == words
        assert [s["tags"] for s in sentences] == expected


def test_generate(client):
    body = {"prefix": "the quick", "length": 10, "temperature": 0}
    assert client.post("/v1/models/tm/generate", json=body).json() == {
        "text": "the quick brown fox"
    }
    sampled = {"prefix": "t", "length": 30, "temperature": 1.5, "top_k": 5, "seed": 7}
    first = client.post("/v1/models/tm/generate", json=sampled).json()["text"]
    assert client.post("/v1/models/tm/generate", json=sampled).json()["text"] == first
    assert len(first) == 31


@pytest.mark.parametrize(
    "content,status,message",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (json.dumps({"text": "a b"}).encode(), 400, "text must be a list of strings"),
        (json.dumps({"text": ["a", 3]}).encode(), 400, "text must be a list of strings"),
        (json.dumps({"text": ["a"], "beam": "2"}).encode(), 400, "beam must be an integer"),
        (json.dumps({"text": ["a"], "beam": True}).encode(), 400, "beam must be an integer"),
        (json.dumps({"text": ["a"], "attention": 1}).encode(), 400, "attention must be true"),
        (json.dumps({"text": ["a"], "beem": 2}).encode(), 400, "unknown field 'beem'"),
        (json.dumps({"beam": 2}).encode(), 400, "missing field 'text'"),
        (json.dumps({"text": ["a"] * 9}).encode(), 413, "9 sentences in one request"),
        (json.dumps({"text": ["a " * 40]}).encode(), 422, "text[0] has 80 characters"),
        (json.dumps({"text": ["a"], "beam": 0}).encode(), 422, "beam must be between 1 and 64"),
        (json.dumps({"text": ["a"], "beam": 65}).encode(), 422, "beam must be between 1 and 64"),
        (json.dumps({"text": ["a"], "beam": 2, "n_best": 3}).encode(), 422, "n_best must be"),
        (json.dumps({"text": ["a"] * 7}).encode(), 413, "model 'reverse' queues at most 6"),
    ],
)
def test_translate_refusals(client, content, status, message):
    response = client.post(
        "/v1/models/reverse/translate",
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert message in error_of(response, status)
    if status == 503:
        assert response.headers["Retry-After"] == "1"


def test_other_refusals(client):
    assert "no model named 'nope'" in error_of(
        client.post("/v1/models/nope/translate", json={"text": ["a"]}), 404
    )
    assert "has no /tag endpoint" in error_of(
        client.post("/v1/models/reverse/tag", json={"text": ["a"]}), 404
    )
    assert "has no /translate endpoint" in error_of(
        client.post("/v1/models/tm/translate", json={"text": ["a"]}), 404
    )
    error_of(client.get("/v1/nothing"), 404)
    error_of(client.get("/v1/models/reverse/translate"), 405)
    assert "exactly one of" in error_of(client.post("/v1/models/pos/tag", json={}), 400)
    assert "tokens[0] has an empty word" in error_of(
        client.post("/v1/models/pos/tag", json={"tokens": [["a b"]]}), 422
    )
    assert "length must be between 0 and 60" in error_of(
        client.post("/v1/models/tm/generate", json={"prefix": "t", "length": -1}), 422
    )
    assert "temperature must be 0" in error_of(
        client.post("/v1/models/tm/generate", json={"prefix": "t", "temperature": -0.5}), 422
    )
    assert "never seen in training" in error_of(
        client.post("/v1/models/tm/generate", json={"prefix": "XYZ", "length": 3}), 422
    )
    assert "prefix must be a string" in error_of(
        client.post("/v1/models/tm/generate", json={"prefix": None}), 400
    )


def test_body_limit_with_and_without_content_length(client):
    big = json.dumps({"text": ["a"] * 2000}).encode()
    assert "limit is 2048" in error_of(
        client.post("/v1/models/reverse/translate", content=big), 413
    )

    def chunks():
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    assert "over the limit" in error_of(
        client.post("/v1/models/reverse/translate", content=chunks()), 413
    )


def test_refused_requests_leave_the_server_working(client):
    for _ in range(3):
        client.post("/v1/models/reverse/translate", content=b"{")
        client.post("/v1/models/nope/translate", json={"text": ["a"]})
    response = client.post("/v1/models/reverse/translate", json={"text": ["a b"]})
    assert response.json()["translations"][0]["text"] == "b a"
    assert client.get("/healthz").status_code == 200


def test_metrics(client):
    client.post("/v1/models/reverse/translate", json={"text": ["a b", "c d"]})
    client.post("/v1/models/reverse/translate", content=b"{")
    text = client.get("/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    ok = 'rnnlab_requests_total{endpoint="/v1/models/{name}/translate",status="200"}'
    bad = 'rnnlab_requests_total{endpoint="/v1/models/{name}/translate",status="400"}'
    assert samples[ok] >= 1 and samples[bad] >= 1
    assert samples['rnnlab_batch_sentences_count{model="reverse"}'] >= 1
    assert samples['rnnlab_batch_sentences_sum{model="reverse"}'] >= 2
    assert 'rnnlab_queue_depth{model="reverse"}' in samples
    assert (
        samples['rnnlab_request_duration_seconds_count{endpoint="/v1/models/{name}/translate"}']
        >= samples[ok]
    )


def test_web_page_and_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js">' in page.text
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]


def test_clients_that_go_away_mid_request_do_not_disturb_others(server, client):
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"text": ["a b c"]}).encode()
    head = (
        "POST /v1/models/reverse/translate HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n"
    )
    for payload in (
        head.format(1000).encode() + body[:4],  # half a body, then gone
        head.format(len(body)).encode() + body,  # a whole request, gone before the answer
    ):
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(payload)
    response = client.post("/v1/models/reverse/translate", json={"text": ["a b c", "h g"]})
    assert [t["text"] for t in response.json()["translations"]] == ["c b a", "g h"]
    assert client.get("/healthz").json() == {"status": "ok"}
