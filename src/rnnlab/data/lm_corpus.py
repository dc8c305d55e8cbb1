"""Running text as one token stream for language modelling, at character or word level.

* Character level: the file is read as one text (line ends are ``"\\n"`` characters); every character
  is a token. With ``clean="timemachine"`` the textbook's cleaning is applied to the whole text first:
  every run of non-letters (line ends included) becomes one space, then the text is lower-cased, which
  leaves the 26 letters and the space.
* Word level: each non-blank line is split on whitespace and ``<eos>`` is appended (the Penn Treebank
  convention of Mikolov et al.); a literal ``<unk>`` in the text is the vocabulary's ``<unk>``. Blank lines
  carry no tokens. ``clean="timemachine"`` cleans each line before splitting.

Unknown tokens (not in the training vocabulary) become ``<unk>`` and are still predicted and scored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from rnnlab.data.io import read_lines
from rnnlab.data.vocab import EOS
from rnnlab.errors import DataError

Level = Literal["char", "word"]
Clean = Literal["none", "timemachine"]

_NON_LETTERS = re.compile(r"[^A-Za-z]+")


def clean_timemachine(text: str) -> str:
    """The d2l cleaning: ``"The Time-Machine!"`` → ``"the time machine "``."""
    return _NON_LETTERS.sub(" ", text).lower()


def clean_text(text: str, clean: Clean) -> str:
    return clean_timemachine(text) if clean == "timemachine" else text


def text_tokens(text: str, *, level: Level, clean: Clean) -> list[str]:
    """Tokens of a piece of text (e.g. a generation prefix), without a final ``<eos>``."""
    text = clean_text(text, clean)
    return list(text) if level == "char" else text.split()


def tokens_text(tokens: list[str], *, level: Level) -> str:
    """Text for tokens: characters are joined as they are; words by spaces, ``<eos>`` as a line end."""
    if level == "char":
        return "".join(tokens)
    pieces: list[str] = []
    for token in tokens:
        if token == EOS:
            pieces.append("\n")
            continue
        if pieces and pieces[-1] != "\n":
            pieces.append(" ")
        pieces.append(token)
    return "".join(pieces)


def _line_tokens(
    lines: Iterable[tuple[int, str]], *, level: Level, clean: Clean, max_lines: int = 0
) -> Iterator[list[str]]:
    """Tokens of numbered lines (without their line ends), one line's worth at a time.

    Cleaning is applied line by line with the same result as on the whole text: a run of
    non-letters that spans a line end still becomes one space.
    """
    for number, line in lines:
        if max_lines and number > max_lines:
            break
        if level == "char":
            chars = clean_text(line + "\n", clean)
            if clean == "timemachine" and number > 1 and chars.startswith(" "):
                chars = chars[1:]  # the previous line's cleaned text ended in this run's space
            tokens = list(chars)
        else:
            words = clean_text(line, clean).split()
            tokens = [*words, EOS] if words else []
        if tokens:
            yield tokens


def text_lines(text: str) -> Iterator[tuple[int, str]]:
    """Numbered lines of a text, as ``read_lines`` gives those of a file holding it.

    Lines end at ``"\n"`` only (``str.splitlines`` would also break at form feeds, U+2028 and a
    lone ``"\r"``, which a file's lines keep), lose a trailing ``"\r"``, and a final line end
    opens no empty line; a byte order mark before the first line is dropped.
    """
    pieces = text.split("\n")
    if pieces[-1] == "":
        pieces.pop()
    for number, piece in enumerate(pieces, start=1):
        if number == 1 and piece.startswith("\ufeff"):
            piece = piece[1:]
        yield number, piece.rstrip("\r\n")


def corpus_tokens(text: str, *, level: Level, clean: Clean) -> list[str]:
    """The tokens of a text given as a string, exactly as ``read_corpus`` reads a file holding it."""
    lines = text_lines(text)
    return [t for tokens in _line_tokens(lines, level=level, clean=clean) for t in tokens]


def iter_corpus(
    path: str | Path, *, level: Level, clean: Clean, max_lines: int = 0
) -> Iterator[list[str]]:
    """The tokens of a file (see the module docstring), one line's worth at a time, so a corpus is
    never held as text; ``max_lines`` > 0 reads only those lines.

    Raises ``DataError`` naming the file, once it has been read, when it holds no tokens at all.
    """
    any_text = False
    for tokens in _line_tokens(read_lines(path), level=level, clean=clean, max_lines=max_lines):
        any_text = any_text or any(token.strip() for token in tokens)
        yield tokens
    if not any_text:
        after = " after data.clean=timemachine" if clean == "timemachine" else ""
        raise DataError(path, f"no text to model{after} (the file is empty or blank)")


def read_corpus(path: str | Path, *, level: Level, clean: Clean, max_lines: int = 0) -> list[str]:
    """All the tokens of ``iter_corpus`` in one list."""
    return [
        token
        for tokens in iter_corpus(path, level=level, clean=clean, max_lines=max_lines)
        for token in tokens
    ]
