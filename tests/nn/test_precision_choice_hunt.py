"""How rnnlab chooses between float32 and bfloat16, and where that choice is applied.

``rnnlab.nn.precision`` turns ``precision: auto`` into ``fp32`` or ``bf16`` from two facts: whether the
device runs bfloat16 in hardware (``native_bf16``) and, on a CPU, a timed product's speedup compared
with ``BF16_MIN_SPEEDUP`` (``bf16_speedup``, measured once per process). These tests check:

* the rule itself at its boundary (exactly 1.25, just below it), for odd ratios (NaN, inf, 0, < 0),
  for every spelling of a device, and for unknown precision values (in Python and on the command line);
* what "native" means on a GPU whose bfloat16 is only emulated (a pre-Ampere card, faked here);
* the notices a run prints: one line, naming the key, saying what was chosen and why, and not
  contradicting the rule in the ratio they show;
* the timed probe: it measures float32 against bfloat16 whatever the caller's autocast, inference
  mode, grad mode, thread or default dtype; it leaves threads, autocast, grad mode and the default
  random generator as they were (a seeded training gives the same losses whether or not the probe
  ran inside it); it runs once per process (second runs and resumed runs reuse it) and at the
  thread count the run then computes with; ``settle_bf16_speedup`` and the data-parallel agreement
  feed later choices;
* that every path honouring ``auto`` — training steps, validation decoding, the test scoring at the
  end of training, ``rnnlab evaluate``, ``rnnlab translate``, ``rnnlab.load(run).translate`` and the
  server's batch function — applies the choice the training notice announced, observed from inside
  the model (the autocast state and the dtype a forward hook on the output layer sees);
* that ``rnnlab export``, which never decodes in PyTorch, is not refused over ``decode.precision``,
  and that bf16 on an LSTM without native bfloat16 is refused for a tuning trial as it is for
  ``rnnlab train`` and ``rnnlab translate``.

The speedup and the native flag are replaced with ``monkeypatch`` where a test needs a given
machine; the models are tiny GRU encoder-decoders, which run under bfloat16 autocast on every CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import rnnlab
from rnnlab.errors import ConfigError
from rnnlab.nn import precision
from rnnlab.nn.precision import (
    BF16_MIN_SPEEDUP,
    autocast,
    bf16_pays,
    bf16_speedup,
    check_bf16_kernels,
    precision_notice,
    resolve_precision,
    settle_bf16_speedup,
)
from tests.cli_runner import assert_user_error, call_main, run_cli
from tests.conftest import reverse_pairs, write_tsv


# -- helpers ------------------------------------------------------------------------------------
def _pretend(
    monkeypatch: pytest.MonkeyPatch, *, native: bool, speedup: float | None = None
) -> None:
    """This process's CPU: native bfloat16 or not, and (when given) its timed speedup."""
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    if speedup is not None:
        monkeypatch.setattr(precision, "bf16_speedup", lambda device_type: speedup)


@pytest.fixture
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """An empty speedup cache for the test; the process's own measurement comes back after it."""
    cache: dict[str, float] = {}
    monkeypatch.setattr(precision, "_SPEEDUPS", cache)
    return cache


def _fake_timing(record: list | None = None):
    """A stand-in for ``_best_seconds``: runs the product once (recording its dtype and the autocast
    state inside it) and says float32 took 1 s and bfloat16 0.5 s: a speedup of exactly 2."""

    def best_seconds(product, calls: int = 3, rounds: int = 3) -> float:
        out = product()
        if record is not None:
            record.append((out.dtype, torch.is_autocast_enabled("cpu"), torch.is_grad_enabled()))
        return 0.5 if out.dtype == torch.bfloat16 else 1.0

    return best_seconds


def _sets(settings: dict[str, object]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def _corpus(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_tsv(root / "train.tsv", reverse_pairs(200, seed=1, max_len=6))
    write_tsv(root / "valid.tsv", reverse_pairs(16, seed=2, max_len=6))
    write_tsv(root / "test.tsv", reverse_pairs(16, seed=3, max_len=6))
    return root


def _seq2seq_settings(data: Path, **extra: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "seed": 3,
        "data.train": data / "train.tsv",
        "data.valid": data / "valid.tsv",
        "data.tsv_langs": "[en, fr]",
        "data.min_freq": 1,
        "model.cell": "gru",
        "model.embed_size": 8,
        "model.hidden_size": 16,
        "model.num_layers": 1,
        "model.attention": "none",
        "model.dropout": 0,
        "train.batch_size": 16,
        "train.max_steps": 2,
        "train.valid_every": 2,
        "train.log_every": 1,
        "train.num_threads": 1,
        "train.device": "cpu",
        "train.precision": "auto",
        "decode.precision": "auto",
        "decode.max_len": 8,
    }
    settings.update(extra)
    return settings


def _train(out: Path, settings: dict[str, object]) -> None:
    assert call_main("train", "seq2seq", "--out", out, *_sets(settings)) == 0


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GRU translator trained with ``train.precision`` and ``decode.precision`` ``auto``
    (on a CPU pretended non-native, so it trains in float32 and never times anything)."""
    torch.set_num_threads(1)
    root = _corpus(tmp_path_factory.mktemp("auto_run"))
    with pytest.MonkeyPatch.context() as patch:
        _pretend(patch, native=False)
        _train(root / "run", _seq2seq_settings(root))
    return root / "run"


class _Watch:
    """Forward hooks on every encoder-decoder the seq2seq task builds from now on. Each call of the
    encoder marks a phase (a training step, teacher-forced scoring inside the model's ``forward``,
    or decoding outside it) and records whether bfloat16 autocast was on inside it; each call of the
    decoder's output layer (a plain ``nn.Linear``, the vocabulary projection) records the same and
    the dtype it produced. (float32 decoding projects narrow features with ``out=`` and skips the
    module, so only the encoder sees it.)"""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from rnnlab.tasks.seq2seq import Seq2SeqTask

        self.calls: list[tuple[str, str, bool, torch.dtype | None]] = []
        build = Seq2SeqTask.build_model
        watch = self

        def build_and_watch(task):
            model = build(task)
            inside: list[int] = []
            phase = ["none"]

            def enter(module, args) -> None:
                inside.append(1)

            def leave(module, args, out) -> None:
                inside.pop()

            def on_encoder(module, args, out) -> None:
                if module.training:
                    phase[0] = "train"
                else:
                    phase[0] = "score" if inside else "decode"
                watch.calls.append((phase[0], "encoder", _bf16_autocast_on(), None))

            def on_output(module, args, out) -> None:
                watch.calls.append((phase[0], "output", _bf16_autocast_on(), out.dtype))

            model.register_forward_pre_hook(enter)
            model.register_forward_hook(leave)
            model.encoder.register_forward_hook(on_encoder)
            assert isinstance(model.decoder.output, nn.Linear)
            model.decoder.output.register_forward_hook(on_output)
            return model

        monkeypatch.setattr(Seq2SeqTask, "build_model", build_and_watch)

    def take(self, phase: str) -> list[tuple[str, bool, torch.dtype | None]]:
        taken = [(kind, on, dtype) for p, kind, on, dtype in self.calls if p == phase]
        self.calls = [c for c in self.calls if c[0] != phase]
        return taken

    def clear(self) -> None:
        self.calls = []


def _bf16_autocast_on() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def _assert_all(calls: list[tuple[str, bool, torch.dtype | None]], chosen: str, where: str) -> None:
    """Every encoder and output-layer call of a phase ran under the chosen precision, and every
    vocabulary projection came out in its dtype (bf16: at least one was seen)."""
    want_on = chosen == "bf16"
    encoder = [on for kind, on, _ in calls if kind == "encoder"]
    outputs = [(on, dtype) for kind, on, dtype in calls if kind == "output"]
    assert encoder, f"{where}: the encoder never ran"
    assert set(encoder) == {want_on}, (where, calls)
    if want_on:
        assert outputs, f"{where}: no vocabulary projection was seen"
    want_dtype = torch.bfloat16 if want_on else torch.float32
    assert all(on == want_on and dtype == want_dtype for on, dtype in outputs), (where, calls)


# -- the rule -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("speedup", "expected"),
    [
        (BF16_MIN_SPEEDUP, "bf16"),
        (math.nextafter(BF16_MIN_SPEEDUP, 0.0), "fp32"),
        (1.2499, "fp32"),
        (3.0, "bf16"),
        (float("inf"), "bf16"),
        (float("nan"), "fp32"),
        (0.0, "fp32"),
        (-1.0, "fp32"),
    ],
)
def test_auto_on_a_native_cpu_is_bf16_exactly_from_the_threshold_up(monkeypatch, speedup, expected):
    _pretend(monkeypatch, native=True, speedup=speedup)
    assert resolve_precision("auto", "cpu") == expected
    assert bf16_pays("cpu") is (expected == "bf16")
    layer = nn.Linear(4, 3)
    with autocast("cpu", "auto"):
        dtype = layer(torch.randn(2, 4)).dtype
    assert dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)
    # Explicit settings are what they say, whatever the ratio.
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"


@pytest.mark.parametrize("speedup", [3.0, float("inf"), float("nan")])
def test_auto_without_native_bf16_is_fp32_and_never_times_anything(monkeypatch, speedup):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)

    def no_timing(device_type):
        raise AssertionError("timed a CPU that has no native bfloat16")

    monkeypatch.setattr(precision, "bf16_speedup", no_timing)
    for device in ("cpu", "cuda", "cuda:0"):
        assert resolve_precision("auto", device) == "fp32"
        assert not bf16_pays(device)
    notice = precision_notice("train.precision", "auto", "cpu")
    assert notice == "train.precision: auto → fp32 (this CPU has no native bfloat16)"


@pytest.mark.parametrize("device", ["cpu", "cpu:0", torch.device("cpu"), torch.device("cpu", 0)])
@pytest.mark.parametrize(("speedup", "expected"), [(0.5, "fp32"), (3.0, "bf16")])
def test_every_spelling_of_the_cpu_gets_the_same_choice(monkeypatch, device, speedup, expected):
    _pretend(monkeypatch, native=True, speedup=speedup)
    assert resolve_precision("auto", device) == expected
    notice = precision_notice("decode.precision", "auto", device)
    assert notice is not None and notice.startswith(
        f"decode.precision: auto → {expected} (this CPU"
    )
    assert f"{speedup:.2f}×" in notice


@pytest.mark.parametrize(
    "device", ["cuda", "cuda:0", "cuda:1", torch.device("cuda"), torch.device("cuda", 0)]
)
def test_on_a_native_gpu_auto_is_bf16_whatever_the_cpu_measured(monkeypatch, device):
    # The CPU's ratio is poor; a native GPU does not look at it.
    _pretend(monkeypatch, native=True, speedup=0.5)
    assert resolve_precision("auto", device) == "bf16"
    assert bf16_pays(device)
    assert precision_notice("train.precision", "auto", device) == (
        "train.precision: auto → bf16 (this CUDA runs bfloat16 natively)"
    )
    assert precision_notice("train.precision", "bf16", device) is None


@pytest.mark.parametrize("value", ["BF16", "fp16", "float32", "", " auto", "auto ", None, 1])
def test_unknown_precision_values_are_refused_naming_the_choices(monkeypatch, value):
    _pretend(monkeypatch, native=True, speedup=3.0)
    for call in (
        lambda: resolve_precision(value, "cpu"),
        lambda: autocast("cpu", value),
        lambda: precision_notice("train.precision", value, "cpu"),
        lambda: check_bf16_kernels(nn.GRU(2, 2), "train.precision", value, "cpu"),
    ):
        with pytest.raises(ValueError, match="fp32, bf16, auto"):
            call()


def test_unknown_precision_settings_are_one_line_errors_on_the_command_line(
    auto_run, tmp_path, monkeypatch, capsys
):
    data = auto_run.parent
    result = run_cli(
        monkeypatch,
        capsys,
        "train",
        "seq2seq",
        "--out",
        tmp_path / "bad",
        *_sets(_seq2seq_settings(data, **{"train.precision": "BF16"})),
    )
    assert_user_error(result, "train.precision")
    result = run_cli(
        monkeypatch, capsys, "translate", auto_run, "--set", "decode.precision=half", stdin="a b\n"
    )
    assert_user_error(result, "decode.precision")
    result = run_cli(
        monkeypatch,
        capsys,
        "evaluate",
        auto_run,
        "--data",
        data / "test.tsv",
        "--set",
        "decode.precision=fp16",
    )
    assert_user_error(result, "decode.precision")


# -- what "native" means on a GPU -----------------------------------------------------------------
@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of a given compute capability, on which bfloat16 tensors can be created."""

    def make(major: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(
            torch.cuda,
            "get_device_properties",
            lambda device=None: types.SimpleNamespace(major=major, minor=0, name="fake GPU"),
        )
        monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)
        monkeypatch.setattr(torch.version, "hip", None)
        precision._native_bf16.cache_clear()

    yield make
    precision._native_bf16.cache_clear()


def test_an_ampere_gpu_runs_bf16_natively(fake_gpu):
    fake_gpu(8)
    assert precision.native_bf16("cuda:0")
    assert resolve_precision("auto", "cuda") == "bf16"


def test_a_pre_ampere_gpu_that_only_emulates_bf16_is_not_native(fake_gpu):
    fake_gpu(7)  # a V100 or T4: bfloat16 tensors exist, the tensor cores have no bfloat16
    assert not precision.native_bf16("cuda")
    assert resolve_precision("auto", "cuda") == "fp32"


# -- notices ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["fp32", "bf16", "auto"])
@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("speedup", [0.5, 1.0, BF16_MIN_SPEEDUP, 3.0])
@pytest.mark.parametrize("device", ["cpu", "cuda:0"])
@pytest.mark.parametrize("key", ["train.precision", "decode.precision"])
def test_notices_are_one_line_name_the_key_and_agree_with_the_choice(
    monkeypatch, value, native, speedup, device, key
):
    _pretend(monkeypatch, native=native, speedup=speedup)
    chosen = resolve_precision(value, device)
    notice = precision_notice(key, value, device)
    if value == "auto":
        assert notice is not None
    if notice is None:
        # Silence only where there is nothing to say: fp32 asked for, or bf16 that pays.
        assert value == "fp32" or (chosen == "bf16" and bf16_pays(device))
        return
    assert "\n" not in notice and notice == notice.strip()
    assert notice.startswith(f"{key}: ")
    kind = torch.device(device).type.upper()
    assert kind in notice
    if value == "auto":
        assert notice.startswith(f"{key}: auto → {chosen} (this {kind} ")
        other = "fp32" if chosen == "bf16" else "bf16"
        assert f"→ {other}" not in notice
        assert ("runs bfloat16 natively" in notice) == native
        assert ("has no native bfloat16" in notice) == (not native)
    else:
        assert value == "bf16" and chosen == "bf16"
        assert not (native and bf16_pays(device))
        assert f"{key}: auto or fp32" in notice or f"{key}: auto would pick fp32" in notice
    shows_ratio = native and device == "cpu"
    assert (f"{speedup:.2f}×" in notice) == shows_ratio


@pytest.mark.parametrize("speedup", [1.2496, 1.2499])
def test_the_ratio_a_notice_shows_never_meets_the_threshold_when_fp32_was_chosen(
    monkeypatch, speedup
):
    _pretend(monkeypatch, native=True, speedup=speedup)
    assert resolve_precision("auto", "cpu") == "fp32"
    notice = precision_notice("train.precision", "auto", "cpu")
    assert notice is not None and "auto → fp32" in notice
    shown = float(re.search(r"ran ([0-9.]+)×", notice).group(1))
    # The README's rule: bf16 from 1.25× up. A notice must not show a ratio that meets the rule
    # beside the choice the rule makes below it.
    assert shown < BF16_MIN_SPEEDUP, notice


# -- the probe ------------------------------------------------------------------------------------
def _state() -> dict[str, object]:
    return {
        "threads": torch.get_num_threads(),
        "grad": torch.is_grad_enabled(),
        "inference": torch.is_inference_mode_enabled(),
        "autocast": torch.is_autocast_enabled("cpu"),
        "autocast_dtype": torch.get_autocast_dtype("cpu"),
        "default_dtype": torch.get_default_dtype(),
    }


def test_the_real_probe_leaves_threads_modes_and_the_default_rng_alone(fresh_probe):
    torch.manual_seed(1234)
    before, rng = _state(), torch.get_rng_state()
    speedup = bf16_speedup("cpu")
    assert _state() == before
    assert torch.equal(torch.get_rng_state(), rng), "the probe drew from the default generator"
    assert isinstance(speedup, float) and 0 < speedup < float("inf")
    assert fresh_probe == {"cpu": speedup}
    assert bf16_speedup("cpu") == speedup


@pytest.mark.parametrize(
    "outer",
    ["plain", "bf16_autocast", "fp16_autocast", "inference_mode", "no_grad", "enable_grad"],
)
def test_the_probe_compares_float32_with_bfloat16_whatever_context_it_runs_in(
    fresh_probe, monkeypatch, outer
):
    seen: list = []
    monkeypatch.setattr(precision, "_best_seconds", _fake_timing(seen))
    contexts = {
        "plain": contextlib.nullcontext,
        "bf16_autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
        "fp16_autocast": lambda: torch.autocast("cpu", dtype=torch.float16),
        "inference_mode": torch.inference_mode,
        "no_grad": torch.no_grad,
        "enable_grad": torch.enable_grad,
    }
    with contexts[outer]():
        inside_before = _state()
        speedup = bf16_speedup("cpu")
        assert _state() == inside_before  # the caller's context is intact after the probe
    assert speedup == 2.0
    assert [dtype for dtype, _, _ in seen] == [torch.float32, torch.bfloat16]
    assert not any(on for _, on, _ in seen), "autocast was on inside the timed products"
    assert not any(grad for _, _, grad in seen), "the timed products recorded autograd graphs"


def test_the_probe_run_on_another_thread_serves_the_whole_process(fresh_probe, monkeypatch):
    monkeypatch.setattr(precision, "_best_seconds", _fake_timing())
    results: list[float] = []

    def probe() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(bf16_speedup("cpu"))

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert results == [2.0]
    assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(precision, "_time_bf16_speedup", lambda: pytest.fail("timed twice"))
    assert bf16_speedup("cpu") == 2.0


def test_the_probe_times_float32_even_where_float64_is_the_default_dtype(fresh_probe, monkeypatch):
    seen: list = []
    monkeypatch.setattr(precision, "_best_seconds", _fake_timing(seen))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        bf16_speedup("cpu")
    finally:
        torch.set_default_dtype(default)
    assert [dtype for dtype, _, _ in seen] == [torch.float32, torch.bfloat16]


def test_settled_speedups_decide_later_choices_without_timing(fresh_probe, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    monkeypatch.setattr(precision, "_time_bf16_speedup", lambda: pytest.fail("timed anyway"))
    settle_bf16_speedup("cpu", 0.9)
    assert bf16_speedup("cpu") == 0.9 and resolve_precision("auto", "cpu") == "fp32"
    assert "0.90×" in precision_notice("train.precision", "auto", "cpu")
    settle_bf16_speedup("cpu", BF16_MIN_SPEEDUP)
    assert resolve_precision("auto", "cpu") == "bf16"
    settle_bf16_speedup("cpu", 0.5)
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    with autocast("cpu", "auto"):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize(
    ("mine", "theirs", "expected", "chosen"),
    [(3.0, 0.9, 0.9, "fp32"), (1.0, 3.0, 1.0, "fp32"), (2.0, 4.0, 2.0, "bf16")],
)
def test_data_parallel_ranks_keep_the_slowest_ratio(
    fresh_probe, monkeypatch, mine, theirs, expected, chosen
):
    from rnnlab.training import distributed

    reduced: list = []

    def all_reduce(tensor, op=None):  # a second rank that measured ``theirs``
        reduced.append(op)
        tensor.copy_(torch.minimum(tensor, torch.full_like(tensor, theirs)))

    monkeypatch.setattr(distributed.dist, "all_reduce", all_reduce)
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    settle_bf16_speedup("cpu", mine)
    distributed.agree_on_bf16_speedup()
    assert reduced == [torch.distributed.ReduceOp.MIN]
    assert bf16_speedup("cpu") == expected
    assert resolve_precision("auto", "cpu") == chosen


# -- the probe inside runs ------------------------------------------------------------------------
def _train_losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in records if "train_loss" in r]


def test_a_probe_inside_a_seeded_training_changes_nothing_and_runs_once(
    tmp_path, fresh_probe, monkeypatch, capsys
):
    """Run A times the products itself (after seeding, before its first step); run B, in the same
    process, reuses the measurement. With dropout drawing from the default generator, both must
    take the same steps; a resume of A keeps the same choice without timing again."""
    data = _corpus(tmp_path / "data")
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    monkeypatch.setattr(precision, "_best_seconds", lambda product, calls=3, rounds=3: 1.0)
    timed: list[int] = []
    real = precision._time_bf16_speedup

    def counted() -> float:
        timed.append(torch.get_num_threads())
        return real()  # the real operands; both products "take" 1 s: a ratio of 1, so fp32

    monkeypatch.setattr(precision, "_time_bf16_speedup", counted)
    settings = _seq2seq_settings(
        data,
        **{
            "data.valid": "",
            "model.num_layers": 2,
            "model.dropout": 0.3,
            "train.max_steps": 3,
        },
    )
    runs = {}
    for name in ("a", "b"):
        result = run_cli(
            monkeypatch, capsys, "train", "seq2seq", "--out", tmp_path / name, *_sets(settings)
        )
        assert result.code == 0, result.err
        assert "train.precision: auto → fp32" in result.err
        runs[name] = tmp_path / name
    assert timed == [1], "the probe should run once per process, at the run's thread count"
    assert fresh_probe == {"cpu": 1.0}
    losses_a, losses_b = _train_losses(runs["a"]), _train_losses(runs["b"])
    assert len(losses_a) == 3 and losses_a == losses_b
    weights_a = load_file(runs["a"] / "last" / "model.safetensors")
    weights_b = load_file(runs["b"] / "last" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    result = run_cli(
        monkeypatch, capsys, "train", "--resume", runs["a"], "--set", "train.max_steps=4"
    )
    assert result.code == 0, result.err
    assert "train.precision: auto → fp32" in result.err
    assert timed == [1]


def _record_probe_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    threads: list[int] = []

    def probe() -> float:
        threads.append(torch.get_num_threads())
        return 0.5

    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    monkeypatch.setattr(precision, "_time_bf16_speedup", probe)
    return threads


def test_training_times_the_probe_at_the_runs_thread_count(
    auto_run, tmp_path, fresh_probe, monkeypatch, capsys
):
    threads = _record_probe_threads(monkeypatch)
    torch.set_num_threads(2)  # the process's count before the run applies train.num_threads=1
    try:
        result = run_cli(
            monkeypatch,
            capsys,
            "train",
            "seq2seq",
            "--out",
            tmp_path / "run",
            *_sets(_seq2seq_settings(auto_run.parent, **{"train.max_steps": 1})),
        )
    finally:
        torch.set_num_threads(1)
    assert result.code == 0, result.err
    assert threads == [1]


def test_the_python_api_times_the_probe_at_the_thread_count_it_decodes_with(
    auto_run, fresh_probe, monkeypatch
):
    threads = _record_probe_threads(monkeypatch)
    torch.set_num_threads(2)
    try:
        translator = rnnlab.load(auto_run)
        decoding_threads = torch.get_num_threads()
        translator.translate(["a b c"])
    finally:
        torch.set_num_threads(1)
    assert decoding_threads == 1  # the run's train.num_threads
    assert threads == [decoding_threads]


def test_evaluate_times_the_probe_at_the_thread_count_it_decodes_with(
    auto_run, fresh_probe, monkeypatch, capsys
):
    threads = _record_probe_threads(monkeypatch)
    torch.set_num_threads(2)
    try:
        result = run_cli(
            monkeypatch, capsys, "evaluate", auto_run, "--data", auto_run.parent / "test.tsv"
        )
    finally:
        torch.set_num_threads(1)
    assert result.code == 0, result.err
    assert threads == [1]


# -- one choice everywhere ------------------------------------------------------------------------
@pytest.mark.parametrize(("speedup", "chosen"), [(0.5, "fp32"), (3.0, "bf16")])
def test_every_path_applies_the_choice_the_training_notice_announced(
    tmp_path, monkeypatch, capsys, speedup, chosen
):
    from rnnlab.serve.models import run_batch
    from rnnlab.serve.requests import DecodeSettings

    data = _corpus(tmp_path / "data")
    _pretend(monkeypatch, native=True, speedup=speedup)
    watch = _Watch(monkeypatch)
    run = tmp_path / "run"
    settings = _seq2seq_settings(data, **{"data.test": data / "test.tsv"})
    result = run_cli(monkeypatch, capsys, "train", "seq2seq", "--out", run, *_sets(settings))
    assert result.code == 0, result.err
    ratio = f"its bfloat16 products ran {speedup:.2f}× as fast as float32's"
    for key in ("train.precision", "decode.precision"):
        line = f"{key}: auto → {chosen} (this CPU runs bfloat16 natively; {ratio})"
        assert line in result.err.splitlines(), result.err
    assert "test: " in result.err  # the end-of-training test scoring ran
    _assert_all(watch.take("train"), chosen, "training steps")
    _assert_all(watch.take("decode"), chosen, "validation and test decoding")
    watch.clear()

    result = run_cli(monkeypatch, capsys, "evaluate", run, "--data", data / "test.tsv", "--json")
    assert result.code == 0, result.err
    _assert_all(watch.take("decode"), chosen, "rnnlab evaluate")
    watch.clear()

    result = run_cli(monkeypatch, capsys, "translate", run, stdin="a b c\nd e\n")
    assert result.code == 0 and len(result.out.splitlines()) == 2, result
    _assert_all(watch.take("decode"), chosen, "rnnlab translate")

    result = run_cli(monkeypatch, capsys, "translate", run, "--beam", 2, stdin="a b c\n")
    assert result.code == 0, result
    _assert_all(watch.take("decode"), chosen, "rnnlab translate --beam 2")

    translator = rnnlab.load(run, threads=1)
    translator.translate(["a b c", "", "d e f g"])
    _assert_all(watch.take("decode"), chosen, "rnnlab.load(run).translate")
    run_batch(translator, DecodeSettings(beam=1), ["a b", "c d e"])
    _assert_all(watch.take("decode"), chosen, "the server's run_batch")


def test_an_outer_autocast_does_not_override_a_resolved_fp32_decode(auto_run, monkeypatch):
    """``auto → fp32`` holds even when the caller decodes inside its own bfloat16 autocast."""
    _pretend(monkeypatch, native=True, speedup=0.5)
    watch = _Watch(monkeypatch)
    translator = rnnlab.load(auto_run, threads=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        translator.translate(["a b c", "d e"])
    _assert_all(watch.take("decode"), "fp32", "decoding inside an outer bf16 autocast")


# -- export ---------------------------------------------------------------------------------------
def _lstm_run(data: Path, run: Path) -> Path:
    """A one-step LSTM translator trained in float32 (an LSTM is what oneDNN lacks in bf16)."""
    overrides = {
        "model.cell": "lstm",
        "data.valid": "",
        "train.max_steps": 1,
        "train.precision": "fp32",
        "decode.precision": "fp32",
    }
    _train(run, _seq2seq_settings(data, **overrides))
    return run


def test_export_of_an_lstm_run_is_not_refused_over_decode_precision(
    auto_run, tmp_path, monkeypatch, capsys
):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    run = _lstm_run(auto_run.parent, tmp_path / "lstm")
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)  # a CPU without bf16
    result = run_cli(
        monkeypatch,
        capsys,
        "export",
        run,
        "--out",
        tmp_path / "export",
        "--set",
        "decode.precision=bf16",
    )
    assert result.code == 0, result.err
    assert (tmp_path / "export").is_dir()


def test_lstm_runs_are_refused_bf16_decoding_where_the_kernel_is_missing_but_not_auto(
    auto_run, tmp_path, monkeypatch, capsys
):
    run = _lstm_run(auto_run.parent, tmp_path / "lstm")
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    result = run_cli(
        monkeypatch, capsys, "translate", run, "--set", "decode.precision=bf16", stdin="a b\n"
    )
    line = assert_user_error(result, "decode.precision: bf16 needs a CPU with AVX512-BF16")
    assert "auto or fp32" in line
    result = run_cli(
        monkeypatch, capsys, "translate", run, "--set", "decode.precision=auto", stdin="a b\n"
    )
    assert result.code == 0 and len(result.out.splitlines()) == 1, result
    with pytest.raises(ConfigError, match=r"^train\.precision: bf16 needs"):
        check_bf16_kernels(nn.LSTM(2, 2), "train.precision", "bf16", "cpu")


# -- tuning ---------------------------------------------------------------------------------------
def test_tuning_trials_refuse_bf16_lstms_where_the_kernel_is_missing(tmp_path, monkeypatch, capsys):
    pytest.importorskip("optuna")
    import yaml

    from rnnlab.tuning.study import load_study

    timemachine = Path(__file__).resolve().parents[2] / "data" / "timemachine"
    config = {
        "task": "lm",
        "seed": 3,
        "data": {
            "train": str(timemachine / "train.txt"),
            "valid": str(timemachine / "valid.txt"),
            "max_examples": 60,
        },
        "model": {"embed_size": 8, "hidden_size": 16, "cell": "lstm"},
        "train": {
            "epochs": 1,
            "max_steps": 2,
            "valid_every": 2,
            "batch_size": 8,
            "bptt": 16,
            "num_threads": 1,
            "device": "cpu",
            "precision": "bf16",
        },
    }
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (tmp_path / "space.yaml").write_text(
        "train.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n", encoding="utf-8"
    )
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)  # a CPU without bf16
    # The training command refuses this config in one line before it trains ...
    result = run_cli(
        monkeypatch,
        capsys,
        "train",
        "lm",
        "--config",
        tmp_path / "lm.yaml",
        "--out",
        tmp_path / "run",
    )
    assert_user_error(result, "train.precision: bf16 needs a CPU with AVX512-BF16")
    # ... and a study of it must not train it either: its trial fails with the same reason.
    run_cli(
        monkeypatch,
        capsys,
        "tune",
        "--config",
        tmp_path / "lm.yaml",
        "--space",
        tmp_path / "space.yaml",
        "--trials",
        1,
        "--out",
        tmp_path / "study",
    )
    (trial,) = load_study(tmp_path / "study").trials
    assert "bf16 needs a CPU with AVX512-BF16" in trial.user_attrs.get("error", ""), trial
