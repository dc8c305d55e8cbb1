"""``rnnlab`` commands run in the test process, with what a user's shell would give them."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch

from rnnlab.cli import EXIT_USER_ERROR, main


class Result(NamedTuple):
    code: int | str | None
    out: str
    err: str


Cli = Callable[..., Result]


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
    threads = torch.get_num_threads()
    try:
        code: int | str | None = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    finally:
        torch.set_num_threads(threads)
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
