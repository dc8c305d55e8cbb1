"""``rnnlab.data.bundled``: where the shipped corpora are, and that every shipped file is readable.

References: the package location found by ``importlib.resources`` (not by the module's own
``__file__`` arithmetic), ``os.path`` joining, the ``gzip`` module and UTF-8 decoding of the raw
bytes, and the ``conllu`` library. ``tests/cli/test_bundled_data.py`` checks that the task defaults
point into this folder and that a wheel ships it; this file checks the path function itself and the
contents the readers rely on (valid gzip, UTF-8, two-column TSV, parseable CoNLL-U).
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
from pathlib import Path

import conllu
import pytest

from rnnlab.data.bundled import BUNDLED_DIR, bundled_path
from rnnlab.data.conllu_io import read_conllu
from rnnlab.data.io import read_lines

PACKAGE_DIR = Path(str(importlib.resources.files("rnnlab"))).resolve()
SHIPPED = sorted(path for path in BUNDLED_DIR.rglob("*") if path.is_file())
CORPORA = [path for path in SHIPPED if path.name.split(".")[0] in ("train", "valid", "test", "dev")]


def relative(path: Path) -> str:
    return path.relative_to(BUNDLED_DIR).as_posix()


def raw_text(path: Path) -> str:
    """The file's text by the reference libraries alone: gunzip if named ``.gz``, decode UTF-8."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8")


def test_bundled_dir_is_the_package_folder() -> None:
    assert BUNDLED_DIR == PACKAGE_DIR / "bundled"
    assert BUNDLED_DIR.is_absolute() and BUNDLED_DIR.is_dir()


def test_the_corpora_the_task_defaults_name_are_shipped() -> None:
    # The relative names written in the three task configs' defaults.
    defaults = [
        "fra-eng/train.tsv.gz",
        "fra-eng/valid.tsv",
        "timemachine/train.txt",
        "timemachine/valid.txt",
        "ud-ewt-sample/train.conllu",
        "ud-ewt-sample/dev.conllu",
    ]
    for name in defaults:
        path = bundled_path(name)
        assert isinstance(path, str)
        assert path == os.path.join(str(PACKAGE_DIR), "bundled", *name.split("/"))
        assert Path(path).is_absolute() and Path(path).is_file(), path


def test_bundled_path_does_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = bundled_path("fra-eng/valid.tsv")
    monkeypatch.chdir(tmp_path)
    assert bundled_path("fra-eng/valid.tsv") == here
    assert Path(here).is_file()


def test_every_shipped_corpus_is_present() -> None:
    assert {relative(path) for path in CORPORA} == {
        "fra-eng/train.tsv.gz",
        "fra-eng/valid.tsv",
        "fra-eng/test.tsv",
        "timemachine/train.txt",
        "timemachine/valid.txt",
        "ud-ewt-sample/train.conllu",
        "ud-ewt-sample/dev.conllu",
    }


@pytest.mark.parametrize("path", SHIPPED, ids=relative)
def test_every_shipped_file_is_utf8_text_the_line_reader_reads_exactly(path: Path) -> None:
    text = raw_text(path)  # raises if the gzip stream or the UTF-8 is broken
    assert not text.startswith("\ufeff") and "\r" not in text
    assert text.endswith("\n")
    expected = list(enumerate(text[:-1].split("\n"), start=1))
    if path.suffix == ".gz":  # the big one: compare a count and both ends, not every line
        lines = list(read_lines(path))
        assert len(lines) == len(expected)
        assert lines[:50] == expected[:50] and lines[-50:] == expected[-50:]
    else:
        assert list(read_lines(path)) == expected


@pytest.mark.parametrize("name", ["fra-eng/train.tsv.gz", "fra-eng/valid.tsv", "fra-eng/test.tsv"])
def test_sentence_pairs_have_two_non_empty_columns(name: str) -> None:
    for number, line in enumerate(raw_text(BUNDLED_DIR / name).splitlines(), start=1):
        columns = line.split("\t")
        assert len(columns) == 2, (name, number)
        assert columns[0].strip() and columns[1].strip(), (name, number)


@pytest.mark.parametrize("name", ["ud-ewt-sample/train.conllu", "ud-ewt-sample/dev.conllu"])
def test_treebank_sample_parses_like_the_conllu_library(name: str) -> None:
    path = BUNDLED_DIR / name
    expected = [
        [str(token["form"]) for token in sentence if isinstance(token["id"], int)]
        for sentence in conllu.parse(raw_text(path))
    ]
    assert expected and all(expected)
    assert [s.words for s in read_conllu(path) if s.words] == expected
