import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnlab.data.io import read_lines
from rnnlab.data.text import detokenize, normalize, preprocess_textbook, tokenize
from rnnlab.data.vocab import Vocab
from rnnlab.errors import DataError
from rnnlab.export import runtime


def test_textbook_preprocessing():
    assert preprocess_textbook("Va\u202f!") == "va !"
    assert preprocess_textbook("Go.") == "go ."
    assert preprocess_textbook("Hi,\xa0there!") == "hi , there !"
    assert preprocess_textbook("Wait !") == "wait !"  # no double space before punctuation
    assert normalize("He's Calm.", "punct") == "He's Calm ."
    assert normalize("He's Calm.", "none") == "He's Calm."


def _space_before_punct_by_hand(text: str) -> str:
    """A space before each ``, . ! ?`` that follows a non-space character, one character at a time."""
    out = []
    for i, char in enumerate(text):
        if char in ",.!?" and i > 0 and not text[i - 1].isspace():
            out.append(" ")
        out.append(char)
    return "".join(out)


def test_punctuation_split_of_runs_and_line_starts():
    assert preprocess_textbook("What?!") == "what ? !"
    assert preprocess_textbook("...") == ". . ."
    assert preprocess_textbook("Oh... no, ok.") == "oh . . . no , ok ."
    assert preprocess_textbook("?x") == "?x"


@given(st.text(alphabet="aB ,.!?\t\n\u202f\xa0é", max_size=30))
def test_punctuation_split_equals_the_rule_by_hand(text):
    expected = _space_before_punct_by_hand(text.translate({0x202F: " ", 0xA0: " "}))
    assert normalize(text, "punct") == expected
    assert preprocess_textbook(text) == expected.lower()
    assert runtime.normalize(text, "punct") == expected


def test_detokenize_inverts_punctuation_split():
    assert detokenize(tokenize("il est calme .")) == "il est calme."
    assert detokenize(["hi", ",", "you", "!"]) == "hi, you!"


def test_vocab_reserved_ids_min_freq_and_determinism():
    vocab = Vocab.build([["b", "a", "b"], ["c", "a", "d"]], min_freq=2)
    assert vocab.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert vocab.itos[4:] == ["a", "b"]  # equal counts are ordered by token
    assert vocab.encode(["a", "zzz", "b"]) == [4, 1, 5]
    assert vocab.decode([2, 4, 5, 3, 0]) == ["a", "b"]


def test_vocab_json_round_trip(tmp_path):
    vocab = Vocab.build([["x", "y", "x"]], min_freq=1)
    vocab.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json") == vocab


def test_vocab_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "v.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="v.json: not a valid vocabulary"):
        Vocab.load(bad)


def test_read_lines_reads_gzip_and_strips_bom(tmp_path):
    path = tmp_path / "x.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\ufefffirst\r\nsecond\n")
    assert list(read_lines(path)) == [(1, "first"), (2, "second")]


def test_read_lines_reports_non_utf8_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt:2: not UTF-8"):
        list(read_lines(path))
