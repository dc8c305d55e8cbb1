"""How long one input line to a trained model may be, and reading lines without exceeding it.

Decoding input comes from people and pipes, not from a prepared corpus: a missing newline, a
minified JSON file or a binary piped by mistake makes one "line" of megabytes. Tokenised whole, a
1 MB line is ~200,000 words — a tagger would run its BiLSTM and character encoder over all of them,
a language model would read a 1M-character prefix one step at a time. Such a line is cut at
``MAX_LINE_CHARS`` characters, and the caller is told so (``CutLine.cut``) to pass a notice on.

``read_limited_lines`` also bounds what is *read*: past the limit, the rest of a line is consumed in
chunks and dropped, so even a line of gigabytes holds at most ``MAX_LINE_CHARS`` in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

MAX_LINE_CHARS = 10_000
"""Characters of one input line given to translate, tag or generate --prefix (longer ones are cut).

Far above any sentence a model here is trained on (``data.max_len`` tokens), far below a size that
costs noticeable memory or time."""

_CHUNK = 1 << 16


@dataclass(frozen=True)
class CutLine:
    """A line of input, at most ``MAX_LINE_CHARS`` long, and how long it was."""

    text: str
    length: int
    """Characters of the original line (without its line end)."""

    @property
    def cut(self) -> bool:
        return self.length > len(self.text)

    def notice(self, where: str) -> str:
        """One line telling a person what was dropped, e.g. ``<stdin>:3: line of … cut to …``."""
        return (
            f"{where}: line of {self.length:,} characters cut to the first "
            f"{len(self.text):,} (the input line limit)"
        )


def cut_line(text: str, limit: int = MAX_LINE_CHARS) -> CutLine:
    """``text`` cut to ``limit`` characters (the one place the input line limit is applied)."""
    return CutLine(text[:limit], len(text))


def read_limited_lines(stream: TextIO, limit: int = MAX_LINE_CHARS) -> Iterator[CutLine]:
    """The lines of ``stream`` without line ends, each cut to ``limit`` characters.

    Memory stays bounded by ``limit`` whatever the line length: the rest of an over-long line is
    read in chunks and only counted.
    """
    while True:
        head = stream.readline(limit + 1)
        if not head:
            return
        if head.endswith("\n") or len(head) <= limit:
            text = head.rstrip("\r\n")
            yield CutLine(text, len(text))
            continue
        # Count the rest, less the line end and the "\r"s before it (as ``rstrip`` drops them
        # from a short line), even where they are split across pieces.
        total, trailing = len(head), _trailing_returns(head, 0)
        while rest := stream.readline(_CHUNK):
            ended = rest.endswith("\n")
            piece = rest[:-1] if ended else rest
            total, trailing = total + len(piece), _trailing_returns(piece, trailing)
            if ended:
                break
        length = total - trailing
        yield CutLine(head[: min(limit, length)], length)


def _trailing_returns(piece: str, before: int) -> int:
    """The "\r"s ending the text read so far, after ``piece``; ``before`` ended what preceded it."""
    kept = piece.rstrip("\r")
    return before + len(piece) if not kept else len(piece) - len(kept)


__all__ = ["MAX_LINE_CHARS", "CutLine", "cut_line", "read_limited_lines"]
