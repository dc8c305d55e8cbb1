"""CoNLL-U and the simple tagged formats: reading, tag filling, round trips and located errors."""

from __future__ import annotations

from pathlib import Path

import conllu
import pytest

from rnnlab.data.conllu_io import parse_conllu, read_conllu
from rnnlab.data.tagged import detect_format, iter_tagged, read_tagged
from rnnlab.errors import DataError

DATA = Path(__file__).parent / "tagged"
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "ud-ewt-sample"


def test_syntactic_words_are_tagged_mwt_and_empty_nodes_are_not():
    first, second = read_conllu(DATA / "mwt.conllu")
    assert first.words == ["I", "do", "n't", "know", "."]
    assert first.labels("upos") == ["PRON", "AUX", "PART", "VERB", "PUNCT"]
    assert first.labels("xpos") == ["PRP", "VBP", "RB", "VB", "."]
    assert second.words == ["New  York"]  # two spaces inside a FORM are not a column break


def test_filling_a_column_keeps_every_other_byte(tmp_path: Path):
    text = (DATA / "mwt.conllu").read_text(encoding="utf-8")
    sentences = read_conllu(DATA / "mwt.conllu")
    filled = "".join(s.with_tags("upos", ["X"] * len(s.words)) for s in sentences)
    original_lines, filled_lines = text.splitlines(), filled.splitlines()
    assert len(original_lines) == len(filled_lines)
    changed = 0
    for old, new in zip(original_lines, filled_lines, strict=True):
        old_cols, new_cols = old.split("\t"), new.split("\t")
        if len(old_cols) == 10 and old_cols[0].isdigit():
            assert new_cols[3] == "X"
            assert old_cols[:3] + old_cols[4:] == new_cols[:3] + new_cols[4:]
            changed += 1
        else:  # comments (repeated keys, no-space form), MWT and empty-node lines: untouched
            assert old == new
    assert changed == 6
    # filling the gold tags back gives the file itself
    restored = "".join(s.with_tags("upos", s.labels("upos")) for s in sentences)
    assert restored == text


def test_sample_round_trips_byte_for_byte():
    path = SAMPLE / "dev.conllu"
    sentences = read_conllu(path)
    assert "".join(s.with_tags("xpos", [str(t) for t in s.labels("xpos")]) for s in sentences) == (
        path.read_text(encoding="utf-8")
    )


def _write(tmp_path: Path, text: str, name: str = "bad.conllu") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = "1\tHi\thi\tINTJ\tUH\t_\t0\troot\t0:root\t_\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("2\tthere\tthere\tADV\tRB\t_\t1\tadvmod\n", "expected 10 tab-separated"),
        ("x\tthere\tthere\tADV\tRB\t_\t1\tadvmod\t1:advmod\t_\n", "is not a valid ID"),
        ("3\tthere\tthere\tADV\tRB\t_\t1\tadvmod\t1:advmod\t_\n", "out of sequence"),
        ("2\tthere\tthere\tADV\tRB\t_\tone\tadvmod\t1:advmod\t_\n", "bad HEAD column"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, line: str, message: str):
    path = _write(tmp_path, "# sent_id = a\n" + GOOD + line + "\n")
    with pytest.raises(DataError) as info:
        read_conllu(path)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


def test_stdin_lines_are_parsed_with_their_numbers():
    lines = enumerate(["# c\n", GOOD, "\n", "\n", "1\tbad\n"], start=1)
    sentences = parse_conllu(lines, "<stdin>")
    assert next(sentences).words == ["Hi"]
    with pytest.raises(DataError, match=r"^<stdin>:5: "):
        next(sentences)


def test_comment_only_block_is_kept_but_has_no_words(tmp_path: Path):
    path = _write(tmp_path, "# only a comment\n\n" + GOOD + "\n", "c.conllu")
    empty, sentence = read_conllu(path)
    assert empty.words == [] and empty.with_tags("upos", []) == "# only a comment\n\n"
    assert [s.words for s in read_tagged(path)] == [["Hi"]]


def test_missing_gold_tag_is_an_error_for_training(tmp_path: Path):
    path = _write(tmp_path, "1\tHi\thi\tINTJ\t_\t_\t0\troot\t0:root\t_\n\n", "x.conllu")
    assert read_tagged(path, tag_column="upos")[0].tags == ["INTJ"]
    with pytest.raises(DataError, match=r"x.conllu:1: no XPOS tag"):
        read_tagged(path, tag_column="xpos")


def test_further_columns_are_read_beside_the_tags(tmp_path: Path):
    first, second = iter_tagged(DATA / "mwt.conllu", tag_column="upos", aux_columns=["xpos"])
    assert first.tags == ["PRON", "AUX", "PART", "VERB", "PUNCT"]
    assert first.aux_tags == {"xpos": ["PRP", "VBP", "RB", "VB", "."]}
    assert second.aux_tags == {"xpos": ["NNP"]}
    first, _ = iter_tagged(DATA / "mwt.conllu", aux_columns=["deprel", "feats"])
    assert first.aux_tags["deprel"] == ["nsubj", "aux", "advmod", "root", "punct"]
    assert first.aux_tags["feats"] == [  # the text as written; "_" is a label of its own
        "Case=Nom|Number=Sing|Person=1|PronType=Prs",
        "Mood=Ind|Number=Sing|Person=1|Tense=Pres|VerbForm=Fin",
        "_",
        "VerbForm=Inf",
        "_",
    ]
    # The whole bundled sample against the conllu library's own parse (integer ids only).
    text = (SAMPLE / "train.conllu").read_text(encoding="utf-8")

    def feats(token: conllu.models.Token) -> str:
        return "|".join(f"{k}={v}" for k, v in token["feats"].items()) if token["feats"] else "_"

    expected = [
        [
            (t["upos"], t["xpos"], t["deprel"], feats(t))
            for t in sentence
            if isinstance(t["id"], int)
        ]
        for sentence in conllu.parse(text)
    ]
    columns = ["upos", "deprel", "feats"]
    read = iter_tagged(SAMPLE / "train.conllu", tag_column="xpos", aux_columns=columns)
    got = [
        list(
            zip(s.aux_tags["upos"], s.tags, s.aux_tags["deprel"], s.aux_tags["feats"], strict=True)
        )
        for s in read
    ]
    assert got == expected
    assert list(iter_tagged(DATA / "mwt.conllu"))[0].aux_tags == {}


def test_a_further_column_must_be_there(tmp_path: Path):
    path = _write(tmp_path, "1\tHi\thi\tINTJ\t_\t_\t0\t_\t0:root\t_\n\n", "x.conllu")
    with pytest.raises(DataError, match=r"x.conllu:1: no XPOS tag \(column is '_'\)"):
        list(iter_tagged(path, aux_columns=["xpos"]))
    with pytest.raises(DataError, match=r"x.conllu:1: no DEPREL label \(column is '_'\)"):
        list(iter_tagged(path, aux_columns=["feats", "deprel"]))
    assert list(iter_tagged(path, aux_columns=["feats"]))[0].aux_tags == {"feats": ["_"]}
    word_tag = _write(tmp_path, "The/DET cat/NOUN\n", "a.txt")
    with pytest.raises(
        DataError, match=r"a.txt: DEPREL labels need CoNLL-U data; this file is word_tag"
    ):
        iter_tagged(word_tag, aux_columns=["deprel", "xpos"])


def test_word_tag_and_two_column_formats(tmp_path: Path):
    word_tag = _write(tmp_path, "The/DET 1/2/NUM cats/NOUN\n\n  \nyes/INTJ\n", "a.txt")
    two_col = _write(tmp_path, "The\tDET\n1/2\tNUM\ncats\tNOUN\n\n\nyes\tINTJ\n", "b.txt")
    assert detect_format(word_tag) == "word_tag" and detect_format(two_col) == "two_column"
    for path in (word_tag, two_col):
        sentences = read_tagged(path)
        assert [s.words for s in sentences] == [["The", "1/2", "cats"], ["yes"]]
        assert [s.tags for s in sentences] == [["DET", "NUM", "NOUN"], ["INTJ"]]
    assert detect_format(DATA / "mwt.conllu") == "conllu"


def test_simple_formats_report_bad_lines(tmp_path: Path):
    bad_token = _write(tmp_path, "The/DET\ncats NOUN/\n", "a.txt")
    with pytest.raises(DataError, match=r"a.txt:2: token 'cats'"):
        read_tagged(bad_token, fmt="word_tag")
    bad_columns = _write(tmp_path, "The\tDET\ncats\tNOUN\textra\n", "b.txt")
    with pytest.raises(DataError, match=r"b.txt:2: expected word<TAB>tag"):
        read_tagged(bad_columns, fmt="two_column")


def test_gzip_is_read_transparently(tmp_path: Path):
    import gzip

    path = tmp_path / "d.conllu.gz"
    path.write_bytes(gzip.compress((DATA / "mwt.conllu").read_bytes()))
    assert detect_format(path) == "conllu"
    assert [s.words for s in read_tagged(path)][1] == ["New  York"]
