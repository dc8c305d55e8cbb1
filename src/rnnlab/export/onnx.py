"""Export a trained translator to ONNX: an encoder graph, a decoder-step graph and a JSON manifest.

The two graphs are the step protocol of ``rnnlab.models.seq2seq`` frozen into files::

    start.onnx   src (B, S) int64, src_lengths (B,) int64  →  state.0 … state.K-1
    step.onnx    tokens (B,) int64, state.0 … state.K-1   →  log_probs (B, V), next.0 … next.K-1

A decoder state (a dataclass of tensors and (h, c) tuples) is flattened into K tensors in field
order; the manifest records each one's name and batch axis, so a runtime can drop finished sentences
from every state tensor without knowing what the state means. A new decoder (attention) only has to
keep ``start``/``step`` working: its state flattens the same way.

The output folder holds everything a translator needs — the graphs, both vocabularies, the tokenizer
settings and a copy of ``runtime.py`` — so ``python EXPORT/runtime.py EXPORT`` translates stdin
without rnnlab or PyTorch installed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnlab.atomic import building_dir, reported_as
from rnnlab.errors import RnnlabError

MANIFEST = "rnnlab-export.json"
FORMAT_VERSION = 1
OPSET = 17

# ---------------------------------------------------------------------------------------------------
# Flattening a decoder state to a list of tensors and back.
# A structure is ("tensor",) | ("tuple", [structures]) | ("dataclass", cls, [(field, structure)])
# | ("const", value).


def flatten_state(state: Any) -> tuple[list[Tensor], Any]:
    tensors: list[Tensor] = []

    def walk(node: Any) -> Any:
        if isinstance(node, Tensor):
            tensors.append(node)
            return ("tensor",)
        if isinstance(node, tuple | list):
            return ("tuple", [walk(x) for x in node])
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            return (
                "dataclass",
                type(node),
                [(f.name, walk(getattr(node, f.name))) for f in dataclasses.fields(node)],
            )
        return ("const", node)

    return tensors, walk(state)


def unflatten_state(structure: Any, tensors: list[Tensor] | tuple[Tensor, ...]) -> Any:
    items = iter(tensors)

    def build(node: Any) -> Any:
        kind = node[0]
        if kind == "tensor":
            return next(items)
        if kind == "tuple":
            return tuple(build(x) for x in node[1])
        if kind == "dataclass":
            return node[1](**{name: build(child) for name, child in node[2]})
        return node[1]

    return build(structure)


def state_names(structure: Any) -> list[str]:
    """Readable names of the flattened tensors: ``hidden.0``, ``context`` …"""
    names: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        kind = node[0]
        if kind == "tensor":
            names.append(prefix or "state")
        elif kind == "tuple":
            for i, child in enumerate(node[1]):
                walk(child, f"{prefix}.{i}" if prefix else str(i))
        elif kind == "dataclass":
            for name, child in node[2]:
                walk(child, f"{prefix}.{name}" if prefix else name)

    walk(structure, "")
    return names


# ---------------------------------------------------------------------------------------------------
# The two graphs.


class StartGraph(nn.Module):
    """``model.start`` with a flat tuple of state tensors as output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        tensors, _ = flatten_state(self.model.start(src, src_lengths))
        return tuple(tensors)


class StepGraph(nn.Module):
    """``model.step`` over flat state tensors: (tokens, *state) → (log_probs, *next_state)."""

    def __init__(self, model: nn.Module, structure: Any) -> None:
        super().__init__()
        self.model = model
        self.structure = structure

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        log_probs, next_state = self.model.step(tokens, unflatten_state(self.structure, state))
        tensors, _ = flatten_state(next_state)
        return (log_probs, *tensors)


def batch_axes(model: nn.Module, src_vocab_size: int) -> list[int]:
    """Which axis of each state tensor is the batch: the one that changes with the batch size."""
    shapes = []
    for batch in (2, 3):
        src = torch.full((batch, 4), min(4, src_vocab_size - 1), dtype=torch.long)
        tensors, _ = flatten_state(model.start(src, torch.full((batch,), 4, dtype=torch.long)))
        shapes.append([t.shape for t in tensors])
    axes = []
    for two, three in zip(*shapes, strict=True):
        changed = [i for i, (a, b) in enumerate(zip(two, three, strict=True)) if a != b]
        if len(changed) != 1:
            raise ValueError(f"cannot tell the batch axis of a state tensor of shape {tuple(two)}")
        axes.append(changed[0])
    return axes


def _export(module: nn.Module, args: tuple[Any, ...], path: Path, **kwargs: Any) -> None:
    with warnings.catch_warnings():
        # The TorchScript exporter is the one that maps packed sequences to ONNX's sequence_lens;
        # its deprecation warnings and tracer notes are not actionable here.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), opset_version=OPSET, dynamo=False, **kwargs)


def export_seq2seq(task: Any, model: nn.Module, out_dir: str | Path) -> Path:
    """Write ``start.onnx``, ``step.onnx``, the manifest and ``runtime.py`` into ``out_dir``.

    The folder is assembled beside ``out_dir`` and swapped in whole, so a failed export (a full
    disk: ``WriteFailed`` naming ``out_dir``) leaves a previous export there usable.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not is_export_dir(out):
        raise RnnlabError(f"{out}: exists and is not an rnnlab export; refusing to replace it")
    with reported_as(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    with building_dir(out) as build:
        _write_export(task, model, build)
    return out


@torch.no_grad()
def _write_export(task: Any, model: nn.Module, out: Path) -> None:
    model = model.to("cpu").eval()
    src_vocab, tgt_vocab = task.src_vocab, task.tgt_vocab
    # Example inputs: two sentences of different lengths so the packed path is traced.
    src = torch.tensor([[4, 5, 6, src_vocab.eos_id], [5, src_vocab.eos_id, 0, 0]])
    src = src.clamp(max=len(src_vocab) - 1)
    src_lengths = torch.tensor([4, 2])
    state = model.start(src, src_lengths)
    tensors, structure = flatten_state(state)
    names = state_names(structure)
    state_in = [f"state.{i}" for i in range(len(tensors))]
    state_out = [f"next.{i}" for i in range(len(tensors))]
    axes = batch_axes(model, len(src_vocab))

    _export(
        StartGraph(model),
        (src, src_lengths),
        out / "start.onnx",
        input_names=["src", "src_lengths"],
        output_names=state_in,
        dynamic_axes={
            "src": {0: "batch", 1: "src_len"},
            "src_lengths": {0: "batch"},
            **{name: {axis: "batch"} for name, axis in zip(state_in, axes, strict=True)},
        },
    )
    tokens = torch.full((2,), tgt_vocab.bos_id, dtype=torch.long)
    _export(
        StepGraph(model, structure),
        (tokens, *tensors),
        out / "step.onnx",
        input_names=["tokens", *state_in],
        output_names=["log_probs", *state_out],
        dynamic_axes={
            "tokens": {0: "batch"},
            "log_probs": {0: "batch"},
            **{name: {axis: "batch"} for name, axis in zip(state_in, axes, strict=True)},
            **{name: {axis: "batch"} for name, axis in zip(state_out, axes, strict=True)},
        },
    )
    config = task.config
    manifest = {
        "format": "rnnlab-seq2seq-onnx",
        "format_version": FORMAT_VERSION,
        "opset": OPSET,
        "start": "start.onnx",
        "step": "step.onnx",
        "state": [
            {"name": name, "input": i, "output": o, "batch_axis": axis}
            for name, i, o, axis in zip(names, state_in, state_out, axes, strict=True)
        ],
        "src_vocab": list(src_vocab.itos),
        "tgt_vocab": list(tgt_vocab.itos),
        "specials": {
            "pad": src_vocab.pad_id,
            "unk": src_vocab.unk_id,
            "bos": tgt_vocab.bos_id,
            "eos": tgt_vocab.eos_id,
        },
        "tokenizer": {
            "kind": "word",
            "preprocess": config.data.preprocess,
            "max_len": config.data.max_len,
        },
        "decode": {"max_len": config.decode.max_len, "batch_size": config.decode.batch_size},
        "model": dataclasses.asdict(config.model),
    }
    (out / MANIFEST).write_text(
        json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    shutil.copyfile(Path(__file__).with_name("runtime.py"), out / "runtime.py")


def is_export_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


# What the runtime reads from a manifest: (key, type) at the top, then inside each section.
_TOP: dict[str, type] = {
    "format_version": int,
    "start": str,
    "step": str,
    "state": list,
    "src_vocab": list,
    "tgt_vocab": list,
    "specials": dict,
    "tokenizer": dict,
    "decode": dict,
}
_SECTIONS: dict[str, dict[str, type]] = {
    "specials": {"pad": int, "unk": int, "bos": int, "eos": int},
    "tokenizer": {"preprocess": str, "max_len": int},
    "decode": {"max_len": int, "batch_size": int},
}
_STATE: dict[str, type] = {"name": str, "input": str, "output": str, "batch_axis": int}


def _check_fields(path: Path, where: str, node: dict[str, Any], fields: dict[str, type]) -> None:
    for key, kind in fields.items():
        value = node.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise RnnlabError(f"{path}: {where}{key} is missing or not of type {kind.__name__}")


def check_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an export folder, checked for everything the runtime reads from it.

    ``runtime.py`` must stay free of rnnlab, so it trusts its manifest; ``rnnlab translate EXPORT``
    checks it here first, so a damaged or hand-edited manifest is one line naming it.
    """
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise RnnlabError(f"{path}: not a readable export manifest ({reason})") from None
    if not isinstance(manifest, dict):
        raise RnnlabError(f"{path}: not a readable export manifest (not a JSON object)")
    _check_fields(path, "", manifest, _TOP)
    if manifest["format_version"] != FORMAT_VERSION:
        raise RnnlabError(
            f"{path}: export format version {manifest['format_version']} is not "
            f"{FORMAT_VERSION}; export the run again with this rnnlab"
        )
    for section, fields in _SECTIONS.items():
        _check_fields(path, f"{section}.", manifest[section], fields)
    for index, spec in enumerate(manifest["state"]):
        if not isinstance(spec, dict):
            raise RnnlabError(f"{path}: state[{index}] is not an object")
        _check_fields(path, f"state[{index}].", spec, _STATE)
    for side in ("src_vocab", "tgt_vocab"):
        tokens = manifest[side]
        if not tokens or not all(isinstance(t, str) for t in tokens):
            raise RnnlabError(f"{path}: {side} must be a non-empty list of strings")
    for name, side in (
        ("pad", "src_vocab"),
        ("unk", "src_vocab"),
        ("bos", "tgt_vocab"),
        ("eos", "tgt_vocab"),
    ):
        if not 0 <= manifest["specials"][name] < len(manifest[side]):
            raise RnnlabError(f"{path}: specials.{name} is outside {side}")
    for graph in ("start", "step"):
        name = manifest[graph]
        if Path(name).name != name or name in ("", ".", ".."):
            raise RnnlabError(f"{path}: {graph} must name a file inside the export folder")
    return manifest
