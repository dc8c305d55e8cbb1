"""Input lines are cut at the documented limit, reading at most that much of an over-long line."""

from __future__ import annotations

import io

import pytest

from rnnlab.data.limits import MAX_LINE_CHARS, cut_line, read_limited_lines


def test_cut_line_keeps_short_lines_and_cuts_long_ones():
    assert cut_line("go .") == cut_line("go .", MAX_LINE_CHARS)
    assert not cut_line("go .").cut and cut_line("go .").text == "go ."
    long = cut_line("x" * (MAX_LINE_CHARS + 5))
    assert long.cut and long.text == "x" * MAX_LINE_CHARS and long.length == MAX_LINE_CHARS + 5
    assert long.notice("<stdin>:7") == (
        f"<stdin>:7: line of {MAX_LINE_CHARS + 5:,} characters cut to the first "
        f"{MAX_LINE_CHARS:,} (the input line limit)"
    )


@pytest.mark.parametrize("limit", [1, 4, 5, 6, 64])
@pytest.mark.parametrize(
    "content",
    ["", "a", "abcd\n", "abcde\nxy", "abcdef\r\n\nxyz\n", "\n\n", "aaaaaaaaaaaaaaa\nb\ncccccc"],
)
def test_read_limited_lines_matches_splitting(content: str, limit: int):
    expected = [(line[:limit], len(line)) for line in content.splitlines()]
    got = [(line.text, line.length) for line in read_limited_lines(io.StringIO(content), limit)]
    assert got == expected


class CountingReader(io.StringIO):
    """Records the largest piece handed out by ``readline``."""

    largest = 0

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        piece = super().readline(size)
        self.largest = max(self.largest, len(piece))
        return piece


def test_a_megabyte_line_is_never_held_whole():
    stream = CountingReader("go .\n" + "x" * 1_000_000 + "\nhe is calm .\n")
    lines = list(read_limited_lines(stream))
    assert [line.text for line in lines] == ["go .", "x" * MAX_LINE_CHARS, "he is calm ."]
    assert [line.cut for line in lines] == [False, True, False]
    assert lines[1].length == 1_000_000
    assert stream.largest <= 1 << 16
