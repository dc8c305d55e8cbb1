"""Parallel corpora for translation: readers and encoded sentence pairs.

Two on-disk conventions are read:

* a TSV with ``src<TAB>tgt[<TAB>ignored…]`` per line — the Tatoeba ``fra.txt`` format, whose third
  column carries the CC BY attribution and is ignored;
* aligned files ``PREFIX.<lang>`` (Multi30k / fairseq), line *i* of one translating line *i* of the other.

``.gz`` is transparent in both. The direction is chosen by language codes, so the same TSV trains
en→fr or fr→en.
"""

from __future__ import annotations

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


def read_tsv_pairs(
    path: str | Path, *, src_column: int = 0, tgt_column: int = 1
) -> list[SentencePair]:
    """Sentence pairs from a TSV; blank lines are skipped, short or empty rows are errors."""
    needed = max(src_column, tgt_column) + 1
    pairs = []
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
        pairs.append(SentencePair(src, tgt))
    if not pairs:
        raise DataError(path, "no sentence pairs found (empty file?)")
    return pairs


def read_aligned_pairs(prefix: str | Path, src_lang: str, tgt_lang: str) -> list[SentencePair]:
    """Sentence pairs from ``PREFIX.src_lang`` and ``PREFIX.tgt_lang`` (each possibly ``.gz``)."""
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
    src_lines = list(read_lines(paths[0]))
    tgt_lines = list(read_lines(paths[1]))
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            paths[1],
            f"has {len(tgt_lines)} lines but {paths[0]} has {len(src_lines)}; aligned files must match",
        )
    pairs = []
    for (number, src), (_, tgt) in zip(src_lines, tgt_lines, strict=True):
        if not src.strip() and not tgt.strip():
            continue
        if not src.strip() or not tgt.strip():
            empty = paths[0] if not src.strip() else paths[1]
            raise DataError(empty, "empty sentence opposite a non-empty one", number)
        pairs.append(SentencePair(src.strip(), tgt.strip()))
    if not pairs:
        raise DataError(paths[0], "no sentence pairs found (empty file?)")
    return pairs


def read_parallel(
    path: str | Path,
    *,
    src_lang: str,
    tgt_lang: str,
    tsv_langs: tuple[str, str] | list[str] = ("en", "fr"),
    fmt: ParallelFormat = "auto",
) -> list[SentencePair]:
    """Read either convention. ``tsv_langs`` names the languages of a TSV's first two columns.

    ``auto`` picks the TSV reader when ``path`` is a file and aligned files when ``path.src_lang``
    exists.
    """
    if fmt == "auto":
        fmt = "tsv" if Path(path).is_file() else "aligned"
    if fmt == "aligned":
        return read_aligned_pairs(path, src_lang, tgt_lang)
    langs = list(tsv_langs)
    for lang in (src_lang, tgt_lang):
        if lang not in langs:
            raise DataError(
                path, f"language {lang!r} is not a column of this TSV (data.tsv_langs={langs})"
            )
    return read_tsv_pairs(path, src_column=langs.index(src_lang), tgt_column=langs.index(tgt_lang))
