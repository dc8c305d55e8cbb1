"""The closed set of output tags a tagger predicts, built from training data.

Unlike a word ``Vocab`` there are no specials: no ``<pad>`` (padding is marked by lengths, never by an
id) and no ``<unk>`` (a model must never *predict* "unknown"). A gold tag never seen in training has
no id; ``encode`` gives it ``UNSEEN`` (-1), which can never equal a prediction, so it counts as an
error without special cases, and it must never be used as a loss target.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from rnnlab.atomic import atomic_write_text
from rnnlab.errors import DataError

UNSEEN = -1


class TagSet:
    """Tags ordered by frequency (ties by name), so a tag set is a pure function of its data."""

    def __init__(self, tags: Iterable[str]) -> None:
        self.itos: list[str] = list(tags)
        self.stoi: dict[str, int] = {tag: i for i, tag in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("duplicate tags")

    @classmethod
    def build(cls, sequences: Iterable[Iterable[str]]) -> TagSet:
        counts: Counter[str] = Counter()
        for seq in sequences:
            counts.update(seq)
        return cls(sorted(counts, key=lambda tag: (-counts[tag], tag)))

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, tag: str) -> bool:
        return tag in self.stoi

    def encode(self, tags: Iterable[str]) -> list[int]:
        return [self.stoi.get(tag, UNSEEN) for tag in tags]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps({"tags": self.itos}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> TagSet:
        path = Path(path)
        try:
            tags = json.loads(path.read_text(encoding="utf-8"))["tags"]
            if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
                raise ValueError('"tags" must be a list of strings')
            return cls(tags)
        except FileNotFoundError:
            raise DataError(path, "tag set file is missing") from None
        except OSError as exc:  # a directory, no permission
            raise DataError(path, f"cannot read the tag set file ({exc.strerror})") from None
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise DataError(path, f"not a valid tag set file ({exc})") from None
