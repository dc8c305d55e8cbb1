"""Subword vocabularies: the sentencepiece tokenizer and a tiny run trained with it."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from rnnlab.cli import main
from rnnlab.data.tokenizers import SentencePieceTokenizer
from rnnlab.errors import DataError

SENTENCES = [
    "Ein Mann fährt Fahrrad.",
    "Zwei Hunde spielen im Schnee!",
    "Eine Frau, die lacht, sitzt auf einer Bank.",
    "Kinder spielen Fußball im Park?",
    "Ein Hund läuft über die Wiese.",
]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
@pytest.mark.parametrize("preprocess", ["none", "punct"])
def test_round_trip_gives_back_the_text(tmp_path, model_type, preprocess):
    tokenizer = SentencePieceTokenizer.train(
        SENTENCES * 20,
        tmp_path / "spm.model",
        vocab_size=60,
        model_type=model_type,
        preprocess=preprocess,
    )
    for text in [*SENTENCES, "Ein Hund, der Fahrrad fährt!", "Unbekanntes: Ärger ß ÿ."]:
        pieces = tokenizer.encode(text)
        assert len(pieces) > len(text.split())  # subwords, not words
        assert tokenizer.decode(pieces) == text
    reloaded = SentencePieceTokenizer(tmp_path / "spm.model", preprocess)
    assert reloaded.encode(SENTENCES[2]) == tokenizer.encode(SENTENCES[2])


def test_missing_model_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="sentencepiece model is missing"):
        SentencePieceTokenizer(tmp_path / "nope.model")


WORDS = ["Hund", "Katze", "Mann", "Frau", "Kind", "Ball", "Haus", "Baum"]
ENGLISH = dict(
    zip(WORDS, ["dog", "cat", "man", "woman", "child", "ball", "house", "tree"], strict=True)
)


def write_corpus(path: Path, n: int, seed: int) -> str:
    """A toy de→en 'translation': word by word through a dictionary, with punctuation."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 4))]
        lines.append(f"{' '.join(words)}.\t{' '.join(ENGLISH[w] for w in words)}.\n")
    path.write_text("".join(lines), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("joint", [False, True])
def test_tiny_run_with_sentencepiece(tmp_path, monkeypatch, capsys, joint):
    run = tmp_path / "run"
    settings = {
        "data.train": write_corpus(tmp_path / "train.tsv", 600, 1),
        "data.valid": write_corpus(tmp_path / "valid.tsv", 30, 2),
        "data.tsv_langs": "[de, en]",
        "data.src_lang": "de",
        "data.tgt_lang": "en",
        "data.preprocess": "punct",
        "data.tokenizer": "sentencepiece",
        "data.spm_vocab_size": "40",
        "data.spm_model_type": "bpe",
        "data.spm_joint": str(joint).lower(),
        "model.attention": "luong_general",
        "model.embed_size": "16",
        "model.hidden_size": "32",
        "model.num_layers": "1",
        "train.epochs": "2",
        "train.batch_size": "32",
        "train.lr": "0.01",
        "train.num_threads": "1",
    }
    argv = ["train", "seq2seq", "--out", str(run)]
    for key, value in settings.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0
    expected = ["spm.model"] if joint else ["spm.src.model", "spm.tgt.model"]
    assert sorted(p.name for p in run.glob("spm*.model")) == expected
    pieces = json.loads((run / "vocab.tgt.json").read_text(encoding="utf-8"))["tokens"]
    assert any(p.startswith("▁") for p in pieces)  # the vocabulary holds subword pieces
    capsys.readouterr()

    # Decoding and evaluation load the subword models back from the run directory alone.
    monkeypatch.setattr("sys.stdin", io.StringIO("Hund Katze.\n"))
    assert main(["translate", str(run), "--beam", "3"]) == 0
    out = capsys.readouterr().out.strip()
    assert "▁" not in out and out.endswith(".")  # detokenised text
    assert main(["evaluate", str(run), "--data", str(tmp_path / "valid.tsv"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["sentences"] == 30 and 0.0 <= metrics["bleu"] <= 100.0
