"""Any export manifest opens as an export or is a one-line ``RnnlabError`` naming it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given

from rnnlab.errors import RnnlabError
from rnnlab.export.loading import MANIFEST, open_export
from rnnlab.export.runtime import FORMAT, FORMAT_VERSION
from tests.data.fuzz import FUZZ, FUZZ_LONG, file_bytes, mutated

CONFIG = b"task: tagger\n"
VALID = {
    "format": FORMAT,
    "format_version": FORMAT_VERSION,
    "task": "tagger",
    "graphs": {"tagger": "config.yaml"},
    "files": {"config.yaml": hashlib.sha256(CONFIG).hexdigest()},
}


def check(folder: Path, data: bytes) -> None:
    (folder / "config.yaml").write_bytes(CONFIG)
    path = folder / MANIFEST
    path.write_bytes(data)
    with pytest.raises(RnnlabError) as caught:
        open_export(folder)  # no manifest here names a loadable graph
    message = str(caught.value)
    assert message.startswith(str(folder)) and "\n" not in message, message


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


@pytest.mark.parametrize("name", ["../config.yaml", "/etc/passwd", "", "sub/config.yaml"])
def test_file_names_stay_inside_the_folder(tmp_path: Path, name: str):
    (tmp_path / MANIFEST).write_text(json.dumps({**VALID, "files": {name: "0" * 64}}))
    with pytest.raises(RnnlabError, match="must name a file inside the export folder"):
        open_export(tmp_path)
