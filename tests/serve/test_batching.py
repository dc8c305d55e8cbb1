"""Dynamic batching: merged batches give every request what it would get alone."""

from __future__ import annotations

import asyncio
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from rnnlab.serve.batching import BatchQueue, QueueFull
from tests.conftest import SYMBOLS


def _queue(batches: list[tuple[object, list[int]]], **settings: object) -> BatchQueue:
    def run_batch(key: object, payloads: list[int]) -> list[object]:
        batches.append((key, list(payloads)))
        return [ValueError("odd") if p == 13 else p * 10 for p in payloads]

    options = {"max_batch": 4, "max_wait_s": 0.05, "max_queue": 100, **settings}
    return BatchQueue(run_batch=run_batch, **options)  # type: ignore[arg-type]


def test_queue_merges_requests_by_key_up_to_the_batch_size():
    batches: list[tuple[object, list[int]]] = []

    async def main() -> list[object]:
        queue = _queue(batches)
        queue.start()
        results = await asyncio.gather(
            queue.submit("k", [1, 2]),
            queue.submit("other", [3]),
            queue.submit("k", [4, 5, 6]),
            queue.submit("k", [7]),
        )
        await queue.stop()
        return results

    assert asyncio.run(main()) == [[10, 20], [30], [40, 50, 60], [70]]
    assert batches == [("k", [1, 2, 4, 5]), ("other", [3]), ("k", [6, 7])]


def test_queue_errors_stay_with_their_item_and_full_queue_refuses():
    batches: list[tuple[object, list[int]]] = []

    async def main() -> None:
        queue = _queue(batches, max_queue=3)
        queue.start()
        good = asyncio.ensure_future(queue.submit("k", [1]))
        with pytest.raises(ValueError, match="odd"):
            await queue.submit("k", [13])
        assert await good == [10]
        with pytest.raises(QueueFull):
            await queue.submit("k", [1, 2, 3, 4])
        await queue.stop()

    asyncio.run(main())


def test_cancelled_requests_are_dropped_before_decoding():
    batches: list[tuple[object, list[int]]] = []

    async def main() -> None:
        queue = _queue(batches, max_wait_s=0.2)
        queue.start()
        gone = asyncio.ensure_future(queue.submit("k", [1, 2]))
        await asyncio.sleep(0.01)
        gone.cancel()
        assert await queue.submit("k", [3]) == [30]
        await queue.stop()

    asyncio.run(main())
    assert batches == [("k", [3])]


@pytest.fixture(scope="module")
def batching_server(start_server, translator_run):
    return start_server(
        f"reverse={translator_run}", "--max-batch-sentences", "16", "--max-wait-ms", "50"
    )


def _requests(count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(SYMBOLS) for _ in range(rng.randint(1, 7)))

    bodies: list[dict[str, object]] = []
    for i in range(count):
        if i % 5 == 3:
            bodies.append({"text": [sentence(), "", sentence()]})
        elif i % 5 == 4:
            bodies.append({"text": [sentence()], "beam": 3, "n_best": 2})
        else:
            bodies.append({"text": [sentence()]})
    return bodies


def _batch_counts(url: str) -> tuple[float, float]:
    samples = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("rnnlab_batch_sentences_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return (
        samples['rnnlab_batch_sentences_count{model="reverse"}'],
        samples['rnnlab_batch_sentences_sum{model="reverse"}'],
    )


def test_concurrent_requests_equal_requests_alone(batching_server):
    url = f"{batching_server.url}/v1/models/reverse/translate"
    bodies = _requests(40, seed=5)
    with httpx.Client(timeout=60) as client:
        alone = [client.post(url, json=body).json() for body in bodies]
    batches_before, sentences_before = _batch_counts(batching_server.url)

    barrier = threading.Barrier(len(bodies))

    def send(body: dict[str, object]) -> dict[str, object]:
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            response = client.post(url, json=body)
            assert response.status_code == 200, response.text
            return response.json()

    with ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(send, bodies))

    batches_after, sentences_after = _batch_counts(batching_server.url)
    sentences = sentences_after - sentences_before
    batches = batches_after - batches_before
    assert sentences == sum(len(b["text"]) for b in bodies)  # type: ignore[arg-type]
    assert batches < sentences / 2, "concurrent sentences were not merged into batches"
    for got, want in zip(together, alone, strict=True):
        assert [t["text"] for t in got["translations"]] == [t["text"] for t in want["translations"]]
        for g, w in zip(got["translations"], want["translations"], strict=True):
            # Batched matrix products round differently from single-row ones: scores agree to
            # float precision, not bit for bit.
            assert g["score"] == pytest.approx(w["score"], rel=1e-4, abs=1e-5)
            assert [a["text"] for a in g.get("n_best", [])] == [
                a["text"] for a in w.get("n_best", [])
            ]
