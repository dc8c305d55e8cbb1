"""``rnnlab.data.vocab``: vocabularies built from counts, saved as JSON and loaded back safely.

References: a plain-Python count-and-sort for ``Vocab.build``, a brute-force first-appearance
numbering for ``FirstSeenIds``, the ``json`` module for the saved file, and hand-written bad files
for ``Vocab.load``. ``tests/data/test_text.py`` has one hand example of build/encode/decode,
one round trip and one non-JSON file; ``tests/data/test_readers_fuzz.py`` feeds random bytes to
``Vocab.load``. This file adds properties over arbitrary corpora and tokens, JSON of the wrong
shape, files that are not files, pickles (never unpickled), and atomic saving.
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnlab.data.vocab import SPECIALS, FirstSeenIds, Vocab
from rnnlab.errors import DataError, RnnlabError
from tests.pickles import CreatesAFileWhenUnpickled

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# A small alphabet makes ties and repeats common; the specials may appear in the data as words.
tokens = st.sampled_from(["a", "b", "c", "dd", "é", "<unk>", "<pad>", "x y", ""])
corpora = st.lists(st.lists(tokens, max_size=6), max_size=6)
any_token = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)


def expected_itos(corpus: list[list[str]], min_freq: int) -> list[str]:
    """Specials, then the tokens seen ``min_freq`` times, most frequent first, ties by text."""
    counts: dict[str, int] = {}
    for sentence in corpus:
        for token in sentence:
            counts[token] = counts.get(token, 0) + 1
    kept = [t for t, n in counts.items() if n >= min_freq and t not in SPECIALS]
    kept.sort(key=lambda t: (-counts[t], t))
    return list(SPECIALS) + kept


@PROPERTY
@given(corpus=corpora, min_freq=st.integers(1, 3))
def test_build_counts_and_orders_like_plain_python(corpus: list[list[str]], min_freq: int) -> None:
    vocab = Vocab.build(corpus, min_freq=min_freq)
    assert vocab.itos == expected_itos(corpus, min_freq)
    assert vocab.stoi == {token: i for i, token in enumerate(vocab.itos)}
    assert len(vocab) == len(vocab.itos)
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)
    # Counting elsewhere (one streaming pass) gives the same vocabulary.
    counts = Counter(token for sentence in corpus for token in sentence)
    assert Vocab.from_counts(counts, min_freq=min_freq) == vocab
    # A pure function of the data: the sentence order does not matter.
    assert Vocab.build(list(reversed(corpus)), min_freq=min_freq) == vocab


@PROPERTY
@given(corpus=corpora, sentence=st.lists(tokens, max_size=8))
def test_encode_maps_unknown_tokens_to_unk_and_decode_inverts_it(
    corpus: list[list[str]], sentence: list[str]
) -> None:
    vocab = Vocab.build(corpus)
    ids = vocab.encode(sentence)
    assert ids == [vocab.itos.index(t) if t in vocab.itos else 1 for t in sentence]
    assert all(token in vocab for token in sentence if token in vocab.itos)
    # decode keeps <unk> but drops <pad> <bos> <eos> (also when they were words in the input).
    expected = [t if t in vocab.itos else "<unk>" for t in sentence]
    assert vocab.decode(ids, strip_specials=False) == expected
    assert vocab.decode(ids) == [t for t in expected if t not in ("<pad>", "<bos>", "<eos>")]


def test_constructor_requires_the_specials_first_and_no_duplicates() -> None:
    with pytest.raises(ValueError, match="must start with"):
        Vocab(["<unk>", "<pad>", "<bos>", "<eos>"])
    with pytest.raises(ValueError, match="must start with"):
        Vocab(["<pad>", "<unk>"])
    with pytest.raises(ValueError, match="duplicate"):
        Vocab([*SPECIALS, "a", "a"])
    assert Vocab([*SPECIALS]) != [*SPECIALS]  # a vocabulary only equals a vocabulary


# --------------------------------------------------------------------------------------------------
# Saving


@PROPERTY
@given(extra=st.lists(any_token, unique=True, max_size=8), min_freq=st.integers(1, 9))
def test_save_writes_json_that_loads_back(tmp_path: Path, extra: list[str], min_freq: int) -> None:
    vocab = Vocab([*SPECIALS, *(t for t in extra if t not in SPECIALS)], min_freq=min_freq)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    # The file is plain JSON, readable by the reference library without rnnlab.
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "tokens": vocab.itos,
        "min_freq": min_freq,
    }
    loaded = Vocab.load(path)
    assert loaded == vocab and loaded.min_freq == min_freq and loaded.stoi == vocab.stoi


def test_save_replaces_the_old_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "vocab.json"
    path.write_text("old contents", encoding="utf-8")
    Vocab.build([["new"]]).save(path)
    assert Vocab.load(path).itos == [*SPECIALS, "new"]
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]


def test_saving_onto_a_directory_is_a_one_line_error_that_keeps_it(tmp_path: Path) -> None:
    folder = tmp_path / "vocab.json"
    folder.mkdir()
    (folder / "inside").write_text("kept", encoding="utf-8")
    with pytest.raises(RnnlabError) as info:
        Vocab.build([["a"]]).save(folder)
    assert str(info.value).startswith(f"{folder}: ") and "\n" not in str(info.value)
    assert (folder / "inside").read_text(encoding="utf-8") == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]


# --------------------------------------------------------------------------------------------------
# Loading what a user hands over


def specials_json(extra: str = "") -> str:
    return '["<pad>", "<unk>", "<bos>", "<eos>"' + extra + "]"


BAD_FILES: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b"  \n",
    "not-json": b"tokens: [a, b]\n",
    "truncated": ('{"tokens": ' + specials_json()[:-3]).encode(),
    "a-list": specials_json().encode(),
    "a-string": b'"<pad> <unk> <bos> <eos>"',
    "null": b"null",
    "a-number": b"4",
    "no-tokens-key": b'{"itos": ["<pad>", "<unk>", "<bos>", "<eos>"]}',
    "tokens-a-dict": b'{"tokens": {"<pad>": 0}}',
    "tokens-a-string": b'{"tokens": "<pad><unk><bos><eos>"}',
    "tokens-null": b'{"tokens": null}',
    "specials-missing": b'{"tokens": ["a", "b"]}',
    "specials-reordered": b'{"tokens": ["<unk>", "<pad>", "<bos>", "<eos>"]}',
    "duplicate-token": ('{"tokens": ' + specials_json(', "a", "a"') + "}").encode(),
    "unhashable-token": ('{"tokens": ' + specials_json(", [1]") + "}").encode(),
    "min-freq-text": ('{"tokens": ' + specials_json() + ', "min_freq": "two"}').encode(),
    "min-freq-null": ('{"tokens": ' + specials_json() + ', "min_freq": null}').encode(),
    "min-freq-nan": ('{"tokens": ' + specials_json() + ', "min_freq": NaN}').encode(),
    "latin-1": ('{"tokens": ' + specials_json(', "caf\xe9"') + "}").encode("latin-1"),
    "utf-16": ('{"tokens": ' + specials_json() + "}").encode("utf-16"),
    "gzip": bytes.fromhex("1f8b08000000000000ff"),
    "pickle": pickle.dumps({"tokens": list(SPECIALS)}),
}


def assert_vocab_error(path: Path, fragment: str = "") -> None:
    with pytest.raises(DataError) as info:
        Vocab.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message and "\r" not in message, message
    assert fragment in message


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_vocabulary_file_is_a_one_line_data_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_bytes(BAD_FILES[name])
    assert_vocab_error(path, "not a valid vocabulary file")


def test_a_missing_vocabulary_file_says_so(tmp_path: Path) -> None:
    assert_vocab_error(tmp_path / "vocab.json", "vocabulary file is missing")
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere.json")
    assert_vocab_error(tmp_path / "dangling.json", "vocabulary file is missing")


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_pickled_vocabulary_is_never_unpickled(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "vocab.json"
    path.write_bytes(pickle.dumps(CreatesAFileWhenUnpickled(marker), protocol=protocol))
    assert_vocab_error(path, "not a valid vocabulary file")
    assert not marker.exists()


def test_extra_keys_are_ignored_and_min_freq_defaults_to_one(tmp_path: Path) -> None:
    path = tmp_path / "vocab.json"
    path.write_text('{"tokens": ' + specials_json(', "a"') + ', "note": "hi"}', encoding="utf-8")
    vocab = Vocab.load(path)
    assert vocab.itos == [*SPECIALS, "a"] and vocab.min_freq == 1


def test_a_vocabulary_path_that_is_a_directory_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "vocab.json"
    folder.mkdir()
    assert_vocab_error(folder)


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "1e400"])
def test_an_infinite_min_freq_is_a_data_error(tmp_path: Path, value: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_text('{"tokens": ' + specials_json() + f', "min_freq": {value}}}', encoding="utf-8")
    assert_vocab_error(path, "not a valid vocabulary file")


def test_deeply_nested_json_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "vocab.json"
    path.write_text('{"tokens": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    assert_vocab_error(path, "not a valid vocabulary file")


@pytest.mark.parametrize("token", ["5", "null", "true", "1.5"])
def test_a_token_that_is_not_a_string_is_a_data_error(tmp_path: Path, token: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_text('{"tokens": ' + specials_json(f", {token}") + "}", encoding="utf-8")
    assert_vocab_error(path, "not a valid vocabulary file")


# --------------------------------------------------------------------------------------------------
# FirstSeenIds


@PROPERTY
@given(corpus=corpora, min_freq=st.integers(1, 3))
def test_first_seen_ids_renumber_to_the_vocabulary_of_their_counts(
    corpus: list[list[str]], min_freq: int
) -> None:
    seen = FirstSeenIds()
    ids = [seen.encode(sentence) for sentence in corpus]
    # Brute force: a token's id is the number of distinct tokens that appeared before it.
    order: list[str] = []
    for sentence in corpus:
        for token in sentence:
            if token not in order:
                order.append(token)
    assert ids == [[order.index(t) for t in sentence] for sentence in corpus]
    assert seen.tokens == order
    assert seen.counts() == Counter(t for sentence in corpus for t in sentence)
    vocab = Vocab.from_counts(seen.counts(), min_freq=min_freq)
    assert vocab == Vocab.build(corpus, min_freq=min_freq)
    renumbered = seen.renumber(ids, vocab, end=vocab.eos_id)
    assert list(renumbered) == [vocab.encode_text(s) + [vocab.eos_id] for s in corpus]


def test_text_spelling_a_marker_encodes_as_an_unknown_word() -> None:
    vocab = Vocab.build([["a", "b", "a"]])
    text = ["a", "<pad>", "<bos>", "<eos>", "<unk>", "b", "c"]
    unk, a, b = vocab.unk_id, vocab.stoi["a"], vocab.stoi["b"]
    assert vocab.encode_text(text) == [a, unk, unk, unk, unk, b, unk]
    # The ids themselves, as the model's bookkeeping uses them, are unchanged.
    assert vocab.encode(text)[1:4] == [vocab.pad_id, vocab.bos_id, vocab.eos_id]
