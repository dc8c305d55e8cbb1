"""Pretrained word vectors: read GloVe / word2vec / fastText files once, keep only the rows needed.

Formats are told apart by content, never by file name (``.gz`` is opened transparently):

- GloVe text: ``word v1 … vD`` on every line, no header;
- word2vec text and fastText ``.vec``: the same lines after a header line ``N D``;
- word2vec binary: the header ``N D`` then, per word, ``word<space>`` and D little-endian float32s.

A file such as GloVe 840B (5 GB, 2.2 M words) is streamed once: a line is split into floats only when
its word is one the vocabulary asks for (or one that extends the vocabulary), so memory holds the
vocabulary's rows and nothing else. GloVe 840B also has words that contain spaces; a text line is
therefore cut at its *last* D spaces.

Lookup order for a vocabulary word follows Flair's ``WordEmbeddings``: the exact form, then the
lower-cased form, then the lower-cased form with every digit replaced by ``#`` and then by ``0``
(the two conventions pretrained files use for numbers). Words found by none keep the model's own
initialisation.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Literal, cast

import numpy as np

from rnnlab.errors import DataError

VectorFormat = Literal["glove", "word2vec_text", "word2vec_binary"]
MatchKind = Literal["exact", "lower", "digits"]

_HEADER = re.compile(rb"^\s*(\d+)\s+(\d+)\s*$")
_DIGIT = re.compile(r"\d")
_CHUNK = 1 << 20


def lookup_keys(word: str) -> list[tuple[MatchKind, str]]:
    """The forms tried for ``word``, in order, each with the kind of match it counts as."""
    lower = word.lower()
    keys: list[tuple[MatchKind, str]] = [("exact", word), ("lower", lower)]
    keys += [("digits", _DIGIT.sub(digit, lower)) for digit in ("#", "0")]
    return keys


def lookup_id(stoi: dict[str, int], word: str, default: int) -> int:
    """The id of ``word``'s first form (``lookup_keys`` order) that ``stoi`` has, else ``default``.

    A vocabulary extended from a vector file holds the file's spelling; this finds ``Qaida`` under
    ``qaida`` at test time as the rows were found when the vocabulary was matched.
    """
    for _, key in lookup_keys(word):
        found = stoi.get(key)
        if found is not None:
            return found
    return default


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return cast(IO[bytes], gzip.open(path, "rb") if gzipped else path.open("rb"))


@dataclass
class VectorFileInfo:
    format: VectorFormat
    dim: int
    count: int | None
    """Words announced by the header (None for GloVe, which has none)."""


def inspect_vectors(path: str | Path) -> VectorFileInfo:
    """Detect the format and dimension of a vector file from its first bytes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such embeddings file")
    try:
        with _open(path) as handle:
            first, number = _strip_bom(handle.readline()), 1
            while first and not first.strip():  # blank lines before a GloVe file's first vector
                first, number = handle.readline(), number + 1
            header = _HEADER.match(first) if number == 1 else None
            # Text after the header is a word and D numbers (up to ~16 bytes each), binary raw
            # float bytes: the second line, as far as a text line could go, tells which.
            line = handle.readline(1024 + 32 * int(header.group(2))) if header else b""
    except (OSError, EOFError) as exc:
        raise DataError(path, f"cannot read ({exc})") from None
    if not first.strip():
        raise DataError(path, "empty embeddings file", 1)
    if header is None:
        fields = _text_fields(first, path, number)
        return VectorFileInfo("glove", len(fields) - 1, None)
    count, dim = int(header.group(1)), int(header.group(2))
    if dim <= 0:
        raise DataError(path, f"header announces {dim}-dimensional vectors", 1)
    try:
        parts = line.decode("utf-8").rstrip().rsplit(" ", dim)
        [float(x) for x in parts[1:]]
        is_text = len(parts) == dim + 1
    except (UnicodeDecodeError, ValueError):
        is_text = False
    return VectorFileInfo("word2vec_text" if is_text else "word2vec_binary", dim, count)


def _strip_bom(first_line: bytes) -> bytes:
    """A file's first line without the UTF-8 byte order mark some editors write."""
    return first_line.removeprefix(b"\xef\xbb\xbf")


def _text_fields(raw: bytes, path: Path, line: int) -> list[str]:
    try:
        text = raw.decode("utf-8").rstrip("\r\n").rstrip(" ")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text (byte {exc.start + 1})", line) from None
    fields = text.split(" ")
    if len(fields) < 2:
        raise DataError(path, "expected a word followed by numbers", line)
    return fields


def iter_vectors(
    path: str | Path, keep: Callable[[str], bool] | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(word, vector)`` in file order for the words ``keep`` accepts (default: all).

    ``keep`` is asked as the file is read, so it may depend on what was yielded before. Lines it
    rejects are checked for their shape only, never parsed. A malformed line raises ``DataError``
    naming the file and line.
    """
    path = Path(path)
    info = inspect_vectors(path)
    accept = keep if keep is not None else (lambda word: True)
    if info.format == "word2vec_binary":
        yield from _iter_binary(path, info, accept)
    else:
        yield from _iter_text(path, info, accept)


def _check_spaced_word(path: Path, info: VectorFileInfo, word: str, dim: int, line: int) -> None:
    """A word with a space must be a GloVe 840B phrase, not one number too many (``dog 3 4 5``
    with D = 2, which gensim refuses too) or two spaces in a row: either would put a vector under
    a word no one looks up, and the real word would silently have none."""
    last = word.rsplit(" ", 1)[-1]
    if info.format == "word2vec_text" or not last or _is_number(last):
        found = len(word.split(" ")) - 1 + dim
        what = "an empty field (two spaces in a row)" if not last else f"{found} numbers"
        raise DataError(path, f"expected a word and {dim} numbers, found {what}", line)


_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
"""A vector value as files write them; ``float`` also reads "inf", "nan" or "1_000", which end
GloVe 840B phrases ("to Infinity") and are never finite vector values anyway."""


def _is_number(text: str) -> bool:
    return _DECIMAL.fullmatch(text) is not None and text.isascii()


def _iter_text(
    path: Path, info: VectorFileInfo, keep: Callable[[str], bool]
) -> Iterator[tuple[str, np.ndarray]]:
    dim = info.dim
    with _open(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                if info.format == "word2vec_text":
                    continue
                raw = _strip_bom(raw)
            if not raw.strip():
                continue
            if raw.count(b" ") < dim:
                found = len(raw.rstrip().split(b" ")) - 1
                raise DataError(path, f"expected a word and {dim} numbers, found {found}", number)
            try:
                text = raw.decode("utf-8").rstrip("\r\n").rstrip(" ")
            except UnicodeDecodeError as exc:
                raise DataError(path, f"not UTF-8 text (byte {exc.start + 1})", number) from None
            # The word is what precedes the last D fields; it holds spaces in GloVe 840B.
            spaced = text.count(" ") > dim
            if spaced:
                _check_spaced_word(path, info, text.rsplit(" ", dim)[0], dim, number)
            if not keep(text.rsplit(" ", dim)[0] if spaced else text.partition(" ")[0]):
                continue
            parts = text.rsplit(" ", dim)
            if len(parts) != dim + 1 or not parts[0]:
                raise DataError(path, f"expected a word and {dim} numbers", number)
            try:
                vector = np.array(parts[1:], dtype=np.float32)
            except ValueError:
                raise DataError(path, "a vector value is not a number", number) from None
            if not np.isfinite(vector).all():  # nan, inf, or beyond float32's range
                raise DataError(path, "a vector value is not a finite number", number)
            yield parts[0], vector


def _iter_binary(
    path: Path, info: VectorFileInfo, keep: Callable[[str], bool]
) -> Iterator[tuple[str, np.ndarray]]:
    size = 4 * info.dim
    with _open(path) as handle:
        handle.readline()
        buffer = b""
        for record in range(1, (info.count or 0) + 1):
            while True:
                space = buffer.find(b" ")
                if space >= 0 and len(buffer) >= space + 1 + size:
                    break
                more = handle.read(_CHUNK)
                if not more:
                    raise DataError(path, f"record {record} of {info.count} is truncated")
                buffer += more
            raw_word = buffer[:space].lstrip(b"\n")
            vector_bytes = buffer[space + 1 : space + 1 + size]
            buffer = buffer[space + 1 + size :]
            try:
                word = raw_word.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(path, f"record {record}: word is not UTF-8") from None
            if keep(word):
                vector = np.frombuffer(vector_bytes, dtype="<f4").astype(np.float32)
                if not np.isfinite(vector).all():
                    raise DataError(path, f"record {record}: a vector value is not finite")
                yield word, vector


# ---------------------------------------------------------------------------------------------------
# Matching a vocabulary


@dataclass
class Coverage:
    """How much of a vocabulary (and of the training text) got a pretrained vector."""

    file: str
    format: str
    dim: int
    vocab_size: int
    """Words looked up: the training vocabulary without the special tokens."""
    exact: int = 0
    lower: int = 0
    digits: int = 0
    missing: int = 0
    token_coverage: float = 0.0
    """Share of training tokens (running words) whose vocabulary entry got a vector."""
    added_words: int = 0
    """Words of the file that joined the vocabulary (``data.extend_vocab_from_embeddings``)."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        def share(n: int) -> str:
            return f"{n} ({100.0 * n / max(self.vocab_size, 1):.1f}%)"

        added = f"; {self.added_words} words added from the file" if self.added_words else ""
        return (
            f"{self.file} ({self.format}, {self.dim}d): vocabulary {self.vocab_size}: "
            f"exact {share(self.exact)}, lower-cased {share(self.lower)}, "
            f"digits normalised {share(self.digits)}, missing {share(self.missing)}; "
            f"training tokens covered {100.0 * self.token_coverage:.1f}%{added}"
        )


@dataclass
class PretrainedMatch:
    """Vectors for a (possibly extended) vocabulary, ready to copy into an embedding matrix."""

    words: list[str]
    """The vocabulary, extension words appended at the end."""
    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    """Vocabulary id → vector, for the ids that were found."""
    coverage: Coverage | None = None


def match_vocabulary(
    path: str | Path,
    words: list[str],
    *,
    specials: Iterable[str],
    embed_size: int,
    token_counts: Counter[str] | None = None,
    extend: bool = False,
    max_added: int = 0,
    normalise: Callable[[str], str] | None = None,
) -> PretrainedMatch:
    """Look up every non-special word of ``words`` (a vocabulary in id order) in the file at ``path``.

    With ``extend``, words of the file that the vocabulary lacks are appended (at most ``max_added``;
    0 = no limit), in file order, after ``normalise`` (the task's own word normalisation).
    """
    info = inspect_vectors(path)
    if info.dim != embed_size:
        raise DataError(
            path,
            f"vectors are {info.dim}-dimensional but model.embed_size is {embed_size}",
        )
    special = set(specials)
    lookups = {w: lookup_keys(w) for w in words if w not in special}
    wanted = {key for keys in lookups.values() for _, key in keys}
    found: dict[str, np.ndarray] = {}
    added: list[str] = []
    extra: dict[str, np.ndarray] = {}
    known = set(words)

    def form(word: str) -> str:
        return normalise(word) if normalise is not None else word

    def addable(word: str) -> bool:
        room = max_added <= 0 or len(added) < max_added
        folded = form(word)
        return extend and room and bool(folded) and folded not in known

    # Every spelling of an added word, first line of each: its vector is then chosen in
    # ``lookup_keys`` order, as a training word's is (an exact "zebra" before "Zebra").
    spellings: dict[str, dict[str, np.ndarray]] = {}

    def spelling_of_added(word: str) -> bool:
        return extend and form(word) in spellings

    def keep(word: str) -> bool:
        return word in wanted or addable(word) or spelling_of_added(word)

    for word, vector in iter_vectors(path, keep):
        if word in wanted:
            found.setdefault(word, vector)
        if addable(word):
            known.add(form(word))
            added.append(form(word))
            spellings[form(word)] = {}
        if spelling_of_added(word):
            spellings[form(word)].setdefault(word, vector)
    for folded, seen in spellings.items():
        key = next((key for _, key in lookup_keys(folded) if key in seen), next(iter(seen)))
        extra[folded] = seen[key]
    coverage = Coverage(file=str(path), format=info.format, dim=info.dim, vocab_size=len(lookups))
    all_words = [*words, *added]
    vectors: dict[int, np.ndarray] = {}
    covered_tokens = 0
    for index, word in enumerate(words):
        if word in special:
            continue
        kind = next((kind for kind, key in lookups[word] if key in found), None)
        if kind is None:
            coverage.missing += 1
            continue
        setattr(coverage, kind, getattr(coverage, kind) + 1)
        key = next(key for k, key in lookups[word] if key in found)
        vectors[index] = found[key]
        covered_tokens += token_counts[word] if token_counts is not None else 0
    for offset, word in enumerate(added):
        vectors[len(words) + offset] = extra[word]
    # Special tokens (a language model's <eos> per line) are never looked up.
    total_tokens = (
        sum(n for token, n in token_counts.items() if token not in special)
        if token_counts is not None
        else 0
    )
    coverage.token_coverage = covered_tokens / total_tokens if total_tokens else 0.0
    coverage.added_words = len(added)
    return PretrainedMatch(words=all_words, vectors=vectors, coverage=coverage)
