"""The inference API's result types (``rnnlab.inference.results``): ``Translation`` and
``TaggedSentence``, their printed lines and their JSON form.

References: output lines written out by hand, a plain-Python parser that reads a ``word/TAG`` line
back (checked with hypothesis), and the standard library's ``json`` and ``dataclasses``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.inference.results import AttentionMatrix, TaggedSentence, Translation


def parse_tagged_line(line: str) -> tuple[list[str], list[str]]:
    """Read ``word/TAG word/TAG`` back: the tag follows the last slash, so words may hold slashes."""
    if not line:
        return [], []
    pairs = [item.rsplit("/", 1) for item in line.split(" ")]
    return [word for word, _ in pairs], [tag for _, tag in pairs]


def test_translation_line_is_the_text_without_n_best() -> None:
    translation = Translation(text="il fait beau.", tokens=["il", "fait", "beau", "."], score=-1.5)
    assert translation.n_best == [] and translation.attention is None
    assert translation.line() == "il fait beau."


def test_translation_line_with_a_single_hypothesis_is_the_text() -> None:
    translation = Translation(text="oui.", tokens=["oui", "."], score=-0.2, n_best=[("oui.", -0.2)])
    assert translation.line() == "oui."


def test_translation_line_with_n_best_is_every_text_tab_separated() -> None:
    translation = Translation(
        text="b a",
        tokens=["b", "a"],
        score=-0.1,
        n_best=[("b a", -0.1), ("b b", -0.7), ("a", -2.0)],
    )
    assert translation.line() == "b a\tb b\ta"
    assert translation.line().split("\t")[0] == translation.text  # best first, as documented


def test_empty_input_translates_to_an_empty_line() -> None:
    assert Translation(text="", tokens=[], score=0.0).line() == ""


def test_default_n_best_lists_are_not_shared_between_translations() -> None:
    first = Translation(text="a", tokens=["a"], score=0.0)
    second = Translation(text="b", tokens=["b"], score=0.0)
    first.n_best.append(("a", 0.0))
    assert second.n_best == []


def test_translation_without_attention_is_plain_json() -> None:
    # "plain dataclasses that a server sends as JSON": the fields survive a JSON round trip.
    translation = Translation(
        text="b a", tokens=["b", "a"], score=-0.25, n_best=[("b a", -0.25), ("a", -1.0)]
    )
    decoded = json.loads(json.dumps(dataclasses.asdict(translation)))
    assert decoded == {
        "text": "b a",
        "tokens": ["b", "a"],
        "score": -0.25,
        "n_best": [["b a", -0.25], ["a", -1.0]],  # tuples become JSON arrays
        "attention": None,
    }


def test_translation_carries_the_attention_matrix_it_was_given() -> None:
    weights = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    matrix = AttentionMatrix(src_tokens=["x", "<eos>"], out_tokens=["y", "<eos>"], weights=weights)
    translation = Translation(text="y", tokens=["y"], score=-0.5, attention=matrix)
    assert translation.attention is matrix
    assert translation.line() == "y"  # the printed line never includes attention


def test_tagged_sentence_line_by_hand() -> None:
    sentence = TaggedSentence(
        tokens=["The", "dog", "barked", "."], tags=["DET", "NOUN", "VERB", "."]
    )
    assert sentence.line() == "The/DET dog/NOUN barked/VERB ./."


def test_tagged_sentence_keeps_slashes_inside_words() -> None:
    sentence = TaggedSentence(tokens=["1/2", "cup"], tags=["NUM", "NOUN"])
    assert sentence.line() == "1/2/NUM cup/NOUN"
    assert parse_tagged_line(sentence.line()) == (["1/2", "cup"], ["NUM", "NOUN"])


@pytest.mark.parametrize(
    "tokens,tags", [(["a", "b"], ["X"]), (["a"], ["X", "Y"]), ([], ["X"])], ids=str
)
def test_tagged_sentence_refuses_a_tag_count_that_differs(
    tokens: list[str], tags: list[str]
) -> None:
    # A silent zip would drop words or tags from the printed line.
    with pytest.raises(ValueError):
        TaggedSentence(tokens=tokens, tags=tags).line()


words = st.text(
    st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=6
)
tags = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ."), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(words, tags), max_size=8))
def test_tagged_line_reads_back_as_the_same_words_and_tags(pairs: list[tuple[str, str]]) -> None:
    sentence = TaggedSentence(tokens=[w for w, _ in pairs], tags=[t for _, t in pairs])
    line = sentence.line()
    assert "\n" not in line
    assert parse_tagged_line(line) == (sentence.tokens, sentence.tags)
