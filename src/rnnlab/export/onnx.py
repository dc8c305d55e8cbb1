"""Export a trained run to a self-contained ONNX folder that a torch-free runtime reads.

Exporter: ``torch.onnx.export(..., dynamo=True)``, the one PyTorch develops going forward, for every
graph. It cannot trace packed sequences or rnnlab's scratch time loops, so recurrent layers reach it
as one custom operator per layer mapped to ONNX's ``RNN``/``GRU``/``LSTM`` (``recurrent.py``); no
graph needs the TorchScript exporter.

Every dynamic dimension (batch, source length, text length, words and characters per batch) is a
``torch.export.Dim``, and each export is checked before it is kept: the graphs are run by ONNX
Runtime on inputs of *other* shapes than the example they were traced with, and compared with the
eager model. A model that does not pass is refused with a one-line error, never written.

The folder (see ``write_manifest``)::

    rnnlab-export.json   task, rnnlab version, opset, sha256 of the run's config and of every file
    config.yaml          the run's resolved config
    *.onnx               the graphs of ``graphs.py``
    vocab.*.json, spm.*.model, tags.json …   the run's vocabularies, tokenizer models, tag set
    runtime.py           translate, tag, generate and score with numpy + onnxruntime only
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.atomic import building_dir, reported_as
from rnnlab.errors import RnnlabError
from rnnlab.export.graphs import (
    LMGraph,
    Seq2SeqStart,
    Seq2SeqStep,
    TaggerEmissions,
    flatten_state,
    portable_seq2seq,
    state_names,
)
from rnnlab.export.loading import MANIFEST, is_export_dir
from rnnlab.models.seq2seq import EncoderDecoder

FORMAT = "rnnlab-onnx"
FORMAT_VERSION = 2
OPSET = 18
QUANTIZE_CHOICES = ("int8",)
CHECK_ATOL = 1e-4
"""Largest difference between ONNX Runtime and eager PyTorch an export may show on its check."""


def require_export_extra() -> None:
    """One line naming the extra to install, instead of an exporter's traceback."""
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if not importlib.util.find_spec(m)]
    if missing:
        raise RnnlabError(
            f"rnnlab export needs the 'export' extra (missing: {', '.join(missing)}); "
            "install it with: pip install 'rnnlab[export]'"
        )


# ---------------------------------------------------------------------------------------------------
# One graph


def _export_graph(
    module: nn.Module,
    args: tuple[Any, ...],
    path: Path,
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: Any,
) -> None:
    from rnnlab.export.recurrent import translation_table

    # The exporter reports progress on stdout/stderr and warns about axis renaming; the library
    # never prints, and what it checks is the result (``_check``).
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        logger.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                module.eval(),
                args,
                dynamo=True,
                custom_translation_table=translation_table(),
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                opset_version=OPSET,
                optimize=True,
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - any exporter failure is a refusal
            raise RnnlabError(f"cannot export {path.stem}.onnx: {_exporter_reason(exc)}") from None
        finally:
            logger.setLevel(level)
        assert program is not None
        program.save(str(path), external_data=False)


def _exporter_reason(exc: Exception) -> str:
    """The line of an exporter error that says what went wrong (after its "Exception summary")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "Exception summary" in line and index + 1 < len(lines):
            return lines[index + 1]
    return lines[0] if lines else type(exc).__name__


def _session(path: Path) -> Any:
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check(name: str, expected: list[Tensor], got: list[np.ndarray], atol: float) -> None:
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        want_np = want.detach().float().numpy()
        if want_np.shape != have.shape:
            raise RnnlabError(
                f"export refused: {name} output {index} has shape {have.shape} under ONNX Runtime, "
                f"{want_np.shape} in PyTorch"
            )
        finite = np.isfinite(want_np)
        diff = float(np.abs(np.where(finite, want_np - have, 0.0)).max(initial=0.0))
        if diff > atol or not np.array_equal(finite, np.isfinite(have)):
            raise RnnlabError(
                f"export refused: {name} differs from the PyTorch model by {diff:.2g} (> {atol:g})"
            )


def add_top_k(path: Path) -> None:
    """Give a step graph a ``TopK`` of its log-probabilities, with k as an input.

    Searches need only the k best tokens per row (k = 1 greedy, 2·beam for beam search): asking ONNX
    Runtime for ``top_log_probs``/``top_tokens`` (B, k) instead of ``log_probs`` (B, V) spares a
    copy of B·V floats out of the session and a partial sort over them in numpy at every step.
    Ties keep the lower token id first (the ONNX ``TopK`` contract).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    graph.input.append(helper.make_tensor_value_info("k", TensorProto.INT64, [1]))
    graph.node.append(
        helper.make_node(
            "TopK",
            ["log_probs", "k"],
            ["top_log_probs", "top_tokens"],
            axis=-1,
            largest=1,
            sorted=1,
        )
    )
    graph.output.extend(
        [
            helper.make_tensor_value_info("top_log_probs", TensorProto.FLOAT, ["batch", "k"]),
            helper.make_tensor_value_info("top_tokens", TensorProto.INT64, ["batch", "k"]),
        ]
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _axes_that_change(shapes_a: list[torch.Size], shapes_b: list[torch.Size]) -> list[int | None]:
    """Per tensor, the one axis whose size differs between two probes (None if none does)."""
    axes: list[int | None] = []
    for a, b in zip(shapes_a, shapes_b, strict=True):
        changed = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(changed) > 1:
            raise RnnlabError(
                f"export refused: a state tensor of shape {tuple(a)} is not understood"
            )
        axes.append(changed[0] if changed else None)
    return axes


def _padded(rows: list[list[int]], pad: int = 0) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(r) for r in rows])
    out = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out, lengths


def _random_rows(lengths: list[int], low: int, high: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(low, high, (n,), generator=generator).tolist() for n in lengths]


# ---------------------------------------------------------------------------------------------------
# seq2seq


@torch.no_grad()
def _export_seq2seq(task: Any, model: Any, out: Path) -> dict[str, Any]:
    config = task.config
    src_vocab, tgt_vocab = task.src_vocab, task.tgt_vocab
    cell = config.model.cell
    portable = portable_seq2seq(model, cell)
    # The eager reference decodes with the portable decoder (its cells, the state it keeps) and the
    # model's own encoder, so the state it hands the graphs has the structure the graphs compute.
    model = EncoderDecoder(encoder=model.encoder, decoder=portable.decoder, bridge=model.bridge)
    low, high = 4, max(len(src_vocab), 5)

    def start_of(lengths: list[int], seed: int) -> tuple[Tensor, Tensor, Any]:
        rows = [[*r[:-1], src_vocab.eos_id] for r in _random_rows(lengths, low, high, seed)]
        src, src_lengths = _padded(rows, src_vocab.pad_id)
        return src, src_lengths, model.start(src, src_lengths)

    src, src_lengths, state = start_of([5, 3, 2], 0)
    tensors, structure = flatten_state(state)
    shapes = [t.shape for t in tensors]
    batch_axes = _axes_that_change(
        shapes, [t.shape for t in flatten_state(start_of([5, 3, 2, 4], 1)[2])[0]]
    )
    src_axes = _axes_that_change(
        shapes, [t.shape for t in flatten_state(start_of([6, 3, 2], 2)[2])[0]]
    )
    if any(axis is None for axis in batch_axes):
        raise RnnlabError("export refused: a decoder state tensor has no batch axis")
    batch = torch.export.Dim("batch", min=1, max=4096)
    src_len = torch.export.Dim("src_len", min=1, max=4096)

    def state_dims(axes_b: list[int | None], axes_s: list[int | None]) -> tuple[dict, ...]:
        dims = []
        for b_axis, s_axis in zip(axes_b, axes_s, strict=True):
            spec = {b_axis: batch}
            if s_axis is not None:
                spec[s_axis] = src_len
            dims.append(spec)
        return tuple(dims)

    names = state_names(structure)
    tokens = torch.full((src.size(0),), tgt_vocab.bos_id, dtype=torch.long)
    next_tensors = flatten_state(model.step(tokens, state)[1])[0]
    static = [after is before for after, before in zip(next_tensors, tensors, strict=True)]
    state_in = [f"state.{i}" for i in range(len(tensors))]
    state_out = [f"next.{i}" for i in range(len(tensors))]
    moving_out = [name for name, s in zip(state_out, static, strict=True) if not s]
    _export_graph(
        Seq2SeqStart(portable),
        (src, src_lengths),
        out / "start.onnx",
        input_names=["src", "src_lengths"],
        output_names=state_in,
        dynamic_shapes={"src": {0: batch, 1: src_len}, "src_lengths": {0: batch}},
    )
    step = Seq2SeqStep(portable, structure, static)
    attention_out = ["attention"] if step.has_attention else []
    _export_graph(
        step,
        (tokens, *tensors),
        out / "step.onnx",
        input_names=["tokens", *state_in],
        output_names=["log_probs", *attention_out, *moving_out],
        dynamic_shapes=({0: batch}, state_dims(batch_axes, src_axes)),
    )

    add_top_k(out / "step.onnx")

    # Check with shapes the trace never saw: batch 1 with a 1-token source, and a larger batch.
    start_session, step_session = _session(out / "start.onnx"), _session(out / "step.onnx")
    for lengths, seed in (([1], 3), ([7, 1, 4, 9, 2], 4)):
        src, src_lengths, state = start_of(lengths, seed)
        got = start_session.run(None, {"src": src.numpy(), "src_lengths": src_lengths.numpy()})
        _check("start.onnx", flatten_state(state)[0], got, CHECK_ATOL)
        tokens = torch.full((len(lengths),), tgt_vocab.bos_id, dtype=torch.long)
        for _ in range(3):
            feed = {"tokens": tokens.numpy(), **dict(zip(state_in, got, strict=True))}
            feed["k"] = np.array([1], dtype=np.int64)
            log_probs, state = model.step(tokens, state)
            got_step = step_session.run(["log_probs", *attention_out, *moving_out], feed)
            _check("step.onnx", [log_probs], got_step[:1], CHECK_ATOL)
            moving = iter(got_step[1 + len(attention_out) :])
            got = [before if s else next(moving) for before, s in zip(got, static, strict=True)]
            _check("step.onnx", flatten_state(state)[0], got, CHECK_ATOL)
            tokens = log_probs.argmax(-1)

    files = {"vocab.src.json": "vocab.src.json", "vocab.tgt.json": "vocab.tgt.json"}
    tokenizer: dict[str, Any] = {
        "kind": config.data.tokenizer,
        "preprocess": config.data.preprocess,
        "max_len": config.data.max_len,
        "num_steps": config.data.num_steps,
    }
    if config.data.tokenizer == "sentencepiece":
        src_spm, tgt_spm = task._spm_paths()
        tokenizer["spm_src"], tokenizer["spm_tgt"] = src_spm.name, tgt_spm.name
        files[src_spm.name] = src_spm.name
        files[tgt_spm.name] = tgt_spm.name
    return {
        "graphs": {"start": "start.onnx", "step": "step.onnx"},
        "state": [
            {"name": name, "input": i, "output": o, "batch_axis": axis, "static": s}
            for name, i, o, axis, s in zip(
                names, state_in, state_out, batch_axes, static, strict=True
            )
        ],
        "attention": step.has_attention,
        "vocab": {"src": "vocab.src.json", "tgt": "vocab.tgt.json"},
        "specials": {
            "pad": src_vocab.pad_id,
            "unk": src_vocab.unk_id,
            "bos": tgt_vocab.bos_id,
            "eos": tgt_vocab.eos_id,
        },
        "tokenizer": tokenizer,
        "decode": {
            "max_len": config.decode.max_len,
            "beam_size": config.decode.beam_size,
            "length_penalty": config.decode.length_penalty,
            "batch_size": config.decode.batch_size,
            "batch_tokens": config.decode.batch_tokens,
            "beam_stop": config.decode.beam_stop,
        },
        "copy": files,
    }


# ---------------------------------------------------------------------------------------------------
# tagger


@torch.no_grad()
def _export_tagger(task: Any, model: Any, out: Path) -> dict[str, Any]:
    config = task.config
    graph = TaggerEmissions(model, config.model.cell)
    has_chars = model.char_encoder is not None
    words_in, words_out = ["words", "lengths"], ["emissions"]
    chars_in = ["chars", "char_lengths", "word_types"] if has_chars else []
    batch = torch.export.Dim("batch", min=1, max=4096)
    steps = torch.export.Dim("steps", min=1, max=4096)
    types = torch.export.Dim("word_types", min=1, max=1 << 20)
    chars = torch.export.Dim("chars", min=1, max=4096)
    alphabet = [w for w in task.char_vocab.itos[4:]] or ["a"]

    def batch_of(lengths: list[int], seed: int) -> list[Tensor]:
        rng = np.random.default_rng(seed)
        words = task.word_vocab.itos[4:] or ["x"]
        sentences = [
            [
                str(rng.choice(words)) if rng.random() < 0.7 else "".join(rng.choice(alphabet, 3))
                for _ in range(n)
            ]
            for n in lengths
        ]
        made = task.make_batch(sentences)
        inputs = [made.words, made.lengths]
        if has_chars:
            inputs += [made.chars, made.char_lengths, made.word_types]
        return inputs

    example = batch_of([5, 3, 2], 0)
    dims: list[dict[int, Any]] = [{0: batch, 1: steps}, {0: batch}]
    if has_chars:
        dims += [{0: types, 1: chars}, {0: types}, {0: batch, 1: steps}]
    _export_graph(
        graph,
        tuple(example),
        out / "tagger.onnx",
        input_names=words_in + chars_in,
        output_names=words_out,
        dynamic_shapes=(dims[0], dims[1], tuple(dims[2:])) if has_chars else tuple(dims),
    )
    session = _session(out / "tagger.onnx")
    for lengths, seed in (([1], 1), ([9, 1, 4, 2, 6, 3], 2)):
        inputs = batch_of(lengths, seed)
        expected = model(*inputs)
        got = session.run(
            None, {n: t.numpy() for n, t in zip(words_in + chars_in, inputs, strict=True)}
        )
        _check("tagger.onnx", [expected], got, CHECK_ATOL)

    crf = None
    if model.crf is not None:
        crf = {
            "transitions": model.crf.transitions.detach().float().tolist(),
            "start": model.crf.start_transitions.detach().float().tolist(),
            "end": model.crf.end_transitions.detach().float().tolist(),
        }
    names = ["vocab.words.json", "vocab.chars.json", "tags.json", "train_words.json"]
    # Read with the config, though tagging never uses them.
    names += [f"{name}.json" for name in task.aux_tagsets]
    files = {name: name for name in names}
    return {
        "graphs": {"tagger": "tagger.onnx"},
        "inputs": words_in + chars_in,
        "vocab": {"words": "vocab.words.json", "chars": "vocab.chars.json", "tags": "tags.json"},
        "specials": {"pad": task.word_vocab.pad_id, "unk": task.word_vocab.unk_id},
        "tokenizer": {
            "lowercase": config.data.lowercase,
            "max_word_chars": config.data.max_word_chars,
            # A vocabulary extended from word vectors is also searched lower-cased and with digits
            # normalised (rnnlab.data.embeddings.lookup_keys).
            "vector_lookup": config.data.extend_vocab_from_embeddings,
        },
        "crf": crf,
        "decode": {
            "batch_size": config.decode.batch_size,
            "batch_tokens": config.decode.batch_tokens,
        },
        "copy": files,
    }


# ---------------------------------------------------------------------------------------------------
# language model


@torch.no_grad()
def _export_lm(task: Any, model: Any, out: Path) -> dict[str, Any]:
    config = task.config
    cell = config.model.cell
    vocab_size = len(task.vocab)
    batch = torch.export.Dim("batch", min=1, max=4096)
    steps = torch.export.Dim("steps", min=1, max=1 << 20)
    tensors, structure = flatten_state(model.start(3))
    names = state_names(structure)
    state_in = [f"state.{i}" for i in range(len(tensors))]
    state_out = [f"next.{i}" for i in range(len(tensors))]
    state_dims = tuple({1: batch} for _ in tensors)
    tokens = torch.randint(0, vocab_size, (3, 5), generator=torch.Generator().manual_seed(0))
    _export_graph(
        LMGraph(model, cell, step=True),
        (tokens[:, 0], *tensors),
        out / "step.onnx",
        input_names=["tokens", *state_in],
        output_names=["log_probs", *state_out],
        dynamic_shapes=({0: batch}, state_dims),
    )
    _export_graph(
        LMGraph(model, cell, step=False),
        (tokens, *tensors),
        out / "score.onnx",
        input_names=["tokens", *state_in],
        output_names=["log_probs", *state_out],
        dynamic_shapes=({0: batch, 1: steps}, state_dims),
    )
    step_session, score_session = _session(out / "step.onnx"), _session(out / "score.onnx")
    for rows, length in ((1, 1), (6, 11)):
        ids = torch.randint(
            0, vocab_size, (rows, length), generator=torch.Generator().manual_seed(rows)
        )
        start = model.start(rows)
        features, state = model(ids, start)
        log_probs = model.log_probs(features)  # (B, T, V), a full or an adaptive softmax
        start_np = [t.numpy() for t in flatten_state(start)[0]]
        got = score_session.run(
            None, {"tokens": ids.numpy(), **dict(zip(state_in, start_np, strict=True))}
        )
        _check("score.onnx", [log_probs, *flatten_state(state)[0]], got, CHECK_ATOL)
        step_log_probs, step_state = model.step(ids[:, 0], start)
        got = step_session.run(
            None, {"tokens": ids[:, 0].numpy(), **dict(zip(state_in, start_np, strict=True))}
        )
        _check("step.onnx", [step_log_probs, *flatten_state(step_state)[0]], got, CHECK_ATOL)
    return {
        "graphs": {"step": "step.onnx", "score": "score.onnx"},
        "state": [
            {"name": name, "input": i, "output": o, "batch_axis": 1, "shape": list(t.shape)}
            for name, i, o, t in zip(names, state_in, state_out, tensors, strict=True)
        ],
        "vocab": {"tokens": "vocab.json"},
        "tokenizer": {"level": config.data.tokenizer, "clean": config.data.clean},
        "never_generated": task.vocab.decode(list(task.never_generated()), strip_specials=False),
        "copy": {"vocab.json": "vocab.json"},
    }


EXPORTERS: dict[str, Callable[[Any, nn.Module, Path], dict[str, Any]]] = {
    "seq2seq": _export_seq2seq,
    "tagger": _export_tagger,
    "lm": _export_lm,
}


# ---------------------------------------------------------------------------------------------------
# The folder


def quantize_int8(path: Path) -> None:
    """ONNX Runtime dynamic quantisation: int8 weights for MatMul/Gemm/Gather/LSTM, in place."""
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        QuantType,
        quantize_dynamic,
    )

    quantized = path.with_suffix(".int8.onnx")
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)  # its advice to pre-process is for convolutional nets
        try:
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
    os.replace(quantized, path)


def config_sha256(run_dir: Path) -> str:
    from rnnlab.export.runtime import sha256_of

    return sha256_of(run_dir / "config.yaml")


def export_run(
    task: Any, model: nn.Module, out_dir: str | Path, *, quantize: str | None = None
) -> Path:
    """Write the export folder of a trained model; the folder appears whole or not at all."""
    require_export_extra()
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise RnnlabError(
            f"--quantize: expected one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RnnlabError(f"{out}: is a file; --out names the export folder to write")
    if out.exists() and any(out.iterdir()) and not is_export_dir(out):
        raise RnnlabError(f"{out}: exists and is not an rnnlab export folder; choose another --out")
    run_dir = Path(task.run_dir)
    # A copy: ``Module.to`` and ``eval`` change a model in place, and the caller's stays as it was.
    model = copy.deepcopy(model).to("cpu").eval()
    with reported_as(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    # Assembled beside ``out`` and swapped in whole: a failed export (a full disk is a one-line
    # ``WriteFailed`` naming ``out``) leaves a previous export there usable.
    with building_dir(out) as staging:
        manifest = EXPORTERS[task.name](task, model, staging)
        copies = manifest.pop("copy")
        for target, source in copies.items():
            shutil.copyfile(run_dir / source, staging / target)
        shutil.copyfile(run_dir / "config.yaml", staging / "config.yaml")
        if quantize == "int8":
            for graph in manifest["graphs"].values():
                quantize_int8(staging / graph)
        shutil.copyfile(Path(__file__).with_name("runtime.py"), staging / "runtime.py")
        write_manifest(staging, task=task.name, run_dir=run_dir, quantize=quantize, body=manifest)
    return out


def write_manifest(
    folder: Path, *, task: str, run_dir: Path, quantize: str | None, body: dict[str, Any]
) -> None:
    """The manifest: what the folder holds and the sha256 of every file, checked on load."""
    import rnnlab
    from rnnlab.export.runtime import sha256_of

    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rnnlab_version": rnnlab.__version__,
        "task": task,
        "opset": OPSET,
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__.split('+')[0]}",
        "quantize": quantize,
        "config_sha256": config_sha256(run_dir),
        "source_run": str(run_dir.resolve()),
        **body,
        "files": {name: sha256_of(folder / name) for name in files},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), "utf-8")
