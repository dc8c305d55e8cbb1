"""Tagged corpora in three formats, read into one shape: words with their tags.

* ``conllu``: Universal Dependencies CoNLL-U; the tags come from ``tag_column`` (UPOS or XPOS) of the
  syntactic words (see ``rnnlab.data.conllu_io``).
* ``word_tag``: one sentence per line, tokens separated by spaces, each ``word/TAG``; the word is
  everything before the *last* slash, so ``1/2/NUM`` is the word ``1/2``.
* ``two_column``: one token per line, ``word<TAB>tag``; a blank line ends a sentence.
* ``auto``: ``.conllu``/``.conll`` (optionally ``.gz``) is CoNLL-U; otherwise the first non-blank,
  non-comment line decides: 10 tab-separated columns → CoNLL-U, 2 → two_column, else word_tag.

Every malformed line is a ``DataError`` naming the file and line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rnnlab.data.conllu_io import (
    NUM_COLUMNS,
    ConlluSentence,
    LabelColumn,
    TagColumn,
    parse_conllu,
)
from rnnlab.data.io import read_lines
from rnnlab.errors import DataError

TaggedFormat = Literal["auto", "conllu", "word_tag", "two_column"]
CONLLU_SUFFIXES = (".conllu", ".conll")


@dataclass
class TaggedSentence:
    words: list[str]
    tags: list[str]
    line: int
    """Line where the sentence starts, for messages."""
    aux_tags: dict[str, list[str]] = field(default_factory=dict)
    """Column name → the labels of further CoNLL-U columns (``aux_columns``), for auxiliary
    losses."""


def detect_format(path: str | Path) -> Literal["conllu", "word_tag", "two_column"]:
    """The format of a tagged file, by name and then by its first content line."""
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(CONLLU_SUFFIXES):
        return "conllu"
    for _, text in read_lines(path):
        if not text.strip() or text.startswith("#"):
            continue
        columns = text.split("\t")
        if len(columns) == NUM_COLUMNS:
            return "conllu"
        if len(columns) == 2:
            return "two_column"
        return "word_tag"
    return "word_tag"


def split_word_tag(token: str) -> tuple[str, str] | None:
    """``word/TAG`` → (word, TAG), splitting at the last slash; None if either side is empty."""
    word, slash, tag = token.rpartition("/")
    if not slash or not word or not tag:
        return None
    return word, tag


def iter_word_tag(path: str | Path) -> Iterator[TaggedSentence]:
    for number, text in read_lines(path):
        tokens = text.split()
        if not tokens:
            continue
        words, tags = [], []
        for token in tokens:
            pair = split_word_tag(token)
            if pair is None:
                raise DataError(path, f"token {token!r} is not of the form word/TAG", number)
            words.append(pair[0])
            tags.append(pair[1])
        yield TaggedSentence(words, tags, number)


def iter_two_column(path: str | Path) -> Iterator[TaggedSentence]:
    words: list[str] = []
    tags: list[str] = []
    start = 0
    for number, text in read_lines(path):
        if not text.strip():
            if words:
                yield TaggedSentence(words, tags, start)
            words, tags = [], []
            continue
        columns = text.split("\t")
        if len(columns) != 2:
            raise DataError(
                path, f"expected word<TAB>tag, found {len(columns)} tab-separated column(s)", number
            )
        if not columns[0].strip() or not columns[1].strip():
            raise DataError(path, "expected word<TAB>tag, found an empty word or tag", number)
        if not words:
            start = number
        words.append(columns[0].strip())
        tags.append(columns[1].strip())
    if words:
        yield TaggedSentence(words, tags, start)


def iter_conllu_tagged(
    path: str | Path, tag_column: TagColumn, aux_columns: Sequence[LabelColumn] = ()
) -> Iterator[TaggedSentence]:
    for sentence in parse_conllu(read_lines(path), path):
        if not sentence.tokens:
            continue
        yield TaggedSentence(
            sentence.words,
            _column_labels(sentence, tag_column, path),
            sentence.line_numbers[0],
            {column: _column_labels(sentence, column, path) for column in aux_columns},
        )


def _column_labels(sentence: ConlluSentence, column: LabelColumn, path: str | Path) -> list[str]:
    labels = sentence.labels(column)
    for index, label in enumerate(labels):
        if label is None:
            kind = "tag" if column in ("upos", "xpos") else "label"
            raise DataError(
                path, f"no {column.upper()} {kind} (column is '_')", sentence.line_of_word(index)
            )
        if not label.strip():  # CoNLL-U has no empty fields; '' would be learnt as a tag
            raise DataError(
                path, f"the {column.upper()} column is empty", sentence.line_of_word(index)
            )
    return [str(label) for label in labels]


def iter_tagged(
    path: str | Path,
    *,
    fmt: TaggedFormat = "auto",
    tag_column: TagColumn = "upos",
    aux_columns: Sequence[LabelColumn] = (),
) -> Iterator[TaggedSentence]:
    """Non-empty tagged sentences of ``path`` in file order, streamed (a parsed CoNLL-U sentence
    with its token fields is dropped as soon as its words and tags are taken).

    ``aux_columns`` also reads further CoNLL-U columns into ``aux_tags``; other formats have none.
    """
    resolved = detect_format(path) if fmt == "auto" else fmt
    if resolved == "conllu":
        return iter_conllu_tagged(path, tag_column, aux_columns)
    if aux_columns:
        raise DataError(
            path, f"{aux_columns[0].upper()} labels need CoNLL-U data; this file is {resolved}"
        )
    if resolved == "two_column":
        return iter_two_column(path)
    return iter_word_tag(path)


def read_tagged(
    path: str | Path, *, fmt: TaggedFormat = "auto", tag_column: TagColumn = "upos"
) -> list[TaggedSentence]:
    """All of ``iter_tagged``."""
    return list(iter_tagged(path, fmt=fmt, tag_column=tag_column))


__all__ = [
    "TaggedFormat",
    "TaggedSentence",
    "detect_format",
    "iter_tagged",
    "read_tagged",
    "split_word_tag",
]
