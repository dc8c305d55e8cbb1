"""CoNLL-U reading and tag-filling writing, with errors that name the file and line.

A CoNLL-U sentence (https://universaldependencies.org/format.html) is a block of ``#`` comments and
10-column token lines, ended by a blank line. Three kinds of token line exist::

    1-2   don't   …      multi-word token (MWT): a surface span, no tags; kept, never tagged
    1     do      … AUX  syntactic word: integer ID, the lines a tagger reads and fills
    2     n't     … PART
    2.1   …              empty node (enhanced graphs): kept, never tagged

Each field of a token line is parsed by the ``conllu`` library's field parsers (which validate ID,
HEAD, FEATS, DEPS…) into a ``conllu.Token``. The columns are split here, on tabs only: the library's
own line splitter also breaks at two spaces (which a FORM may contain) and silently accepts lines
with fewer than 10 columns, and its ``ParseException`` carries no position, so the line number and
the column count are checked here.

Writing does not go through ``conllu.serialize``: that re-renders comments from a metadata dict
(a repeated key such as two ``# note = …`` lines collapses into one, ``#text=x`` becomes
``# text = x``) and would re-join fields it had split on runs of two spaces. Filling a tag instead
rewrites exactly one column of the original line, so everything else survives byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from conllu.exceptions import ParseException
from conllu.models import Token
from conllu.parser import DEFAULT_FIELD_PARSERS, DEFAULT_FIELDS

from rnnlab.data.io import read_lines
from rnnlab.errors import DataError

TagColumn = Literal["upos", "xpos"]
"""The columns a tagger learns and fills."""
LabelColumn = Literal["upos", "xpos", "feats", "deprel"]
"""The columns that label each syntactic word with one string, read as auxiliary training labels."""
NUM_COLUMNS = len(DEFAULT_FIELDS)
COLUMN_INDEX: dict[str, int] = {"upos": 3, "xpos": 4, "feats": 5, "deprel": 7}


@dataclass
class ConlluSentence:
    """One sentence: its original lines, and the parsed syntactic words among them."""

    lines: list[str] = field(default_factory=list)
    """Every line of the block (comments, MWT, words, empty nodes) without the newline."""
    line_numbers: list[int] = field(default_factory=list)
    """1-based line number of each entry of ``lines`` in its source."""
    word_rows: list[int] = field(default_factory=list)
    """Index into ``lines`` of each syntactic word (integer ID), in order."""
    tokens: list[Token] = field(default_factory=list)
    """The ``conllu`` library's parse of each syntactic word, parallel to ``word_rows``."""

    @property
    def words(self) -> list[str]:
        return [str(tok["form"]) for tok in self.tokens]

    def labels(self, column: LabelColumn) -> list[str | None]:
        """Each syntactic word's ``column`` exactly as written (FEATS keeps its order and
        spelling); None where it is ``_``, except for FEATS, where ``_`` is the label "no
        features"."""
        index = COLUMN_INDEX[column]
        values = [self.lines[row].split("\t")[index] for row in self.word_rows]
        return [v if v != "_" or column == "feats" else None for v in values]

    def line_of_word(self, index: int) -> int:
        return self.line_numbers[self.word_rows[index]]

    def with_tags(self, column: TagColumn, tags: Sequence[str]) -> str:
        """The sentence as CoNLL-U text (with its closing blank line), ``column`` set to ``tags``."""
        if len(tags) != len(self.word_rows):
            raise ValueError(f"{len(tags)} tags for {len(self.word_rows)} words")
        lines = list(self.lines)
        index = COLUMN_INDEX[column]
        for row, tag in zip(self.word_rows, tags, strict=True):
            columns = lines[row].split("\t")
            columns[index] = tag
            lines[row] = "\t".join(columns)
        return "".join(f"{line}\n" for line in lines) + "\n"


def _parse_token_line(text: str, source: str, number: int) -> Token:
    columns = text.split("\t")
    if len(columns) != NUM_COLUMNS:
        raise DataError(
            source,
            f"expected {NUM_COLUMNS} tab-separated CoNLL-U columns, found {len(columns)}",
            number,
        )
    if columns[1] == "":
        raise DataError(source, "empty FORM column", number)
    token = Token()
    for index, name in enumerate(DEFAULT_FIELDS):
        parser = DEFAULT_FIELD_PARSERS.get(name)
        try:
            token[name] = parser(columns, index) if parser is not None else columns[index]
        except ParseException as exc:
            raise DataError(source, f"bad {name.upper()} column ({exc})", number) from None
    return token


def _finish(sentence: ConlluSentence, source: str) -> ConlluSentence:
    """Check that syntactic word IDs run 1, 2, … n without gaps, as UD requires."""
    for expected, (row, tok) in enumerate(
        zip(sentence.word_rows, sentence.tokens, strict=True), start=1
    ):
        if tok["id"] != expected:
            raise DataError(
                source,
                f"word ID {tok['id']} out of sequence (expected {expected})",
                sentence.line_numbers[row],
            )
    return sentence


def parse_conllu(lines: Iterable[tuple[int, str]], source: str | Path) -> Iterator[ConlluSentence]:
    """Sentences from numbered lines; a block holding only comments is yielded with no words.

    ``source`` names the input in errors (a path, or ``<stdin>``).
    """
    source = str(source)
    sentence = ConlluSentence()
    for number, raw in lines:
        text = raw.rstrip("\r\n")
        if not text.strip():
            if sentence.lines:
                yield _finish(sentence, source)
                sentence = ConlluSentence()
            continue
        if text.startswith("#"):
            if sentence.tokens:
                raise DataError(source, "comment line inside a sentence", number)
            sentence.lines.append(text)
            sentence.line_numbers.append(number)
            continue
        token = _parse_token_line(text, source, number)
        sentence.lines.append(text)
        sentence.line_numbers.append(number)
        if isinstance(token["id"], int):
            sentence.word_rows.append(len(sentence.lines) - 1)
            sentence.tokens.append(token)
        elif token["id"] is None:
            raise DataError(source, "missing ID", number)
    if sentence.lines:
        yield _finish(sentence, source)


def read_conllu(path: str | Path) -> list[ConlluSentence]:
    """All sentences of a CoNLL-U file (``.gz`` read transparently)."""
    return list(parse_conllu(read_lines(path), path))


__all__ = ["ConlluSentence", "LabelColumn", "TagColumn", "parse_conllu", "read_conllu"]
