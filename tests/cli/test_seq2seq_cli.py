"""End-to-end runs of the CLI on tiny synthetic data."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rnnlab
from rnnlab.cli import main

TINY = [
    "data.preprocess=none",
    "data.min_freq=1",
    "model.embed_size=16",
    "model.hidden_size=32",
    "model.num_layers=1",
    "model.dropout=0",
    "train.batch_size=32",
    "train.log_every=5",
]


def train(corpus: dict[str, Path], out: Path, *extra: str) -> int:
    sets = [f"data.train={corpus['train']}", f"data.valid={corpus['valid']}", *TINY, *extra]
    argv = ["train", "seq2seq", "--out", str(out)]
    for item in sets:
        argv += ["--set", item]
    return main(argv)


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_learns_reverse_task(reverse_corpus, tmp_path):
    run = tmp_path / "run"
    code = train(
        reverse_corpus,
        run,
        "model.hidden_size=128",
        "train.lr=0.005",
        "train.batch_size=64",
        "train.max_steps=1000",
        "train.epochs=100",
        "train.valid_every=250",
    )
    assert code == 0
    best = max(r["valid_bleu"] for r in records(run) if "valid_bleu" in r)
    assert best > 90
    for name in (
        "config.yaml",
        "vocab.src.json",
        "vocab.tgt.json",
        "best/model.safetensors",
        "last/model.safetensors",
        "last/trainer_state.safetensors",
        "metrics.jsonl",
    ):
        assert (run / name).is_file(), name
    translator = rnnlab.load(run)
    assert [t.text for t in translator.translate(["a b c d", "", "h g"])] == [
        "d c b a",
        "",
        "g h",
    ]


def test_metrics_log_has_required_fields(reverse_corpus, tmp_path):
    run = tmp_path / "run"
    assert train(reverse_corpus, run, "train.max_steps=10", "train.valid_every=10") == 0
    logged = records(run)
    assert {"step", "epoch", "train_loss", "tokens_per_sec"} <= set(logged[0])
    assert any({"valid_loss", "valid_bleu"} <= set(r) for r in logged)


def test_resume_equals_uninterrupted(reverse_corpus, tmp_path):
    common = ("train.epochs=2", "model.dropout=0.3", "model.num_layers=2", "train.log_every=3")
    full, part = tmp_path / "full", tmp_path / "part"
    assert train(reverse_corpus, full, *common) == 0
    # Stop mid-epoch (188 batches per epoch), then resume without the step limit.
    assert train(reverse_corpus, part, *common, "train.max_steps=100") == 0
    assert main(["train", "--resume", str(part), "--set", "train.max_steps=0"]) == 0
    losses_full = [(r["step"], r["train_loss"]) for r in records(full) if "train_loss" in r]
    losses_part = [(r["step"], r["train_loss"]) for r in records(part) if "train_loss" in r]
    assert losses_full == losses_part
    valid_full = [r["valid_loss"] for r in records(full) if "valid_loss" in r]
    valid_part = [r["valid_loss"] for r in records(part) if "valid_loss" in r]
    assert valid_full == valid_part
    a = load_file(str(full / "last" / "model.safetensors"))
    b = load_file(str(part / "last" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_translate_keeps_order_and_empty_lines(reverse_corpus, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert train(reverse_corpus, run, "train.max_steps=5") == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("a b c\n\nd e f g h\nq q\n"))
    assert main(["translate", str(run), "--batch-size", "2"]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 5 and lines[1] == "" and lines[4] == ""
    # Order kept: each output equals translating that line alone.
    translator = rnnlab.load(run)
    for source, line in zip(
        ["a b c", "d e f g h", "q q"], [lines[0], lines[2], lines[3]], strict=True
    ):
        assert [t.text for t in translator.translate([source])] == [line]


def test_evaluate_json(reverse_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(reverse_corpus, run, "train.max_steps=5") == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(reverse_corpus["test"]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"bleu", "d2l_bleu", "loss", "perplexity"} <= set(metrics)
    assert metrics["perplexity"] == pytest.approx(
        torch.tensor(metrics["loss"]).exp().item(), rel=1e-6
    )


def test_tied_model_resumes_and_loads_tied(reverse_corpus, tmp_path):
    run = tmp_path / "run"
    common = ("model.embed_size=32", "model.attention=bahdanau", "model.tie_weights=true")
    assert train(reverse_corpus, run, *common, "train.max_steps=6") == 0
    assert main(["train", "--resume", str(run), "--set", "train.max_steps=12"]) == 0
    assert [r["step"] for r in records(run) if "train_loss" in r] == [5, 10]
    weights = load_file(str(run / "last" / "model.safetensors"))
    assert torch.equal(weights["decoder.output.weight"], weights["decoder.embedding.weight"])
    decoder = rnnlab.load(run).model.decoder
    assert decoder.output.weight is decoder.embedding.weight
