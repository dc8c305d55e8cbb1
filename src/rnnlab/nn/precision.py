"""Mixed precision: bfloat16 autocast with float32 master weights, on CPU and CUDA alike.

``precision: bf16`` runs the matrix products (linear layers, attention, LSTM kernels) in bfloat16
under ``torch.autocast`` while the parameters, gradients and optimizer moments stay float32. bfloat16
keeps float32's exponent range, so unlike float16 it needs no loss scaling. Where eight bits of
mantissa would hurt — the log-softmax and cross-entropy over the vocabulary, the CRF's sums of
scores — the models and tasks cast their scores to float32 before reducing them.

On CPUs with AVX512-BF16 (or AMX) oneDNN runs bfloat16 products natively; elsewhere they are emulated
and may be slower than float32, which is why float32 stays the default.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in: bfloat16 autocast for ``bf16``, nothing for ``fp32``."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
        )
    device_type = torch.device(device).type
    return torch.autocast(
        device_type=device_type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )


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


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is in a 16-bit float type; float32 and float64 pass unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


__all__ = ["PRECISIONS", "Precision", "autocast", "autocast_operand", "full_precision"]
