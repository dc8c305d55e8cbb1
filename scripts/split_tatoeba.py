"""Deterministic train/valid/test split of Tatoeba fra-eng (the d2l ``fra.txt``).

Pairs are assigned by a hash of their normalised English side, so every translation of one English
sentence lands in the same split (no source sentence is shared between train and test), and the
split does not depend on file order or on a random generator. Within each split the corpus order
(roughly by length) is kept, so ``data.max_examples: N`` takes the N shortest-first pairs as the
textbook's "first N lines" does.

    python scripts/split_tatoeba.py ../shared/data/tatoeba-fra-eng/fra.txt.gz data/fra-eng
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

TEST_PERCENT = 2
VALID_PERCENT = 2


def bucket(english: str) -> int:
    key = " ".join(english.lower().split()).encode("utf-8")
    return int(hashlib.sha1(key).hexdigest(), 16) % 100


def main(source: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        for line in handle:
            english = line.split("\t", 1)[0]
            b = bucket(english)
            name = "test" if b < TEST_PERCENT else "valid" if b < TEST_PERCENT + VALID_PERCENT else "train"
            splits[name].append(line if line.endswith("\n") else line + "\n")
    with gzip.GzipFile(out / "train.tsv.gz", "wb", mtime=0) as raw:
        raw.write("".join(splits["train"]).encode("utf-8"))
    for name in ("valid", "test"):
        (out / f"{name}.tsv").write_text("".join(splits[name]), encoding="utf-8")
    for name, lines in splits.items():
        print(f"{name}: {len(lines)} pairs")


if __name__ == "__main__":
    main(*sys.argv[1:3])
