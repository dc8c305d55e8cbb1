"""``rnnlab.embeddings_training``: the corpus gensim reads, and the vectors file it writes.

References: plain-Python whitespace splitting and ``collections.Counter`` for the corpus, its counts
and the vocabulary ``min_count`` keeps; the ``conllu`` library for CoNLL-U FORMs; gensim's own
``KeyedVectors.load_word2vec_format`` for the written file (and ``gzip`` for ``.gz`` output).
``tests/cli/test_embeddings_cli.py`` trains through the CLI on the bundled treebank; this file uses
corpora of a few lines and adds the counts, determinism, atomic output and the user errors: empty,
missing, directory, non-UTF-8 and truncated-gzip inputs, bad numbers, and bad output paths.
"""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import conllu
import pytest
from gensim.models import KeyedVectors

from rnnlab.data.bundled import BUNDLED_DIR
from rnnlab.data.embeddings import iter_vectors
from rnnlab.embeddings_training import TextCorpus, train_vectors
from rnnlab.errors import DataError, RnnlabError

TREEBANK = Path(__file__).parent / "data" / "tagged" / "mwt.conllu"
SAMPLE_TREEBANK = BUNDLED_DIR / "ud-ewt-sample" / "dev.conllu"
LINES = ["the cat sat on the mat", "", "the dog sat", "   ", "a cat and a dog"]
FAST = {"dim": 4, "epochs": 1, "min_count": 1}


def write_text(path: Path, lines: list[str], *, newline: str = "\n") -> Path:
    path.write_bytes("".join(f"{line}{newline}" for line in lines).encode("utf-8"))
    return path


def reference_sentences(lines: list[str], repeat: int = 1) -> list[list[str]]:
    return [line.split() for line in lines * repeat if line.split()]


def vectors_in(path: Path) -> KeyedVectors:
    return KeyedVectors.load_word2vec_format(str(path), binary=False)


# --------------------------------------------------------------------------------------------------
# TextCorpus


def test_plain_text_is_split_on_whitespace_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a.txt", LINES, newline="\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a BOM is no part of the first word
    corpus = TextCorpus([path])
    assert list(corpus) == reference_sentences(LINES)
    assert list(corpus) == list(corpus)  # gensim iterates once per epoch: it must start over


def test_lowercase_and_punctuation_splitting(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a.txt", ["Hello, World!", "Dr. No?"])
    assert list(TextCorpus([path], lowercase=True)) == [["hello,", "world!"], ["dr.", "no?"]]
    assert list(TextCorpus([path], split_punct=True)) == [
        ["Hello", ",", "World", "!"],
        ["Dr", ".", "No", "?"],
    ]


def test_conllu_inputs_give_their_syntactic_word_forms(tmp_path: Path) -> None:
    # By hand from the file: the words 2 and 3 of the multi-word token "don't" (not the token
    # itself, nor the empty node 4.1); the FORM "New  York", which no word2vec text line can hold,
    # is left out, and its sentence with it.
    expected = [["I", "do", "n't", "know", "."]]
    assert list(TextCorpus([TREEBANK])) == expected
    # A whole treebank against the reference parser (which splits at two spaces, so it is only
    # trusted on a file without them).
    assert list(TextCorpus([SAMPLE_TREEBANK])) == [
        [str(token["form"]) for token in sentence if isinstance(token["id"], int)]
        for sentence in conllu.parse(SAMPLE_TREEBANK.read_text(encoding="utf-8"))
    ]
    packed = tmp_path / "mwt.conllu.gz"
    packed.write_bytes(gzip.compress(TREEBANK.read_bytes()))
    text = write_text(tmp_path / "b.txt", ["I know"])
    assert list(TextCorpus([packed, text])) == [*expected, ["I", "know"]]  # in input order


@pytest.mark.parametrize(
    ("name", "content", "line", "fragment"),
    [
        ("latin1.txt", b"fine line\nstill fine\ncaf\xe9 au lait\n", 3, "not UTF-8"),
        (
            "bad.conllu",
            b"1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n2\tthere\n\n",
            2,
            "10 tab-separated",
        ),
    ],
)
def test_bad_lines_are_data_errors_naming_file_and_line(
    tmp_path: Path, name: str, content: bytes, line: int, fragment: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        list(TextCorpus([path]))
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_missing_directory_and_truncated_inputs_are_data_errors(tmp_path: Path) -> None:
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    packed = gzip.compress(("the cat sat on the mat\n" * 3000).encode("utf-8"))
    truncated = tmp_path / "cut.txt.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    cases = {
        tmp_path / "missing.txt": "no such file",
        tmp_path / "missing.conllu": "no such file",
        folder: "is a directory",
        truncated: "cannot read",
    }
    for path, fragment in cases.items():
        with pytest.raises(DataError) as info:
            list(TextCorpus([path]))
        assert str(info.value).startswith(f"{path}: "), str(info.value)
        assert fragment in str(info.value)


# --------------------------------------------------------------------------------------------------
# train_vectors


@pytest.mark.parametrize("algorithm", ["word2vec", "fasttext"])
def test_vectors_cover_the_words_seen_min_count_times(tmp_path: Path, algorithm: str) -> None:
    text = write_text(tmp_path / "a.txt", LINES * 3)
    out = tmp_path / "vectors" / "v.txt"  # a folder that does not exist yet
    trained = train_vectors([text], out, algorithm=algorithm, dim=6, epochs=1, min_count=4)
    sentences = reference_sentences(LINES, repeat=3)
    counts = Counter(word for sentence in sentences for word in sentence)
    kept = {word for word, n in counts.items() if n >= 4}
    assert (trained.path, trained.dim) == (out, 6)
    assert (trained.sentences, trained.tokens) == (len(sentences), sum(counts.values()))
    assert trained.words == len(kept)
    header = out.read_text(encoding="utf-8").splitlines()[0]
    assert header == f"{len(kept)} 6"
    vectors = vectors_in(out)
    assert set(vectors.index_to_key) == kept and vectors.vector_size == 6
    # rnnlab's own reader, used by model.pretrained_embeddings, reads the same words and numbers.
    read = dict(iter_vectors(out))
    assert set(read) == kept
    for word in kept:
        assert read[word] == pytest.approx(vectors[word], abs=1e-6)


def test_several_inputs_are_one_corpus(tmp_path: Path) -> None:
    first = write_text(tmp_path / "a.txt", ["x y", "y z"])
    trained = train_vectors([first, TREEBANK], tmp_path / "v.txt", **FAST)
    treebank = list(TextCorpus([TREEBANK]))
    assert trained.sentences == 2 + len(treebank)
    assert trained.tokens == 4 + sum(len(s) for s in treebank)
    assert {"x", "y", "z", "know"} <= set(dict(iter_vectors(tmp_path / "v.txt")))


def test_one_worker_and_a_seed_give_the_same_file(tmp_path: Path) -> None:
    text = write_text(tmp_path / "a.txt", LINES * 2)
    train_vectors([text], tmp_path / "one.txt", seed=7, **FAST)
    train_vectors([text], tmp_path / "two.txt", seed=7, **FAST)
    assert (tmp_path / "one.txt").read_bytes() == (tmp_path / "two.txt").read_bytes()


def test_the_output_is_replaced_whole_and_no_partial_file_is_left(tmp_path: Path) -> None:
    text = write_text(tmp_path / "a.txt", LINES)
    out = tmp_path / "v.txt"
    out.write_text("an older vectors file\n", encoding="utf-8")
    train_vectors([text], out, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "v.txt"]
    assert len(vectors_in(out)) == len({w for s in reference_sentences(LINES) for w in s})


def test_a_gz_output_name_is_gzip_compressed(tmp_path: Path) -> None:
    text = write_text(tmp_path / "a.txt", LINES)
    out = tmp_path / "v.txt.gz"
    train_vectors([text], out, **FAST)
    words = {w for s in reference_sentences(LINES) for w in s}
    assert gzip.decompress(out.read_bytes()).decode("utf-8").startswith(f"{len(words)} 4\n")
    assert set(vectors_in(out).index_to_key) == words
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "v.txt.gz"]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"dim": 0}, "--dim must be at least 1, got 0"),
        ({"epochs": -1}, "--epochs must be at least 1, got -1"),
        ({"min_count": 0}, "--min-count must be at least 1, got 0"),
        ({"min_count": 100}, "no word occurs --min-count 100 times"),
    ],
)
def test_bad_numbers_are_one_line_errors_and_write_nothing(
    tmp_path: Path, options: dict[str, int], fragment: str
) -> None:
    text = write_text(tmp_path / "a.txt", LINES)
    settings = {**FAST, **options}
    with pytest.raises(RnnlabError) as info:
        train_vectors([text], tmp_path / "v.txt", **settings)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_inputs_without_text_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(RnnlabError, match="needs at least one input file"):
        train_vectors([], tmp_path / "v.txt")
    empty = write_text(tmp_path / "empty.txt", [])
    blank = write_text(tmp_path / "blank.txt", ["", "  ", "\t"])
    with pytest.raises(RnnlabError) as info:
        train_vectors([empty, blank], tmp_path / "v.txt", **FAST)
    assert str(info.value) == f"no text in {empty}, {blank}"
    missing = tmp_path / "missing.txt"
    with pytest.raises(DataError, match="no such file"):
        train_vectors([blank, missing], tmp_path / "v.txt", **FAST)  # checked before training
    assert not (tmp_path / "v.txt").exists()


class _GensimReached(Exception):
    """Raised by the stand-in model when training starts: the input was not refused before."""


class _StandInModel:
    """Enough of a gensim model for ``train_vectors`` to reach ``train`` without gensim."""

    def __init__(self, **options: object) -> None:
        self.wv = {"a": 0}

    def build_vocab(self, corpus_iterable: object) -> None:
        pass

    def train(self, **options: object) -> None:
        raise _GensimReached


@pytest.mark.parametrize("window", [0, -1])
def test_a_window_below_one_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    import gensim.models

    # Real gensim never returns here (it waits forever for its dead worker), so a stand-in model
    # takes its place and reports whether training was reached.
    monkeypatch.setattr(gensim.models, "Word2Vec", _StandInModel)
    text = write_text(tmp_path / "a.txt", LINES)
    with pytest.raises(RnnlabError, match="--window"):
        train_vectors([text], tmp_path / "v.txt", window=window, **FAST)


def test_an_output_path_that_is_a_directory_is_a_user_error(tmp_path: Path) -> None:
    text = write_text(tmp_path / "a.txt", LINES)
    folder = tmp_path / "vectors"
    folder.mkdir()
    try:
        with pytest.raises(RnnlabError):
            train_vectors([text], folder, **FAST)
    finally:
        # Whatever happened, nothing but the input and the untouched folder may be left.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "vectors"]


def test_an_output_under_a_file_is_a_user_error(tmp_path: Path) -> None:
    text = write_text(tmp_path / "a.txt", LINES)
    with pytest.raises(RnnlabError):
        train_vectors([text], text / "v.txt", **FAST)


def test_a_form_with_spaces_still_gives_a_word2vec_file_gensim_reads(tmp_path: Path) -> None:
    out = tmp_path / "v.txt"
    train_vectors([TREEBANK], out, **FAST)
    assert len(vectors_in(out)) == len({w for s in TextCorpus([TREEBANK]) for w in s})
