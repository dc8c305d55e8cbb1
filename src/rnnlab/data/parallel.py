"""Parallel corpora for translation: readers and encoded sentence pairs.

Two on-disk conventions are read:

* a TSV with ``src<TAB>tgt[<TAB>ignored…]`` per line — the Tatoeba ``fra.txt`` format, whose third
  column carries the CC BY attribution and is ignored;
* aligned files ``PREFIX.<lang>`` (Multi30k / fairseq), line *i* of one translating line *i* of the other.

``.gz`` is transparent in both. The direction is chosen by language codes, so the same TSV trains
en→fr or fr→en.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rnnlab.data.io import read_lines, resolve_existing
from rnnlab.errors import DataError

ParallelFormat = Literal["auto", "tsv", "aligned"]


@dataclass(frozen=True)
class SentencePair:
    src: str
    tgt: str


def iter_tsv_pairs(
    path: str | Path, *, src_column: int = 0, tgt_column: int = 1
) -> Iterator[SentencePair]:
    """Sentence pairs from a TSV, one line in memory at a time; blank lines are skipped, short or
    empty rows are errors, and a file without pairs is an error once it has been read."""
    needed = max(src_column, tgt_column) + 1
    count = 0
    for number, line in read_lines(path):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) < needed:
            raise DataError(
                path,
                f"expected at least {needed} tab-separated columns, found {len(columns)}",
                number,
            )
        src, tgt = columns[src_column].strip(), columns[tgt_column].strip()
        if not src or not tgt:
            side = "source" if not src else "target"
            raise DataError(path, f"empty {side} sentence", number)
        count += 1
        yield SentencePair(src, tgt)
    if not count:
        raise DataError(path, "no sentence pairs found (empty file?)")


def read_tsv_pairs(
    path: str | Path, *, src_column: int = 0, tgt_column: int = 1
) -> list[SentencePair]:
    """All of ``iter_tsv_pairs``."""
    return list(iter_tsv_pairs(path, src_column=src_column, tgt_column=tgt_column))


def iter_aligned_pairs(prefix: str | Path, src_lang: str, tgt_lang: str) -> Iterator[SentencePair]:
    """Sentence pairs from ``PREFIX.src_lang`` and ``PREFIX.tgt_lang`` (each possibly ``.gz``),
    read in step, one line of each in memory at a time."""
    names = [f"{prefix}.{lang}" for lang in (src_lang, tgt_lang)]
    found = [resolve_existing(name) for name in names]
    if found[0] is None and found[1] is None:
        raise DataError(
            prefix, f"no such file, nor aligned files {names[0]} and {names[1]} (or .gz)"
        )
    for name, path, other in zip(names, found, reversed(names), strict=True):
        if path is None:
            raise DataError(name, f"no such file (nor .gz), although its aligned {other} exists")
    paths = [path for path in found if path is not None]
    count = 0
    src_lines, tgt_lines = read_lines(paths[0]), read_lines(paths[1])
    for number, src in src_lines:
        tgt = next(tgt_lines, None)
        if tgt is None:
            raise DataError(
                paths[1],
                f"ends after {number - 1} lines, before {paths[0]} does; aligned files must match",
            )
        src, target = src.strip(), tgt[1].strip()
        if not src and not target:
            continue
        if not src or not target:
            empty = paths[0] if not src else paths[1]
            raise DataError(empty, "empty sentence opposite a non-empty one", number)
        count += 1
        yield SentencePair(src, target)
    extra = next(tgt_lines, None)
    if extra is not None:
        raise DataError(
            paths[1],
            f"has more lines than {paths[0]} ({extra[0] - 1}); aligned files must match",
        )
    if not count:
        raise DataError(paths[0], "no sentence pairs found (empty file?)")


def read_aligned_pairs(prefix: str | Path, src_lang: str, tgt_lang: str) -> list[SentencePair]:
    """All of ``iter_aligned_pairs``."""
    return list(iter_aligned_pairs(prefix, src_lang, tgt_lang))


def read_parallel(
    path: str | Path,
    *,
    src_lang: str,
    tgt_lang: str,
    tsv_langs: tuple[str, str] | list[str] = ("en", "fr"),
    fmt: ParallelFormat = "auto",
) -> list[SentencePair]:
    """All of ``iter_parallel``."""
    return list(
        iter_parallel(path, src_lang=src_lang, tgt_lang=tgt_lang, tsv_langs=tsv_langs, fmt=fmt)
    )


def iter_parallel(
    path: str | Path,
    *,
    src_lang: str,
    tgt_lang: str,
    tsv_langs: tuple[str, str] | list[str] = ("en", "fr"),
    fmt: ParallelFormat = "auto",
) -> Iterator[SentencePair]:
    """Stream either convention. ``tsv_langs`` names the languages of a TSV's first two columns.

    ``auto`` picks the TSV reader when ``path`` is a file and aligned files when ``path.src_lang``
    exists. Errors about the arguments are raised at once, errors in the data as it is read.
    """
    if fmt == "auto":
        fmt = "tsv" if Path(path).is_file() else "aligned"
    if fmt == "aligned":
        return iter_aligned_pairs(path, src_lang, tgt_lang)
    langs = list(tsv_langs)
    for lang in (src_lang, tgt_lang):
        if lang not in langs:
            raise DataError(
                path, f"language {lang!r} is not a column of this TSV (data.tsv_langs={langs})"
            )
    return iter_tsv_pairs(path, src_column=langs.index(src_lang), tgt_column=langs.index(tgt_lang))
