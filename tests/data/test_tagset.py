"""``TagSet`` against hand-worked orderings and a brute-force ``Counter`` ranking.

Checked: ``build`` ranks tags by descending frequency, ties by name, and depends on the multiset of
tags only (not on sentence or token order); ``encode``/``decode`` invert each other and an unseen
tag encodes to ``UNSEEN``, which is no valid id; duplicates are refused; a saved tag set loads back
equal, non-ASCII tags included; and each kind of broken file is a ``DataError`` naming the file.
The fuzz test in tests/data/test_readers_fuzz.py only checks that loading never crashes.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.data.tagset import UNSEEN, TagSet
from rnnlab.errors import DataError

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)

SENTENCES = st.lists(st.lists(st.sampled_from(["ADJ", "DET", "NOUN", "VERB", "X", "é"])))


def test_build_by_hand():
    tagset = TagSet.build([["NOUN", "DET", "NOUN"], ["VERB", "DET", "ADJ"], ["NOUN"]])
    # NOUN ×3, DET ×2, then ADJ and VERB once each: the tie goes by name.
    assert tagset.itos == ["NOUN", "DET", "ADJ", "VERB"]
    assert tagset.stoi == {"NOUN": 0, "DET": 1, "ADJ": 2, "VERB": 3}
    assert len(tagset) == 4


@PROPERTY
@given(sentences=SENTENCES)
def test_build_ranks_by_frequency_then_name(sentences: list[list[str]]):
    counts = Counter(tag for sentence in sentences for tag in sentence)
    itos = TagSet.build(sentences).itos
    assert sorted(itos) == sorted(counts)  # every tag once, nothing else
    # Brute force over every pair: an earlier tag is more frequent, or as frequent and smaller.
    for i, earlier in enumerate(itos):
        for later in itos[i + 1 :]:
            assert (-counts[earlier], earlier) < (-counts[later], later)


@PROPERTY
@given(sentences=SENTENCES, seed=st.integers(0, 2**16))
def test_build_depends_on_the_tags_not_their_order(sentences: list[list[str]], seed: int):
    # "A tag set is a pure function of its data": regrouping and reordering tokens changes nothing.
    tokens = [tag for sentence in sentences for tag in sentence]
    random.Random(seed).shuffle(tokens)
    regrouped = [tokens[i : i + 3] for i in range(0, len(tokens), 3)]
    assert TagSet.build(regrouped).itos == TagSet.build(sentences).itos


def test_encode_decode_round_trip_and_unseen_tags():
    tagset = TagSet(["NOUN", "VERB", "DET"])
    assert tagset.encode(["DET", "NOUN", "VERB", "NOUN"]) == [2, 0, 1, 0]
    assert tagset.decode([2, 0, 1, 0]) == ["DET", "NOUN", "VERB", "NOUN"]
    assert tagset.encode(["NOUN", "INTJ"]) == [0, UNSEEN]
    # UNSEEN must never equal a prediction, i.e. never be one of the ids 0 … len − 1.
    assert UNSEEN == -1 and UNSEEN not in range(len(tagset))
    assert "NOUN" in tagset and "INTJ" not in tagset and "noun" not in tagset


@PROPERTY
@given(tags=st.lists(st.text(max_size=4), unique=True))
def test_ids_and_tags_are_inverse(tags: list[str]):
    tagset = TagSet(tags)
    assert tagset.encode(tags) == list(range(len(tags)))
    assert tagset.decode(range(len(tags))) == tags


def test_an_empty_tag_set_knows_nothing():
    tagset = TagSet.build([[], []])
    assert len(tagset) == 0 and tagset.encode(["NOUN"]) == [UNSEEN]


def test_duplicate_tags_are_refused():
    with pytest.raises(ValueError, match="duplicate tags"):
        TagSet(["NOUN", "VERB", "NOUN"])


def test_save_and_load_round_trip_keeps_non_ascii_tags_readable(tmp_path: Path):
    path = tmp_path / "tags.json"
    TagSet(["NOUN", "Präp", "名詞"]).save(path)
    # Written as UTF-8 text rather than \\u escapes, so the file stays readable.
    text = path.read_text(encoding="utf-8")
    assert "Präp" in text and "名詞" in text
    assert json.loads(text) == {"tags": ["NOUN", "Präp", "名詞"]}
    loaded = TagSet.load(path)
    assert loaded.itos == ["NOUN", "Präp", "名詞"] and loaded.stoi["名詞"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["tags.json"]  # no temporary file left behind


def test_a_missing_file_is_a_data_error_naming_it(tmp_path: Path):
    path = tmp_path / "nowhere.json"
    with pytest.raises(DataError, match="tag set file is missing") as caught:
        TagSet.load(path)
    assert caught.value.path == str(path)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",  # not an object
        '{"labels": ["NOUN"]}',  # no "tags" key
        '{"tags": null}',
        '{"tags": ["NOUN", "NOUN"]}',  # duplicates
        '{"tags": [["NOUN"]]}',  # a tag that is not hashable
        '{"tags": "DET"}',  # a string, which would otherwise read as the tags D, E, T
        '{"tags": ["NOUN", 3]}',  # a tag that is not a string
    ],
)
def test_a_broken_file_is_a_data_error_naming_it(tmp_path: Path, content: str):
    path = tmp_path / "tags.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="not a valid tag set file") as caught:
        TagSet.load(path)
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: ")
