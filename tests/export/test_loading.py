"""Opening an export folder from rnnlab: a working folder opens, a broken one is one ``RnnlabError``.

Every broken folder is a copy of a real export (the session's tiny tagger) damaged by hand: a
manifest that is not JSON or of another format, graphs missing, truncated or not ONNX, vocabularies
of the wrong shape, files changed after export, a folder that is a file. The standard is the
project's: one line naming the folder or the file, never a traceback, nothing unpickled.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from rnnlab.cli import main  # noqa: E402
from rnnlab.errors import RnnlabError  # noqa: E402
from rnnlab.export import runtime  # noqa: E402
from rnnlab.export.loading import (  # noqa: E402
    MANIFEST,
    is_export_dir,
    open_export,
    open_export_as,
    runtime_call,
)
from tests.pickles import CreatesAFileWhenUnpickled


@pytest.fixture
def folder(exported_tagger: Path, tmp_path: Path) -> Path:
    """A copy of the export that a test may damage."""
    return Path(shutil.copytree(exported_tagger, tmp_path / "export"))


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


def edit_manifest(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    manifest = read_manifest(folder)
    edit(manifest)
    write_manifest(folder, manifest)


def replace_file(folder: Path, name: str, data: bytes, *, rehash: bool) -> None:
    """Write ``data`` as the folder's file ``name``; with ``rehash`` the manifest is updated to
    match, as a tool that rewrites files and their digests would (the damage is then not a sha256
    mismatch but the content itself)."""
    (folder / name).write_bytes(data)
    if rehash:
        digest = hashlib.sha256(data).hexdigest()
        edit_manifest(folder, lambda manifest: manifest["files"].__setitem__(name, digest))


def assert_one_line_error(error: pytest.ExceptionInfo[RnnlabError], folder: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith(str(folder)), message  # names the folder or a file inside it
    return message


def test_an_intact_export_opens_as_its_task(exported_tagger: Path):
    model = open_export(exported_tagger, num_threads=2)
    assert isinstance(model, runtime.OnnxTagger) and model.task_name == "tagger"
    assert model.folder == exported_tagger
    # ``num_threads`` reaches ONNX Runtime's session.
    assert model.session.get_session_options().intra_op_num_threads == 2
    assert [t.tokens for t in model.tag(["The dog ."])] == [["The", "dog", "."]]


def test_is_export_dir_needs_a_manifest_file(exported_tagger: Path, tagger_run: Path, tmp_path):
    assert is_export_dir(exported_tagger) and is_export_dir(str(exported_tagger))
    assert not is_export_dir(tagger_run)
    assert not is_export_dir(tmp_path)
    assert not is_export_dir(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    assert not is_export_dir(tmp_path / "file")
    (tmp_path / "odd" / MANIFEST).mkdir(parents=True)
    assert not is_export_dir(tmp_path / "odd")


def _not_json(folder: Path) -> None:
    (folder / MANIFEST).write_text('{"format": "rnnlab-onnx", ', encoding="utf-8")


def _not_utf8(folder: Path) -> None:
    (folder / MANIFEST).write_bytes(b'{"format": "\xff"}')


def _a_list(folder: Path) -> None:
    (folder / MANIFEST).write_text("[1, 2]", encoding="utf-8")


def _other_format(folder: Path) -> None:
    edit_manifest(folder, lambda m: m.__setitem__("format", "onnx"))


def _older_version(folder: Path) -> None:
    edit_manifest(folder, lambda m: m.__setitem__("format_version", 1))


def _version_as_text(folder: Path) -> None:
    edit_manifest(folder, lambda m: m.__setitem__("format_version", "2"))


def _unknown_task(folder: Path) -> None:
    edit_manifest(folder, lambda m: m.__setitem__("task", "parser"))


def _no_graphs(folder: Path) -> None:
    edit_manifest(folder, lambda m: m.pop("graphs"))


def _files_a_list(folder: Path) -> None:
    edit_manifest(folder, lambda m: m.__setitem__("files", sorted(m["files"])))


def _graph_missing(folder: Path) -> None:
    (folder / "tagger.onnx").unlink()


def _graph_missing_and_unlisted(folder: Path) -> None:
    (folder / "tagger.onnx").unlink()
    edit_manifest(folder, lambda m: m["files"].pop("tagger.onnx"))


def _graph_truncated(folder: Path) -> None:
    data = (folder / "tagger.onnx").read_bytes()
    (folder / "tagger.onnx").write_bytes(data[: len(data) // 2])


def _graph_truncated_and_rehashed(folder: Path) -> None:
    data = (folder / "tagger.onnx").read_bytes()
    replace_file(folder, "tagger.onnx", data[: len(data) // 2], rehash=True)


def _graph_is_json(folder: Path) -> None:
    replace_file(folder, "tagger.onnx", b'{"graph": []}', rehash=True)


def _vocabulary_edited(folder: Path) -> None:
    vocab = folder / "vocab.words.json"
    tokens = json.loads(vocab.read_text(encoding="utf-8"))
    tokens["tokens"][-1] = "zebra"
    vocab.write_text(json.dumps(tokens), encoding="utf-8")


def _vocabulary_a_list(folder: Path) -> None:
    replace_file(folder, "vocab.words.json", b'["<pad>", "<unk>"]', rehash=True)


def _vocabulary_a_number(folder: Path) -> None:
    replace_file(folder, "vocab.chars.json", b'{"tokens": 5}', rehash=True)


def _tags_missing_key(folder: Path) -> None:
    replace_file(folder, "tags.json", b'{"labels": ["NOUN"]}', rehash=True)


BROKEN: list[tuple[Callable[[Path], None], str]] = [
    (_not_json, "not a valid manifest"),
    (_not_utf8, "not a valid manifest"),
    (_a_list, "expected a JSON object"),
    (_other_format, "export format 'onnx' v2 is not rnnlab-onnx v2"),
    (_older_version, "v1 is not rnnlab-onnx v2; export the run again"),
    (_version_as_text, "is not rnnlab-onnx v2"),
    (_unknown_task, "not a valid manifest (KeyError: 'parser')"),
    (_no_graphs, "graphs must name files it lists"),
    (_files_a_list, "files must map file names to sha256"),
    (_graph_missing, "tagger.onnx: missing from the export folder"),
    (_graph_missing_and_unlisted, "graphs must name files it lists"),
    (_graph_truncated, "tagger.onnx: modified since export"),
    (_graph_truncated_and_rehashed, "tagger.onnx: not a loadable ONNX graph"),
    (_graph_is_json, "tagger.onnx: not a loadable ONNX graph"),
    (_vocabulary_edited, "vocab.words.json: modified since export"),
    (_vocabulary_a_list, "vocab.words.json: not a valid tokens file"),
    (_vocabulary_a_number, "vocab.chars.json: 'tokens' must be a list of strings"),
    (_tags_missing_key, "tags.json: not a valid tags file"),
]


@pytest.mark.parametrize(
    ("damage", "expected"), BROKEN, ids=[damage.__name__.strip("_") for damage, _ in BROKEN]
)
def test_a_broken_export_is_a_one_line_error(
    folder: Path, damage: Callable[[Path], None], expected: str
):
    damage(folder)
    with pytest.raises(RnnlabError) as caught:
        open_export(folder)
    assert expected in assert_one_line_error(caught, folder)


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_a_folder_without_a_manifest_is_not_an_export(tmp_path: Path, make: str):
    folder = tmp_path / "export"
    if make == "empty":
        folder.mkdir()
    with pytest.raises(RnnlabError, match="not an rnnlab export folder") as caught:
        open_export(folder)
    assert_one_line_error(caught, folder)


def test_a_pickle_in_place_of_a_graph_is_refused_unread(folder: Path):
    marker = folder.parent / "unpickled"
    replace_file(
        folder, "tagger.onnx", pickle.dumps(CreatesAFileWhenUnpickled(marker)), rehash=True
    )
    with pytest.raises(RnnlabError, match="not a loadable ONNX graph") as caught:
        open_export(folder)
    assert_one_line_error(caught, folder)
    assert not marker.exists()


def test_the_cli_prints_a_broken_export_in_one_line(folder: Path, capsys):
    _graph_truncated_and_rehashed(folder)
    assert main(["tag", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnlab: error: {folder / 'tagger.onnx'}: not a loadable ONNX graph")
    assert err.count("\n") == 1


def test_without_onnxruntime_the_error_names_the_extra(exported_tagger: Path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "onnxruntime" else real(name, *args),
    )
    with pytest.raises(RnnlabError, match=r"pip install 'rnnlab\[export\]'") as caught:
        open_export(exported_tagger)
    assert_one_line_error(caught, exported_tagger)


def test_open_export_as_refuses_another_task(exported_tagger: Path):
    assert open_export_as(exported_tagger, "tagger", command="tag").task_name == "tagger"
    with pytest.raises(RnnlabError) as caught:
        open_export_as(exported_tagger, "seq2seq", command="translate")
    assert str(caught.value) == (
        f"{exported_tagger}: translate needs a seq2seq model, this export is a tagger model"
    )


def test_runtime_call_turns_only_the_runtimes_user_errors_into_rnnlab_errors():
    def fails(error: Exception) -> None:
        raise error

    assert runtime_call(lambda a, *, b: a + b, 1, b=2) == 3
    with pytest.raises(RnnlabError, match="^beam must be 1 or more, got 0$") as caught:
        runtime_call(fails, runtime.ExportError("beam must be 1 or more, got 0"))
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    # Anything else is a bug in rnnlab and keeps its type (and traceback).
    with pytest.raises(ZeroDivisionError):
        runtime_call(fails, ZeroDivisionError("bug"))


# ---------------------------------------------------------------------------------------------------
# Broken folders that still escape as tracebacks (bugs: each test states what should happen).


@pytest.mark.parametrize("shape", ["folder-is-a-file", "manifest-is-a-directory"])
def test_a_folder_that_is_not_a_folder_is_a_one_line_error(tmp_path: Path, shape: str):
    folder = tmp_path / "export"
    if shape == "folder-is-a-file":
        folder.write_text("not a folder\n", encoding="utf-8")
    else:
        (folder / MANIFEST).mkdir(parents=True)
    with pytest.raises(RnnlabError) as caught:
        open_export(folder)
    assert_one_line_error(caught, folder)


def _vocabulary_not_there(folder: Path) -> None:
    edit_manifest(folder, lambda m: m["vocab"].__setitem__("words", "vocab.missing.json"))


def _vocabulary_a_directory(folder: Path) -> None:
    (folder / "vocab.dir").mkdir()
    edit_manifest(folder, lambda m: m["vocab"].__setitem__("words", "vocab.dir"))


@pytest.mark.parametrize(
    "damage",
    [_vocabulary_not_there, _vocabulary_a_directory],
    ids=lambda damage: damage.__name__.strip("_"),
)
def test_a_vocabulary_that_cannot_be_read_is_a_one_line_error(
    folder: Path, damage: Callable[[Path], None]
):
    damage(folder)
    with pytest.raises(RnnlabError) as caught:
        open_export(folder)
    assert_one_line_error(caught, folder)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("vocab.words.json", {"tokens": "<pad><unk>abc"}),
        ("vocab.chars.json", {"tokens": {"<pad>": 0, "<unk>": 1}}),
        ("tags.json", {"tags": list(range(17))}),
    ],
    ids=["tokens-a-string", "tokens-a-mapping", "tags-numbers"],
)
def test_a_vocabulary_of_the_wrong_type_is_refused(folder: Path, name: str, content: Any):
    replace_file(folder, name, json.dumps(content).encode(), rehash=True)
    with pytest.raises(RnnlabError) as caught:
        open_export(folder)
    assert name in assert_one_line_error(caught, folder)


def _pad_not_a_number(folder: Path) -> None:
    edit_manifest(folder, lambda m: m["specials"].__setitem__("pad", "x"))


def _unknown_id_out_of_range(folder: Path) -> None:
    edit_manifest(folder, lambda m: m["specials"].__setitem__("unk", 10**6))


def _too_few_tags(folder: Path) -> None:
    replace_file(folder, "tags.json", json.dumps({"tags": []}).encode(), rehash=True)


def _one_tag_fewer(folder: Path) -> None:
    tags = json.loads((folder / "tags.json").read_text())["tags"]
    replace_file(folder, "tags.json", json.dumps({"tags": tags[:-1]}).encode(), rehash=True)


def _no_specials(folder: Path) -> None:
    edit_manifest(folder, lambda m: m.pop("specials"))


def _negative_pad(folder: Path) -> None:
    edit_manifest(folder, lambda m: m["specials"].__setitem__("pad", -1))


@pytest.mark.parametrize(
    "damage",
    [
        _pad_not_a_number,
        _unknown_id_out_of_range,
        _too_few_tags,
        _one_tag_fewer,
        _no_specials,
        _negative_pad,
    ],
    ids=lambda damage: damage.__name__.strip("_"),
)
def test_a_manifest_that_would_break_on_first_use_does_not_open(
    folder: Path, damage: Callable[[Path], None]
):
    damage(folder)
    with pytest.raises(RnnlabError) as caught:
        open_export(folder)
    assert_one_line_error(caught, folder)


def _graph_unlisted(folder: Path) -> None:
    edit_manifest(folder, lambda m: m["files"].pop("tagger.onnx"))


def _graph_outside(folder: Path) -> None:
    shutil.copyfile(folder / "tagger.onnx", folder.parent / "elsewhere.onnx")
    edit_manifest(folder, lambda m: m["graphs"].__setitem__("tagger", "../elsewhere.onnx"))


@pytest.mark.parametrize(
    "damage", [_graph_unlisted, _graph_outside], ids=lambda damage: damage.__name__.strip("_")
)
def test_every_graph_is_a_checked_file_of_the_folder(folder: Path, damage: Callable[[Path], None]):
    damage(folder)
    with pytest.raises(RnnlabError) as caught:
        open_export(folder)
    assert_one_line_error(caught, folder)
