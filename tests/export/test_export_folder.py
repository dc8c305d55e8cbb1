"""The export folder: self-contained, checked on load, refused when wrong, runnable without torch."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

import rnnlab  # noqa: E402
from rnnlab.cli import main  # noqa: E402
from rnnlab.data.tokenizers import WordTokenizer  # noqa: E402
from rnnlab.export.runtime import detokenize, load, normalize  # noqa: E402
from rnnlab.metrics.bleu import corpus_bleu  # noqa: E402
from tests.export.runs import (  # noqa: E402
    CPU,
    eager_attention,
    eager_translate,
    make_run,
    reverse_lines,
    seq2seq_config,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small attention translator trained on the reverse task, exported fp32 and int8 by the CLI."""
    root = tmp_path_factory.mktemp("trained")
    (root / "train.tsv").write_text("\n".join(reverse_lines(600, 0)) + "\n", encoding="utf-8")
    config = seq2seq_config(
        root / "train.tsv", cell="gru", attention="bahdanau", bidirectional_encoder=True
    )
    config["model"].update(embed_size=16, hidden_size=16, num_layers=1)
    task, model = make_run(root, "seq2seq", config, train_steps=150)
    fp32, int8 = root / "fp32", root / "int8"
    assert main(["export", str(task.run_dir), "--out", str(fp32)]) == 0
    assert main(["export", str(task.run_dir), "--out", str(int8), "--quantize", "int8"]) == 0
    return task, model, fp32, int8


SENTENCES = [line.split("\t")[0] for line in reverse_lines(80, 7)]


def test_manifest_lists_every_file_with_its_sha256(trained):
    task, _, folder, _ = trained
    manifest = json.loads((folder / "rnnlab-export.json").read_text(encoding="utf-8"))
    assert manifest["task"] == "seq2seq"
    assert manifest["rnnlab_version"] == rnnlab.__version__
    assert manifest["opset"] >= 17
    config_bytes = (task.run_dir / "config.yaml").read_bytes()
    assert manifest["config_sha256"] == hashlib.sha256(config_bytes).hexdigest()
    names = {p.name for p in folder.iterdir()} - {"rnnlab-export.json"}
    assert set(manifest["files"]) == names
    assert {"start.onnx", "step.onnx", "runtime.py", "vocab.src.json", "config.yaml"} <= names
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert yaml.safe_load((folder / "config.yaml").read_text())["model"]["attention"] == "bahdanau"


def test_a_modified_file_is_a_one_line_error(trained, tmp_path, capsys, monkeypatch):
    import shutil

    _, _, folder, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    vocab = copy / "vocab.tgt.json"
    vocab.write_text(vocab.read_text(encoding="utf-8").replace('"a"', '"z"'), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO("a b\n"))
    assert main(["translate", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "vocab.tgt.json" in err and "modified since export" in err


def test_cli_translate_on_an_export_prints_what_the_run_prints(trained, monkeypatch, capsys):
    task, _, folder, _ = trained
    text = "\n".join([*SENTENCES[:20], "", "h g"]) + "\n"
    outputs = []
    for target in (task.run_dir, folder):
        for options in ([], ["--beam", "4", "--n-best", "2", "--max-len", "8"]):
            monkeypatch.setattr(sys, "stdin", io.StringIO(text))
            assert main(["translate", str(target), *options]) == 0
            outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[2]
    assert outputs[1] == outputs[3]
    assert "\t" in outputs[1]


def test_cli_evaluate_on_an_export_gives_the_run_metrics(trained, tmp_path, capsys):
    task, _, folder, _ = trained
    data = tmp_path / "test.tsv"
    data.write_text("\n".join(reverse_lines(50, 9)) + "\n", encoding="utf-8")
    metrics = []
    for target in (task.run_dir, folder):
        assert main(["evaluate", str(target), "--data", str(data), "--json"]) == 0
        metrics.append(json.loads(capsys.readouterr().out))
    run, exported = metrics
    assert exported["bleu"] == run["bleu"] and run["bleu"] > 30
    assert exported["loss"] == pytest.approx(run["loss"], abs=1e-4)
    assert exported.keys() == run.keys()


def test_int8_keeps_greedy_output_close_and_the_folder_small(trained):
    task, model, fp32, int8 = trained
    full, quantized = load(fp32), load(int8)
    assert json.loads((int8 / "rnnlab-export.json").read_text())["quantize"] == "int8"
    reference = [t.text for t in full.translate(SENTENCES)]
    assert reference == eager_translate(task, model, SENTENCES)
    assert corpus_bleu([t.text for t in quantized.translate(SENTENCES)], reference) > 80
    size = sum((fp32 / g).stat().st_size for g in ("start.onnx", "step.onnx"))
    size_int8 = sum((int8 / g).stat().st_size for g in ("start.onnx", "step.onnx"))
    assert size_int8 < size


def test_runtime_runs_where_importing_torch_fails(trained):
    task, model, folder, _ = trained
    script = (
        "import sys, json\n"
        "sys.modules['torch'] = None\n"  # `import torch` now raises ImportError
        "sys.modules['rnnlab'] = None\n"
        f"sys.path.insert(0, {str(folder)!r})\n"
        "import runtime\n"
        f"model = runtime.load({str(folder)!r})\n"
        "lines = json.loads(sys.stdin.read())\n"
        "greedy = [t.text for t in model.translate(lines)]\n"
        "beam = [t.n_best for t in model.translate(lines, beam=3, n_best=2)]\n"
        "print(json.dumps([greedy, beam]))\n"
        "assert not any(m == 'torch' or m.startswith(('torch.', 'rnnlab')) "
        "for m, v in sys.modules.items() if v is not None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(SENTENCES[:30]),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    greedy, beam = json.loads(done.stdout)
    assert greedy == eager_translate(task, model, SENTENCES[:30])
    eager_beam = task.translate_ids(
        model, [task.encode_source(s) for s in SENTENCES[:30]], CPU, beam_size=3, n_best=2
    )
    assert [[text for text, _ in hyps] for hyps in beam] == [
        [task.detokenize(h) for h in hyps] for hyps in eager_beam
    ]


def test_export_without_the_extra_names_it(trained, monkeypatch, capsys):
    import importlib.util

    task, _, _, _ = trained
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    assert main(["export", str(task.run_dir), "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'rnnlab[export]'" in err and "onnx" in err


def test_an_export_that_would_not_run_like_the_model_is_refused(
    trained, tmp_path, monkeypatch, capsys
):
    """Every export is run on new shapes and compared with the model before it is kept; with a
    tolerance no graph can meet, the export must be refused in one line, leaving no folder."""
    import rnnlab.export.onnx as exporter

    task, _, _, _ = trained
    monkeypatch.setattr(exporter, "CHECK_ATOL", -1.0)
    out = tmp_path / "export"
    assert main(["export", str(task.run_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "export refused" in err and "start.onnx" in err
    assert not out.exists() and not list(tmp_path.glob(".export-*"))


@pytest.mark.parametrize("mode", ["textbook", "punct", "none"])
def test_runtime_tokenizer_matches_rnnlab(mode):
    texts = ["Hi.", "Va !", "I'm home, ok?", "Il\u202fest\xa0calme !", "  Spaces   here .  "]
    tokenizer = WordTokenizer(mode)
    for text in texts:
        assert normalize(text, mode).split() == tokenizer.encode(text)
        tokens = tokenizer.encode(text)
        assert detokenize(tokens, mode) == tokenizer.decode(tokens)


def test_runtime_language_model_text_matches_rnnlab():
    from rnnlab.data.lm_corpus import text_tokens, tokens_text
    from rnnlab.export import runtime

    text = "The Time-Machine!\n\nIt was  2 o'clock.\n"
    for level in ("char", "word"):
        for clean in ("none", "timemachine"):
            tokens = runtime.corpus_tokens(text, level=level, clean=clean)
            assert runtime.tokens_text(tokens, level=level) == tokens_text(tokens, level=level)
            if level == "char":
                assert tokens == text_tokens(text, level=level, clean=clean)
            else:
                words = [t for t in tokens if t != "<eos>"]
                assert words == text_tokens(text, level=level, clean=clean)


def test_attention_of_an_export_equals_the_run_and_plots(trained, tmp_path, monkeypatch):
    import numpy as np

    task, model, folder, _ = trained
    sentence = SENTENCES[3]
    want = eager_attention(task, model, sentence)
    got = load(folder).translate([sentence], attention=True)[0].attention
    assert got.src_tokens == want.src_tokens and got.out_tokens == want.out_tokens
    np.testing.assert_allclose(got.weights, want.weights.numpy(), atol=1e-5)
    monkeypatch.setattr(sys, "stdin", io.StringIO(sentence + "\n"))
    plot = tmp_path / "attention.png"
    assert main(["translate", str(folder), "--attention-plot", str(plot)]) == 0
    assert plot.stat().st_size > 0


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m: m["specials"].__setitem__("eos", 10**6), id="eos-out-of-range"),
        pytest.param(lambda m: m["specials"].__setitem__("bos", 1.0), id="bos-a-float"),
        pytest.param(lambda m: m["specials"].pop("unk"), id="no-unk"),
    ],
)
def test_a_translator_manifest_with_wrong_special_ids_does_not_open(trained, tmp_path, edit):
    import shutil

    _, _, folder, _ = trained
    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    manifest_path = copy / "rnnlab-export.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    edit(manifest)
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ValueError) as caught:  # the runtime's ExportError, one line
        load(copy)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(manifest_path)), message
    assert "specials." in message


def test_exporting_from_python_leaves_the_callers_model_as_it_was(trained, tmp_path):
    """``export_run`` works on a copy: ``Module.to`` and ``eval`` would change the caller's model
    in place (a model on a GPU would be left on the CPU, a model in training in eval mode)."""
    from rnnlab.export.onnx import export_run

    task, model, _, _ = trained
    was_training = model.training
    parameters = dict(model.named_parameters())
    model.train()
    try:
        export_run(task, model, tmp_path / "again")
        assert model.training
        assert all(p is parameters[name] for name, p in model.named_parameters())
    finally:
        model.train(was_training)
