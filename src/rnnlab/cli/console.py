"""What a person sees and types: progress bars, notices, metrics, exit statuses, and stdin read in
blocks so output streams while a long input is still arriving."""

from __future__ import annotations

import codecs
import signal
import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, BinaryIO, TypeVar

from rnnlab import strict_json

EXIT_USER_ERROR = 2
EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_INTERRUPTED = 128 + signal.SIGINT

Item = TypeVar("Item")


class ConsoleReporter:
    """tqdm bars on a terminal; plain log lines (no carriage returns) when output is a file or CI."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())

    def record(self, record: dict[str, Any]) -> None:
        if self.interactive and "valid_loss" not in record and "train_loss" in record:
            return  # the bar's postfix already shows the training loss
        parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()]
        self.message(" ".join(parts))

    def message(self, text: str) -> None:
        if self.interactive:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def output(self, text: str) -> None:
        """``text`` on stdout, the command's output. On a terminal that also shows a live bar,
        the bar is cleared first and drawn again after, so no output line starts on the bar's."""
        if self.interactive:
            from tqdm import tqdm

            with tqdm.external_write_mode(file=sys.stdout):
                sys.stdout.write(text)
                sys.stdout.flush()
        else:
            sys.stdout.write(text)
            sys.stdout.flush()

    def progress(self, total: int, desc: str, initial: int = 0) -> Any:
        """A bar over ``total`` items; ``total`` 0 counts items of unknown number (a stream).

        Use it in a ``with`` block: it is then cleared however the block ends, so an error or
        the output that follows starts on a line of its own."""
        from tqdm import tqdm

        return tqdm(
            total=total or None,
            desc=desc,
            initial=initial,
            file=self.stream,
            disable=not self.interactive,
            leave=False,
            dynamic_ncols=True,
        )


def format_metrics(metrics: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )


def print_metrics(metrics: dict[str, Any], *, as_json: bool) -> None:
    """One JSON document, or one ``key<TAB>value`` line per (flattened) metric."""
    if as_json:  # strict JSON: a diverged model's inf or nan perplexity is null, not Infinity
        print(strict_json.dumps(metrics, indent=2))
        return
    for key, value in _flatten(metrics):
        print(f"{key}\t{value:.4f}" if isinstance(value, float) else f"{key}\t{value}")


def _flatten(metrics: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested metrics (per-tag tables) as dotted keys, one value per output line."""
    for key, value in metrics.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def notice(text: str) -> None:
    """A line on stderr, above a live bar if one is drawn there."""
    ConsoleReporter().message(f"rnnlab: notice: {text}")


class StrictUtf8Lines:
    """A byte stream read as UTF-8 text one line at a time, refusing bytes that are not UTF-8.

    ``sys.stdin`` itself will not do: under a C or POSIX locale Python decodes it with
    ``surrogateescape`` (bad bytes pass silently), and its decoder works a chunk ahead of the lines
    read, so an error would name the wrong line. Reading the bytes line by line keeps a decoding
    error on the line that holds the bad byte. Only ``readline`` is offered: what
    ``read_limited_lines`` uses.
    """

    CHUNK_BYTES = 1 << 16

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.pending = ""

    def readline(self, size: int = -1) -> str:
        while "\n" not in self.pending and (size < 0 or len(self.pending) < size):
            chunk = self.raw.readline(self.CHUNK_BYTES)
            self.pending += self.decoder.decode(chunk, final=not chunk)
            if not chunk:
                break
        end = self.pending.find("\n") + 1 or len(self.pending)
        if size >= 0:
            end = min(end, size)
        line, self.pending = self.pending[:end], self.pending[end:]
        return line


def stdin_lines() -> Iterator[tuple[int, str]]:
    """Numbered lines of stdin, each cut to the input line limit (with a notice when it is).

    Decoded strictly as UTF-8 whatever the locale, and a byte order mark before the first line is
    dropped, as for files (``rnnlab.data.io.read_lines``).
    """
    from rnnlab.data.limits import read_limited_lines
    from rnnlab.errors import DataError

    raw = getattr(sys.stdin, "buffer", None)
    stream: Any = StrictUtf8Lines(raw) if raw is not None else sys.stdin
    number = 0
    try:
        for number, line in enumerate(read_limited_lines(stream), start=1):
            if line.cut:
                notice(line.notice(f"<stdin>:{number}"))
            text = line.text[1:] if number == 1 and line.text.startswith("\ufeff") else line.text
            yield number, text
    except UnicodeDecodeError as exc:
        raise DataError("<stdin>", f"not UTF-8 text ({exc.reason})", number + 1) from None


def _in_blocks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """``items`` in lists of ``size`` (the last may be shorter), each yielded as soon as it is full."""
    iterator = iter(items)
    while block := list(islice(iterator, size)):
        yield block


def stdin_blocks(size: int) -> Iterator[list[str]]:
    """Lines of stdin in blocks, so output streams while a long input is still being read."""
    return _in_blocks((line for _, line in stdin_lines()), size)


def stdin_conllu_blocks(size: int) -> Iterator[list[Any]]:
    """CoNLL-U sentences from stdin in blocks of ``size``, streamed like ``stdin_blocks``."""
    from rnnlab.data.conllu_io import parse_conllu

    return _in_blocks(parse_conllu(stdin_lines(), "<stdin>"), size)
