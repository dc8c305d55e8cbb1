"""Checkpoints: safetensors weights and trainer state, written atomically, never pickled.

Layout inside a run directory::

    RUN/last/model.safetensors           weights after the latest checkpointed step
    RUN/last/trainer_state.safetensors   optimizer moments, RNG states, carried tensors;
                                         the JSON metadata (step, epoch, scheduler…) rides in the
                                         safetensors header, so one file holds one consistent state
    RUN/best/model.safetensors           weights with the best validation score so far

A checkpoint directory is written under a temporary name and renamed into place
(``rnnlab.atomic.building_dir``), so a process killed at any moment, or a disk that fills up, leaves
either the previous checkpoint or the new one, never a mixture. Between the two renames of a
replacement, only ``RUN/.last.old`` exists; ``load`` falls back to it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from rnnlab.atomic import building_dir
from rnnlab.errors import RnnlabError

MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer_state.safetensors"
FORMAT_VERSION = 1


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    # safetensors refuses shared or non-contiguous storage; clone to plain CPU tensors.
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(plain, str(path), metadata=metadata)
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def model_metadata(model_meta: dict[str, Any]) -> dict[str, str]:
    return {"format_version": str(FORMAT_VERSION), "rnnlab": json.dumps(model_meta, sort_keys=True)}


def save_model(target_dir: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write ``target_dir/model.safetensors`` atomically (used for ``best``)."""
    with building_dir(target_dir, SafetensorError) as build:
        _write_tensors(build / MODEL_FILE, dict(model.state_dict()), model_metadata(meta))


# ---------------------------------------------------------------------------------------------------
# Trainer state: the optimizer's nested state_dict split into tensors and JSON.


def flatten_state(state: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list with a reference, collecting tensors by key."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state
        return {"__tensor__": prefix}
    if isinstance(state, dict):
        return {str(k): flatten_state(v, f"{prefix}.{k}", tensors) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(state)]
    return state


def unflatten_state(state: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(state, dict):
        if set(state) == {"__tensor__"}:
            return tensors[state["__tensor__"]]
        return {k: unflatten_state(v, tensors) for k, v in state.items()}
    if isinstance(state, list):
        return [unflatten_state(v, tensors) for v in state]
    return state


def optimizer_state_from_json(state: dict[str, Any]) -> dict[str, Any]:
    """JSON turned the optimizer's integer parameter ids into strings; turn them back."""
    return {**state, "state": {int(k): v for k, v in state["state"].items()}}


@dataclass
class Checkpoint:
    """What ``load_last`` returns: weights plus the trainer's own JSON and tensors."""

    model_state: dict[str, torch.Tensor]
    model_meta: dict[str, Any]
    trainer_meta: dict[str, Any]
    trainer_tensors: dict[str, torch.Tensor]
    directory: Path
    """Where it was read from (``RUN/last``, or ``RUN/.last.old``), for messages."""


def save_last(
    run_dir: Path,
    model: nn.Module,
    model_meta: dict[str, Any],
    trainer_meta: dict[str, Any],
    trainer_tensors: dict[str, torch.Tensor],
) -> None:
    """Write ``RUN/last`` (weights + trainer state) as one atomic unit.

    A failed write (a full disk) raises ``WriteFailed`` naming ``RUN/last`` and leaves the previous
    checkpoint in place; the half-written scratch directory is removed.
    """
    with building_dir(run_dir / "last", SafetensorError) as build:
        _write_tensors(build / MODEL_FILE, dict(model.state_dict()), model_metadata(model_meta))
        _write_tensors(
            build / STATE_FILE,
            trainer_tensors,
            {"format_version": str(FORMAT_VERSION), "trainer": json.dumps(trainer_meta)},
        )


def _checkpoint_dir(run_dir: Path, name: str) -> Path | None:
    for candidate in (run_dir / name, run_dir / f".{name}.old"):
        if (candidate / MODEL_FILE).is_file():
            return candidate
    return None


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of a safetensors file; a damaged file is a user error."""
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise RnnlabError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    return tensors, metadata


def load_model_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, metadata = read_safetensors(path)
    try:
        meta = json.loads(metadata.get("rnnlab", "{}"))
    except json.JSONDecodeError:
        raise RnnlabError(f"{path}: checkpoint metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise RnnlabError(f"{path}: checkpoint metadata is not a JSON object")
    return tensors, meta


def find_weights(run_dir: Path, which: str = "best") -> Path:
    """Path of ``best`` weights (falling back to ``last``), or of ``last``."""
    order = ["best", "last"] if which == "best" else ["last"]
    for name in order:
        found = _checkpoint_dir(run_dir, name)
        if found is not None:
            return found / MODEL_FILE
    raise RnnlabError(f"{run_dir}: no checkpoint found (expected {run_dir / 'last' / MODEL_FILE})")


def load_last(run_dir: Path) -> Checkpoint:
    """The latest checkpoint with trainer state, for ``--resume``."""
    found = _checkpoint_dir(run_dir, "last")
    if found is None or not (found / STATE_FILE).is_file():
        raise RnnlabError(f"{run_dir}: no resumable checkpoint (missing last/{STATE_FILE})")
    model_state, model_meta = load_model_file(found / MODEL_FILE)
    tensors, metadata = read_safetensors(found / STATE_FILE)
    try:
        trainer_meta = json.loads(metadata["trainer"])
    except (KeyError, json.JSONDecodeError):
        raise RnnlabError(f"{found / STATE_FILE}: trainer state metadata is missing") from None
    if not isinstance(trainer_meta, dict):
        raise RnnlabError(f"{found / STATE_FILE}: trainer state metadata is not a JSON object")
    return Checkpoint(model_state, model_meta, trainer_meta, tensors, found)
