"""The trainer's reporting seam (``rnnlab.training.reporting``): the ``Reporter`` and ``Progress``
protocols and the silent default the library falls back on.

References: the protocols' own declared signatures (read with ``inspect``), tqdm (the progress bar the
CLI plugs in behind ``Progress``), and pytest's capture of file descriptors and log records.
"""

from __future__ import annotations

import copy
import inspect
import io
import logging
from typing import Any

import pytest
from tqdm import tqdm

from rnnlab.training.reporting import Progress, Reporter, SilentReporter

REPORTER_METHODS = ("record", "message", "progress")
PROGRESS_METHODS = ("update", "set_postfix_str", "close")


def call_shape(function: Any) -> list[tuple[str, Any, Any]]:
    """Name, kind and default of every parameter after ``self``: what a caller may rely on."""
    parameters = list(inspect.signature(function).parameters.values())
    if parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    return [(p.name, p.kind, p.default) for p in parameters]


@pytest.mark.parametrize("method", REPORTER_METHODS)
def test_silent_reporter_accepts_every_call_the_protocol_declares(method: str) -> None:
    # The protocol is not runtime-checkable, so conformance is checked on the signatures.
    assert call_shape(getattr(SilentReporter, method)) == call_shape(getattr(Reporter, method))


@pytest.mark.parametrize("method", PROGRESS_METHODS)
def test_silent_progress_accepts_every_call_the_protocol_declares(method: str) -> None:
    bar = SilentReporter().progress(10, "epoch 1/1")
    assert call_shape(getattr(type(bar), method)) == call_shape(getattr(Progress, method))


def test_silent_reporter_prints_and_logs_nothing(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    reporter = SilentReporter()
    record = {"step": 4, "train_loss": 1.25, "nested": {"tag": [1, 2]}}
    before = copy.deepcopy(record)
    with caplog.at_level(logging.DEBUG):
        assert reporter.record(record) is None
        assert reporter.message("checkpoint saved") is None
        bar = reporter.progress(3, "epoch 1/2", initial=1)
        # The trainer's call pattern: positional update(1) and a postfix string, then close.
        for _ in range(3):
            assert bar.update(1) is None
        assert bar.update() is None
        assert bar.set_postfix_str("loss 0.500") is None
        assert bar.close() is None
        assert bar.close() is None  # closing twice is harmless, as for tqdm
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert caplog.records == []
    # The trainer also writes the same record to metrics.jsonl: reporting must not alter it.
    assert record == before


def test_each_progress_call_gets_its_own_bar() -> None:
    reporter = SilentReporter()
    first, second = reporter.progress(1, "a"), reporter.progress(1, "b")
    first.close()
    # Closing one bar must not affect another the caller still holds.
    assert second.update(1) is None


@pytest.mark.parametrize("method", PROGRESS_METHODS)
def test_tqdm_offers_every_progress_method(method: str) -> None:
    # The CLI hands the trainer a tqdm bar as a Progress: each protocol method must exist there.
    assert callable(getattr(tqdm, method, None))


def test_tqdm_accepts_the_progress_calls_the_trainer_makes() -> None:
    stream = io.StringIO()
    bar: Progress = tqdm(total=3, initial=1, desc="epoch 1/1", file=stream, mininterval=0)
    bar.update(1)
    bar.update()
    bar.set_postfix_str("loss 0.500")
    bar.close()
    assert isinstance(bar, tqdm) and bar.n == 3  # initial 1 + update(1) + update(), n = 1
    assert "loss 0.500" in stream.getvalue() and "3/3" in stream.getvalue()


def test_progress_defaults_match_tqdm_where_the_protocol_declares_one() -> None:
    # ``update()`` with no argument advances by one, in the protocol and in tqdm alike.
    protocol_default = inspect.signature(Progress.update).parameters["n"].default
    tqdm_default = inspect.signature(tqdm.update).parameters["n"].default
    assert protocol_default == tqdm_default == 1
    initial_default = inspect.signature(Reporter.progress).parameters["initial"].default
    assert initial_default == inspect.signature(tqdm.__init__).parameters["initial"].default == 0
