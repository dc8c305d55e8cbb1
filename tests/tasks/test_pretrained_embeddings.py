"""Pretrained vectors in each task: rows copied, <pad> zero, frozen rows unchanged by training,
vocabulary extension reaching unseen words, coverage stored with the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rnnlab.cli import main
from rnnlab.data.conllu_io import read_conllu
from rnnlab.rundir import open_run

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "ud-ewt-sample"
TM = REPO / "data" / "timemachine"
DIM = 8


def glove_for(words: list[str], path: Path, *, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = {w: rng.standard_normal(DIM).astype(np.float32) for w in words}
    path.write_text(
        "".join(f"{w} " + " ".join(repr(float(x)) for x in v) + "\n" for w, v in vectors.items()),
        encoding="utf-8",
    )
    return vectors


def train_words(limit: int = 40) -> list[str]:
    return [w for s in read_conllu(SAMPLE / "train.conllu")[:limit] for w in s.words]


def tagger_args(out: Path, vectors: Path, *extra: str) -> list[str]:
    sets = [
        f"data.train={SAMPLE / 'train.conllu'}",
        f"data.valid={SAMPLE / 'dev.conllu'}",
        "data.max_examples=40",
        "data.min_freq=1",
        f"model.embed_size={DIM}",
        "model.hidden_size=8",
        "model.char_hidden_size=4",
        "model.char_embed_size=4",
        f"model.pretrained_embeddings={vectors}",
        "train.max_steps=4",
        "train.batch_size=8",
        "train.lr=0.05",
        *extra,
    ]
    return ["train", "tagger", "--out", str(out)] + [a for s in sets for a in ("--set", s)]


def embedding_of(run: Path, which: str = "last") -> torch.Tensor:
    return load_file(str(run / which / "model.safetensors"))["embedding.weight"]


def test_tagger_rows_copied_frozen_rows_unchanged_others_learn(tmp_path: Path):
    seen = sorted(set(train_words()))
    file_words = [w for w in seen if len(w) > 3] + ["zebra", "quokka"]
    vectors = glove_for(file_words, tmp_path / "v.txt")
    out = tmp_path / "run"
    args = tagger_args(
        out,
        tmp_path / "v.txt",
        "model.freeze_embeddings=true",
        "data.extend_vocab_from_embeddings=true",
    )
    assert main(args) == 0
    vocab = json.loads((out / "vocab.words.json").read_text())["tokens"]
    assert vocab[-2:] == ["zebra", "quokka"]  # unseen in training, joined from the file
    weight = embedding_of(out)
    for word, vector in vectors.items():
        torch.testing.assert_close(
            weight[vocab.index(word)], torch.from_numpy(vector), rtol=0, atol=0
        )
    assert torch.count_nonzero(weight[0]) == 0  # <pad>
    first = load_file(str(out / "best" / "model.safetensors"))["embedding.weight"]
    assert torch.equal(
        first[[vocab.index(w) for w in vectors]], weight[[vocab.index(w) for w in vectors]]
    )
    coverage = json.loads((out / "embeddings.json").read_text())["word"]
    assert coverage["added_words"] == 2
    assert coverage["exact"] == len(file_words) - 2
    assert coverage["exact"] + coverage["lower"] + coverage["digits"] + coverage["missing"] == len(
        seen
    )


def test_tagger_free_rows_train_and_frozen_rows_stay(tmp_path: Path):
    seen = sorted(set(train_words()))
    vectors = glove_for(seen[: len(seen) // 2], tmp_path / "v.txt")
    out = tmp_path / "run"
    assert main(tagger_args(out, tmp_path / "v.txt", "model.freeze_embeddings=true")) == 0
    vocab = json.loads((out / "vocab.words.json").read_text())["tokens"]
    weight = embedding_of(out)
    frozen = [vocab.index(w) for w in vectors]
    expected = torch.from_numpy(np.stack(list(vectors.values())))
    assert torch.equal(weight[frozen], expected)
    # A second run, not frozen: the same rows move away from the file's vectors.
    out2 = tmp_path / "run2"
    assert main(tagger_args(out2, tmp_path / "v.txt")) == 0
    moved = embedding_of(out2)[frozen]
    assert not torch.allclose(moved, expected)


def test_trainable_part_learns_beside_frozen_vectors_and_vector_only_words_read_unk(
    tmp_path: Path,
):
    seen = sorted(set(train_words()))
    vectors = glove_for([*seen[: len(seen) // 2], "zebra"], tmp_path / "v.txt")
    out = tmp_path / "run"
    args = tagger_args(
        out,
        tmp_path / "v.txt",
        "model.freeze_embeddings=true",
        "model.trainable_embed_size=4",
        "data.extend_vocab_from_embeddings=true",
    )
    assert main(args) == 0
    vocab = json.loads((out / "vocab.words.json").read_text())["tokens"]
    state = load_file(str(out / "last" / "model.safetensors"))
    for word, vector in vectors.items():  # the pretrained part stays as the file has it
        assert torch.equal(state["embedding.weight"][vocab.index(word)], torch.from_numpy(vector))
    trainable, rows = state["trainable_embedding.weight"], state["trainable_rows"]
    assert trainable.shape == (len(seen) + 2, 4)  # <pad>, <unk>, the training words; no "zebra"
    zebra, unk = vocab.index("zebra"), vocab.index("<unk>")
    own_rows = sorted(int(rows[vocab.index(w)]) for w in seen)
    assert own_rows == list(range(2, len(seen) + 2))  # a row of its own for each training word
    assert (
        int(rows[zebra]) == int(rows[unk]) == 1
    )  # "zebra", known only from the file, reads <unk>'s
    assert torch.count_nonzero(trainable[own_rows]) > 0  # they learnt
    run = open_run(out, device="cpu")
    assert run.task.encode_words(["zebra"]) == [zebra]
    part = run.model.eval().word_vectors(torch.tensor([[zebra]]))[0, 0, DIM:]
    assert torch.equal(part, run.model.trainable_embedding.weight[1])


def test_unseen_word_gets_its_vector_at_test_time(tmp_path: Path):
    glove_for([*sorted(set(train_words()))[:5], "wombat"], tmp_path / "v.txt")
    out = tmp_path / "run"
    args = tagger_args(out, tmp_path / "v.txt", "data.extend_vocab_from_embeddings=true")
    assert main(args) == 0
    run = open_run(out, device="cpu")
    vocab = run.task.word_vocab
    wombat = vocab.stoi["wombat"]
    # Unseen in training, found as written and, like the rows were matched, lower-cased.
    assert run.task.encode_words(["wombat", "Wombat", "WOMBAT", "numbat"]) == [
        wombat,
        wombat,
        wombat,
        vocab.unk_id,
    ]
    assert run.task.tag(run.model, [["wombat"]], run.device)[0]  # evaluates without the file


def test_resumed_frozen_run_keeps_rows(tmp_path: Path):
    seen = sorted(set(train_words()))
    vectors = glove_for(seen, tmp_path / "v.txt")
    out = tmp_path / "run"
    assert main(tagger_args(out, tmp_path / "v.txt", "model.freeze_embeddings=true")) == 0
    (tmp_path / "v.txt").unlink()  # resuming must not need the file
    assert main(["train", "--resume", str(out), "--set", "train.max_steps=8"]) == 0
    vocab = json.loads((out / "vocab.words.json").read_text())["tokens"]
    weight = embedding_of(out)
    for word, vector in vectors.items():
        assert torch.equal(weight[vocab.index(word)], torch.from_numpy(vector))


def test_language_model_reads_vectors_and_extends(tmp_path: Path):
    vectors = glove_for(["the", "time", "machine", "elephant"], tmp_path / "v.txt")
    out = tmp_path / "lm"
    sets = [
        f"data.train={TM / 'train.txt'}",
        f"data.valid={TM / 'valid.txt'}",
        "data.tokenizer=word",
        "data.max_examples=50",
        f"model.embed_size={DIM}",
        "model.hidden_size=8",
        f"model.pretrained_embeddings={tmp_path / 'v.txt'}",
        "model.freeze_embeddings=true",
        "data.extend_vocab_from_embeddings=true",
        "train.max_steps=3",
        "train.bptt=8",
    ]
    assert main(["train", "lm", "--out", str(out)] + [a for s in sets for a in ("--set", s)]) == 0
    vocab = json.loads((out / "vocab.json").read_text())["tokens"]
    weight = load_file(str(out / "last" / "model.safetensors"))["embedding.weight"]
    assert "elephant" in vocab
    for word, vector in vectors.items():
        assert torch.equal(weight[vocab.index(word)], torch.from_numpy(vector))


def test_seq2seq_sides_read_their_own_files(tmp_path: Path, reverse_corpus):
    src = glove_for(["a", "b", "c"], tmp_path / "src.txt", seed=1)
    tgt = glove_for(["d", "e"], tmp_path / "tgt.txt", seed=2)
    out = tmp_path / "s2s"
    sets = [
        f"data.train={reverse_corpus['train']}",
        f"data.valid={reverse_corpus['valid']}",
        "data.max_examples=200",
        f"model.embed_size={DIM}",
        "model.hidden_size=8",
        f"model.src_embeddings={tmp_path / 'src.txt'}",
        f"model.tgt_embeddings={tmp_path / 'tgt.txt'}",
        "model.freeze_src_embeddings=true",
        "train.max_steps=3",
    ]
    assert (
        main(["train", "seq2seq", "--out", str(out)] + [a for s in sets for a in ("--set", s)]) == 0
    )
    state = load_file(str(out / "last" / "model.safetensors"))
    src_vocab = json.loads((out / "vocab.src.json").read_text())["tokens"]
    tgt_vocab = json.loads((out / "vocab.tgt.json").read_text())["tokens"]
    for word, vector in src.items():
        assert torch.equal(
            state["encoder.embedding.weight"][src_vocab.index(word)], torch.from_numpy(vector)
        )
    moved = [
        not torch.equal(state["decoder.embedding.weight"][tgt_vocab.index(w)], torch.from_numpy(v))
        for w, v in tgt.items()
    ]
    assert all(moved)  # target side not frozen: its rows trained
    coverage = json.loads((out / "embeddings.json").read_text())
    assert coverage["src"]["exact"] == 3 and coverage["tgt"]["exact"] == 2


@pytest.mark.parametrize(
    ("content", "extra", "needle"),
    [
        ("cat 1 2 3\n", [], "3-dimensional but model.embed_size is 8"),
        ("the " + " ".join(["1"] * DIM) + "\ncat 1 2\n", [], "v.txt:2:"),
        (None, [], "no such embeddings file"),
        (
            "the " + " ".join(["1"] * DIM) + "\n",
            ["model.freeze_embeddings=true", "train.weight_decay=0.1"],
            "weight_decay",
        ),
        (
            "the " + " ".join(["1"] * DIM) + "\n",
            ["model.trainable_embed_size=4"],
            "model.trainable_embed_size needs model.freeze_embeddings: true",
        ),
    ],
)
def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, capsys, content, extra, needle):
    path = tmp_path / "v.txt"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    code = main(tagger_args(tmp_path / "run", path, *extra))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("rnnlab: error:") and needle in err and len(err.splitlines()) == 1
    if content is not None and "but model.embed_size" in needle:
        assert str(path) in err


def test_freeze_without_a_file_is_a_config_error(tmp_path: Path, capsys):
    code = main(
        ["train", "tagger", "--out", str(tmp_path / "r"), "--set", "model.freeze_embeddings=true"]
    )
    assert code == 2
    assert "model.freeze_embeddings needs model.pretrained_embeddings" in capsys.readouterr().err


def test_coverage_is_printed_at_the_start(tmp_path: Path, capsys):
    glove_for(sorted(set(train_words()))[:3], tmp_path / "v.txt")
    assert main(tagger_args(tmp_path / "run", tmp_path / "v.txt")) == 0
    err = capsys.readouterr().err
    assert "pretrained word embeddings:" in err and "training tokens covered" in err
