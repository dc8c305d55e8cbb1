"""``rnnlab`` commands run in the test process, with what a user's shell would give them."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from typing import NamedTuple

import pytest
import torch

from rnnlab.cli import EXIT_USER_ERROR, main


class Result(NamedTuple):
    code: int | str | None
    out: str
    err: str


Cli = Callable[..., Result]


@contextlib.contextmanager
def threads_kept() -> Iterator[None]:
    """A command sets PyTorch's thread count for the whole process; put it back afterwards, so one
    test's ``train.num_threads`` does not slow or change the next."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def call_main(*argv: object) -> int:
    """``rnnlab ARGV`` in this process (arguments made strings), with the thread count put back."""
    with threads_kept():
        return main([str(a) for a in argv])


def run_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *argv: object,
    stdin: str | bytes | io.TextIOBase = "",
) -> Result:
    """``rnnlab ARGV`` with ``stdin``: text, bytes (read as a UTF-8 terminal's, with a buffer) or a
    ready stream. An argparse exit gives its status like the real command; the thread count the
    command sets is put back."""
    if isinstance(stdin, bytes):
        stream: io.TextIOBase = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    elif isinstance(stdin, str):
        stream = io.StringIO(stdin)
    else:
        stream = stdin
    monkeypatch.setattr("sys.stdin", stream)
    capsys.readouterr()
    try:
        code: int | str | None = call_main(*argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def assert_user_error(result: Result, *fragments: str) -> str:
    """Exit status 2 and exactly one stderr line ``rnnlab: error: …`` holding every fragment."""
    lines = result.err.splitlines()
    assert result.code == EXIT_USER_ERROR, result
    assert len(lines) == 1, lines
    assert lines[0].startswith("rnnlab: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
