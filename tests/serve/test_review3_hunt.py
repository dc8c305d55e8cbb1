"""The new-run config checks (``RunConfig.check_new_run``), the batch queue's immediate withdrawal,
``rnnlab serve``'s early flag checks and early signal handlers.

Servers run on 127.0.0.1 port 0 and are always stopped; ``BatchQueue`` is driven directly with a
fake model.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml

from rnnlab.cli import main
from rnnlab.config import save_config
from rnnlab.errors import ConfigError
from rnnlab.rundir import load_task_config, read_run_config
from rnnlab.serve.batching import BatchQueue
from rnnlab.serve.models import ModelSpec
from rnnlab.serve.server import bind, serve
from rnnlab.serve.settings import ServeSettings

REPO = Path(__file__).resolve().parents[2]
TM = REPO / "data" / "timemachine"


# --- helpers -------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int | str | None, str]:
    capsys.readouterr()
    try:
        code: int | str | None = main(list(args))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def vectors(tmp_path: Path) -> Path:
    """A tiny GloVe-style file (the pretrained-embedding keys need a path)."""
    path = tmp_path / "vectors.txt"
    path.write_text("the 0.1 0.2 0.3 0.4\nof 0.5 0.6 0.7 0.8\n", encoding="utf-8")
    return path


def tied_lm_overrides(tmp_path: Path) -> list[str]:
    return [
        f"data.train={TM / 'train.txt'}",
        f"data.valid={TM / 'valid.txt'}",
        "model.embed_size=4",
        "model.hidden_size=4",
        "model.tie_weights=true",
        f"model.pretrained_embeddings={vectors(tmp_path)}",
        "train.weight_decay=0",
    ]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something already listens on: a flag that got through stops ``serve`` at binding."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


# --- config: checks of a new run -----------------------------------------------------------------


def test_a_new_seq2seq_run_with_one_language_on_both_sides_is_refused_before_its_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, err = cli(capsys, "train", "seq2seq", "--out", str(out), "--set", "data.tgt_lang=en")
    assert code == 2, err
    assert "data.tgt_lang" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_overwrite_still_refuses_tied_frozen_embeddings_and_keeps_the_old_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("task: lm\n", encoding="utf-8")
    overrides = [*tied_lm_overrides(tmp_path), "model.freeze_embeddings=true"]
    sets = [arg for key in overrides for arg in ("--set", key)]
    code, err = cli(capsys, "train", "lm", "--out", str(out), "--overwrite", *sets)
    assert code == 2, err
    assert "model.freeze_embeddings" in err and "tie_weights" in err, err
    assert (out / "config.yaml").read_text(encoding="utf-8") == "task: lm\n"


def test_a_saved_tied_frozen_lm_config_still_reads(tmp_path: Path) -> None:
    config = load_task_config("lm", None, tied_lm_overrides(tmp_path))
    run = tmp_path / "old"
    run.mkdir()
    save_config(config, run / "config.yaml")
    saved = read_run_config(run, ["model.freeze_embeddings=true"])  # as if written before
    assert saved.model.tie_weights and saved.model.freeze_embeddings
    with pytest.raises(ConfigError, match="freeze_embeddings"):
        saved.check_new_run()


def test_a_tuning_trial_whose_searched_value_freezes_tied_embeddings_is_refused(
    tmp_path: Path,
) -> None:
    import optuna

    from rnnlab.training.reporting import SilentReporter
    from rnnlab.tuning.study import _run_trial, plan_study

    base = {
        "task": "lm",
        "data": {"train": str(TM / "train.txt"), "valid": str(TM / "valid.txt")},
        "model": {
            "embed_size": 4,
            "hidden_size": 4,
            "tie_weights": True,
            "pretrained_embeddings": str(vectors(tmp_path)),
        },
        "train": {"weight_decay": 0.0},
    }
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(base), encoding="utf-8")
    (tmp_path / "space.yaml").write_text(
        "model.freeze_embeddings: {type: categorical, choices: [false, true]}\n", encoding="utf-8"
    )
    plan = plan_study(tmp_path / "lm.yaml", tmp_path / "space.yaml", [])  # the base passes
    trial = optuna.trial.FixedTrial({"model.freeze_embeddings": True})
    out = tmp_path / "study"
    out.mkdir()
    with pytest.raises(ConfigError, match="freeze_embeddings"):
        _run_trial(trial, plan, out, SilentReporter())
    assert not (out / "trial-000").exists()


def test_resume_cannot_turn_on_frozen_embeddings_under_tied_weights(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The saved run is a valid tied LM; the override makes it a config that no new run may have.
    # Before 4523cd7 loading it refused the combination; now the resumed run would train (and
    # save to its config.yaml) a tied projection whose rows are frozen.
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_task_config("lm", None, tied_lm_overrides(tmp_path)), run / "config.yaml")
    code, err = cli(capsys, "train", "--resume", str(run), "--set", "model.freeze_embeddings=true")
    assert code == 2, err
    assert "tie_weights" in err and "freeze_embeddings" in err, err


# --- the batch queue: withdrawals ----------------------------------------------------------------


def test_random_withdrawals_lose_or_repeat_no_other_sentence() -> None:
    rng = random.Random(7)
    decoded: list[Any] = []
    depths: list[int] = []

    def run_batch(key: Hashable, payloads: list[Any]) -> list[Any]:
        decoded.extend(payloads)
        return [(key, p) for p in payloads]

    async def scenario() -> tuple[list[tuple[str, list[str], Any]], int, bool]:
        queue = BatchQueue(
            run_batch=run_batch, max_batch=3, max_wait_s=0.005, max_queue=10_000,
            on_depth=depths.append,
        )  # fmt: skip
        queue.start()
        pending = []
        for i in range(120):
            key = rng.choice(["a", "b", "c"])
            payloads = [f"{i}.{j}" for j in range(rng.randint(1, 4))]
            task = asyncio.ensure_future(queue.submit(key, payloads, alone=rng.random() < 0.1))
            pending.append((key, payloads, task))
            if rng.random() < 0.5:
                await asyncio.sleep(rng.choice([0, 0, 0.001]))
            if rng.random() < 0.35:
                rng.choice(pending)[2].cancel()
        outcomes = []
        for key, payloads, task in pending:
            try:
                outcomes.append((key, payloads, await task))
            except asyncio.CancelledError:
                outcomes.append((key, payloads, None))
        depth = queue.depth
        alive = queue._worker is not None and not queue._worker.done()
        await queue.stop()
        return outcomes, depth, alive

    outcomes, depth, alive = asyncio.run(scenario())
    assert depth == 0 and alive
    assert min(depths) >= 0
    answered = [p for _, ps, result in outcomes if result is not None for p in ps]
    for key, payloads, result in outcomes:
        if result is not None:
            assert result == [(key, p) for p in payloads]
    counts = Counter(decoded)
    assert all(n == 1 for n in counts.values()), "a sentence was decoded twice"
    assert set(answered) <= set(counts), "an answered sentence was never decoded"


def test_a_withdrawn_head_lets_the_next_requests_through_and_keeps_their_order() -> None:
    batches: list[tuple[Hashable, list[int]]] = []

    def run_batch(key: Hashable, payloads: list[int]) -> list[int]:
        batches.append((key, list(payloads)))
        return [p * 2 for p in payloads]

    async def scenario() -> tuple[list[int], list[int], int]:
        # A long wait: the head waits for company until it is withdrawn.
        queue = BatchQueue(run_batch=run_batch, max_batch=4, max_wait_s=30.0, max_queue=20)
        queue.start()
        head = asyncio.ensure_future(queue.submit("k", [1]))
        await asyncio.sleep(0.01)
        other = asyncio.ensure_future(queue.submit("j", [5], alone=True))
        mate = asyncio.ensure_future(queue.submit("k", [2, 3, 4, 6]))  # fills a batch of k
        await asyncio.sleep(0)
        head.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await head
        got = await asyncio.wait_for(asyncio.gather(mate, other), 20)
        depth = queue.depth
        await queue.stop()
        return got[0], got[1], depth

    mate, other, depth = asyncio.run(scenario())
    assert mate == [4, 6, 8, 12] and other == [10] and depth == 0
    decoded = [p for _, ps in batches for p in ps]
    assert 1 not in decoded and sorted(decoded) == [2, 3, 4, 5, 6]


def test_withdrawing_a_request_whose_batch_decodes_answers_the_rest_of_the_batch() -> None:
    entered, release = threading.Event(), threading.Event()

    def run_batch(key: Hashable, payloads: list[int]) -> list[int]:
        entered.set()
        release.wait(30)
        return [p + 100 for p in payloads]

    async def scenario() -> tuple[list[int], int]:
        queue = BatchQueue(run_batch=run_batch, max_batch=8, max_wait_s=0.05, max_queue=20)
        queue.start()
        try:
            gone = asyncio.ensure_future(queue.submit("k", [1, 2]))
            kept = asyncio.ensure_future(queue.submit("k", [3]))
            await asyncio.to_thread(entered.wait, 30)  # both are in the decoding batch
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone
            release.set()
            result = await asyncio.wait_for(kept, 20)
            after = await asyncio.wait_for(queue.submit("k", [9]), 20)
            return [*result, *after], queue.depth
        finally:
            release.set()
            await queue.stop()

    results, depth = asyncio.run(scenario())
    assert results == [103, 109] and depth == 0


# --- serve(): signal handlers --------------------------------------------------------------------


def _failing_loader(path: Path) -> Any:
    raise ConfigError(f"{path}: cannot load")


def test_serve_in_the_main_thread_puts_the_signal_handlers_back(tmp_path: Path) -> None:
    assert threading.current_thread() is threading.main_thread()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    announced: list[bool] = []

    def announce() -> None:
        # The startup line comes once the early handlers are in place.
        announced.append(signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM])

    sock = bind("127.0.0.1", 0)
    failure = serve(
        [ModelSpec("m", tmp_path)],
        sock,
        settings=ServeSettings(),
        loader=_failing_loader,
        log_level="warning",
        announce=announce,
    )
    assert failure is not None and "cannot load" in failure
    assert announced == [True]
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_serve_in_another_thread_leaves_the_handlers_alone(tmp_path: Path) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    result: list[Any] = []
    sock = bind("127.0.0.1", 0)

    def target() -> None:
        try:
            result.append(
                serve(
                    [ModelSpec("m", tmp_path)],
                    sock,
                    settings=ServeSettings(),
                    loader=_failing_loader,
                    log_level="warning",
                )
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert len(result) == 1 and isinstance(result[0], str) and "cannot load" in result[0]
    assert {sig: signal.getsignal(sig) for sig in before} == before


SLOW_SERVE = """
import sys, time
import rnnlab.inference as inference

def slow(path, **kwargs):
    time.sleep(300)  # a model that takes long to load

inference.load = slow
from rnnlab.cli import main
sys.exit(main(["serve", sys.argv[1], "--port", "0", "--threads", "1"]))
"""


def test_a_second_sigterm_while_shutdown_waits_for_a_loading_model_ends_the_process(
    tmp_path: Path,
) -> None:
    # SIGTERM during a slow model load stops uvicorn gracefully; asyncio.run then waits for the
    # loading thread. Uvicorn has put back the handler it found, serve()'s early list-appending
    # one, so every further SIGTERM (and Ctrl-C) is swallowed until the model has loaded.
    from rnnlab.tasks.lm_config import LMConfig

    run = tmp_path / "run"
    run.mkdir()
    save_config(LMConfig(), run / "config.yaml")
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_SERVE, str(run)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        match = re.search(r"on (http://\S+)", first)
        assert match, first
        url = match.group(1)
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz").status_code == 503:  # up, the model loading
                    break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)  # the graceful stop
        for _ in range(600):
            try:
                httpx.get(f"{url}/healthz")
            except httpx.TransportError:
                break  # uvicorn has closed its socket
            time.sleep(0.05)
        # Uvicorn's own handler ignores a repeated SIGTERM; once it is gone, one ends the process.
        for _ in range(60):
            if process.poll() is not None:
                break
            process.send_signal(signal.SIGTERM)
            time.sleep(0.1)
        assert process.poll() is not None, "SIGTERM no longer stops the process"
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=60)


# --- rnnlab serve: flags checked before binding --------------------------------------------------


@pytest.mark.parametrize(
    "device,fragment",
    [("tpu", "unknown device 'tpu'"), ("mps", "rnnlab runs on cpu or cuda"), ("cuda:x", "")],
)
def test_a_bad_device_is_a_one_line_error_before_binding(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    busy_port: int,
    device: str,
    fragment: str,
) -> None:
    from rnnlab.tasks.lm_config import LMConfig

    save_config(LMConfig(), tmp_path / "config.yaml")
    code, err = cli(capsys, "serve", str(tmp_path), "--port", str(busy_port), "--device", device)
    assert code == 2, err
    assert err.startswith("rnnlab: error: --device") and err.count("\n") == 1, err
    assert fragment in err and "cannot listen" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_export_is_served_whatever_device_is_named_as_translate_does(
    capsys: pytest.CaptureFixture[str], exported_tagger: Path, busy_port: int
) -> None:
    # ``rnnlab.load`` (and so ``rnnlab tag``) opens the export with device "cuda" on this machine:
    # an export ignores the device. Serving the same export got as far as binding before b460971.
    import rnnlab

    tagger: Any = rnnlab.load(exported_tagger, device="cuda")
    assert tagger.tag(["The dog barked ."])
    code, err = cli(
        capsys, "serve", str(exported_tagger), "--port", str(busy_port), "--device", "cuda"
    )
    assert code == 2 and "cannot listen on" in err, err
