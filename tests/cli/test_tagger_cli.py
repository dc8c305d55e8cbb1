"""The ``rnnlab`` command for taggers: train, tag (text and CoNLL-U), evaluate, and user errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from rnnlab.cli import EXIT_USER_ERROR, main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "ud-ewt-sample"
DEV = SAMPLE / "dev.conllu"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "pos"
    code = main(
        [
            "train",
            "tagger",
            "--config",
            str(REPO / "configs/tagger/ud-ewt-sample.yaml"),
            "--out",
            str(out),
            "--set",
            f"data.train={SAMPLE / 'train.conllu'}",
            "--set",
            f"data.valid={DEV}",
            "--set",
            "data.max_examples=60",
            "--set",
            "train.max_steps=6",
            "--set",
            "train.valid_every=3",
            "--set",
            "model.hidden_size=16",
            "--set",
            "model.embed_size=16",
        ]
    )
    assert code == 0
    return out


def _run(argv: list[str], stdin: str, monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_writes_a_run(run_dir: Path):
    for name in ("config.yaml", "vocab.words.json", "vocab.chars.json", "tags.json", "best"):
        assert (run_dir / name).exists()
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("valid_accuracy" in r for r in records)


def test_tag_text(run_dir: Path, monkeypatch, capsys):
    code, out, _ = _run(
        ["tag", str(run_dir), "--batch-size", "2"],
        "is it too late now to say sorry\n\n  The dog ate the apple .\n",
        monkeypatch,
        capsys,
    )
    assert code == 0
    lines = out.split("\n")
    assert lines[1] == "" and lines[3] == ""
    first = [token.rsplit("/", 1) for token in lines[0].split(" ")]
    assert [w for w, _ in first] == ["is", "it", "too", "late", "now", "to", "say", "sorry"]
    tags = json.loads((run_dir / "tags.json").read_text())["tags"]
    assert all(t in tags for _, t in first)
    assert [t.rsplit("/", 1)[0] for t in lines[2].split(" ")] == [
        "The",
        "dog",
        "ate",
        "the",
        "apple",
        ".",
    ]


def test_tag_conllu_fills_only_the_tag_column(run_dir: Path, monkeypatch, capsys):
    text = DEV.read_text(encoding="utf-8")
    code, out, _ = _run(["tag", str(run_dir), "--format", "conllu"], text, monkeypatch, capsys)
    assert code == 0
    old_lines, new_lines = text.splitlines(), out.splitlines()
    assert len(old_lines) == len(new_lines)
    for old, new in zip(old_lines, new_lines, strict=True):
        old_cols, new_cols = old.split("\t"), new.split("\t")
        if len(old_cols) == 10 and old_cols[0].isdigit():
            assert old_cols[:3] + old_cols[4:] == new_cols[:3] + new_cols[4:]
        else:
            assert old == new


def test_evaluate_json_per_tag(run_dir: Path, monkeypatch, capsys):
    code, out, _ = _run(
        ["evaluate", str(run_dir), "--data", str(DEV), "--json", "--per-tag"],
        "",
        monkeypatch,
        capsys,
    )
    assert code == 0
    metrics = json.loads(out)
    assert metrics["tokens"] == 2319 and metrics["sentences"] == 100
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["oov_tokens"] > 0
    assert "NOUN" in metrics["per_tag"] and set(metrics["per_tag"]["NOUN"]) == {
        "precision", "recall", "f1", "support"
    }  # fmt: skip
    code, out, _ = _run(["evaluate", str(run_dir), "--data", str(DEV)], "", monkeypatch, capsys)
    assert code == 0 and out.startswith("accuracy\t")


def test_malformed_conllu_exits_2_naming_file_and_line(run_dir, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.conllu"
    bad.write_text("# sent_id = 1\n1\tHi\thi\tINTJ\tUH\t_\t0\troot\n\n", encoding="utf-8")
    code, _, err = _run(["evaluate", str(run_dir), "--data", str(bad)], "", monkeypatch, capsys)
    assert code == EXIT_USER_ERROR
    assert err.strip() == (
        f"rnnlab: error: {bad}:2: expected 10 tab-separated CoNLL-U columns, found 8"
    )
    bad_id = "1\tHi\thi\tINTJ\tUH\t_\t0\troot\t0:root\t_\n1-x\tyo\t_\t_\t_\t_\t_\t_\t_\t_\n\n"
    code, _, err = _run(["tag", str(run_dir), "--format", "conllu"], bad_id, monkeypatch, capsys)
    assert code == EXIT_USER_ERROR
    assert err.startswith("rnnlab: error: <stdin>:2: bad ID column")


def test_wrong_options_are_user_errors(run_dir, monkeypatch, capsys):
    code, _, err = _run(
        ["evaluate", str(run_dir), "--data", str(DEV), "--beam", "3"], "", monkeypatch, capsys
    )
    assert code == EXIT_USER_ERROR and "beam_size" in err


def test_auxiliary_outputs_train_save_and_load(tmp_path: Path, monkeypatch, capsys):
    """A run with every kind of auxiliary output: its files, its weights, tagging from it and
    from its export."""
    import conllu
    from safetensors.torch import load_file

    import rnnlab

    out = tmp_path / "aux"
    sets = [f"data.train={SAMPLE / 'train.conllu'}", f"data.valid={DEV}", "data.max_examples=60"]
    sets += ["train.max_steps=4", "model.hidden_size=16", "model.embed_size=16"]
    sets += ["data.aux_tag_column=[xpos, feats]", "model.freq_bin_weight=0.5"]
    config = str(REPO / "configs/tagger/ud-ewt-sample.yaml")
    argv = ["train", "tagger", "--config", config, "--out", str(out)]
    assert main(argv + [arg for s in sets for arg in ("--set", s)]) == 0
    first_60 = conllu.parse((SAMPLE / "train.conllu").read_text(encoding="utf-8"))[:60]
    words = [t for sentence in first_60 for t in sentence if isinstance(t["id"], int)]
    xpos = {t["xpos"] for t in words}
    feats = {
        "|".join(f"{k}={v}" for k, v in t["feats"].items()) if t["feats"] else "_" for t in words
    }
    assert set(json.loads((out / "aux_tags.json").read_text())["tags"]) == xpos
    assert set(json.loads((out / "aux_tags_feats.json").read_text())["tags"]) == feats
    weights = load_file(out / "best" / "model.safetensors")
    shapes = {name: tuple(tensor.shape) for name, tensor in weights.items()}
    assert shapes["auxiliary.aux_tags.weight"] == (len(xpos), 32)
    assert shapes["auxiliary.aux_tags_feats.weight"] == (len(feats), 32)
    assert shapes["auxiliary.freq_bin.weight"] == (16, 32)
    tagged = rnnlab.load(out).tag(["The dog ate ."])
    assert len(tagged[0].tags) == 4
    code, stdout, _ = _run(
        ["evaluate", str(out), "--data", str(DEV), "--json"], "", monkeypatch, capsys
    )
    assert code == 0 and json.loads(stdout)["tokens"] > 0
    assert main(["export", str(out), "--out", str(tmp_path / "onnx")]) == 0
    capsys.readouterr()
    code, exported, err = _run(
        ["evaluate", str(tmp_path / "onnx"), "--data", str(DEV), "--json"], "", monkeypatch, capsys
    )
    assert code == 0, err
    assert json.loads(exported)["accuracy"] == json.loads(stdout)["accuracy"]


def test_bf16_without_a_bf16_lstm_kernel_is_a_config_error(tmp_path, monkeypatch, capsys):
    """On a CPU without AVX512-BF16 or AMX, oneDNN has no bfloat16 LSTM: one line, exit 2."""
    from rnnlab.nn import precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    argv = ["train", "tagger", "--config", str(REPO / "configs/tagger/ud-ewt-sample.yaml")]
    argv += ["--out", str(tmp_path / "bf16"), "--set", f"data.train={SAMPLE / 'train.conllu'}"]
    argv += ["--set", f"data.valid={DEV}", "--set", "train.precision=bf16"]
    code, _, err = _run(argv, "", monkeypatch, capsys)
    assert code == EXIT_USER_ERROR
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("rnnlab: error: train.precision: bf16 needs a CPU with AVX512-BF16 or AMX")
    )
    assert not (tmp_path / "bf16" / "best").exists()
