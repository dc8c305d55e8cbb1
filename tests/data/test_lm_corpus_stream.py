"""Reading a language-model corpus a line at a time gives the tokens of the whole text at once."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from rnnlab.data.lm_corpus import clean_timemachine, iter_corpus
from rnnlab.data.vocab import EOS
from rnnlab.errors import DataError
from tests.data.fuzz import FUZZ

texts = st.lists(st.sampled_from(["ab", "C", " ", "!", "\n", "\n\n", "x-y", "  ", "é", "1"])).map(
    "".join
)


def whole_text_tokens(text: str, level: str, clean: str) -> list[str]:
    """The reference: the textbook's reading of the whole file as one string."""
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    if level == "char":
        whole = "".join(line + "\n" for line in lines)
        return list(clean_timemachine(whole) if clean == "timemachine" else whole)
    tokens: list[str] = []
    for line in lines:
        words = (clean_timemachine(line) if clean == "timemachine" else line).split()
        tokens += [*words, EOS] if words else []
    return tokens


@FUZZ
@given(
    text=texts,
    level=st.sampled_from(["char", "word"]),
    clean=st.sampled_from(["none", "timemachine"]),
)
def test_streamed_tokens_equal_whole_text_tokens(tmp_path: Path, text: str, level, clean):
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    expected = whole_text_tokens(text, level, clean)
    try:
        streamed = [t for chunk in iter_corpus(path, level=level, clean=clean) for t in chunk]
    except DataError:
        assert not "".join(expected).strip()
    else:
        assert streamed == expected
