"""End to end through ``rnnlab.cli.main``: train, generate, evaluate, resume, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnlab.cli import main
from rnnlab.config import load_config
from rnnlab.tasks.lm_config import LMConfig

REPO = Path(__file__).resolve().parents[2]


def _train(run: Path, args: list[str], capsys) -> None:
    assert main(["train", "lm", "--out", str(run), *args]) == 0
    capsys.readouterr()


def test_train_memorise_generate_and_evaluate(tmp_path, pangram_file, tiny_run_args, capsys):
    run = tmp_path / "run"
    _train(run, tiny_run_args(pangram_file, pangram_file), capsys)

    assert main(["evaluate", str(run), "--data", str(pangram_file), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"perplexity", "loss", "tokens", "oov_tokens"} <= set(metrics)
    assert metrics["perplexity"] < 1.1  # memorised
    assert metrics["tokens"] == len(pangram_file.read_text()) - 1
    assert metrics["oov_tokens"] == 0

    assert main(["generate", str(run), "--prefix", "the quick", "--length", "80"]) == 0
    text = capsys.readouterr().out
    assert text == ("the quick brown fox jumps over the lazy dog\n" * 3)[:89] + "\n"

    def sampled(seed: int) -> str:
        assert main(["generate", str(run), "--prefix", "t", "--length", "60",
                     "--temperature", "3", "--seed", str(seed)]) == 0  # fmt: skip
        return capsys.readouterr().out

    assert sampled(1) == sampled(1)
    assert sampled(1) != sampled(2)  # a hot temperature makes different seeds diverge

    assert main(["generate", str(run), "--prefix", "the", "--length", "0"]) == 0
    assert capsys.readouterr().out == "the\n"

    other = tmp_path / "other.txt"
    other.write_text("the quick brown Xebra\n", encoding="utf-8")
    assert main(["evaluate", str(run), "--data", str(other), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["oov_tokens"] == 1  # the "X" is unknown (scored as <unk>)


def test_resume_equals_uninterrupted(tmp_path, pangram_file, tiny_run_args, capsys):
    args = tiny_run_args(
        pangram_file,
        pangram_file,
        **{"train.epochs": 2, "model.num_layers": 2, "model.dropout": 0.2, "model.cell": "lstm"},
    )
    whole, split = tmp_path / "whole", tmp_path / "split"
    _train(whole, args, capsys)
    _train(split, [*args, "--set", "train.max_steps=7"], capsys)  # stops inside epoch 1
    assert main(["train", "--resume", str(split), "--set", "train.max_steps=0"]) == 0

    def losses(run: Path) -> list[tuple[int, float]]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        return [(r["step"], r.get("train_loss", r.get("valid_loss"))) for r in records]

    expected, got = losses(whole), losses(split)
    assert len(expected) > 10 and [s for s, _ in got] == [s for s, _ in expected]
    for (_, a), (_, b) in zip(expected, got, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnlab: error:") and "\n" not in err
    return err


def test_empty_training_or_evaluation_file_is_a_one_line_error(
    tmp_path, pangram_file, tiny_run_args, capsys
):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    err = _error(
        ["train", "lm", "--out", str(tmp_path / "r"), *tiny_run_args(empty, pangram_file)], capsys
    )
    assert str(empty) in err and "no text" in err

    run = tmp_path / "run"
    _train(run, tiny_run_args(pangram_file, "", **{"train.epochs": 1}), capsys)
    err = _error(["evaluate", str(run), "--data", str(empty)], capsys)
    assert str(empty) in err
    err = _error(["evaluate", str(run), "--data", str(tmp_path / "missing.txt")], capsys)
    assert "missing.txt: no such file" in err
    assert "beam_size" in _error(
        ["evaluate", str(run), "--data", str(pangram_file), "--beam", "3"], capsys
    )


def test_bad_generation_arguments_are_one_line_errors(
    tmp_path, pangram_file, tiny_run_args, capsys
):
    run = tmp_path / "run"
    _train(run, tiny_run_args(pangram_file, "", **{"train.epochs": 1}), capsys)
    base = ["generate", str(run)]
    err = _error([*base, "--prefix", "Quick!", "--length", "5"], capsys)
    assert "never seen in training" in err and "'Q'" in err and "'!'" in err
    assert "--length" in _error([*base, "--prefix", "the", "--length", "-1"], capsys)
    assert "--temperature" in _error([*base, "--prefix", "the", "--temperature", "0"], capsys)
    assert "--top-k" in _error([*base, "--prefix", "the", "--top-k", "-3"], capsys)
    assert "empty" in _error([*base, "--prefix", ""], capsys)


def test_inconsistent_model_config_is_a_one_line_error(
    tmp_path, pangram_file, tiny_run_args, capsys
):
    args = tiny_run_args(pangram_file, "", **{"model.tie_weights": "true"})  # embed 16, hidden 64
    err = _error(["train", "lm", "--out", str(tmp_path / "r"), *args], capsys)
    assert "embed_size == model.hidden_size" in err


def test_word_level_run_scores_unknown_words_as_unk(tmp_path, tiny_run_args, capsys):
    train = tmp_path / "train.txt"
    train.write_text(" the cat sat on the mat \n the dog sat on the log \n" * 20, encoding="utf-8")
    run = tmp_path / "run"
    args = tiny_run_args(train, train, **{"data.tokenizer": "word", "train.epochs": 2})
    _train(run, args, capsys)
    test = tmp_path / "test.txt"
    test.write_text("the bird sat on the mat\n", encoding="utf-8")
    assert main(["evaluate", str(run), "--data", str(test), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["tokens"] == 6 and metrics["oov_tokens"] == 1  # 7 tokens with <eos>
    assert main(["generate", str(run), "--prefix", "the <unk>", "--length", "3"]) == 0
    assert capsys.readouterr().out.startswith("the <unk> ")
    err = _error(["generate", str(run), "--prefix", "the bird", "--length", "3"], capsys)
    assert "'bird'" in err


@pytest.mark.parametrize(
    "path", sorted((REPO / "configs" / "lm").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_configs_load(path):
    config = load_config(LMConfig, path)
    assert config.task == "lm"
    if config.data.train.startswith("data/") or (REPO.parent / "shared").is_dir():
        assert (REPO / config.data.train).is_file() and (REPO / config.data.valid).is_file()
