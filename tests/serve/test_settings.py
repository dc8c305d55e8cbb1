"""``rnnlab.serve.settings``: the defaults, the bounds each limit must keep, and their CLI errors.

References: the README's serving section gives the defaults of every ``rnnlab serve`` option
(64 sentences a batch, 5 ms, 1 MiB, 256 sentences, 1000 characters, 1024 queued sentences) and the
option names; ``rnnlab serve``'s own argument parser gives the option strings the errors must name;
the field docstrings give what each limit means, from which the bounds follow (a wait is a finite
time: the first sentence of a batch must not wait for ever).
"""

from __future__ import annotations

import dataclasses
import math
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from rnnlab.cli import build_parser, main
from rnnlab.serve.settings import ServeSettings

# From the README: "--max-batch-sentences (64)", "--max-wait-ms (5)", "--max-request-bytes
# (1 MiB)", "--max-sentences (256)", "--max-chars (1000)", "--max-queue (1024)".
README_DEFAULTS = {
    "max_batch_sentences": 64,
    "max_wait_ms": 5,
    "max_request_bytes": 1024 * 1024,
    "max_sentences": 256,
    "max_chars": 1000,
    "max_queue": 1024,
}
AT_LEAST_ONE = ["max_batch_sentences", "max_request_bytes", "max_sentences", "max_chars"]
AT_LEAST_ZERO = ["max_wait_ms", "max_queue"]


def option(field: str) -> str:
    return "--" + field.replace("_", "-")


def test_defaults_are_the_readme_defaults() -> None:
    settings = ServeSettings()
    assert {name: getattr(settings, name) for name in README_DEFAULTS} == README_DEFAULTS


def test_every_field_is_an_option_of_rnnlab_serve_with_the_same_default() -> None:
    assert {field.name for field in dataclasses.fields(ServeSettings)} == set(README_DEFAULTS)
    args = build_parser().parse_args(["serve", "runs/x"])
    assert {name: getattr(args, name) for name in README_DEFAULTS} == README_DEFAULTS


def test_settings_cannot_change_under_a_running_server() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ServeSettings().max_queue = 1  # type: ignore[misc]


@pytest.mark.parametrize("field", AT_LEAST_ONE)
def test_limits_that_count_something_are_at_least_one(field: str) -> None:
    assert getattr(ServeSettings(**{field: 1}), field) == 1
    for value in (0, -1):
        with pytest.raises(ValueError) as caught:
            ServeSettings(**{field: value})
        assert str(caught.value) == f"{field} must be 1 or more, got {value}"


@pytest.mark.parametrize("field", AT_LEAST_ZERO)
def test_the_wait_and_the_queue_may_be_zero_but_not_negative(field: str) -> None:
    # A wait of 0 ms turns batching-by-waiting off; a queue of 0 refuses every request with 503.
    assert getattr(ServeSettings(**{field: 0}), field) == 0
    for value in (-1, -0.001):
        with pytest.raises(ValueError) as caught:
            ServeSettings(**{field: value})
        assert field in str(caught.value)


@pytest.mark.parametrize("wait", [math.nan, math.inf], ids=["nan", "inf"])
def test_a_wait_that_never_ends_is_refused(wait: float) -> None:
    with pytest.raises(ValueError):
        ServeSettings(max_wait_ms=wait)


# --- the same checks from the command line -------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port already in use: were a bad setting accepted, `rnnlab serve` would stop with a port
    error instead of serving for ever, so these tests cannot hang."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


def rnnlab_serve(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["serve", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "field,value",
    [(field, "0") for field in AT_LEAST_ONE] + [(field, "-1") for field in AT_LEAST_ZERO],
)
def test_a_bad_limit_is_a_one_line_error_naming_the_option(
    capsys: pytest.CaptureFixture[str],
    translator_run: Path,
    busy_port: int,
    field: str,
    value: str,
) -> None:
    name = option(field)
    # The option exists as spelled (argparse would exit on an unknown one) and sets the field.
    assert float(getattr(build_parser().parse_args(["serve", "runs/x", name, value]), field)) == (
        float(value)
    )
    code, err = rnnlab_serve(capsys, str(translator_run), name, value, "--port", str(busy_port))
    assert code == 2
    assert err.startswith("rnnlab: error: ") and err.count("\n") == 1, err
    assert name in err and "max_" not in err  # the option as typed, not the field name


@pytest.mark.parametrize("wait", ["nan", "inf", "1e400"])
def test_a_wait_that_never_ends_is_refused_from_the_command_line(
    capsys: pytest.CaptureFixture[str], translator_run: Path, busy_port: int, wait: str
) -> None:
    code, err = rnnlab_serve(
        capsys, str(translator_run), "--max-wait-ms", wait, "--port", str(busy_port)
    )
    assert code == 2 and "--max-wait-ms" in err, err
