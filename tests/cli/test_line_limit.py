"""A 1 MB line given to translate, tag or generate --prefix is cut at the limit, with a notice."""

from __future__ import annotations

import io
from pathlib import Path

from rnnlab.cli import main
from rnnlab.data.limits import MAX_LINE_CHARS

REPO = Path(__file__).resolve().parents[2]
MEGABYTE = 1_000_000
NOTICE = (
    f"rnnlab: notice: <stdin>:2: line of {MEGABYTE:,} characters cut to the first "
    f"{MAX_LINE_CHARS:,} (the input line limit)"
)


def train(task: str, out: Path, train_file: Path, *extra: str) -> None:
    argv = ["train", task, "--out", str(out), "--set", f"data.train={train_file}"]
    for item in ["data.valid=", "train.max_steps=1", "train.device=cpu", *extra]:
        argv += ["--set", item]
    assert main(argv) == 0


def run_with_stdin(argv: list[str], text: str, monkeypatch, capsys) -> tuple[list[str], list[str]]:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    return captured.out.splitlines(), captured.err.splitlines()


def test_translate_cuts_a_megabyte_line(tmp_path: Path, monkeypatch, capsys):
    corpus = tmp_path / "train.tsv"
    corpus.write_text("a b c\tc b a\nb c\tc b\n" * 20, encoding="utf-8")
    train("seq2seq", tmp_path / "run", corpus, "data.min_freq=1", "model.hidden_size=8")
    long_line = ("a b " * MEGABYTE)[:MEGABYTE]
    out, err = run_with_stdin(
        ["translate", str(tmp_path / "run"), "--max-len", "3"],
        f"a b\n{long_line}\nb c\n",
        monkeypatch,
        capsys,
    )
    assert len(out) == 3  # one output line per input line, order kept
    assert err == [NOTICE]


def test_tag_cuts_a_megabyte_line(tmp_path: Path, monkeypatch, capsys):
    train("tagger", tmp_path / "run", REPO / "tests/data/tagged/toy.txt", "data.min_freq=1")
    long_line = ("the dog " * MEGABYTE)[:MEGABYTE]
    out, err = run_with_stdin(
        ["tag", str(tmp_path / "run")], f"the dog\n{long_line}\nate\n", monkeypatch, capsys
    )
    assert len(out) == 3
    assert [pair.rsplit("/", 1)[0] for pair in out[1].split()] == long_line[:MAX_LINE_CHARS].split()
    assert err == [NOTICE]


def test_generate_cuts_a_megabyte_prefix(tmp_path: Path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 20, encoding="utf-8")
    train("lm", tmp_path / "run", text, "data.clean=none", "data.tokenizer=char")
    capsys.readouterr()
    prefix = ("the fox " * MEGABYTE)[:MEGABYTE]
    assert main(["generate", str(tmp_path / "run"), "--prefix", prefix, "--length", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.out.rstrip("\n") == prefix[:MAX_LINE_CHARS]
    assert captured.err.splitlines() == [
        f"rnnlab: notice: --prefix: line of {MEGABYTE:,} characters cut to the first "
        f"{MAX_LINE_CHARS:,} (the input line limit)"
    ]
