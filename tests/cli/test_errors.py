"""Every user mistake gets a one-line message naming the file (and line), exit status 2."""

from __future__ import annotations

import json

import pytest

from rnnlab.cli import main

from .test_seq2seq_cli import train


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def assert_one_line_error(code: int, message: str, *fragments: str) -> None:
    assert code == 2
    assert message.startswith("rnnlab: error: ")
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"a b\ta b\nno tab here\n", ("bad.tsv:2:", "tab-separated columns")),
        (b"a b\t\n", ("bad.tsv:1:", "empty target")),
        (b"", ("bad.tsv:", "no sentence pairs")),
        (b"a\tb\nc\xff\xfe\td\n", ("bad.tsv:2:", "not UTF-8")),
    ],
)
def test_bad_training_data(tmp_path, capsys, content, fragments):
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(content)
    code, message = run_cli(
        ["train", "seq2seq", "--out", str(tmp_path / "run"), "--set", f"data.train={bad}"], capsys
    )
    assert_one_line_error(code, message, *fragments)


def test_missing_training_file(tmp_path, capsys):
    code, message = run_cli(
        [
            "train",
            "seq2seq",
            "--out",
            str(tmp_path / "r"),
            "--set",
            "data.train=/nonexistent/x.tsv",
            "--set",
            "data.format=tsv",
        ],
        capsys,
    )
    assert_one_line_error(code, message, "/nonexistent/x.tsv", "no such file")


def test_config_with_wrong_type(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("task: seq2seq\ntrain:\n  epochs: many\n", encoding="utf-8")
    code, message = run_cli(
        ["train", "seq2seq", "--config", str(config), "--out", str(tmp_path / "r")], capsys
    )
    assert_one_line_error(code, message, "c.yaml", "train.epochs: expected an integer")


def test_not_a_run_directory(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, message = run_cli(["translate", str(tmp_path / "empty")], capsys)
    assert_one_line_error(code, message, "empty", "not an rnnlab run directory")
    code, message = run_cli(["evaluate", str(tmp_path / "missing"), "--data", "x"], capsys)
    assert_one_line_error(code, message, "no such run directory")


def test_existing_run_is_not_overwritten(reverse_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(reverse_corpus, run, "train.max_steps=2") == 0
    capsys.readouterr()
    code = train(reverse_corpus, run, "train.max_steps=2")
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert_one_line_error(code, message, "exists", "--resume")


def test_checkpoint_from_another_vocabulary(reverse_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(reverse_corpus, run, "train.max_steps=2") == 0
    vocab = json.loads((run / "vocab.tgt.json").read_text())
    vocab["tokens"][-1], vocab["tokens"][-2] = vocab["tokens"][-2], vocab["tokens"][-1]
    (run / "vocab.tgt.json").write_text(json.dumps(vocab))
    capsys.readouterr()
    code, message = run_cli(["evaluate", str(run), "--data", str(reverse_corpus["test"])], capsys)
    assert_one_line_error(code, message, "model.safetensors", "does not match")


def test_weights_of_another_shape(reverse_corpus, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(reverse_corpus, a, "train.max_steps=2") == 0
    assert train(reverse_corpus, b, "train.max_steps=2", "model.hidden_size=24") == 0
    for name in ("best", "last"):
        (a / name / "model.safetensors").write_bytes((b / name / "model.safetensors").read_bytes())
    capsys.readouterr()
    code, message = run_cli(["evaluate", str(a), "--data", str(reverse_corpus["test"])], capsys)
    assert_one_line_error(code, message, "model.safetensors", "do not fit")


def test_corrupt_checkpoint(reverse_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(reverse_corpus, run, "train.max_steps=2") == 0
    (run / "best" / "model.safetensors").write_bytes(b"\x80\x04garbage that is no safetensors")
    capsys.readouterr()
    code, message = run_cli(["evaluate", str(run), "--data", str(reverse_corpus["test"])], capsys)
    assert_one_line_error(code, message, "model.safetensors", "not a readable safetensors")


def test_unknown_words_map_to_unk_and_long_inputs_are_truncated(reverse_corpus, tmp_path):
    from rnnlab.rundir import open_run

    run = tmp_path / "run"
    assert train(reverse_corpus, run, "train.max_steps=2", "data.max_len=6") == 0
    task = open_run(run).task
    ids = task.encode_source("a zzz b " + "c " * 50)
    assert len(ids) == 7 and ids[1] == task.src_vocab.unk_id and ids[-1] == task.src_vocab.eos_id


def test_missing_evaluation_data_names_the_path_given(reverse_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(reverse_corpus, run, "train.max_steps=2") == 0
    capsys.readouterr()
    missing = tmp_path / "missing.tsv"
    code, message = run_cli(["evaluate", str(run), "--data", str(missing)], capsys)
    assert_one_line_error(
        code, message, f"error: {missing}: no such file", f"{missing}.en", f"{missing}.fr"
    )


def test_config_of_another_task_is_named_before_its_keys(capsys):
    config = "configs/lm/timemachine-char.yaml"
    code, message = run_cli(["train", "seq2seq", "--config", config, "--out", "unused"], capsys)
    assert_one_line_error(code, message, config, "config is for task 'lm', not 'seq2seq'")
    assert "tokenizer" not in message


def test_training_without_validation_data_says_so(reverse_corpus, tmp_path, capsys):
    code = main(
        ["train", "seq2seq", "--out", str(tmp_path / "run"), "--set", "train.max_steps=2"]
        + ["--set", f"data.train={reverse_corpus['train']}", "--set", "model.hidden_size=8"]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "no data.valid: training without validation" in err
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
