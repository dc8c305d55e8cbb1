"""Mixed precision: bfloat16 autocast with float32 master weights, on CPU and CUDA alike.

``precision: bf16`` runs the matrix products (linear layers, attention, LSTM kernels) in bfloat16
under ``torch.autocast`` while the parameters, gradients and optimizer moments stay float32. bfloat16
keeps float32's exponent range, so unlike float16 it needs no loss scaling. Where eight bits of
mantissa would hurt — the log-softmax and cross-entropy over the vocabulary, the CRF's sums of
scores — the models and tasks cast their scores to float32 before reducing them.

On CPUs with AVX512-BF16 (or AMX) oneDNN runs bfloat16 products natively; elsewhere they are emulated
and far slower than float32 (a 256 × 1024 × 1024 product took 60× as long on an AVX2-only CPU). Native
is not always faster either: on an Intel Xeon whose AMX units the virtual machine did not expose,
oneDNN's AVX512-BF16 products ran at 0.55–0.71× of MKL's float32 ones, and training at 0.62–0.71×.
That is why float32 stays the default and ``precision: auto`` exists: bfloat16 where the device runs
it natively *and*, on a CPU, a short timed product shows it clearly faster than float32; float32
elsewhere, so one config is fast on every machine. The shipped recipes use it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from rnnlab.errors import ConfigError

Precision = Literal["fp32", "bf16", "auto"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")


@functools.cache
def _native_bf16(device_type: str) -> bool:
    if device_type == "cuda":
        # Without ``including_emulation=False`` any GPU that can hold a bfloat16 tensor counts, and
        # pre-Ampere GPUs (V100, T4) emulate its products far slower than float16 or float32.
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 products in hardware (CPU: AVX512-BF16 or AMX)."""
    return _native_bf16(torch.device(device).type)


PROBE_SHAPE = (128, 512, 1536)
"""Rows, inputs and outputs of the product ``bf16_speedup`` times: a recurrent layer's gate product
at a realistic batch and width (3 GRU gates of 512)."""

BF16_MIN_SPEEDUP = 1.25
"""How much faster than float32 a CPU's bfloat16 product must run for ``auto`` to pick bf16.

Outside the product a bf16 step pays for casts (and its narrower mantissa costs a little accuracy),
so bfloat16 products only as fast as float32 ones make training slower. The CPUs measured so far lie
far from the line: 0.55–0.71× on an Intel Xeon without AMX, 3–7× with it.
"""


def _best_seconds(product: Callable[[], torch.Tensor], calls: int = 3, rounds: int = 3) -> float:
    product()  # oneDNN compiles a kernel for each new shape: keep that out of the timing
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            product()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


_SPEEDUPS: dict[str, float] = {}
_SPEEDUPS_LOCK = threading.Lock()


def bf16_speedup(device_type: str) -> float:
    """float32 time over bfloat16 time of one ``PROBE_SHAPE`` product on this CPU (> 1: bf16 is
    faster), measured once per process (about 50 ms) at the current thread count.

    Only for a CPU that runs bfloat16 natively; the best of three rounds, so a busy moment on a
    shared machine does not decide it. ``inf`` for CUDA, whose bfloat16 support means tensor cores.
    Measured once, so a run never changes precision halfway; ``settle_bf16_speedup`` replaces the
    value where processes must agree.
    """
    if device_type != "cpu":
        return float("inf")
    with _SPEEDUPS_LOCK:  # a server's models decode on their own threads: one measures, once
        if device_type not in _SPEEDUPS:
            _SPEEDUPS[device_type] = _time_bf16_speedup()
        return _SPEEDUPS[device_type]


def settle_bf16_speedup(device_type: str, speedup: float) -> None:
    """Make ``bf16_speedup(device_type)`` return ``speedup`` for the rest of this process: data-parallel
    ranks take their slowest rank's ratio, so that all of them pick the same precision."""
    with _SPEEDUPS_LOCK:
        _SPEEDUPS[device_type] = speedup


def _time_bf16_speedup() -> float:
    rows, inputs, outputs = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, inputs, generator=generator, dtype=torch.float32)
    w = torch.randn(outputs, inputs, generator=generator, dtype=torch.float32)
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        fp32 = _best_seconds(lambda: F.linear(x, w))
        xb, wb = x.bfloat16(), w.bfloat16()
        bf16 = _best_seconds(lambda: F.linear(xb, wb))
    return fp32 / bf16


def bf16_pays(device: torch.device | str) -> bool:
    """Whether ``auto`` picks bf16 on ``device``: native bfloat16, and on a CPU products at least
    ``BF16_MIN_SPEEDUP`` times as fast as float32's (``bf16_speedup``)."""
    device_type = torch.device(device).type
    if not native_bf16(device):
        return False
    return device_type != "cpu" or bf16_speedup(device_type) >= BF16_MIN_SPEEDUP


def _check_value(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
        )


def resolve_precision(precision: str, device: torch.device | str) -> Literal["fp32", "bf16"]:
    """``fp32`` or ``bf16``: what ``precision`` means on ``device`` (``auto``: bf16 where it pays)."""
    _check_value(precision)
    if precision == "auto":
        return "bf16" if bf16_pays(device) else "fp32"
    return "bf16" if precision == "bf16" else "fp32"


def precision_notice(key: str, precision: str, device: torch.device | str) -> str | None:
    """A line for the user when ``precision`` (the value of config key ``key``) needs one.

    ``auto`` says what it chose; ``bf16`` on a device without native bfloat16 says that it will be
    slow, because the run still does what the config asks.
    """
    resolved = resolve_precision(precision, device)
    device_type = torch.device(device).type
    native = native_bf16(device)
    measured = (
        f"; its bfloat16 products ran {_ratio_text(bf16_speedup(device_type))}× as fast as "
        "float32's"
        if native and device_type == "cpu"
        else ""
    )
    if precision == "auto":
        why = "runs bfloat16 natively" if native else "has no native bfloat16"
        return f"{key}: auto → {resolved} (this {device_type.upper()} {why}{measured})"
    if resolved == "bf16" and not native:
        hardware = " (AVX512-BF16 or AMX)" if device_type == "cpu" else ""
        return (
            f"{key}: bf16 on a {device_type.upper()} without native bfloat16{hardware}: "
            f"emulated bfloat16 is many times slower than fp32 here; set {key}: auto or fp32"
        )
    if resolved == "bf16" and not bf16_pays(device):
        return (
            f"{key}: bf16 on this {device_type.upper()}, which runs bfloat16 natively{measured}: "
            f"bf16 will likely train and decode slower than fp32 here; {key}: auto would pick fp32"
        )
    return None


def _ratio_text(speedup: float) -> str:
    """``speedup`` to two decimals, rounded down: a ratio just under ``BF16_MIN_SPEEDUP`` must not
    read as the threshold itself beside ``auto → fp32``."""
    if not math.isfinite(speedup):
        return str(speedup)
    return f"{math.floor(speedup * 100) / 100:.2f}"


def check_bf16_kernels(
    model: torch.nn.Module, key: str, precision: str, device: torch.device | str
) -> None:
    """Refuse bf16 where ``model`` would reach a kernel that does not exist, before a run starts.

    oneDNN has no bfloat16 LSTM primitive on a CPU without AVX512-BF16 or AMX: ``torch.nn.LSTM``
    under bf16 autocast fails there at its first batch with "could not create a primitive
    descriptor". GRUs and products are emulated (slowly), so only LSTMs are refused.
    """
    # Native first: where bfloat16 is native nothing is refused, and ``auto`` need not time its
    # probe here (loading a run for decoding calls this before the run's thread count applies).
    _check_value(precision)
    if torch.device(device).type != "cpu" or native_bf16(device):
        return
    if resolve_precision(precision, device) != "bf16":
        return
    if not any(isinstance(m, torch.nn.LSTM) for m in model.modules()):
        return
    raise ConfigError(
        f"{key}: bf16 needs a CPU with AVX512-BF16 or AMX for this model's LSTM layers (this CPU "
        f"has neither, and oneDNN has no bfloat16 LSTM kernel without them); set {key}: auto or fp32"
    )


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in: bfloat16 autocast for ``bf16`` (and ``auto`` where the
    device runs bfloat16 natively), nothing for ``fp32``."""
    device_type = torch.device(device).type
    enabled = resolve_precision(precision, device) == "bf16"
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=enabled)


def autocast_operand(x: torch.Tensor) -> torch.Tensor:
    """``x`` cast to the autocast dtype when autocast is on for its device, else ``x`` itself.

    For a tensor that a loop hands to a matrix product at every step: autocast caches its casts of
    parameters only, so anything else (encoder outputs, column blocks of a weight) would be cast again
    at every step, and its gradient converted back at every step too.
    """
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return x
    return x.to(torch.get_autocast_dtype(device_type))


def step_read_operand(x: torch.Tensor) -> torch.Tensor:
    """A tensor that a decoder reads at every step in batched products with a few query rows (the
    attention's memory and keys): float32 on the CPU, ``autocast_operand(x)`` elsewhere.

    One decoder step reads (B, S, C) with 1 query row per sentence, a beam with K. For those shapes
    oneDNN's bfloat16 ``bmm`` ran slower than MKL's float32 one on an AMX Xeon (64 × (1, S) × (S, 512),
    S = 13–33: 1.1–3.3× at one thread, 2.1–6.6× at two), and they are a small share of a step's arithmetic,
    so the CPU keeps them in float32 even under autocast; ``bmm_in_dtype`` multiplies in that dtype.
    """
    if x.device.type == "cpu":
        return full_precision(x)
    return autocast_operand(x)


def bmm_in_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm(a, b)`` in ``b``'s dtype whatever autocast says (``a`` is cast to it): the product
    with an operand whose precision ``step_read_operand`` chose."""
    with torch.autocast(b.device.type, enabled=False):
        return torch.bmm(a.to(b.dtype), b)


def tanh_in_float32_on_cpu(x: torch.Tensor) -> torch.Tensor:
    """``torch.tanh(x)``, computed in float32 (and returned so) when ``x`` is a 16-bit CPU tensor.

    On the CPU ATen's bfloat16 tanh is several times slower than its float32 one: a (64, 256)
    tensor took 33 µs against 6.7 µs at one thread on an AMX Xeon (torch 2.13), while the cast to
    float32 took 3.6 µs. Decoder steps under bfloat16 autocast apply it to their gates and deep
    output; the next product casts the float32 result back (autocast), or mixes it into a float32
    state. Elsewhere (CUDA, 32- and 64-bit tensors) it is ``torch.tanh``.
    """
    return torch.tanh(full_precision(x) if x.device.type == "cpu" else x)


ROW_MULTIPLE = 64
"""``project_padded_rows`` pads a bfloat16 product's row count up to a multiple of this."""


def project_padded_rows(
    project: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor
) -> torch.Tensor:
    """``project(rows)`` for ``rows`` (N, H), followed by rows of padding: (N', V) with N' ≥ N.

    Under bfloat16 autocast on the CPU the rows are padded with zeros to a multiple of
    ``ROW_MULTIPLE`` before the product, and the padding's outputs are left in the result for the
    loss to skip (``summed_cross_entropy(..., padded=True)``): slicing them off would make autograd
    zero-fill and copy an array of the logits' size on the way back.

    oneDNN builds (just-in-time compiles, on CPUs with AMX) a bfloat16 matrix product for every new
    shape and caches it. The rows of a batch's valid target tokens, N = Σ lengths, differ in nearly
    every batch of variable-length sentences, so without padding each training step rebuilds the
    vocabulary projection's forward and backward products: on an AMX Xeon that cost the Multi30k
    attention recipe 15% of its speed. Padded, N takes a few dozen values. The zero rows add nothing
    to the weight gradient and get none themselves, so the result is the same; the extra rows cost
    at most 63 rows of the product. float32 (MKL, no per-shape compilation) is left as it is.
    """
    n = rows.size(0)
    extra = -n % ROW_MULTIPLE
    cpu_bf16 = (
        rows.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )
    if not cpu_bf16 or extra == 0:
        return project(rows)
    return project(F.pad(rows, (0, 0, 0, extra)))


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is in a 16-bit float type; float32 and float64 pass unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


__all__ = [
    "PRECISIONS",
    "Precision",
    "autocast",
    "autocast_operand",
    "bf16_pays",
    "bf16_speedup",
    "bmm_in_dtype",
    "check_bf16_kernels",
    "full_precision",
    "native_bf16",
    "precision_notice",
    "project_padded_rows",
    "resolve_precision",
    "settle_bf16_speedup",
    "step_read_operand",
    "tanh_in_float32_on_cpu",
]
