"""The built-in defaults train on data shipped inside the package, from any working directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from rnnlab.data.bundled import BUNDLED_DIR
from rnnlab.rundir import load_task_config

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "data.max_examples=200",
    "model.embed_size=8",
    "model.hidden_size=8",
    "model.num_layers=1",
    "train.max_steps=2",
    "train.epochs=1",
    "train.num_threads=1",
]


@pytest.mark.parametrize("task", ["seq2seq", "lm", "tagger"])
def test_defaults_point_into_the_package(task):
    config = load_task_config(task, None)
    for path in (config.data.train, config.data.valid):
        assert Path(path).is_absolute() and Path(path).is_file()
        assert Path(path).is_relative_to(BUNDLED_DIR)


def test_training_with_defaults_from_another_directory(tmp_path):
    argv = [sys.executable, "-m", "rnnlab", "train", "seq2seq", "--out", "run"]
    for item in TINY:
        argv += ["--set", item]
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert Path(saved["data"]["train"]) == BUNDLED_DIR / "fra-eng" / "train.tsv.gz"
    assert Path(saved["data"]["valid"]) == BUNDLED_DIR / "fra-eng" / "valid.tsv"
    assert "without validation" not in result.stderr


def test_repository_data_folder_is_the_bundled_one():
    assert (REPO / "data").resolve() == BUNDLED_DIR


def test_wheel_ships_the_bundled_data(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("rnnlab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for relative in (
        "fra-eng/train.tsv.gz",
        "fra-eng/valid.tsv",
        "fra-eng/test.tsv",
        "timemachine/train.txt",
        "ud-ewt-sample/train.conllu",
    ):
        assert f"rnnlab/bundled/{relative}" in names
