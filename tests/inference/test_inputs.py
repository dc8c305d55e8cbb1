"""A bare string where the inference API takes a list of lines is refused, for runs and exports."""

from __future__ import annotations

from pathlib import Path

import pytest

import rnnlab
from rnnlab.inference.inputs import require_list_of_texts


@pytest.mark.parametrize("value", ["a b c", b"a b c"])
def test_one_string_is_refused_with_what_to_pass(value: object) -> None:
    with pytest.raises(TypeError, match=r"translate takes a list of lines.*\[text\]"):
        require_list_of_texts(value, "translate")


@pytest.mark.parametrize("value", [["a b c"], ("a", "b"), [], [["a", "b"]]])
def test_lists_and_tuples_pass(value: object) -> None:
    require_list_of_texts(value, "tag")


def test_a_translator_refuses_one_string(translator_run: Path) -> None:
    translator = rnnlab.load(translator_run)
    with pytest.raises(TypeError, match="translate takes a list of lines"):
        translator.translate("a b c")
    assert len(translator.translate(["a b c"])) == 1


@pytest.mark.parametrize("which", ["run", "export"])
def test_a_tagger_refuses_one_string(tagger_run: Path, exported_tagger: Path, which: str) -> None:
    tagger = rnnlab.load(tagger_run if which == "run" else exported_tagger)
    with pytest.raises(TypeError, match="tag takes a list of lines"):
        tagger.tag("is it")
    assert len(tagger.tag(["is it"])) == 1
