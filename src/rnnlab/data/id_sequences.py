"""Many short sequences of token ids, stored flat: what an encoded corpus is held as in memory.

A Python list of lists costs 56 bytes per sentence plus 8 per id (a pointer to a shared int); a
corpus of 167k sentence pairs holds ~40 MB that way. Here the ids of all sequences sit end to end in
one ``array('i')`` (4 bytes an id) with the start of each in an ``array('q')``::

    ids      [ 5 9 3 | 7 3 | 4 4 8 3 | … ]
    starts   [ 0       3     5         9 … ]      sequence i = ids[starts[i] : starts[i + 1]]

Indexing gives a plain ``list[int]``, so batching code reads it as it reads a list of lists.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import overload


class IdSequences(Sequence[list[int]]):
    """An append-only sequence of id sequences (see the module docstring)."""

    def __init__(self, sequences: Iterable[Sequence[int]] = ()) -> None:
        self._ids = array("i")
        self._starts = array("q", [0])
        for sequence in sequences:
            self.append(sequence)

    def append(self, sequence: Sequence[int]) -> None:
        self._ids.extend(sequence)
        self._starts.append(len(self._ids))

    def __len__(self) -> int:
        return len(self._starts) - 1

    @overload
    def __getitem__(self, index: int) -> list[int]: ...

    @overload
    def __getitem__(self, index: slice) -> list[list[int]]: ...

    def __getitem__(self, index: int | slice) -> list[int] | list[list[int]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"sequence {index} of {len(self)}")
        return self._ids[self._starts[index] : self._starts[index + 1]].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(len(self)):
            yield self[i]

    def lengths(self) -> list[int]:
        """The length of every sequence, without building them."""
        starts = self._starts
        return [starts[i + 1] - starts[i] for i in range(len(self))]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IdSequences):
            return self._ids == other._ids and self._starts == other._starts
        return isinstance(other, Sequence) and list(self) == [list(s) for s in other]

    __hash__ = None  # type: ignore[assignment]


__all__ = ["IdSequences"]
