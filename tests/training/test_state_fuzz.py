"""Damaged safetensors files and trainer state give a one-line ``RnnlabError``, never a traceback.

Safetensors files are generated around the format (8-byte header length, JSON header, data): lengths
that do and do not fit, headers that are JSON of every shape or not JSON at all, and metadata of every
type. Trainer state starts from a real checkpoint whose JSON is then mutated key by key.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from rnnlab.config import TrainConfig
from rnnlab.errors import RnnlabError
from rnnlab.training import checkpoint as ckpt
from rnnlab.training.trainer import Trainer
from tests.data.fuzz import FUZZ, FUZZ_LONG, json_values, mutated, text

tensor_entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "I64", "BOOL", "U8", "XX", ""]),
        "shape": st.lists(st.integers(-2, 5), max_size=3),
        "data_offsets": st.lists(st.integers(-4, 80), min_size=0, max_size=3),
    }
)


@st.composite
def safetensors_bytes(draw: st.DrawFn) -> bytes:
    header: dict[str, Any] = draw(st.dictionaries(text, tensor_entries | json_values, max_size=3))
    if draw(st.booleans()):
        header["__metadata__"] = draw(
            st.dictionaries(
                st.sampled_from(["rnnlab", "trainer", "format_version", "x"]),
                json_values.map(json.dumps) | json_values,
                max_size=3,
            )
        )
    raw = (
        json.dumps(header).encode()
        if draw(st.booleans())
        else draw(st.binary(max_size=80) | text.map(lambda t: t.encode("utf-8", "surrogatepass")))
    )
    length = len(raw) if draw(st.booleans()) else draw(st.integers(0, 2**64 - 1))
    body = draw(st.binary(max_size=64))
    data = struct.pack("<Q", length) + raw + body
    return data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


def assert_one_line_error_naming(call, path: Path) -> None:
    try:
        call()
    except RnnlabError as exc:
        message = str(exc)
        assert message.startswith(str(path)), message
        assert "\n" not in message and "\r" not in message, message


def check_safetensors(folder: Path, data: bytes) -> None:
    (folder / "last").mkdir(exist_ok=True)
    for name in (ckpt.MODEL_FILE, ckpt.STATE_FILE):
        (folder / "last" / name).write_bytes(data)
    assert_one_line_error_naming(
        lambda: ckpt.load_model_file(folder / "last" / ckpt.MODEL_FILE), folder
    )
    assert_one_line_error_naming(lambda: ckpt.load_last(folder), folder)


@FUZZ
@given(data=safetensors_bytes())
def test_any_safetensors_file(tmp_path: Path, data: bytes):
    check_safetensors(tmp_path, data)


class _Task:
    """What the trainer asks of a task to save and restore a checkpoint, nothing more."""

    primary_metric = "valid_loss"

    def model_meta(self) -> dict[str, Any]:
        return {"task": "fuzz"}


def trainer_for(run: Path) -> Trainer:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    trainer = Trainer(
        task=_Task(),  # type: ignore[arg-type]
        model=model,
        config=TrainConfig(),
        run_dir=run,
        device=torch.device("cpu"),
    )
    model(torch.randn(4, 3)).sum().backward()
    trainer.optimizer.step()
    return trainer


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    run = tmp_path_factory.mktemp("state")
    trainer_for(run).save_checkpoint()
    path = run / "last" / ckpt.STATE_FILE
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["trainer"])
    return meta, load_file(str(path))


def check_trainer_state(folder: Path, meta: Any, tensors: dict[str, torch.Tensor]) -> None:
    trainer = trainer_for(folder)
    trainer.save_checkpoint()
    save_file(
        tensors,
        str(folder / "last" / ckpt.STATE_FILE),
        metadata={"format_version": "1", "trainer": json.dumps(meta)},
    )
    assert_one_line_error_naming(trainer.load_checkpoint, folder)


@FUZZ
@given(data=st.data())
def test_any_trainer_state(tmp_path: Path, saved_state, data):
    meta, tensors = saved_state
    keep = data.draw(st.sets(st.sampled_from(sorted(tensors))))
    check_trainer_state(tmp_path, data.draw(mutated(meta)), {k: tensors[k] for k in keep})


@pytest.mark.slow
@FUZZ_LONG
@given(data=st.data())
def test_state_files_long(tmp_path: Path, saved_state, data):
    check_safetensors(tmp_path, data.draw(safetensors_bytes()))
    meta, tensors = saved_state
    keep = data.draw(st.sets(st.sampled_from(sorted(tensors))))
    check_trainer_state(tmp_path, data.draw(mutated(meta)), {k: tensors[k] for k in keep})


def test_python_random_state_out_of_range(tmp_path: Path, saved_state):
    """Found by the long profile: random.setstate raised OverflowError on a negative word."""
    meta, tensors = saved_state
    check_trainer_state(tmp_path, {**meta, "python_random": [3, [-1] * 625, None]}, tensors)
