"""Deterministic train/valid split of *The Time Machine* (the d2l ``timemachine.txt``).

The book has no official split. Validation is the tail of the book: it starts at the first paragraph
that begins at or after 90% of the lines (the line after the first blank line at or after line
⌈0.9·n⌉), so no paragraph is cut in two. The two files concatenated are byte-identical to the source.

    python scripts/split_timemachine.py ../shared/data/timemachine/timemachine.txt data/timemachine
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

VALID_FRACTION = 0.1


def split_point(lines: list[str]) -> int:
    """Index of the first validation line."""
    start = math.ceil(len(lines) * (1 - VALID_FRACTION)) - 1
    for index in range(start, len(lines)):
        if not lines[index].strip():
            return index + 1
    raise ValueError("no blank line in the last 10% of the text")


def main(source: str, out_dir: str) -> None:
    text = Path(source).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    cut = split_point(lines)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text("".join(lines[:cut]), encoding="utf-8")
    (out / "valid.txt").write_text("".join(lines[cut:]), encoding="utf-8")
    print(f"train: lines 1-{cut}; valid: lines {cut + 1}-{len(lines)}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
