"""Load and abuse benchmark of ``rnnlab serve`` on loopback (not a test).

Starts two servers on the same trained translator in this run: dynamic batching (the defaults) and
``--max-batch-sentences 1`` (no batching across requests). For each C in ``--clients``, C concurrent
clients send single-sentence translate requests (real test sentences, round-robin) until
``--requests`` answers or ``--seconds`` pass; the two servers are measured in alternating windows,
``--reps`` times, and the medians are reported: sentences/s, p50/p95/p99 latency, failed requests.

Then the abuse phase on the batching server: the C = 64 load again while other clients send bodies
over the limit, malformed JSON, unknown models, 10,000-character lines and requests they abandon
mid-body or before the answer. Every good request must still succeed; the server's resident memory
is sampled between rounds to show it stays flat.

    python benchmarks/serve_load.py --run runs/bench-fra              # trains it first if missing

The model: ``configs/seq2seq/fra-eng.yaml`` trained for ``--train-minutes`` when ``--run`` does not
exist. Sentences: the English side of ``data/fra-eng/test.tsv``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def train_if_missing(run: Path, minutes: float) -> None:
    if (run / "best").exists():
        return
    command = [
        sys.executable, "-m", "rnnlab", "train", "seq2seq",
        "--config", str(REPO / "configs/seq2seq/fra-eng.yaml"), "--out", str(run), "--overwrite",
        "--set", f"train.max_minutes={minutes}",
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=REPO)


def test_sentences(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0] for line in lines if line.strip()]


class Server:
    """``rnnlab serve`` in a child process on a free loopback port."""

    def __init__(self, name: str, run: Path, log: Path, *flags: str) -> None:
        self.name = name
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rnnlab", "serve", f"m={run}", "--port", "0", *flags],
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
            cwd=REPO,
        )
        deadline = time.monotonic() + 120
        self.url = ""
        while not self.url and time.monotonic() < deadline:
            match = re.search(r"on (http://\S+)", log.read_text())
            self.url = match.group(1) if match else ""
            time.sleep(0.1)
        while httpx.get(f"{self.url}/readyz").status_code != 200:
            time.sleep(0.1)

    def batches(self) -> tuple[float, float]:
        """(batches, sentences) decoded so far, from the server's Prometheus histogram."""
        found = dict.fromkeys(("count", "sum"), 0.0)
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            for key in found:
                if line.startswith(f'rnnlab_batch_sentences_{key}{{model="m"}}'):
                    found[key] = float(line.rsplit(" ", 1)[1])
        return found["count"], found["sum"]

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@dataclass
class LoadResult:
    answered: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


class Connection:
    """One keep-alive HTTP/1.1 connection, written by hand: on a 2-core machine shared with the
    server, a full client library per request costs as much CPU as the server does, and the
    figures would measure the client."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = int(head.split(" ", 2)[1])
        length = int(re.search(r"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        payload = await self.reader.readexactly(length)
        if re.search(r"(?i)connection: *close", head):
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = self.reader = None


async def load(
    url: str, sentences: list[str], *, clients: int, requests: int, seconds: float, offset: int = 0
) -> LoadResult:
    """C clients, one connection each, single-sentence requests until the count or time is up."""
    result = LoadResult()
    counter = iter(range(offset, offset + requests))
    deadline = time.monotonic() + seconds
    host, port = url.removeprefix("http://").split(":")
    bodies = [json.dumps({"text": [s]}).encode() for s in sentences]

    async def client() -> None:
        connection = Connection(host, int(port))
        for i in counter:
            if time.monotonic() > deadline:
                break
            start = time.perf_counter()
            try:
                status, payload = await connection.post(
                    "/v1/models/m/translate", bodies[i % len(bodies)]
                )
                ok = status == 200 and len(json.loads(payload)["translations"]) == 1
            except (OSError, asyncio.IncompleteReadError, ValueError):
                ok = False
                await connection.close()
            if ok:
                result.latencies.append(time.perf_counter() - start)
                result.answered += 1
            else:
                result.failed += 1
        await connection.close()

    begin = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.seconds = time.perf_counter() - begin
    return result


async def abuse(url: str, stop: asyncio.Event) -> Counter[str]:
    """Bad requests of every kind, in a loop until ``stop``; counts of what came back."""
    seen: Counter[str] = Counter()
    host, port = url.removeprefix("http://").split(":")
    good = json.dumps({"text": ["hello ."]}).encode()
    kinds = [
        ("over_limit", "/v1/models/m/translate", b'{"text": ["' + b"a " * 600_000 + b'"]}'),
        ("malformed", "/v1/models/m/translate", b'{"text": ["unclosed'),
        ("unknown_model", "/v1/models/nope/translate", good),
        ("long_line", "/v1/models/m/translate", json.dumps({"text": ["x" * 10_000]}).encode()),
    ]
    async with httpx.AsyncClient(timeout=60) as http:
        while not stop.is_set():
            for kind, path, body in kinds:
                try:
                    response = await http.post(f"{url}{path}", content=body)
                    seen[f"{kind}:{response.status_code}"] += 1
                except httpx.HTTPError as exc:
                    seen[f"{kind}:{type(exc).__name__}"] += 1
            # A client that sends half its body and goes away.
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST /v1/models/m/translate HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + good[:5]
            )
            await writer.drain()
            writer.close()
            seen["disconnect_mid_body"] += 1
            # A client that sends a whole request and leaves before the answer.
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST /v1/models/m/translate HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: "
                + str(len(good)).encode()
                + b"\r\n\r\n"
                + good
            )
            await writer.drain()
            writer.close()
            seen["disconnect_before_answer"] += 1
    return seen


async def abuse_round(url: str, sentences: list[str], args: argparse.Namespace, offset: int):
    stop = asyncio.Event()
    abusers = [asyncio.create_task(abuse(url, stop)) for _ in range(4)]
    good = await load(
        url, sentences, clients=64, requests=args.requests, seconds=args.seconds, offset=offset
    )
    stop.set()
    counts: Counter[str] = Counter()
    for task in abusers:
        counts.update(await task)
    return good, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs/bench-fra")
    parser.add_argument("--train-minutes", type=float, default=6.0)
    parser.add_argument("--data", type=Path, default=REPO / "data/fra-eng/test.tsv")
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--requests", type=int, default=1500, help="per window")
    parser.add_argument("--seconds", type=float, default=20.0, help="per window")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--abuse-rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads of each server")
    parser.add_argument("--max-wait-ms", default="5", help="of the batching server")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/serve_load.json")
    args = parser.parse_args()

    train_if_missing(args.run, args.train_minutes)
    sentences = test_sentences(args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    threads = ["--threads", str(args.threads)]
    servers = {
        "batched": Server(
            "batched",
            args.run,
            args.out.with_suffix(".batched.log"),
            "--max-wait-ms",
            args.max_wait_ms,
            *threads,
        ),
        "unbatched": Server(
            "unbatched",
            args.run,
            args.out.with_suffix(".unbatched.log"),
            "--max-batch-sentences",
            "1",
            *threads,
        ),
    }
    report: dict[str, object] = {"load_average_start": os.getloadavg()[0], "levels": {}}
    try:
        offset = 0
        for clients in [int(c) for c in args.clients.split(",")]:
            windows: dict[str, list[LoadResult]] = {name: [] for name in servers}
            batches_before = servers["batched"].batches()
            for _ in range(args.reps):
                for name, server in servers.items():  # alternating windows
                    result = asyncio.run(
                        load(
                            server.url,
                            sentences,
                            clients=clients,
                            requests=args.requests,
                            seconds=args.seconds,
                            offset=offset,
                        )
                    )
                    windows[name].append(result)
                    offset += result.answered + result.failed
            batches_after = servers["batched"].batches()
            level: dict[str, object] = {
                "load_average": os.getloadavg()[0],
                "batched_mean_batch": (batches_after[1] - batches_before[1])
                / max(batches_after[0] - batches_before[0], 1),
            }
            for name, results in windows.items():
                level[name] = {
                    "sentences_per_s": statistics.median(r.rate for r in results),
                    "p50_ms": statistics.median(r.percentile(0.50) for r in results),
                    "p95_ms": statistics.median(r.percentile(0.95) for r in results),
                    "p99_ms": statistics.median(r.percentile(0.99) for r in results),
                    "failed": sum(r.failed for r in results),
                    "answered": sum(r.answered for r in results),
                }
            batched, unbatched = level["batched"], level["unbatched"]
            level["speedup"] = batched["sentences_per_s"] / unbatched["sentences_per_s"]  # type: ignore[index]
            report["levels"][clients] = level  # type: ignore[index]
            print(json.dumps({"clients": clients, **level}), flush=True)

        server = servers["batched"]
        memory = [server.rss_mb()]
        rounds = []
        for i in range(args.abuse_rounds):
            good, counts = asyncio.run(abuse_round(server.url, sentences, args, 10_000 * (i + 1)))
            memory.append(server.rss_mb())
            rounds.append(
                {
                    "good_answered": good.answered,
                    "good_failed": good.failed,
                    "p50_ms": good.percentile(0.5),
                    "p99_ms": good.percentile(0.99),
                    "abuse": dict(sorted(counts.items())),
                    "rss_mb_after": memory[-1],
                }
            )
            print(json.dumps({"abuse_round": i, **rounds[-1]}), flush=True)
        report["abuse"] = {"rounds": rounds, "rss_mb": memory}
        report["healthz_after_abuse"] = httpx.get(f"{server.url}/healthz").status_code
    finally:
        report["exit_status"] = {name: s.stop() for name, s in servers.items()}
        report["load_average_end"] = os.getloadavg()[0]
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("exit_status", "load_average_end")}))


if __name__ == "__main__":
    main()
