"""``rnnlab embeddings train``: gensim vectors from plain text and CoNLL-U, readable by the tagger."""

from __future__ import annotations

from pathlib import Path

import pytest
from gensim.models import KeyedVectors

from rnnlab.cli import main
from rnnlab.data.embeddings import inspect_vectors

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "ud-ewt-sample"


@pytest.mark.parametrize("algorithm", ["word2vec", "fasttext"])
def test_vectors_are_word2vec_text_over_text_and_conllu(tmp_path: Path, algorithm: str, capsys):
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on the mat .\nthe dog sat .\n" * 50, encoding="utf-8")
    out = tmp_path / "vectors.txt"
    argv = ["embeddings", "train", str(text), str(SAMPLE / "train.conllu"), "--out", str(out)]
    argv += ["--algorithm", algorithm, "--dim", "12", "--epochs", "1", "--lowercase"]
    assert main(argv) == 0
    info = inspect_vectors(out)
    assert (info.format, info.dim) == ("word2vec_text", 12)
    vectors = KeyedVectors.load_word2vec_format(str(out))
    assert "cat" in vectors and "The" not in vectors  # lower-cased
    assert "sat" in vectors and len(vectors) == info.count
    assert "12" in capsys.readouterr().out

    run = tmp_path / "run"
    sets = [
        f"data.train={SAMPLE / 'train.conllu'}",
        "data.valid=",
        "data.max_examples=20",
        "model.embed_size=12",
        "model.hidden_size=8",
        f"model.pretrained_embeddings={out}",
        "train.max_steps=2",
    ]
    assert (
        main(["train", "tagger", "--out", str(run)] + [a for s in sets for a in ("--set", s)]) == 0
    )


def test_missing_input_exits_2(tmp_path: Path, capsys):
    code = main(
        ["embeddings", "train", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "v.txt")]
    )
    assert code == 2
    assert "nope.txt: no such file" in capsys.readouterr().err


def test_split_punct_gives_raw_text_the_treebank_tokens(tmp_path: Path):
    from rnnlab.embeddings_training import TextCorpus

    raw = tmp_path / "captions.txt"
    raw.write_text("A dog runs.\nHi, Tom!\n", encoding="utf-8")
    assert list(TextCorpus([raw])) == [["A", "dog", "runs."], ["Hi,", "Tom!"]]
    assert list(TextCorpus([raw], split_punct=True, lowercase=True)) == [
        ["a", "dog", "runs", "."],
        ["hi", ",", "tom", "!"],
    ]
    out = tmp_path / "vectors.txt"
    assert (
        main(
            [
                "embeddings",
                "train",
                str(raw),
                "--out",
                str(out),
                "--split-punct",
                "--min-count",
                "1",
            ]
        )
        == 0
    )
    words = {line.split(" ", 1)[0] for line in out.read_text(encoding="utf-8").splitlines()[1:]}
    assert {".", "runs", "!"} <= words and "runs." not in words
