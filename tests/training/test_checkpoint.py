"""Checkpoints are atomic and contain no pickles."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from torch import nn

from rnnlab.atomic import WriteFailed
from rnnlab.training import checkpoint as ckpt


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def test_save_and_load_last_round_trip(tmp_path: Path):
    model = _model(0)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors: dict[str, torch.Tensor] = {}
    meta = {"optimizer": ckpt.flatten_state(opt.state_dict(), "optim", tensors), "step": 1}
    ckpt.save_last(tmp_path, model, {"task": "x"}, meta, tensors)
    loaded = ckpt.load_last(tmp_path)
    assert loaded.trainer_meta["step"] == 1 and loaded.model_meta == {"task": "x"}
    restored = ckpt.optimizer_state_from_json(
        ckpt.unflatten_state(loaded.trainer_meta["optimizer"], loaded.trainer_tensors)
    )
    opt2 = torch.optim.Adam(_model(1).parameters())
    opt2.load_state_dict(restored)
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(opt2.state_dict()["state"][0][key], opt.state_dict()["state"][0][key])


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path: Path, monkeypatch):
    first = _model(0)
    ckpt.save_last(tmp_path, first, {"v": 1}, {"step": 1}, {})
    second = _model(1)

    def dies_halfway(tensors, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_file", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_last(tmp_path, second, {"v": 2}, {"step": 2}, {})
    loaded = ckpt.load_last(tmp_path)
    assert loaded.trainer_meta["step"] == 1
    assert torch.equal(loaded.model_state["weight"], first.weight.detach())


def test_interrupted_swap_falls_back_to_old_directory(tmp_path: Path):
    model = _model(0)
    ckpt.save_last(tmp_path, model, {}, {"step": 5}, {})
    # Simulate death between the two renames of a replacement.
    (tmp_path / "last").rename(tmp_path / ".last.old")
    assert ckpt.load_last(tmp_path).trainer_meta["step"] == 5


def test_run_files_are_not_pickles(tmp_path: Path):
    ckpt.save_last(tmp_path, _model(0), {}, {"step": 0}, {"rng": torch.get_rng_state()})
    for path in (tmp_path / "last").iterdir():
        data = path.read_bytes()
        # safetensors: an 8-byte little-endian header length, then a JSON header, then raw bytes.
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        assert "__metadata__" in header, path


def save_file_on_a_full_disk(tensors, path, metadata=None):
    """The disk fills up half-way through the file (safetensors replaces a file it writes, so a
    link to /dev/full does not reach it; the failure is simulated)."""
    data = save(tensors, metadata=metadata)
    Path(path).write_bytes(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_full_disk_keeps_previous_checkpoint_and_names_the_path(tmp_path: Path, monkeypatch):
    first = _model(0)
    ckpt.save_last(tmp_path, first, {"v": 1}, {"step": 1}, {})
    ckpt.save_model(tmp_path / "best", first, {"v": 1})
    monkeypatch.setattr(ckpt, "save_file", save_file_on_a_full_disk)
    for write, target in (
        (lambda: ckpt.save_last(tmp_path, _model(1), {"v": 2}, {"step": 2}, {}), "last"),
        (lambda: ckpt.save_model(tmp_path / "best", _model(1), {"v": 2}), "best"),
    ):
        with pytest.raises(WriteFailed) as exc:
            write()
        message = str(exc.value)
        assert message.startswith(f"{tmp_path / target}: cannot write (no space left on device)")
        assert "\n" not in message
    loaded = ckpt.load_last(tmp_path)
    assert loaded.trainer_meta["step"] == 1
    assert torch.equal(loaded.model_state["weight"], first.weight.detach())
    state, meta = ckpt.load_model_file(tmp_path / "best" / ckpt.MODEL_FILE)
    assert meta == {"v": 1} and torch.equal(state["weight"], first.weight.detach())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "last"]  # no torn scratch dirs
