"""Any YAML config file or ``--set`` value gives a typed config or a one-line ``ConfigError``.

Besides arbitrary bytes, configs are generated *from the schema*: every section and key of every
task, with values of every YAML type, so the strict type checks themselves are exercised.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from rnnlab.config import load_config
from rnnlab.errors import RnnlabError
from rnnlab.rundir import read_run_config
from rnnlab.tasks import TASKS
from tests.data.fuzz import FUZZ, FUZZ_LONG, file_bytes, text

CONFIG_CLASSES = [task.config_class for task in TASKS.values()]


def schema_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys += schema_keys(type(default), f"{prefix}{f.name}.")
        keys.append(f"{prefix}{f.name}")
    return keys


KEYS = sorted({key for cls in CONFIG_CLASSES for key in schema_keys(cls)})

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.sampled_from(["seq2seq", "lm", "tagger", "gru", "lstm", "none", "auto", "1e-4"]),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3)
)


@st.composite
def schema_documents(draw: st.DrawFn) -> dict:
    """A nested mapping over real (and a few misspelt) config keys with values of any type."""
    document: dict = {}
    for key in draw(st.lists(st.sampled_from([*KEYS, "train.epoch", "dta.train"]), max_size=6)):
        node = document
        *sections, last = key.split(".")
        for section in sections:
            child = node.setdefault(section, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[last] = draw(values)
    if draw(st.booleans()):
        document["task"] = draw(st.sampled_from([*TASKS, "", "other"]))
    return document


def assert_config_or_one_line_error(load, path: Path | None = None) -> None:
    try:
        load()
    except RnnlabError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        assert path is None or message.startswith(str(path)), message


def check_file(folder: Path, data: bytes) -> None:
    path = folder / "config.yaml"
    path.write_bytes(data)
    for cls in CONFIG_CLASSES:
        assert_config_or_one_line_error(lambda cls=cls: load_config(cls, path), path)
    assert_config_or_one_line_error(lambda: read_run_config(folder), folder)


@FUZZ
@given(data=file_bytes())
def test_any_config_file(tmp_path: Path, data: bytes):
    check_file(tmp_path, data)


@FUZZ
@given(document=schema_documents())
def test_configs_from_the_schema(tmp_path: Path, document: dict):
    check_file(tmp_path, yaml.safe_dump(document, allow_unicode=True).encode("utf-8"))


@FUZZ
@given(
    overrides=st.lists(
        st.one_of(text, st.sampled_from(KEYS).map(lambda k: k + "=")).flatmap(
            lambda head: text.map(lambda tail: head + tail)
        ),
        max_size=4,
    )
)
def test_any_set_values(overrides: list[str]):
    for cls in CONFIG_CLASSES:
        assert_config_or_one_line_error(lambda cls=cls: load_config(cls, None, overrides))


@pytest.mark.slow
@FUZZ_LONG
@given(data=file_bytes(), document=schema_documents())
def test_config_files_long(tmp_path: Path, data: bytes, document: dict):
    check_file(tmp_path, data)
    check_file(tmp_path, yaml.safe_dump(document, allow_unicode=True).encode("utf-8"))


def test_unknown_key_with_a_line_break_stays_on_one_line(tmp_path: Path):
    """Found by the long profile: the key was printed raw, newline and all."""
    check_file(tmp_path, yaml.safe_dump({"data": {"\n": None}}).encode("utf-8"))
