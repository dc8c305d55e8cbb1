"""Any bytes given to a data reader give a valid result or a one-line ``RnnlabError`` naming the file.

Readers: TSV and aligned parallel files, CoNLL-U, word/TAG and two-column tagged files (and format
detection), plain text for language models at both levels, vocabulary and tag-set JSON. Each is
also given its input gzip-compressed, truncated mid-stream, and as a 1 MB line.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnlab.data.lm_corpus import read_corpus
from rnnlab.data.parallel import read_aligned_pairs, read_parallel
from rnnlab.data.tagged import read_tagged
from rnnlab.data.tagset import TagSet
from rnnlab.data.vocab import Vocab
from rnnlab.errors import RnnlabError
from tests.data.fuzz import FUZZ, FUZZ_LONG, file_bytes

Reader = Callable[[Path], object]

READERS: dict[str, tuple[str, Reader]] = {
    "tsv": ("data.tsv", lambda p: read_parallel(p, src_lang="en", tgt_lang="fr", fmt="tsv")),
    "tsv-auto": ("data.tsv", lambda p: read_parallel(p, src_lang="fr", tgt_lang="en")),
    "conllu": ("data.conllu", lambda p: read_tagged(p, fmt="conllu", tag_column="upos")),
    "conllu-xpos": ("data.txt", lambda p: read_tagged(p, fmt="conllu", tag_column="xpos")),
    "word_tag": ("data.txt", lambda p: read_tagged(p, fmt="word_tag")),
    "two_column": ("data.txt", lambda p: read_tagged(p, fmt="two_column")),
    "tagged-auto": ("data.txt", lambda p: read_tagged(p)),
    "lm-char": ("data.txt", lambda p: read_corpus(p, level="char", clean="none")),
    "lm-char-clean": ("data.txt", lambda p: read_corpus(p, level="char", clean="timemachine")),
    "lm-word": ("data.txt", lambda p: read_corpus(p, level="word", clean="none", max_lines=3)),
    "vocab": ("vocab.json", Vocab.load),
    "tagset": ("tags.json", TagSet.load),
}


def assert_valid_or_one_line_error(read: Reader, path: Path) -> None:
    try:
        read(path)
    except RnnlabError as exc:
        message = str(exc)
        assert message.startswith(f"{path}:") or message.startswith(f"{path.parent}"), message
        assert "\n" not in message and "\r" not in message, message


GZ = ["plain", "gzip", "gzip-truncated", "gzip-corrupted", "not-gzip"]


def check_reader(name: str, data: bytes, gz: str, folder: Path) -> None:
    """``gz``: the bytes as they are, or as a ``.gz`` file: compressed, then cut short, damaged in
    the middle, or not compressed at all."""
    filename, read = READERS[name]
    if gz != "plain":
        filename += ".gz"
    if gz.startswith("gzip"):
        data = gzip.compress(data)
    if gz == "gzip-truncated":
        data = data[: len(data) // 2]
    if gz == "gzip-corrupted":
        middle = len(data) // 2
        data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
    path = folder / filename
    path.write_bytes(data)
    assert_valid_or_one_line_error(read, path)


@pytest.mark.parametrize("name", list(READERS))
@FUZZ
@given(data=file_bytes(), gz=st.sampled_from(GZ))
def test_reader_never_crashes(tmp_path: Path, name: str, data: bytes, gz: str):
    check_reader(name, data, gz, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(READERS))
@FUZZ_LONG
@given(data=file_bytes(), gz=st.sampled_from(GZ))
def test_reader_never_crashes_long(tmp_path: Path, name: str, data: bytes, gz: str):
    check_reader(name, data, gz, tmp_path)


@FUZZ
@given(src=file_bytes(), tgt=file_bytes())
def test_aligned_files_never_crash(tmp_path: Path, src: bytes, tgt: bytes):
    (tmp_path / "corpus.en").write_bytes(src)
    (tmp_path / "corpus.fr").write_bytes(tgt)
    assert_valid_or_one_line_error(lambda p: read_aligned_pairs(p, "en", "fr"), tmp_path / "corpus")


MEGABYTE_LINES = {
    "words": (b"a/NOUN " * 150_000)[:1_000_000],
    "tabs": b"x\t" * 500_000,
    "nul": b"\x00" * 1_000_000,
    "latin-1": "é".encode("latin-1") * 1_000_000,
}


@pytest.mark.parametrize("line", list(MEGABYTE_LINES))
@pytest.mark.parametrize("name", list(READERS))
def test_megabyte_line(tmp_path: Path, name: str, line: str):
    check_reader(name, b"a\tb\n" + MEGABYTE_LINES[line] + b"\r\nc\td\n", "plain", tmp_path)
