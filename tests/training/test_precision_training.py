"""train.precision=bf16 and decode.precision=bf16 end to end: the run learns like float32 does."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from rnnlab.cli import main
from rnnlab.inference import Translator
from rnnlab.nn.precision import bf16_pays
from rnnlab.rundir import open_run

TINY = [
    "data.preprocess=none",
    "data.min_freq=1",
    "model.embed_size=16",
    "model.hidden_size=64",
    "model.num_layers=1",
    "model.dropout=0",
    "model.attention=bahdanau",
    "train.batch_size=64",
    "train.lr=0.005",
    "train.max_steps=60",
    "train.epochs=100",
    "train.valid_every=60",
    "train.log_every=20",
]


def train(corpus: dict[str, Path], out: Path, precision: str) -> list[dict]:
    argv = ["train", "seq2seq", "--out", str(out)]
    sets = [f"data.train={corpus['train']}", f"data.valid={corpus['valid']}", *TINY]
    for item in [*sets, f"train.precision={precision}"]:
        argv += ["--set", item]
    assert main(argv) == 0
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_bf16_training_tracks_fp32_and_keeps_float32_weights(reverse_corpus, tmp_path):
    fp32 = train(reverse_corpus, tmp_path / "fp32", "fp32")
    bf16 = train(reverse_corpus, tmp_path / "bf16", "bf16")
    valid_fp32 = [r["valid_loss"] for r in fp32 if "valid_loss" in r][-1]
    valid_bf16 = [r["valid_loss"] for r in bf16 if "valid_loss" in r][-1]
    first_train_loss = [r["train_loss"] for r in fp32 if "train_loss" in r][0]
    assert valid_fp32 < 0.7 * first_train_loss, "the float32 run should have learnt something"
    assert abs(valid_bf16 - valid_fp32) < 0.05 * valid_fp32
    for tensor in load_file(tmp_path / "bf16" / "last" / "model.safetensors").values():
        assert tensor.dtype == torch.float32
    for name, tensor in load_file(tmp_path / "bf16" / "last" / "trainer_state.safetensors").items():
        if name.startswith("optim") and tensor.is_floating_point():
            assert tensor.dtype == torch.float32, name

    run = open_run(tmp_path / "fp32")
    sentences = [" ".join(str(i) for i in range(n, n + 5)) for n in range(4, 24, 2)]
    translator = Translator(task=run.task, model=run.model, device=run.device)
    fp32_out = [t.text for t in translator.translate(sentences)]
    run.task.config.decode.precision = "bf16"
    bf16_out = [t.text for t in translator.translate(sentences)]
    assert sum(a == b for a, b in zip(fp32_out, bf16_out, strict=True)) >= 8


def test_auto_precision_trains_and_says_what_it_chose(reverse_corpus, tmp_path, capsys):
    argv = ["train", "seq2seq", "--out", str(tmp_path / "auto")]
    sets = [f"data.train={reverse_corpus['train']}", *TINY, "train.max_steps=2"]  # the last wins
    for item in [*sets, "train.precision=auto", "decode.precision=auto"]:
        argv += ["--set", item]
    assert main(argv) == 0
    chosen = "bf16" if bf16_pays("cpu") else "fp32"
    err = capsys.readouterr().err
    assert f"train.precision: auto → {chosen}" in err
    assert f"decode.precision: auto → {chosen}" in err
