"""Runs trained or configured in bfloat16: their checkpoints, and how they are served, exported and loaded.

Three tiny GRU runs are trained once with ``train.precision: bf16``: a reverse-the-symbols translator
with Bahdanau attention that also decodes with ``decode.precision: bf16``, a CRF tagger on the
bundled EWT sample and a character language model that keeps a weight average
(``train.ema_decay``). Two float32 LSTM runs get their saved ``config.yaml`` edited to ask for bf16,
as a run trained on a CPU with native bfloat16 and copied to one without would; such a CPU is
simulated by patching ``rnnlab.nn.precision.native_bf16`` (and, for ``precision: auto``, a CPU
with native bfloat16 whose timed product is recorded with the thread count it ran at). Saved configs
with precision values the schema refuses must give one error line on every path.

The paths compared are a real ``rnnlab serve`` process (talked to with httpx), the Python API
(``rnnlab.load``), the command line (run in this process) and an ONNX export (ONNX Runtime). The
references are independent of the code under test where possible: the checkpoint files read with
``safetensors.torch.load_file``, the ONNX graphs read with ``onnx``, the reverse task's own answer,
sacreBLEU, the same weights decoded in float32, and the autocast state PyTorch reports inside the
model's decoding steps.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

import rnnlab
import rnnlab.nn.precision as precision
from rnnlab.errors import ConfigError
from rnnlab.models.seq2seq import EncoderDecoder
from tests.cli_runner import assert_user_error, call_main, run_cli
from tests.conftest import PANGRAM, reverse_pairs, write_tsv

REPO = Path(__file__).resolve().parents[2]
EWT = REPO / "data" / "ud-ewt-sample"

SOURCES = [src for src, _ in reverse_pairs(14, seed=7, max_len=6)]
LINES = [*SOURCES[:7], "", *SOURCES[7:]]
"""What every path translates: a blank line among them comes back as an empty translation."""

TAG_SENTENCES = ["The dog runs .", "I saw it yesterday", "Where is the station ?"]
PREFIX = "the quick"


def _sets(settings: dict[str, object]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def _train(task: str, out: Path, settings: dict[str, object]) -> Path:
    code = call_main("train", task, "--out", out, *_sets(settings))
    assert code == 0, f"training the tiny {task} run {out.name} failed"
    return out


def _edit_config(run: Path, section: str, key: str, value: Any) -> None:
    """Set ``section.key`` in a run's saved ``config.yaml``, as a person editing it would."""
    path = run / "config.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _reversed(line: str) -> str:
    return " ".join(reversed(line.split()))


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bf16_runs")
    train = write_tsv(root / "train.tsv", reverse_pairs(2000, seed=1, max_len=6))
    valid = write_tsv(root / "valid.tsv", reverse_pairs(40, seed=2, max_len=6))
    text = root / "pangram.txt"
    text.write_text(PANGRAM * 30, encoding="utf-8")
    common: dict[str, object] = {"train.num_threads": 1, "train.device": "cpu"}
    seq2seq: dict[str, object] = {
        **common,
        "data.train": train,
        "data.tsv_langs": "[en, fr]",
        "data.min_freq": 1,
        "model.num_layers": 1,
    }
    out = {"root": root, "train": train, "valid": valid, "text": text}
    out["s2s"] = _train(
        "seq2seq",
        root / "s2s",
        {
            **seq2seq,
            "data.valid": valid,
            "model.embed_size": 16,
            "model.hidden_size": 32,
            "model.attention": "bahdanau",
            "model.bidirectional_encoder": "true",
            "train.batch_size": 32,
            "train.lr": 0.01,
            "train.epochs": 2,
            "train.precision": "bf16",
            "decode.precision": "bf16",
        },
    )
    out["tagger"] = _train(
        "tagger",
        root / "pos",
        {
            **common,
            "data.train": EWT / "train.conllu",
            "data.valid": EWT / "dev.conllu",
            "data.max_examples": 100,
            "model.cell": "gru",
            "model.crf": "true",
            "model.embed_size": 16,
            "model.hidden_size": 16,
            "model.char_embed_size": 8,
            "model.char_hidden_size": 8,
            "train.max_steps": 20,
            "train.valid_every": 10,
            "train.precision": "bf16",
        },
    )
    # No validation data: every epoch's end saves the average as best/, the last one included.
    out["lm"] = _train(
        "lm",
        root / "lm",
        {
            **common,
            "data.train": text,
            "data.clean": "none",
            "model.embed_size": 16,
            "model.hidden_size": 32,
            "train.batch_size": 4,
            "train.bptt": 32,
            "train.epochs": 3,
            "train.lr": 0.01,
            "train.ema_decay": 0.9,
            "train.precision": "bf16",
        },
    )
    # float32 LSTM runs whose configs then ask for bf16 (a run copied from a CPU with AMX).
    out["lstm_s2s"] = _train(
        "seq2seq",
        root / "lstm-s2s",
        {
            **seq2seq,
            "model.cell": "lstm",
            "model.embed_size": 8,
            "model.hidden_size": 16,
            "train.batch_size": 16,
            "train.max_steps": 2,
        },
    )
    _edit_config(out["lstm_s2s"], "decode", "precision", "bf16")
    out["lstm_tagger"] = _train(
        "tagger",
        root / "lstm-pos",
        {
            **common,
            "data.train": EWT / "train.conllu",
            "data.max_examples": 40,
            "model.cell": "lstm",
            "model.embed_size": 8,
            "model.hidden_size": 8,
            "model.char_embed_size": 4,
            "model.char_hidden_size": 4,
            "train.max_steps": 2,
        },
    )
    _edit_config(out["lstm_tagger"], "train", "precision", "bf16")
    return out


@pytest.fixture(scope="module")
def s2s_export(runs: dict[str, Path]) -> Path:
    """The bf16 translator exported with ``rnnlab export`` (ONNX)."""
    out = runs["root"] / "s2s-onnx"
    assert call_main("export", runs["s2s"], "--out", out) == 0
    return out


@pytest.fixture(scope="module")
def bf16_server(start_server, runs: dict[str, Path], s2s_export: Path):
    """One ``rnnlab serve`` process holding the three bf16 runs and the export."""
    server = start_server(
        f"s2s={runs['s2s']}",
        f"pos={runs['tagger']}",
        f"tm={runs['lm']}",
        f"onnx={s2s_export}",
    )
    yield server
    server.stop()


@pytest.fixture
def no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as on a CPU without AVX512-BF16 or AMX."""
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)


def _autocast_spy(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each decoding step of any translator runs under bfloat16 autocast."""
    seen: list[bool] = []
    step = EncoderDecoder.step

    def spied(self: EncoderDecoder, tokens: torch.Tensor, state: Any, **kwargs: Any) -> Any:
        seen.append(
            torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        )
        return step(self, tokens, state, **kwargs)

    monkeypatch.setattr(EncoderDecoder, "step", spied)
    return seen


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _post(server: Any, path: str, body: dict[str, Any]) -> Any:
    answer = httpx.post(f"{server.url}{path}", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


# --- checkpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["s2s", "tagger", "lm"])
def test_every_checkpoint_of_a_bf16_run_holds_float32_master_weights(runs, name):
    run = runs[name]
    files = sorted(run.glob("*/model.safetensors"))
    assert {p.parent.name for p in files} >= {"best", "last"}, files
    for path in files:
        tensors = load_file(str(path))
        floats = {k: v.dtype for k, v in tensors.items() if v.is_floating_point()}
        assert floats, path
        assert set(floats.values()) == {torch.float32}, (path, floats)
        meta = json.loads(_metadata(path)["rnnlab"])
        assert isinstance(meta, dict) and meta["step"] > 0
    state = load_file(str(run / "last" / "trainer_state.safetensors"))
    floats = {k: v.dtype for k, v in state.items() if v.is_floating_point()}
    assert any(k.startswith("optim") for k in floats)
    assert set(floats.values()) == {torch.float32}, floats
    if name == "lm":
        assert any(k.startswith("ema.") for k in floats), sorted(state)
    # Loaded for inference, and after use, the parameters stay float32.
    model = rnnlab.load(run, device="cpu")
    if name == "s2s":
        model.translate(SOURCES[:2])
    assert {p.dtype for p in model.model.parameters()} == {torch.float32}


def test_best_of_an_averaged_bf16_run_is_the_average_it_saved(runs):
    run = runs["lm"]
    best = load_file(str(run / "best" / "model.safetensors"))
    raw = load_file(str(run / "last" / "model.safetensors"))
    state = load_file(str(run / "last" / "trainer_state.safetensors"))
    assert best.keys() == raw.keys()
    for key, value in best.items():
        assert torch.equal(value, state[f"ema.module.{key}"]), key
    # The average is not the raw weights, and it has seen every step.
    assert any(not torch.equal(best[k], raw[k]) for k in best)
    step = json.loads(_metadata(run / "last" / "model.safetensors")["rnnlab"])["step"]
    assert int(state["ema.n_averaged"]) == step


def test_resuming_a_bf16_run_keeps_its_precision_and_its_average(
    runs, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "lm"
    shutil.copytree(runs["lm"], run)
    before = json.loads(_metadata(run / "last" / "model.safetensors")["rnnlab"])["step"]
    result = run_cli(monkeypatch, capsys, "train", "--resume", run, "--set", "train.epochs=4")
    assert result.code == 0, result.err
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert config["train"]["precision"] == "bf16"
    assert config["train"]["ema_decay"] == 0.9
    after = json.loads(_metadata(run / "last" / "model.safetensors")["rnnlab"])["step"]
    assert after > before
    state = load_file(str(run / "last" / "trainer_state.safetensors"))
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
    assert int(state["ema.n_averaged"]) == after
    best = load_file(str(run / "best" / "model.safetensors"))
    assert all(torch.equal(v, state[f"ema.module.{k}"]) for k, v in best.items())


# --- one translator, every path ----------------------------------------------------------------


def test_the_bf16_translator_learned_its_task(runs):
    translations = rnnlab.load(runs["s2s"], device="cpu").translate(SOURCES)
    right = sum(t.text == _reversed(s) for t, s in zip(translations, SOURCES, strict=True))
    assert right >= 0.8 * len(SOURCES), [t.text for t in translations]


def test_server_api_and_cli_translate_a_bf16_run_alike(bf16_server, runs, monkeypatch, capsys):
    api = rnnlab.load(runs["s2s"], device="cpu")
    assert api.task.config.decode.precision == "bf16"
    expected = api.translate(LINES)
    served = _post(bf16_server, "/v1/models/s2s/translate", {"text": LINES})["translations"]
    assert [t["text"] for t in served] == [t.text for t in expected]
    assert [t["tokens"] for t in served] == [t.tokens for t in expected]
    assert [t["score"] for t in served] == [t.score for t in expected]
    result = run_cli(monkeypatch, capsys, "translate", runs["s2s"], stdin="\n".join(LINES) + "\n")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [t.text for t in expected]
    # Beam search with n-best lists too.
    beam = api.translate(SOURCES, beam=3, n_best=2)
    body = {"text": SOURCES, "beam": 3, "n_best": 2}
    served = _post(bf16_server, "/v1/models/s2s/translate", body)["translations"]
    assert [[h["text"] for h in t["n_best"]] for t in served] == [
        [text for text, _ in t.n_best] for t in beam
    ]
    result = run_cli(
        monkeypatch,
        capsys,
        "translate",
        runs["s2s"],
        "--beam",
        3,
        "--n-best",
        2,
        stdin="\n".join(SOURCES) + "\n",
    )
    assert result.code == 0, result.err
    assert result.out.splitlines() == [t.line() for t in beam]


def test_the_server_decodes_a_bf16_run_in_bf16(bf16_server, runs):
    """The server's scores are the bf16 decode's, and float32's differ from them."""
    bf16 = rnnlab.load(runs["s2s"], device="cpu").translate(SOURCES)
    fp32 = rnnlab.load(runs["s2s"], device="cpu", overrides=["decode.precision=fp32"]).translate(
        SOURCES
    )
    served = _post(bf16_server, "/v1/models/s2s/translate", {"text": SOURCES})["translations"]
    assert [t["score"] for t in served] == [t.score for t in bf16]
    assert [t.score for t in fp32] != [t.score for t in bf16]


def test_a_bf16_request_gets_the_answer_it_would_get_alone(bf16_server, runs):
    """The README: a request's answer does not depend on the requests batched with it."""
    together = _post(bf16_server, "/v1/models/s2s/translate", {"text": SOURCES})["translations"]
    with ThreadPoolExecutor(max_workers=len(SOURCES)) as pool:
        alone = list(
            pool.map(
                lambda line: _post(bf16_server, "/v1/models/s2s/translate", {"text": [line]}),
                SOURCES,
            )
        )
    api = rnnlab.load(runs["s2s"], device="cpu")
    for line, answer, batched in zip(SOURCES, alone, together, strict=True):
        [translation] = answer["translations"]
        assert translation["text"] == batched["text"]
        assert translation["score"] == pytest.approx(batched["score"], abs=1e-5)
        assert translation["text"] == api.translate([line])[0].text


@pytest.mark.parametrize("override", [None, "fp32", "bf16", "auto"])
def test_api_cli_and_evaluate_decode_in_the_precision_asked_for(
    runs, monkeypatch, capsys, override
):
    seen = _autocast_spy(monkeypatch)
    overrides = [f"decode.precision={override}"] if override else []
    expected = precision.resolve_precision(override or "bf16", "cpu") == "bf16"
    rnnlab.load(runs["s2s"], device="cpu", overrides=overrides).translate(SOURCES[:3])
    assert seen and set(seen) == {expected}
    seen.clear()
    args = [arg for item in overrides for arg in ("--set", item)]
    result = run_cli(
        monkeypatch, capsys, "translate", runs["s2s"], *args, stdin="\n".join(SOURCES[:3]) + "\n"
    )
    assert result.code == 0, result.err
    assert seen and set(seen) == {expected}
    seen.clear()
    result = run_cli(
        monkeypatch, capsys, "evaluate", runs["s2s"], "--data", runs["valid"], "--json", *args
    )
    assert result.code == 0, result.err
    assert seen and set(seen) == {expected}


def test_evaluating_best_reproduces_the_validation_that_chose_it(runs, monkeypatch, capsys):
    """Validation during bf16 training and ``rnnlab evaluate`` decode the same way."""
    records = [
        json.loads(line)
        for line in (runs["s2s"] / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    validations = [r for r in records if "valid_bleu" in r]
    assert validations
    best = max(validations, key=lambda r: r["valid_bleu"])
    meta = json.loads(_metadata(runs["s2s"] / "best" / "model.safetensors")["rnnlab"])
    assert meta["step"] == best["step"]
    result = run_cli(
        monkeypatch, capsys, "evaluate", runs["s2s"], "--data", runs["valid"], "--json"
    )
    assert result.code == 0, result.err
    metrics = json.loads(result.out)
    assert metrics["bleu"] == pytest.approx(best["valid_bleu"], abs=1e-9)
    assert metrics["loss"] == pytest.approx(best["valid_loss"], rel=1e-6)


@pytest.mark.parametrize("override", [None, "fp32"])
def test_evaluate_scores_the_translations_the_api_gives(runs, monkeypatch, capsys, override):
    import sacrebleu

    pairs = [line.split("\t") for line in runs["valid"].read_text(encoding="utf-8").splitlines()]
    overrides = [f"decode.precision={override}"] if override else []
    api = rnnlab.load(runs["s2s"], device="cpu", overrides=overrides)
    hyps = [t.text for t in api.translate([src for src, _ in pairs])]
    reference = sacrebleu.corpus_bleu(hyps, [[tgt for _, tgt in pairs]]).score
    args = [arg for item in overrides for arg in ("--set", item)]
    result = run_cli(
        monkeypatch, capsys, "evaluate", runs["s2s"], "--data", runs["valid"], "--json", *args
    )
    assert result.code == 0, result.err
    metrics = json.loads(result.out)
    assert metrics["sentences"] == len(pairs)
    assert metrics["bleu"] == pytest.approx(reference, abs=1e-9)


def test_attention_of_a_bf16_translation_is_served_as_the_api_gives_it(bf16_server, runs):
    [expected] = rnnlab.load(runs["s2s"], device="cpu").translate([SOURCES[0]], attention=True)
    body = {"text": [SOURCES[0]], "attention": True}
    [served] = _post(bf16_server, "/v1/models/s2s/translate", body)["translations"]
    matrix = served["attention"]
    assert matrix["src_tokens"] == expected.attention.src_tokens
    assert matrix["out_tokens"] == expected.attention.out_tokens
    weights = torch.tensor(matrix["weights"])
    assert weights.shape == expected.attention.weights.shape
    assert weights.shape[0] == len(matrix["out_tokens"])
    assert torch.allclose(weights, expected.attention.weights.float(), atol=2e-6)
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[0]), atol=1e-4)


# --- the export of a bf16 translator --------------------------------------------------------------


def _onnx_types(path: Path) -> set[int]:
    """Every tensor element type an ONNX model names: initializers, inputs, outputs, values,
    constants and casts, in the graph and in its functions."""
    import onnx

    model = onnx.load(str(path))
    types: set[int] = set()
    graph = model.graph
    types.update(init.data_type for init in graph.initializer)
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.type.HasField("tensor_type"):
            types.add(info.type.tensor_type.elem_type)
    nodes = [*graph.node, *(n for f in model.functions for n in f.node)]
    for node in nodes:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to":
                types.add(attribute.i)
            if attribute.type == onnx.AttributeProto.TENSOR:
                types.add(attribute.t.data_type)
    return types


def test_the_export_of_a_bf16_run_is_a_float32_graph(s2s_export):
    import onnx

    for name in ("start.onnx", "step.onnx"):
        types = _onnx_types(s2s_export / name)
        assert onnx.TensorProto.FLOAT in types, name
        assert onnx.TensorProto.BFLOAT16 not in types, name
        assert onnx.TensorProto.FLOAT16 not in types, name


def test_the_export_of_a_bf16_run_translates_as_its_float32_weights(runs, s2s_export):
    fp32 = rnnlab.load(runs["s2s"], device="cpu", overrides=["decode.precision=fp32"])
    expected = fp32.translate(LINES)
    exported = rnnlab.load(s2s_export).translate(LINES)
    assert [t.text for t in exported] == [t.text for t in expected]
    assert [t.score for t in exported] == pytest.approx([t.score for t in expected], abs=1e-4)
    beam = rnnlab.load(s2s_export).translate(SOURCES, beam=3, n_best=2)
    expected_beam = fp32.translate(SOURCES, beam=3, n_best=2)
    assert [[text for text, _ in t.n_best] for t in beam] == [
        [text for text, _ in t.n_best] for t in expected_beam
    ]


def test_evaluating_the_export_scores_as_the_run_decoded_in_float32(
    runs, s2s_export, monkeypatch, capsys
):
    valid = runs["valid"]
    result = run_cli(monkeypatch, capsys, "evaluate", s2s_export, "--data", valid, "--json")
    assert result.code == 0, result.err
    exported = json.loads(result.out)
    result = run_cli(
        monkeypatch,
        capsys,
        "evaluate",
        runs["s2s"],
        "--data",
        valid,
        "--json",
        "--set",
        "decode.precision=fp32",
    )
    assert result.code == 0, result.err
    eager = json.loads(result.out)
    assert exported["sentences"] == eager["sentences"]
    assert exported["bleu"] == pytest.approx(eager["bleu"], abs=1e-9)
    assert exported["perplexity"] == pytest.approx(eager["perplexity"], rel=1e-4)


def test_exports_of_the_bf16_tagger_and_lm_are_float32_and_agree_with_their_runs(
    runs, tmp_path, monkeypatch, capsys
):
    import onnx

    for key in ("tagger", "lm"):
        result = run_cli(monkeypatch, capsys, "export", runs[key], "--out", tmp_path / key)
        assert result.code == 0, result.err
        graphs = sorted((tmp_path / key).glob("*.onnx"))
        assert graphs
        for graph in graphs:
            types = _onnx_types(graph)
            assert onnx.TensorProto.FLOAT in types, graph
            assert not types & {onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT16}, graph
    tags = rnnlab.load(tmp_path / "tagger").tag(TAG_SENTENCES)
    expected_tags = rnnlab.load(runs["tagger"], device="cpu").tag(TAG_SENTENCES)
    assert [s.tags for s in tags] == [s.tags for s in expected_tags]
    exported, eager = rnnlab.load(tmp_path / "lm"), rnnlab.load(runs["lm"], device="cpu")
    assert exported.generate(PREFIX, length=30, temperature=0) == eager.generate(
        PREFIX, length=30, temperature=0
    )
    text = PANGRAM.strip()
    assert exported.perplexity(text) == pytest.approx(eager.perplexity(text), rel=1e-4)


def test_the_served_export_answers_as_the_export_does(bf16_server, s2s_export):
    expected = rnnlab.load(s2s_export).translate(LINES)
    served = _post(bf16_server, "/v1/models/onnx/translate", {"text": LINES})["translations"]
    assert [t["text"] for t in served] == [t.text for t in expected]
    assert [t["score"] for t in served] == pytest.approx([t.score for t in expected], abs=1e-6)


# --- the tagger and the language model ---------------------------------------------------------


def test_server_api_and_cli_tag_with_a_bf16_trained_tagger(bf16_server, runs, monkeypatch, capsys):
    expected = rnnlab.load(runs["tagger"], device="cpu").tag(TAG_SENTENCES)
    served = _post(bf16_server, "/v1/models/pos/tag", {"text": TAG_SENTENCES})["sentences"]
    assert [s["tags"] for s in served] == [s.tags for s in expected]
    assert [s["tokens"] for s in served] == [s.tokens for s in expected]
    result = run_cli(
        monkeypatch, capsys, "tag", runs["tagger"], stdin="\n".join(TAG_SENTENCES) + "\n"
    )
    assert result.code == 0, result.err
    assert result.out.splitlines() == [s.line() for s in expected]


def test_server_api_and_cli_generate_with_a_bf16_trained_lm(bf16_server, runs, monkeypatch, capsys):
    expected = rnnlab.load(runs["lm"], device="cpu").generate(PREFIX, length=30, temperature=0)
    assert expected.startswith(PREFIX) and len(expected) == len(PREFIX) + 30
    body = {"prefix": PREFIX, "length": 30, "temperature": 0}
    assert _post(bf16_server, "/v1/models/tm/generate", body)["text"] == expected
    result = run_cli(
        monkeypatch, capsys, "generate", runs["lm"], "--prefix", PREFIX, "--length", 30
    )
    assert result.code == 0, result.err
    assert result.out == expected + "\n"


def test_the_server_lists_bf16_runs_as_the_api_describes_them(bf16_server, runs):
    listed = httpx.get(f"{bf16_server.url}/v1/models", timeout=30).json()["models"]
    by_name = {m["name"]: m for m in listed}
    assert set(by_name) == {"s2s", "pos", "tm", "onnx"}
    for name, key in (("s2s", "s2s"), ("pos", "tagger"), ("tm", "lm")):
        facts = json.loads(json.dumps(rnnlab.load(runs[key], device="cpu").describe()))
        assert by_name[name] == {"name": name, "ready": True, **facts}
        assert by_name[name]["cell"] == "gru"
    assert httpx.get(f"{bf16_server.url}/readyz", timeout=30).status_code == 200


# --- a CPU without native bfloat16 -------------------------------------------------------------


def test_loading_a_bf16_lstm_translator_without_native_bf16_is_one_config_error_line(
    runs, no_native_bf16, monkeypatch, capsys
):
    with pytest.raises(ConfigError) as caught:
        rnnlab.load(runs["lstm_s2s"], device="cpu")
    assert "\n" not in str(caught.value) and "decode.precision" in str(caught.value)
    result = run_cli(monkeypatch, capsys, "translate", runs["lstm_s2s"], stdin="a b\n")
    assert_user_error(result, "decode.precision", "bf16")
    result = run_cli(
        monkeypatch, capsys, "evaluate", runs["lstm_s2s"], "--data", runs["valid"], "--json"
    )
    assert_user_error(result, "decode.precision", "bf16")


def test_the_refused_lstm_translator_decodes_with_decode_precision_fp32(
    runs, no_native_bf16, monkeypatch, capsys
):
    api = rnnlab.load(runs["lstm_s2s"], device="cpu", overrides=["decode.precision=fp32"])
    expected = [t.text for t in api.translate(SOURCES[:4])]
    result = run_cli(
        monkeypatch,
        capsys,
        "translate",
        runs["lstm_s2s"],
        "--set",
        "decode.precision=fp32",
        stdin="\n".join(SOURCES[:4]) + "\n",
    )
    assert result.code == 0, result.err
    assert result.out.splitlines() == expected


def test_an_lstm_translator_with_decode_precision_auto_loads_without_native_bf16(
    runs, tmp_path, no_native_bf16
):
    run = tmp_path / "lstm-auto"
    shutil.copytree(runs["lstm_s2s"], run)
    _edit_config(run, "decode", "precision", "auto")
    fp32 = rnnlab.load(runs["lstm_s2s"], device="cpu", overrides=["decode.precision=fp32"])
    auto = rnnlab.load(run, device="cpu")
    assert [t.text for t in auto.translate(SOURCES)] == [t.text for t in fp32.translate(SOURCES)]


def test_a_bf16_lstm_translator_exports_with_decode_precision_fp32_set(
    runs, tmp_path, no_native_bf16, monkeypatch, capsys
):
    out = tmp_path / "lstm-onnx"
    result = run_cli(
        monkeypatch,
        capsys,
        "export",
        runs["lstm_s2s"],
        "--out",
        out,
        "--set",
        "decode.precision=fp32",
    )
    assert result.code == 0, result.err
    fp32 = rnnlab.load(runs["lstm_s2s"], device="cpu", overrides=["decode.precision=fp32"])
    expected = [t.text for t in fp32.translate(SOURCES)]
    assert [t.text for t in rnnlab.load(out).translate(SOURCES)] == expected


def test_a_bf16_lstm_translator_exports_without_native_bf16(
    runs, tmp_path, no_native_bf16, monkeypatch, capsys
):
    out = tmp_path / "lstm-onnx"
    result = run_cli(monkeypatch, capsys, "export", runs["lstm_s2s"], "--out", out)
    assert result.code == 0, result.err
    fp32 = rnnlab.load(runs["lstm_s2s"], device="cpu", overrides=["decode.precision=fp32"])
    expected = [t.text for t in fp32.translate(SOURCES)]
    assert [t.text for t in rnnlab.load(out).translate(SOURCES)] == expected


def test_a_server_that_cannot_load_a_bf16_lstm_run_names_it(runs, no_native_bf16):
    from rnnlab.serve.models import ModelSpec
    from rnnlab.serve.server import bind, serve
    from rnnlab.serve.settings import ServeSettings

    specs = [ModelSpec("fine", runs["s2s"]), ModelSpec("refused", runs["lstm_s2s"])]
    result: list[str | None] = []
    thread = threading.Thread(
        target=lambda: result.append(
            serve(
                specs,
                bind("127.0.0.1", 0),
                settings=ServeSettings(),
                loader=lambda path: rnnlab.load(path, device="cpu", threads=1),
                log_level="warning",
            )
        )
    )
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    [failure] = result
    assert failure is not None and "\n" not in failure and "decode.precision" in failure
    assert str(runs["lstm_s2s"]) in failure or "refused" in failure, failure


def test_rnnlab_serve_of_a_bf16_lstm_run_without_native_bf16_ends_in_one_error_line(
    runs, no_native_bf16, monkeypatch, capsys
):
    result = run_cli(
        monkeypatch, capsys, "serve", f"m={runs['lstm_s2s']}", "--port", "0", "--threads", "1"
    )
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("rnnlab: error: ") and "decode.precision" in last, result.err


def test_a_bf16_trained_lstm_tagger_tags_without_native_bf16_but_does_not_resume(
    runs, tmp_path, no_native_bf16, monkeypatch, capsys
):
    """Tagging never runs in bf16 (a tagger has no decode.precision); training again would."""
    tagger = rnnlab.load(runs["lstm_tagger"], device="cpu")
    expected = tagger.tag(TAG_SENTENCES)
    assert all(len(s.tags) == len(s.tokens) > 0 for s in expected)
    result = run_cli(
        monkeypatch, capsys, "tag", runs["lstm_tagger"], stdin="\n".join(TAG_SENTENCES) + "\n"
    )
    assert result.code == 0, result.err
    assert result.out.splitlines() == [s.line() for s in expected]
    run = tmp_path / "lstm-pos"
    shutil.copytree(runs["lstm_tagger"], run)
    result = run_cli(monkeypatch, capsys, "train", "--resume", run, "--set", "train.max_steps=4")
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("rnnlab: error: ") and "train.precision" in last, result.err


# --- decode.precision: auto --------------------------------------------------------------------


@pytest.fixture
def timed_auto(runs, tmp_path, monkeypatch) -> tuple[Path, list[int]]:
    """A copy of the translator with ``decode.precision: auto``, on a CPU said to run bfloat16
    natively whose timed product (``bf16_speedup``) is recorded with the thread count it ran at
    and found slower than float32's, so ``auto`` picks fp32 and nothing decodes in bf16."""
    run = tmp_path / "auto"
    shutil.copytree(runs["s2s"], run)
    _edit_config(run, "decode", "precision", "auto")
    timed_at: list[int] = []

    def timed() -> float:
        timed_at.append(torch.get_num_threads())
        return 0.5

    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    monkeypatch.setattr(precision, "_SPEEDUPS", {})
    monkeypatch.setattr(precision, "_time_bf16_speedup", timed)
    return run, timed_at


def test_training_times_auto_at_the_thread_count_it_trains_with(timed_auto, monkeypatch, capsys):
    run, timed_at = timed_auto
    torch.set_num_threads(2)
    try:
        result = run_cli(
            monkeypatch,
            capsys,
            "train",
            "--resume",
            run,
            "--set",
            "train.precision=auto",
            "--set",
            "train.epochs=3",
            "--set",
            "train.max_steps=1",
        )
    finally:
        torch.set_num_threads(1)
    assert result.code == 0, result.err
    assert "auto → fp32" in result.err
    assert timed_at == [1]  # train.num_threads


@pytest.mark.parametrize("how", ["api", "translate", "evaluate"])
def test_decoding_times_auto_at_the_thread_count_it_decodes_with(
    runs, timed_auto, monkeypatch, capsys, how
):
    run, timed_at = timed_auto
    decoded_at: set[int] = set()
    step = EncoderDecoder.step

    def spied(self: EncoderDecoder, tokens: torch.Tensor, state: Any, **kwargs: Any) -> Any:
        decoded_at.add(torch.get_num_threads())
        return step(self, tokens, state, **kwargs)

    monkeypatch.setattr(EncoderDecoder, "step", spied)
    torch.set_num_threads(2)  # the process's default, before the run's train.num_threads (1)
    try:
        if how == "api":
            rnnlab.load(run, device="cpu", threads=1).translate(SOURCES[:2])
        else:
            argv = ("translate", run) if how == "translate" else ("evaluate", run, "--data")
            argv += (runs["valid"], "--json") if how == "evaluate" else ()
            result = run_cli(monkeypatch, capsys, *argv, stdin=SOURCES[0] + "\n")
            assert result.code == 0, result.err
    finally:
        torch.set_num_threads(1)
    assert decoded_at == {1}
    assert timed_at == [1]


def test_a_server_of_two_auto_models_times_auto_once_and_keeps_each_model_s_choice(
    timed_auto, monkeypatch
):
    """``bf16_speedup`` is "measured once per process … so a run never changes precision
    halfway". Two served models decode on two threads: their first requests arrive together."""
    import uvicorn

    from rnnlab.serve.app import create_app
    from rnnlab.serve.metrics import ServeMetrics
    from rnnlab.serve.models import ModelRegistry, ModelSpec
    from rnnlab.serve.server import _Server, bind
    from rnnlab.serve.settings import ServeSettings

    run, timed_at = timed_auto
    ratios = iter([0.5, 2.0])  # a noisy probe: a second timing would disagree with the first
    both_timing = threading.Barrier(2)

    def timed() -> float:
        timed_at.append(torch.get_num_threads())
        # A second timing, if there is one, runs alongside the first.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_timing.wait(timeout=2)
        return next(ratios)

    monkeypatch.setattr(precision, "_time_bf16_speedup", timed)
    seen: dict[str, list[bool]] = {}
    step = EncoderDecoder.step

    def spied(self: EncoderDecoder, tokens: torch.Tensor, state: Any, **kwargs: Any) -> Any:
        name = threading.current_thread().name
        seen.setdefault(name, []).append(torch.is_autocast_enabled("cpu"))
        return step(self, tokens, state, **kwargs)

    monkeypatch.setattr(EncoderDecoder, "step", spied)
    settings, metrics = ServeSettings(max_wait_ms=0), ServeMetrics()
    registry = ModelRegistry(
        [ModelSpec("a", run), ModelSpec("b", run)],
        settings=settings,
        metrics=metrics,
        loader=lambda path: rnnlab.load(path, device="cpu", threads=1),
    )
    sock = bind("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    config = uvicorn.Config(
        create_app(registry, settings, metrics), log_level="warning", lifespan="on"
    )
    app_server = _Server(config)
    thread = threading.Thread(target=app_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not _ready(url):
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.05)
        body = {"text": SOURCES[:2]}
        for _ in range(2):
            with ThreadPoolExecutor(max_workers=2) as pool:
                answers = list(
                    pool.map(
                        lambda name: httpx.post(
                            f"{url}/v1/models/{name}/translate", json=body, timeout=60
                        ),
                        ["a", "b"],
                    )
                )
            assert [a.status_code for a in answers] == [200, 200]
    finally:
        app_server.should_exit = True
        thread.join(30)
    assert len(seen) == 2, seen.keys()
    choices = {name: set(states) for name, states in seen.items()}
    assert all(len(states) == 1 for states in choices.values()), choices
    assert len(timed_at) == 1, timed_at


# --- odd precision values in a saved config -------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "section", "value"),
    [
        ("s2s", "decode", "bfloat16"),
        ("s2s", "decode", "BF16"),
        ("s2s", "decode", 16),
        ("s2s", "decode", True),
        ("s2s", "decode", None),
        ("s2s", "decode", ["bf16"]),
        ("s2s", "train", "fp16"),
        ("tagger", "decode", "bf16"),  # a tagger has no decode.precision
        ("lm", "train", {"bf16": True}),
    ],
)
def test_an_odd_precision_in_a_saved_config_is_one_error_line_everywhere(
    runs, tmp_path, monkeypatch, capsys, key, section, value
):
    run = tmp_path / key
    shutil.copytree(runs[key], run, ignore=shutil.ignore_patterns("export"))
    _edit_config(run, section, "precision", value)
    with pytest.raises(ConfigError) as caught:
        rnnlab.load(run, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and f"{section}.precision" in message and "config.yaml" in message
    command = {"s2s": ("translate",), "tagger": ("tag",), "lm": ("generate", "--prefix", "t")}
    for argv in (
        (*command[key][:1], run, *command[key][1:]),
        ("export", run, "--out", tmp_path / "onnx"),
        ("serve", f"m={run}", "--port", "0"),
    ):
        result = run_cli(monkeypatch, capsys, *argv, stdin="a b\n")
        assert_user_error(result, f"{section}.precision")
    assert not (tmp_path / "onnx").exists()
