"""What a person sees in a terminal, for the tests of progress bars and output: a stream that says
it is one, and the screen its text leaves."""

from __future__ import annotations

import io


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal; stdout and stderr both on it share one screen."""

    def isatty(self) -> bool:
        return True


def screen(text: str) -> list[str]:
    """The non-blank lines a terminal shows after ``text``: ``\\r`` returns to column 0 and later
    characters overwrite earlier ones."""
    lines: list[list[str]] = [[]]
    column = 0
    for ch in text:
        if ch == "\n":
            lines.append([])
            column = 0
        elif ch == "\r":
            column = 0
        else:
            line = lines[-1]
            if column < len(line):
                line[column] = ch
            else:
                line.append(ch)
            column += 1
    rendered = ("".join(line).rstrip() for line in lines)
    return [line for line in rendered if line]
