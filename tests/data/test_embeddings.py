"""Reading word-vector files: every format (checked against gensim's reader), lookup order, coverage
figures and the errors a user can cause."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors

from rnnlab.data.embeddings import inspect_vectors, iter_vectors, lookup_keys, match_vocabulary
from rnnlab.data.vocab import SPECIALS
from rnnlab.errors import DataError

WORDS = ["the", "The", "cat", "1999", "new_york", "sat"]


def keyed_vectors(dim: int = 3, seed: int = 0) -> KeyedVectors:
    rng = np.random.default_rng(seed)
    kv = KeyedVectors(vector_size=dim)
    kv.add_vectors(WORDS, rng.standard_normal((len(WORDS), dim)).astype(np.float32))
    return kv


def write_glove(path: Path, kv: KeyedVectors) -> Path:
    lines = [f"{w} " + " ".join(repr(float(x)) for x in kv[w]) + "\n" for w in kv.index_to_key]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.writelines(lines)
    return path


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("vectors.glove.txt", "glove"),
        ("vectors.w2v.txt", "word2vec_text"),
        ("vectors.vec", "word2vec_text"),
        ("vectors.bin", "word2vec_binary"),
        ("vectors.glove.txt.gz", "glove"),
        ("vectors.w2v.txt.gz", "word2vec_text"),
        ("vectors.bin.gz", "word2vec_binary"),
    ],
)
def test_every_format_reads_what_gensim_reads(tmp_path: Path, name: str, fmt: str):
    kv = keyed_vectors()
    path = tmp_path / name
    if fmt == "glove":
        write_glove(path, kv)
    else:
        kv.save_word2vec_format(str(path), binary=fmt == "word2vec_binary")
    info = inspect_vectors(path)
    assert (info.format, info.dim) == (fmt, 3)
    reference = KeyedVectors.load_word2vec_format(
        str(path), binary=fmt == "word2vec_binary", no_header=fmt == "glove"
    )
    read = dict(iter_vectors(path))
    assert list(read) == reference.index_to_key == WORDS
    for word, vector in read.items():
        np.testing.assert_array_equal(vector, reference[word])


def test_only_wanted_rows_are_parsed(tmp_path: Path):
    path = write_glove(tmp_path / "v.txt", keyed_vectors())
    asked: list[str] = []

    def keep(word: str) -> bool:
        asked.append(word)
        return word == "cat"

    assert [w for w, _ in iter_vectors(path, keep)] == ["cat"]
    assert asked == WORDS


def test_glove_words_with_spaces_are_cut_at_the_last_numbers(tmp_path: Path):
    path = tmp_path / "v.txt"
    path.write_text("a 1 2\n. . . 3 4\n", encoding="utf-8")
    read = dict(iter_vectors(path))
    np.testing.assert_array_equal(read[". . ."], [3.0, 4.0])


def test_lookup_order_exact_lower_digits():
    assert lookup_keys("Year1999") == [
        ("exact", "Year1999"),
        ("lower", "year1999"),
        ("digits", "year####"),
        ("digits", "year0000"),
    ]


def test_match_prefers_exact_then_lower_then_digits_and_counts_coverage(tmp_path: Path):
    path = tmp_path / "v.txt"
    path.write_text("the 1 1\nThe 2 2\ncat 3 3\n#### 4 4\n0 5 5\nparis 6 6\n", encoding="utf-8")
    vocab = [*SPECIALS, "The", "Cat", "2024", "7", "Paris", "dog"]
    counts = Counter({"The": 10, "Cat": 5, "2024": 2, "7": 1, "Paris": 1, "dog": 1})
    found = match_vocabulary(path, vocab, specials=SPECIALS, embed_size=2, token_counts=counts)
    rows = {vocab[i]: list(v) for i, v in found.vectors.items()}
    assert rows == {
        "The": [2, 2],  # exact beats lower-cased "the"
        "Cat": [3, 3],  # lower-cased
        "2024": [4, 4],  # digits as '#' come before digits as '0'
        "7": [5, 5],
        "Paris": [6, 6],
    }
    cov = found.coverage
    assert cov is not None
    assert (cov.vocab_size, cov.exact, cov.lower, cov.digits, cov.missing) == (6, 1, 2, 2, 1)
    assert cov.token_coverage == pytest.approx(19 / 20)
    assert found.words == vocab  # no extension asked


def test_extension_appends_file_words_up_to_the_cap(tmp_path: Path):
    path = tmp_path / "v.txt"
    path.write_text("cat 1 1\nDog 2 2\nemu 3 3\nfox 4 4\n", encoding="utf-8")
    vocab = [*SPECIALS, "cat"]
    found = match_vocabulary(
        path,
        vocab,
        specials=SPECIALS,
        embed_size=2,
        extend=True,
        max_added=2,
        normalise=str.lower,
    )
    assert found.words == [*SPECIALS, "cat", "dog", "emu"]
    assert {found.words[i]: list(v) for i, v in found.vectors.items()} == {
        "cat": [1, 1],
        "dog": [2, 2],
        "emu": [3, 3],
    }
    assert found.coverage is not None and found.coverage.added_words == 2


def test_dimension_mismatch_names_file_and_both_sizes(tmp_path: Path):
    path = write_glove(tmp_path / "v.txt", keyed_vectors(dim=3))
    with pytest.raises(DataError) as err:
        match_vocabulary(path, [*SPECIALS, "cat"], specials=SPECIALS, embed_size=8)
    message = str(err.value)
    assert str(path) in message and "3-dimensional" in message and "embed_size is 8" in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("cat 1 2\ndog 1\n", 2),  # too few numbers
        ("cat 1 2\ndog 1 x\n", 2),  # not a number
        ("2 2\ncat 1 2\ndog 3\n", 3),  # word2vec text
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, text: str, line: int):
    path = tmp_path / "v.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as err:
        list(iter_vectors(path))
    assert err.value.path == str(path) and err.value.line == line


def test_truncated_binary_is_an_error(tmp_path: Path):
    path = tmp_path / "v.bin"
    keyed_vectors().save_word2vec_format(str(path), binary=True)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        list(iter_vectors(path))


def test_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match="no such embeddings file"):
        inspect_vectors(tmp_path / "absent.txt")


def test_lookup_id_follows_the_lookup_order():
    from rnnlab.data.embeddings import lookup_id

    stoi = {"the": 4, "The": 5, "year####": 6}
    assert lookup_id(stoi, "The", 1) == 5
    assert lookup_id(stoi, "THE", 1) == 4
    assert lookup_id(stoi, "Year2024", 1) == 6
    assert lookup_id(stoi, "cat", 1) == 1
