"""Preparing a translation task: one pass tokenises, counts and keeps the training corpus as ids."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from rnnlab.config import from_dict
from rnnlab.data.vocab import FirstSeenIds, Vocab
from rnnlab.tasks.seq2seq import Seq2SeqTask
from rnnlab.tasks.seq2seq_config import Seq2SeqConfig

LINES = [
    "Go.\tVa !",
    "I lost.\tJ'ai perdu.",
    "He's calm.\tIl est calme.",
    "I'm home.\tJe suis chez moi.",
    "I'm home, I'm calm, I lost the key of the house.\tJe suis chez moi, je suis calme.",
    "Go home.\tRentre chez toi.",
    "<eos> is text here.\tIci <unk> est du texte.",
]


def _task(tmp_path: Path, **data: object) -> Seq2SeqTask:
    train = tmp_path / "train.tsv"
    once = "Zebras yawn.\tLes zèbres bâillent."  # words seen once: <unk> where min_freq is 2
    train.write_text("\n".join([*LINES * 3, once]) + "\n", encoding="utf-8")
    config = from_dict(
        Seq2SeqConfig,
        {
            "task": "seq2seq",
            "data": {"train": str(train), "valid": "", "src_lang": "en", "tgt_lang": "fr", **data},
            "model": {"embed_size": 8, "hidden_size": 8},
        },
    )
    run = tmp_path / "run"
    run.mkdir()
    task = Seq2SeqTask(config, run)
    task.prepare_training()
    return task


@pytest.mark.parametrize(
    "data",
    [
        {"tokenizer": "word", "min_freq": 2, "max_len": 5, "preprocess": "textbook"},
        {"tokenizer": "word", "min_freq": 1, "max_len": 50, "preprocess": "none"},
        {"tokenizer": "sentencepiece", "spm_vocab_size": 40, "max_len": 6, "preprocess": "punct"},
    ],
)
def test_training_ids_equal_encoding_each_pair_with_the_built_vocabulary(tmp_path, data):
    task = _task(tmp_path, **data)
    # The independent path: each pair encoded on its own with the finished vocabularies (what a
    # resumed run and the validation data use).
    expected = task.encode_pairs(task.read_pairs(str(tmp_path / "train.tsv")), references=False)
    assert task.train_data is not None
    assert list(task.train_data.src) == list(expected.src)
    assert list(task.train_data.tgt) == list(expected.tgt)
    assert len(task.train_data.src) == len(LINES) * 3 + 1
    if data.get("min_freq") == 2:  # words seen once become <unk>, at least one of them
        assert any(task.src_vocab.unk_id in ids for ids in task.train_data.src)


def test_first_seen_ids_count_and_renumber_like_a_vocabulary():
    corpus = [["b", "a", "b"], [], ["c", "b", "<eos>"], ["a"]]
    seen = FirstSeenIds()
    ids = [seen.encode(sentence) for sentence in corpus]
    assert ids == [[0, 1, 0], [], [2, 0, 3], [1]]
    counts = seen.counts()
    assert counts == Counter(token for sentence in corpus for token in sentence)
    vocab = Vocab.from_counts(counts, min_freq=2)
    renumbered = seen.renumber(ids, vocab, end=vocab.eos_id)
    assert list(renumbered) == [vocab.encode_text(s) + [vocab.eos_id] for s in corpus]
    assert list(renumbered)[2][-2:] == [vocab.unk_id, vocab.eos_id]  # the word "<eos>" is text
