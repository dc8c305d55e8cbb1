"""Vocabularies: token ↔ id maps with reserved specials, built from training data only."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from rnnlab.atomic import atomic_write_text
from rnnlab.data.id_sequences import IdSequences
from rnnlab.errors import DataError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS: tuple[str, ...] = (PAD, UNK, BOS, EOS)


MARKERS: tuple[str, ...] = (PAD, BOS, EOS)
"""Specials that mark a position, never a word: text that spells one is an unknown word."""


def text_table(itos: Sequence[str]) -> dict[str, int]:
    """token → id for looking up text: without the ``MARKERS``.

    A translation source holding the characters ``<eos>`` must not end there, a target word
    ``<pad>`` must not vanish from the loss, and no word may read the never-trained padding row.
    (A literal ``<unk>`` still means the unknown word, as in the Penn Treebank's text.)
    """
    return {tok: i for i, tok in enumerate(itos) if tok not in MARKERS}


class Vocab:
    """An ordered token list. Ids 0–3 are ``<pad> <unk> <bos> <eos>``; the rest by frequency.

    Ordering ties by the token string makes a vocabulary a pure function of its training data, so
    two runs on the same data agree id for id.
    """

    def __init__(self, tokens: Sequence[str], *, min_freq: int = 1) -> None:
        if list(tokens[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"a vocabulary must start with {SPECIALS}")
        self.itos: list[str] = list(tokens)
        self.stoi: dict[str, int] = {tok: i for i, tok in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("duplicate tokens in vocabulary")
        self.text_stoi = text_table(self.itos)
        self.min_freq = min_freq

    @classmethod
    def build(cls, sequences: Iterable[Iterable[str]], *, min_freq: int = 1) -> Vocab:
        """Count tokens and keep those seen at least ``min_freq`` times."""
        counts: Counter[str] = Counter()
        for seq in sequences:
            counts.update(seq)
        return cls.from_counts(counts, min_freq=min_freq)

    @classmethod
    def from_counts(cls, counts: Counter[str], *, min_freq: int = 1) -> Vocab:
        """The vocabulary of tokens counted elsewhere (e.g. in one streaming pass over a corpus)."""
        kept = sorted(
            (tok for tok, n in counts.items() if n >= min_freq and tok not in SPECIALS),
            key=lambda tok: (-counts[tok], tok),
        )
        return cls([*SPECIALS, *kept], min_freq=min_freq)

    pad_id = property(lambda self: 0)
    unk_id = property(lambda self: 1)
    bos_id = property(lambda self: 2)
    eos_id = property(lambda self: 3)

    @property
    def never_emitted(self) -> tuple[int, int]:
        """``<pad>`` and ``<bos>``: never a training target, so a search never emits them."""
        return (self.pad_id, self.bos_id)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token ids; unknown tokens become ``<unk>``."""
        unk = self.unk_id
        return [self.stoi.get(tok, unk) for tok in tokens]

    def encode_text(self, tokens: Iterable[str]) -> list[int]:
        """Token ids of words a person wrote: ``encode``, except that a word spelling ``<pad>``,
        ``<bos>`` or ``<eos>`` is ``<unk>`` (``text_table``)."""
        unk = self.unk_id
        return [self.text_stoi.get(tok, unk) for tok in tokens]

    def decode(self, ids: Iterable[int], *, strip_specials: bool = True) -> list[str]:
        """Tokens for ids, dropping ``<pad> <bos> <eos>`` unless asked to keep them."""
        skip = {self.pad_id, self.bos_id, self.eos_id} if strip_specials else set()
        return [self.itos[i] for i in ids if i not in skip]

    def save(self, path: str | Path) -> None:
        data = {"tokens": self.itos, "min_freq": self.min_freq}
        atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=0))

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            tokens = data["tokens"]
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise ValueError('"tokens" must be a list of strings')
            return cls(tokens, min_freq=int(data.get("min_freq", 1)))
        except FileNotFoundError:
            raise DataError(path, "vocabulary file is missing") from None
        except OSError as exc:  # a directory, no permission
            raise DataError(path, f"cannot read the vocabulary file ({exc.strerror})") from None
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            raise DataError(path, f"not a valid vocabulary file ({exc})") from None


class FirstSeenIds:
    """Tokens numbered in order of first appearance, and counted.

    A vocabulary needs the whole corpus counted before it can number a token, so building one and
    encoding the corpus used to take two passes (two rounds of tokenisation). Numbering tokens as
    they come keeps the corpus as ids in the first pass; ``renumber`` then maps those ids into the
    vocabulary built from ``counts``.
    """

    def __init__(self) -> None:
        self.stoi: dict[str, int] = {}
        self.tokens: list[str] = []
        self.frequency: list[int] = []

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """First-seen ids of ``tokens``, counting each occurrence."""
        ids = []
        for token in tokens:
            index = self.stoi.get(token)
            if index is None:
                index = self.stoi[token] = len(self.tokens)
                self.tokens.append(token)
                self.frequency.append(0)
            self.frequency[index] += 1
            ids.append(index)
        return ids

    def counts(self) -> Counter[str]:
        return Counter(dict(zip(self.tokens, self.frequency, strict=True)))

    def renumber(
        self, sequences: Iterable[Sequence[int]], vocab: Vocab, *, end: int
    ) -> IdSequences:
        """``sequences`` of first-seen ids as ``vocab`` ids (``vocab.encode_text`` of their
        tokens), each followed by ``end``."""
        table = vocab.encode_text(self.tokens)
        return IdSequences([table[i] for i in sequence] + [end] for sequence in sequences)
