"""Exported ONNX graphs agree with the eager model, and the runtime needs neither torch nor rnnlab."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from rnnlab.cli import main  # noqa: E402
from rnnlab.config import from_dict  # noqa: E402
from rnnlab.data.tokenizers import WordTokenizer  # noqa: E402
from rnnlab.export.onnx import export_seq2seq, flatten_state  # noqa: E402
from rnnlab.export.runtime import OnnxTranslator, detokenize, normalize  # noqa: E402
from rnnlab.inference import Translator  # noqa: E402
from rnnlab.rundir import create_run_dir  # noqa: E402
from rnnlab.tasks.seq2seq import Seq2SeqConfig, Seq2SeqTask  # noqa: E402
from rnnlab.training.trainer import Trainer  # noqa: E402

WORDS = ["a", "b", "c", "d", "e", "f", "g", "h"]
CPU = torch.device("cpu")


def eager_texts(task: Seq2SeqTask, model: torch.nn.Module, sentences: list[str]) -> list[str]:
    """Greedy translations by the eager model through the inference API."""
    translator = Translator(task=task, model=model, device=CPU)
    return [t.text for t in translator.translate(sentences)]


def reverse_pairs(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
        lines.append(" ".join(words) + "\t" + " ".join(reversed(words)))
    return lines


@pytest.fixture(scope="module", params=["gru", "lstm"])
def trained(request, tmp_path_factory):
    """A run directory with a small model trained on the reverse task, and its ONNX export."""
    root = tmp_path_factory.mktemp(f"onnx-{request.param}")
    (root / "train.tsv").write_text("\n".join(reverse_pairs(400, 0)) + "\n", encoding="utf-8")
    config = from_dict(
        Seq2SeqConfig,
        {
            "task": "seq2seq",
            "data": {
                "train": str(root / "train.tsv"),
                "valid": "",
                "min_freq": 1,
                "preprocess": "none",
            },
            "model": {
                "cell": request.param,
                "embed_size": 16,
                "hidden_size": 48,
                "num_layers": 2,
                "dropout": 0.0,
            },
            "train": {
                "epochs": 100,
                "max_steps": 120,
                "batch_size": 32,
                "lr": 0.01,
                "device": "cpu",
            },
            "decode": {"max_len": 10},
        },
    )
    run = root / "run"
    create_run_dir(run, config)
    task = Seq2SeqTask(config, run)
    task.prepare_training()
    torch.manual_seed(0)
    model = task.build_model()
    Trainer(task=task, model=model, config=config.train, run_dir=run, device=CPU).fit()
    model.eval()
    export = export_seq2seq(task, model, root / "export")
    return task, model, export


def test_step_graph_log_probs_match_eager(trained):
    task, model, export = trained
    translator = OnnxTranslator(export)
    sources = [task.encode_source(s.split("\t")[0]) for s in reverse_pairs(7, 1)]
    lengths = torch.tensor([len(s) for s in sources])
    src = torch.zeros(len(sources), int(lengths.max()), dtype=torch.long)
    for row, ids in enumerate(sources):
        src[row, : len(ids)] = torch.tensor(ids)
    with torch.no_grad():
        state = model.start(src, lengths)
    onnx_state = translator.start.run(None, {"src": src.numpy(), "src_lengths": lengths.numpy()})
    tokens = torch.full((len(sources),), task.tgt_vocab.bos_id)
    for _ in range(4):
        eager_tensors, _ = flatten_state(state)
        for eager, exported in zip(eager_tensors, onnx_state, strict=True):
            np.testing.assert_allclose(exported, eager.numpy(), atol=1e-5)
        with torch.no_grad():
            log_probs, state = model.step(tokens, state)
        feed = {"tokens": tokens.numpy()}
        feed.update({f"state.{i}": value for i, value in enumerate(onnx_state)})
        onnx_log_probs, *onnx_state = translator.step.run(None, feed)
        np.testing.assert_allclose(onnx_log_probs, log_probs.numpy(), atol=1e-4)
        tokens = log_probs.argmax(-1)


def test_greedy_translations_identical(trained):
    task, model, export = trained
    sentences = [line.split("\t")[0] for line in reverse_pairs(60, 2)]
    eager = eager_texts(task, model, sentences)
    assert (
        sum(e == " ".join(reversed(s.split())) for e, s in zip(eager, sentences, strict=True)) > 20
    )
    assert OnnxTranslator(export).translate(sentences) == eager


def test_runtime_runs_without_torch_or_rnnlab(trained):
    task, model, export = trained
    sentences = [line.split("\t")[0] for line in reverse_pairs(20, 3)]
    script = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['rnnlab'] = None\n"
        "import importlib.util, json\n"
        f"spec = importlib.util.spec_from_file_location('runtime', {str(export / 'runtime.py')!r})\n"
        "runtime = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(runtime)\n"
        f"translator = runtime.OnnxTranslator({str(export)!r})\n"
        "print(json.dumps(translator.translate(json.loads(sys.stdin.read()))))\n"
        "assert not any(m == 'torch' or m.startswith(('torch.', 'rnnlab')) "
        "for m, v in sys.modules.items() if v is not None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(sentences),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == eager_texts(task, model, sentences)


def test_cli_translate_detects_an_export_folder(trained, monkeypatch, capsys):
    task, model, export = trained
    sentences = ["a b c", "", "h g"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(sentences) + "\n"))
    assert main(["translate", str(export)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == eager_texts(task, model, sentences)


def test_cli_export_writes_a_self_contained_folder(trained, tmp_path, capsys):
    task, _, _ = trained
    out = tmp_path / "exported"
    assert main(["export", str(task.run_dir), "--format", "onnx", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {
        "start.onnx",
        "step.onnx",
        "rnnlab-export.json",
        "runtime.py",
    }


@pytest.mark.parametrize("mode", ["textbook", "punct", "none"])
def test_runtime_tokenizer_matches_rnnlab(mode):
    texts = ["Hi.", "Va !", "I'm home, ok?", "Il\u202fest\xa0calme !", "  Spaces   here .  "]
    tokenizer = WordTokenizer(mode)
    for text in texts:
        assert normalize(text, mode).split() == tokenizer.encode(text)
        tokens = tokenizer.encode(text)
        assert detokenize(tokens, mode) == tokenizer.decode(tokens)


def test_cli_export_on_a_full_disk_keeps_the_previous_export(
    trained, tmp_path, monkeypatch, capsys
):
    import errno
    import shutil
    from pathlib import Path

    from rnnlab.export import onnx as onnx_export

    task, model, export = trained
    previous = tmp_path / "export"
    shutil.copytree(export, previous)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}

    def disk_fills_up(src, dst):
        Path(dst).write_bytes(Path(src).read_bytes()[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(onnx_export.shutil, "copyfile", disk_fills_up)
    assert main(["export", str(task.run_dir), "--out", str(previous)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"rnnlab: error: {previous}: cannot write (no space left on device); "
        "the previous version is kept"
    ]
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    assert OnnxTranslator(previous).translate(["a b c"]) == OnnxTranslator(export).translate(
        ["a b c"]
    )
