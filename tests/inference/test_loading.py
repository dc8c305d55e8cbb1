"""``rnnlab.load`` and ``load_as``: which loader a directory gets, what the settings reach, and
broken run directories and export folders as one-line errors.

The directories are the session's tiny tagger run and its export, copied and damaged by hand
(weights missing, truncated or pickled, a config that is not YAML or names no task, vocabularies
missing or of the wrong type). The thread settings are read back from PyTorch and from ONNX
Runtime's session options, the overrides from the loaded object.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import rnnlab
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.inference import LanguageModel, Tagger, Translator, load_as
from rnnlab.inference.loading import directory_kind, load

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from rnnlab.rundir import open_run  # noqa: E402
from tests.cli_runner import threads_kept
from tests.pickles import CreatesAFileWhenUnpickled


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    """``load`` sets PyTorch's threads for the whole process; give them back after each test."""
    with threads_kept():
        yield


@pytest.fixture
def run_copy(tagger_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny tagger run that a test may damage."""
    return Path(shutil.copytree(tagger_run, tmp_path / "run"))


def assert_one_line_error(caught: pytest.ExceptionInfo[RnnlabError], path: Path) -> str:
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


# ---------------------------------------------------------------------------------------------------
# Which loader


def test_directory_kind_reads_what_a_directory_holds(tagger_run: Path, exported_tagger: Path):
    assert directory_kind(tagger_run) == "run"
    assert directory_kind(exported_tagger) == "export"


def test_a_manifest_makes_a_run_directory_an_export(run_copy: Path, exported_tagger: Path):
    shutil.copyfile(exported_tagger / "rnnlab-export.json", run_copy / "rnnlab-export.json")
    assert directory_kind(run_copy) == "export"


NOT_MODELS: list[tuple[str, str]] = [
    ("missing", "no such run directory"),
    ("file", "no such run directory"),
    ("empty", "not an rnnlab run directory (no config.yaml)"),
    ("config-is-a-directory", "not an rnnlab run directory (no config.yaml)"),
    ("manifest-is-a-directory", "not an rnnlab run directory (no config.yaml)"),
]


@pytest.mark.parametrize(("make", "expected"), NOT_MODELS, ids=[make for make, _ in NOT_MODELS])
def test_what_is_neither_a_run_nor_an_export_is_refused(tmp_path: Path, make: str, expected: str):
    path = tmp_path / "model"
    if make == "file":
        path.write_text("task: tagger\n", encoding="utf-8")
    elif make == "empty":
        path.mkdir()
    elif make == "config-is-a-directory":
        (path / "config.yaml").mkdir(parents=True)
    elif make == "manifest-is-a-directory":
        (path / "rnnlab-export.json").mkdir(parents=True)
    with pytest.raises(RnnlabError) as caught:
        directory_kind(path)
    assert assert_one_line_error(caught, path) == f"{path}: {expected}"
    with pytest.raises(RnnlabError) as loaded:
        load(path)
    assert str(loaded.value) == str(caught.value)


def test_an_export_loads_as_the_inference_class_of_its_task(exported_tagger: Path, tagger_run):
    exported = rnnlab.load(exported_tagger)
    assert isinstance(exported, Tagger) and exported.task_name == "tagger"
    assert exported.describe()["export"] == str(exported_tagger)
    words = [["The", "dog", "barked", "."], [], ["Is", "it", "late", "?"]]
    assert [s.tags for s in exported.tag(words)] == [s.tags for s in load(tagger_run).tag(words)]


# ---------------------------------------------------------------------------------------------------
# Settings


def test_threads_reach_pytorch_for_a_run(tagger_run: Path):
    load(tagger_run, threads=2)
    assert torch.get_num_threads() == 2
    # 0: the run's own train.num_threads (1 for the tiny tagger).
    assert open_run(tagger_run).task.config.train.num_threads == 1
    load(tagger_run, threads=0)
    assert torch.get_num_threads() == 1


def test_threads_reach_onnx_runtime_for_an_export(exported_tagger: Path):
    exported: Any = load(exported_tagger, threads=2)
    options = exported.runtime.session.get_session_options()
    assert options.intra_op_num_threads == 2


def test_overrides_change_the_run_config(tagger_run: Path):
    assert load(tagger_run, overrides=["decode.batch_size=7"]).batch_size == 7
    with pytest.raises(ConfigError, match="unknown config key decode.nope") as caught:
        load(tagger_run, overrides=["decode.nope=7"])
    assert_one_line_error(caught, tagger_run / "config.yaml")


def test_an_unknown_device_is_refused(tagger_run: Path):
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        load(tagger_run, device="tpu")


@pytest.mark.parametrize("kind", ["run", "export"])
def test_a_negative_thread_count_is_refused(tagger_run: Path, exported_tagger: Path, kind: str):
    with pytest.raises(RnnlabError, match="threads"):
        load(tagger_run if kind == "run" else exported_tagger, threads=-2)


def test_overrides_on_an_export_are_applied_or_refused(exported_tagger: Path):
    try:
        model = load(exported_tagger, overrides=["decode.batch_size=7"])
    except RnnlabError:
        return  # refusing them is as good as applying them
    assert model.batch_size == 7


# ---------------------------------------------------------------------------------------------------
# Broken run directories


def _weights(run: Path) -> list[Path]:
    return sorted(run.rglob("model.safetensors"))


def _no_weights(run: Path) -> None:
    for weights in _weights(run):
        weights.unlink()


def _weights_truncated(run: Path) -> None:
    for weights in _weights(run):
        weights.write_bytes(weights.read_bytes()[:200])


def _weights_missing_a_tensor(run: Path) -> None:
    for weights in _weights(run):
        tensors = load_file(str(weights))
        with safe_open(str(weights), framework="pt") as handle:
            metadata = handle.metadata()
        tensors.pop(sorted(tensors)[0])
        save_file(tensors, str(weights), metadata=metadata)


def _no_config(run: Path) -> None:
    (run / "config.yaml").unlink()


def _config_not_yaml(run: Path) -> None:
    (run / "config.yaml").write_text("task: [tagger\n", encoding="utf-8")


def _config_a_list(run: Path) -> None:
    (run / "config.yaml").write_text("- tagger\n", encoding="utf-8")


def _config_empty(run: Path) -> None:
    (run / "config.yaml").write_text("", encoding="utf-8")


def _config_not_utf8(run: Path) -> None:
    (run / "config.yaml").write_bytes(b"task: tagger\nmodel:\n  cell: \xff\n")


def _vocabulary_missing(run: Path) -> None:
    (run / "vocab.words.json").unlink()


def _vocabulary_a_string(run: Path) -> None:
    (run / "vocab.words.json").write_text(json.dumps({"tokens": "abc"}), encoding="utf-8")


def _tags_missing(run: Path) -> None:
    (run / "tags.json").unlink()


BROKEN_RUNS: list[tuple[Callable[[Path], None], str, str]] = [
    (_no_weights, "", "no checkpoint found"),
    (_weights_truncated, "best/model.safetensors", "not a readable safetensors checkpoint"),
    (_weights_missing_a_tensor, "best/model.safetensors", "weights do not fit the configured"),
    (_no_config, "", "not an rnnlab run directory (no config.yaml)"),
    (_config_not_yaml, "config.yaml", "invalid YAML"),
    (_config_a_list, "config.yaml", "expected a mapping of config sections"),
    (_config_empty, "config.yaml", "unknown task ''"),
    (_config_not_utf8, "config.yaml", "not UTF-8 text"),
    (_vocabulary_missing, "vocab.words.json", "vocabulary file is missing"),
    (_vocabulary_a_string, "vocab.words.json", '"tokens" must be a list of strings'),
    (_tags_missing, "tags.json", "tag set file is missing"),
]


@pytest.mark.parametrize(
    ("damage", "where", "expected"),
    BROKEN_RUNS,
    ids=[damage.__name__.strip("_") for damage, _, _ in BROKEN_RUNS],
)
def test_a_broken_run_directory_is_a_one_line_error(
    run_copy: Path, damage: Callable[[Path], None], where: str, expected: str
):
    damage(run_copy)
    with pytest.raises(RnnlabError) as caught:
        load(run_copy, device="cpu")
    message = assert_one_line_error(caught, run_copy / where if where else run_copy)
    assert expected in message


def test_the_last_weights_stand_in_for_missing_best_ones(run_copy: Path, tagger_run: Path):
    shutil.rmtree(run_copy / "best")
    words = [["The", "dog", "barked", "."]]
    assert isinstance(load(run_copy), Tagger)
    last = open_run(tagger_run, which="last")
    assert load(run_copy).tag(words)[0].tags == last.task.tag(last.model, words, last.device)[0]


def test_pickled_weights_are_refused_unread(run_copy: Path):
    marker = run_copy.parent / "unpickled"
    for weights in _weights(run_copy):
        torch.save(
            {"state": CreatesAFileWhenUnpickled(marker)}, weights
        )  # a PyTorch checkpoint: a pickle
    with pytest.raises(RnnlabError, match="not a readable safetensors checkpoint") as caught:
        load(run_copy)
    assert_one_line_error(caught, run_copy)
    assert not marker.exists()


def test_load_as_checks_the_task_before_reading_weights(run_copy: Path):
    _no_weights(run_copy)  # the task is refused first: the weights would be a second error
    with pytest.raises(RnnlabError) as caught:
        load_as(Translator, run_copy, command="translate")
    assert str(caught.value) == f"{run_copy}: translate needs a seq2seq run, this is a tagger run"


# ---------------------------------------------------------------------------------------------------
# Exports through load


def test_load_as_refuses_an_export_of_another_task(exported_tagger: Path):
    assert isinstance(load_as(Tagger, exported_tagger, command="tag"), Tagger)
    with pytest.raises(RnnlabError) as caught:
        load_as(LanguageModel, exported_tagger, command="generate")
    assert str(caught.value) == (
        f"{exported_tagger}: generate needs a lm model, this export is a tagger model"
    )


@pytest.fixture
def export_copy(exported_tagger: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported_tagger, tmp_path / "export"))


def test_a_broken_export_is_a_one_line_error(export_copy: Path, capsys):
    from rnnlab.cli import main

    (export_copy / "rnnlab-export.json").write_text("{", encoding="utf-8")
    with pytest.raises(RnnlabError, match="not a valid manifest") as caught:
        load(export_copy)
    assert_one_line_error(caught, export_copy)
    assert main(["tag", str(export_copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnlab: error: {export_copy}") and err.count("\n") == 1


def test_a_manifest_naming_a_missing_vocabulary_is_a_cli_error(export_copy: Path, capsys):
    from rnnlab.cli import main

    manifest = json.loads((export_copy / "rnnlab-export.json").read_text(encoding="utf-8"))
    manifest["vocab"]["tags"] = "tags.v2.json"
    (export_copy / "rnnlab-export.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert main(["tag", str(export_copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnlab: error: ") and err.count("\n") == 1
