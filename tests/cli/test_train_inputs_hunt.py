"""How ``rnnlab train`` reads a person's files and settings: configs, ``--set``, corpora and vectors.

Each test gives training (or the reader it calls) an input a person may really have: a config with
a section written twice, a ``--set`` value YAML reads as something else, a value out of range, a
CoNLL-U file with an empty tag column, a sentencepiece corpus of long lines, a text vector file
with long lines, a byte order mark or non-finite numbers. A mistake must be one line
``rnnlab: error: …`` (exit status 2) naming the file and line where there is one; valid input
must be read as an independent reference (the ``conllu`` library, gensim, Python's own
splitting) reads it. Defects found are ``xfail(strict=True)`` naming the function at fault.

Trainings are one step of a tiny model on a few lines of text.
"""

from __future__ import annotations

import json
from pathlib import Path

import conllu
import numpy as np
import pytest

from rnnlab.cli import EXIT_USER_ERROR
from rnnlab.data.embeddings import inspect_vectors, iter_vectors
from rnnlab.data.tagged import read_tagged
from rnnlab.errors import ConfigError, DataError
from rnnlab.rundir import load_task_config
from tests.cli_runner import Cli, Result, assert_user_error, run_cli

PANGRAM = "the quick brown fox jumps over the lazy dog\n"
PAIRS = [("a b c", "c b a"), ("b c d", "d c b"), ("a a", "a a"), ("d c", "c d")] * 4


@pytest.fixture
def rnnlab(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``rnnlab ARGV`` in this process (``tests.cli_runner.run_cli``)."""

    def run(*argv: object) -> Result:
        return run_cli(monkeypatch, capsys, *argv)

    return run


def sets(**settings: object) -> list[str]:
    """``--set KEY=VALUE`` pairs; ``__`` in a keyword stands for the dot of a dotted key."""
    return [
        arg
        for key, value in settings.items()
        for arg in ("--set", f"{key.replace('__', '.')}={value}")
    ]


def tiny(**overrides: object) -> list[str]:
    """One training step of a tiny model on the CPU, one thread."""
    settings: dict[str, object] = {
        "model__hidden_size": 8,
        "model__embed_size": 8,
        "model__num_layers": 1,
        "train__batch_size": 2,
        "train__max_steps": 1,
        "train__num_threads": 1,
        "train__device": "cpu",
    }
    settings.update(overrides)
    return sets(**settings)


def tiny_lm(text: Path, **overrides: object) -> list[str]:
    return tiny(data__train=text, data__clean="none", train__bptt=8, **overrides)


def tiny_seq2seq(tsv: Path, **overrides: object) -> list[str]:
    return tiny(data__train=tsv, data__min_freq=1, **overrides)


@pytest.fixture
def pangram(tmp_path: Path) -> Path:
    path = tmp_path / "pangram.txt"
    path.write_text(PANGRAM * 5, encoding="utf-8")
    return path


@pytest.fixture
def pairs_tsv(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), encoding="utf-8")
    return path


def conllu_word(index: int | str, form: str, upos: str, head: str = "0") -> str:
    columns = [str(index), form, form.lower(), upos, "_", "_", head, "dep", "_", "_"]
    return "\t".join(columns) + "\n"


# ---------------------------------------------------------------------------------------------------
# Config files


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("train:\n  epochs: 3\ndata:\n  min_freq: 1\ntrain:\n  lr: 0.01\n", 5),
        ("train:\n  epochs: 3\n  lr: 0.01\n  epochs: 4\n", 4),
    ],
    ids=["section_twice", "key_twice"],
)
def test_a_key_written_twice_in_a_config_is_an_error(tmp_path: Path, text: str, line: int):
    path = tmp_path / "twice.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_task_config("lm", path)
    assert f"{path}:{line}" in str(info.value)


def test_a_config_with_a_bom_crlf_and_a_merge_key_reads_like_a_plain_one(tmp_path: Path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("train:\n  epochs: 3\n  lr: 0.5\ndata:\n  min_freq: 4\n", encoding="utf-8")
    unusual = tmp_path / "unusual.yaml"
    unusual.write_bytes(
        b"\xef\xbb\xbf# a recipe\r\ntrain:\r\n  <<: {epochs: 3}\r\n  lr: 0.5\r\n"
        b"data:\r\n  min_freq: 4\r\n"
    )
    assert load_task_config("lm", unusual) == load_task_config("lm", plain)


# ---------------------------------------------------------------------------------------------------
# --set values


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("data.src_lang=no", "src_lang", "no"),
        ("data.train=notes #1.tsv", "train", "notes #1.tsv"),
    ],
)
def test_string_settings_keep_what_was_written(override: str, key: str, expected: str):
    config = load_task_config("seq2seq", None, [override])
    assert getattr(config.data, key) == expected


@pytest.mark.parametrize(
    ("override", "expected"),
    [("data.train=my file.tsv", "my file.tsv"), ("data.train='quoted.tsv'", "quoted.tsv")],
)
def test_string_settings_with_spaces_or_quotes(override: str, expected: str):
    assert load_task_config("seq2seq", None, [override]).data.train == expected


@pytest.mark.parametrize("value", [".inf", "1e400", "Infinity"])
def test_an_infinite_learning_rate_is_refused(value: str):
    with pytest.raises(ConfigError, match="train.lr"):
        load_task_config("lm", None, [f"train.lr={value}"])


@pytest.mark.parametrize("value", ["-0.5", "nan"])
def test_a_learning_rate_decay_outside_zero_to_one_is_refused(value: str):
    with pytest.raises(ConfigError, match="train.lr_decay"):
        load_task_config("tagger", None, [f"train.lr_decay={value}"])


def test_a_seed_too_large_for_torch_is_a_user_error(rnnlab: Cli, tmp_path: Path, pangram: Path):
    result = rnnlab("train", "lm", "--out", tmp_path / "run", *tiny_lm(pangram, seed=2**70))
    assert_user_error(result, "seed")


def test_a_negative_max_examples_is_not_reported_as_an_empty_file(
    rnnlab: Cli, tmp_path: Path, pangram: Path
):
    result = rnnlab(
        "train", "lm", "--out", tmp_path / "run", *tiny_lm(pangram, data__max_examples=-1)
    )
    assert "empty or blank" not in result.err
    assert result.code == 0 or "data.max_examples" in result.err, result


@pytest.mark.parametrize("task", ["lm", "tagger"])
def test_an_empty_training_path_is_named_as_a_setting(rnnlab: Cli, tmp_path: Path, task: str):
    result = rnnlab("train", task, "--out", tmp_path / "run", *tiny(data__train=""))
    assert_user_error(result, "data.train")


def test_a_model_too_large_to_allocate_is_a_user_error(rnnlab: Cli, tmp_path: Path, pangram: Path):
    result = rnnlab(
        "train", "lm", "--out", tmp_path / "run", *tiny_lm(pangram, model__hidden_size=10**8)
    )
    assert_user_error(result, "model")


# ---------------------------------------------------------------------------------------------------
# Parallel corpora and sentencepiece


def test_a_tsv_with_bom_crlf_blank_lines_and_a_third_column_builds_the_same_vocabularies(
    rnnlab: Cli, tmp_path: Path, pairs_tsv: Path
):
    unusual = tmp_path / "unusual.tsv"
    lines = [f"{s}\t{t}\tCC-BY 2.0 (France) Attribution: tatoeba.org" for s, t in PAIRS]
    lines.insert(3, "   ")
    unusual.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n")
    runs = {}
    for name, data in {"plain": pairs_tsv, "unusual": unusual}.items():
        result = rnnlab("train", "seq2seq", "--out", tmp_path / name, *tiny_seq2seq(data))
        assert result.code == 0, result
        runs[name] = [
            json.loads((tmp_path / name / f"vocab.{side}.json").read_text(encoding="utf-8"))
            for side in ("src", "tgt")
        ]
    assert runs["unusual"] == runs["plain"]


@pytest.mark.parametrize("size", [0, -5])
def test_a_sentencepiece_vocabulary_size_below_one_is_a_user_error(
    rnnlab: Cli, tmp_path: Path, pairs_tsv: Path, size: int
):
    args = tiny_seq2seq(pairs_tsv, data__tokenizer="sentencepiece", data__spm_vocab_size=size)
    result = rnnlab("train", "seq2seq", "--out", tmp_path / "run", *args)
    assert_user_error(result, "spm_vocab_size")


def test_sentencepiece_on_a_corpus_of_long_lines(rnnlab: Cli, tmp_path: Path):
    tsv = tmp_path / "paragraphs.tsv"
    paragraph = " ".join(["a b c d e"] * 500)  # 4,999 characters
    tsv.write_text(f"{paragraph}\t{paragraph}\n" * 4, encoding="utf-8")
    args = tiny_seq2seq(tsv, data__tokenizer="sentencepiece", data__spm_vocab_size=30)
    result = rnnlab("train", "seq2seq", "--out", tmp_path / "run", *args)
    assert result.code == 0 or result.code == EXIT_USER_ERROR, result
    if result.code == EXIT_USER_ERROR:
        assert_user_error(result, str(tsv))


def test_text_that_spells_a_special_token_stays_text(tmp_path: Path):
    from rnnlab.tasks.seq2seq import Seq2SeqTask

    tsv = tmp_path / "markup.tsv"
    tsv.write_text("a <pad> b\tx <eos> y\n" * 3 + "a b\tx y\n", encoding="utf-8")
    config = load_task_config(
        "seq2seq", None, [f"data.train={tsv}", "data.preprocess=none", "data.min_freq=1"]
    )
    task = Seq2SeqTask(config, tmp_path)
    task.prepare_training()
    assert task.train_data is not None and task.src_vocab is not None
    eos, pad = task.src_vocab.eos_id, task.src_vocab.pad_id
    target, source = list(task.train_data.tgt[0]), list(task.train_data.src[0])
    assert len(target) == 4 and target.count(eos) == 1 and target[-1] == eos, target
    assert len(source) == 4 and pad not in source, source


# ---------------------------------------------------------------------------------------------------
# CoNLL-U


@pytest.mark.parametrize("upos", ["", " "], ids=["empty", "blank"])
def test_an_empty_upos_column_is_an_error_naming_its_line(tmp_path: Path, upos: str):
    path = tmp_path / "train.conllu"
    text = conllu_word(1, "The", "DET", "2") + conllu_word(2, "dog", "NOUN") + "\n"
    text += conllu_word(1, "A", upos, "2") + conllu_word(2, "cat", "NOUN") + "\n"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_tagged(path)
    assert str(info.value).startswith(f"{path}:4: ")


def test_conllu_words_and_tags_match_the_conllu_library(tmp_path: Path):
    """Multiword tokens, empty nodes, comments, CRLF, a BOM and no final blank line."""
    sentences = [
        "# sent_id = 1\n# text = I don't know\n"
        + conllu_word(1, "I", "PRON", "3")
        + conllu_word("2-3", "don't", "_", "_")
        + conllu_word(2, "do", "AUX", "3")
        + conllu_word(3, "n't", "PART")
        + conllu_word("3.1", "know", "_", "_")
        + conllu_word(4, "know", "VERB", "2"),
        "# newdoc\n" + conllu_word(1, "Hi", "INTJ") + conllu_word(2, "!", "PUNCT", "1"),
        conllu_word(1, "10\u00a0000", "NUM", "2") + conllu_word(2, "Ärger", "NOUN"),
    ]
    text = "\n".join(sentences)  # no blank line after the last sentence
    path = tmp_path / "odd.conllu"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    expected = [
        (
            [tok["form"] for tok in sentence if isinstance(tok["id"], int)],
            [tok["upos"] for tok in sentence if isinstance(tok["id"], int)],
        )
        for sentence in conllu.parse(text)
    ]
    assert [(s.words, s.tags) for s in read_tagged(path)] == expected
    assert [s.line for s in read_tagged(path)] == [1, 10, 14]


def test_a_tagger_learns_from_a_dev_file_with_unseen_words_and_tags(rnnlab: Cli, tmp_path: Path):
    train = tmp_path / "train.conllu"
    train.write_text(
        (conllu_word(1, "The", "DET", "2") + conllu_word(2, "dog", "NOUN") + "\n") * 4,
        encoding="utf-8",
    )
    dev = tmp_path / "dev.txt"
    dev.write_text("Zebras/NOUN run/VERB\n", encoding="utf-8")
    args = tiny(data__train=train, data__valid=dev, train__max_steps=2, train__valid_every=1)
    result = rnnlab("train", "tagger", "--out", tmp_path / "run", *args)
    assert result.code == 0, result
    records = (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    valid = [json.loads(r) for r in records if "valid_accuracy" in r]
    # Half the dev tokens carry a tag never seen in training: no prediction can match it.
    assert valid and all(0.0 <= r["valid_accuracy"] <= 0.5 for r in valid)


# ---------------------------------------------------------------------------------------------------
# Pretrained vectors


def test_word2vec_text_with_long_lines_reads_what_gensim_reads(tmp_path: Path):
    from gensim.models import KeyedVectors

    reference = KeyedVectors(400)
    words = ["the", "cat", "dog"]
    rng = np.random.default_rng(0)
    reference.add_vectors(words, rng.standard_normal((3, 400)).astype(np.float32))
    path = tmp_path / "vectors.vec"
    reference.save_word2vec_format(str(path), binary=False)
    assert len(path.read_text(encoding="utf-8").splitlines()[1]) > 4096
    loaded = KeyedVectors.load_word2vec_format(str(path), binary=False)
    read = dict(iter_vectors(path))
    assert list(read) == loaded.index_to_key == words
    for word in words:
        np.testing.assert_allclose(read[word], loaded[word], rtol=1e-6)


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e999"])
def test_a_non_finite_vector_value_is_an_error_naming_its_line(tmp_path: Path, value: str):
    path = tmp_path / "vectors.txt"
    path.write_text(f"the 0.1 0.2\ncat 0.3 {value}\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        list(iter_vectors(path))
    assert str(info.value).startswith(f"{path}:2: ")


@pytest.mark.parametrize(
    ("text", "fmt"),
    [("the 1 2\ncat 3 4\n", "glove"), ("2 2\nthe 1 2\ncat 3 4\n", "word2vec_text")],
)
def test_a_vector_file_with_a_byte_order_mark(tmp_path: Path, text: str, fmt: str):
    path = tmp_path / "vectors.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    info = inspect_vectors(path)
    assert (info.format, info.dim) == (fmt, 2)
    assert {w: v.tolist() for w, v in iter_vectors(path)} == {"the": [1, 2], "cat": [3, 4]}


def test_a_glove_file_starting_with_a_blank_line(tmp_path: Path):
    path = tmp_path / "vectors.txt"
    path.write_text("\nthe 1 2\ncat 3 4\n", encoding="utf-8")
    assert {w: v.tolist() for w, v in iter_vectors(path)} == {"the": [1, 2], "cat": [3, 4]}


def test_vectors_of_another_size_name_the_file_when_training(rnnlab: Cli, tmp_path: Path):
    train = tmp_path / "train.conllu"
    train.write_text(
        (conllu_word(1, "The", "DET", "2") + conllu_word(2, "dog", "NOUN") + "\n") * 2,
        encoding="utf-8",
    )
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("the 1 2 3\ndog 4 5 6\n", encoding="utf-8")
    args = tiny(data__train=train, model__pretrained_embeddings=vectors)
    result = rnnlab("train", "tagger", "--out", tmp_path / "run", *args)
    assert_user_error(result, str(vectors), "3-dimensional", "model.embed_size is 8")
