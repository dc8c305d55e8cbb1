"""Reading text as a token stream at character and word level."""

from __future__ import annotations

import pytest

from rnnlab.data.lm_corpus import clean_timemachine, read_corpus, text_tokens, tokens_text
from rnnlab.errors import DataError


def test_timemachine_cleaning_matches_the_textbook():
    assert (
        clean_timemachine("The Time-Machine, by H. G. Wells\n") == "the time machine by h g wells "
    )


def test_char_level_reads_line_ends_unless_cleaned(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Ab!\ncd\n", encoding="utf-8")
    assert read_corpus(path, level="char", clean="none") == list("Ab!\ncd\n")
    assert "".join(read_corpus(path, level="char", clean="timemachine")) == "ab cd "


def test_word_level_appends_eos_and_skips_blank_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(" a <unk> b \n\nc\n", encoding="utf-8")
    assert read_corpus(path, level="word", clean="none") == [
        "a",
        "<unk>",
        "b",
        "<eos>",
        "c",
        "<eos>",
    ]
    assert read_corpus(path, level="word", clean="none", max_lines=1) == [
        "a",
        "<unk>",
        "b",
        "<eos>",
    ]


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
@pytest.mark.parametrize("level", ["char", "word"])
def test_empty_text_is_an_error_naming_the_file(tmp_path, content, level):
    path = tmp_path / "empty.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt: no text"):
        read_corpus(path, level=level, clean="none")


def test_tokens_text_round_trip():
    assert tokens_text(["a", "b", "<eos>", "c"], level="word") == "a b\nc"
    assert (
        tokens_text(text_tokens("Hi there", level="char", clean="none"), level="char") == "Hi there"
    )
    assert text_tokens("Hi, there", level="word", clean="timemachine") == ["hi", "there"]
