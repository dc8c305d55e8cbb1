"""Any export manifest gives a checked manifest or a one-line ``RnnlabError`` naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given

from rnnlab.errors import RnnlabError
from rnnlab.export.onnx import MANIFEST, check_manifest
from tests.data.fuzz import FUZZ, FUZZ_LONG, file_bytes, mutated

VALID = {
    "format": "rnnlab-seq2seq-onnx",
    "format_version": 1,
    "opset": 17,
    "start": "start.onnx",
    "step": "step.onnx",
    "state": [{"name": "hidden", "input": "state.0", "output": "next.0", "batch_axis": 1}],
    "src_vocab": ["<pad>", "<unk>", "<bos>", "<eos>", "a"],
    "tgt_vocab": ["<pad>", "<unk>", "<bos>", "<eos>", "b"],
    "specials": {"pad": 0, "unk": 1, "bos": 2, "eos": 3},
    "tokenizer": {"kind": "word", "preprocess": "none", "max_len": 50},
    "decode": {"max_len": 50, "batch_size": 8},
    "model": {"cell": "gru"},
}


def check(folder: Path, data: bytes) -> None:
    path = folder / MANIFEST
    path.write_bytes(data)
    try:
        manifest = check_manifest(folder)
    except RnnlabError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message, message
    else:
        assert isinstance(manifest["state"], list) and manifest["src_vocab"]


def test_the_valid_manifest_passes(tmp_path: Path):
    (tmp_path / MANIFEST).write_text(json.dumps(VALID))
    assert check_manifest(tmp_path) == VALID


@FUZZ
@given(data=file_bytes())
def test_any_manifest_bytes(tmp_path: Path, data: bytes):
    check(tmp_path, data)


@FUZZ
@given(manifest=mutated(VALID))
def test_any_edited_manifest(tmp_path: Path, manifest):
    check(tmp_path, json.dumps(manifest).encode())


@pytest.mark.slow
@FUZZ_LONG
@given(data=file_bytes(), manifest=mutated(VALID))
def test_manifests_long(tmp_path: Path, data: bytes, manifest):
    check(tmp_path, data)
    check(tmp_path, json.dumps(manifest).encode())


@pytest.mark.parametrize("name", ["../start.onnx", "/etc/passwd", "", "sub/step.onnx"])
def test_graph_names_stay_inside_the_folder(tmp_path: Path, name: str):
    (tmp_path / MANIFEST).write_text(json.dumps({**VALID, "start": name}))
    with pytest.raises(RnnlabError, match="start must name a file inside the export folder"):
        check_manifest(tmp_path)
