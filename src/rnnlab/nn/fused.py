"""``torch.nn.RNN``/``GRU``/``LSTM`` that stay in float32 under CUDA autocast.

PyTorch's CUDA autocast sends cuDNN's recurrent kernel through a wrapper that casts its input,
weights and states to float16, whatever dtype the autocast context names. Under rnnlab's bfloat16
autocast, which has no loss scaling, a cuDNN LSTM would then train in float16 without a scaler, and
its small gradients could underflow to zero. These subclasses run the kernel with autocast off, in
the weights' dtype (float32), and leave every other device alone: on a CPU, oneDNN's LSTM runs in
bfloat16 under autocast, which is where its speed-up comes from. The class names, parameters and
``state_dict`` are those of ``torch.nn``, so checkpoints and exports do not see the difference.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence


def runs_outside_autocast(device_type: str) -> bool:
    """Whether a recurrent kernel on ``device_type`` must leave autocast to keep its dtype."""
    return device_type == "cuda" and torch.is_autocast_enabled("cuda")


def _input_device_type(input: Tensor | PackedSequence) -> str:
    data = input.data if isinstance(input, PackedSequence) else input
    return data.device.type


def _cast_input(input: Tensor | PackedSequence, dtype: torch.dtype) -> Tensor | PackedSequence:
    if isinstance(input, PackedSequence):
        return input._replace(data=input.data.to(dtype))
    return input.to(dtype)


def _cast_state(hx: Any, dtype: torch.dtype) -> Any:
    if hx is None:
        return None
    if isinstance(hx, tuple):
        return tuple(h.to(dtype) for h in hx)
    return hx.to(dtype)


class _OutsideCudaAutocast:
    """The forward pass shared by the three classes below (a mixin ahead of the ``torch.nn`` one)."""

    def forward(self, input: Any, hx: Any = None) -> Any:
        device_type = _input_device_type(input)
        if not runs_outside_autocast(device_type):
            return super().forward(input, hx)  # type: ignore[misc]
        dtype = self.weight_ih_l0.dtype  # type: ignore[attr-defined]
        with torch.autocast(device_type, enabled=False):
            return super().forward(_cast_input(input, dtype), _cast_state(hx, dtype))  # type: ignore[misc]


class RNN(_OutsideCudaAutocast, nn.RNN):
    """``torch.nn.RNN``, in float32 under CUDA autocast."""


class GRU(_OutsideCudaAutocast, nn.GRU):
    """``torch.nn.GRU``, in float32 under CUDA autocast."""


class LSTM(_OutsideCudaAutocast, nn.LSTM):
    """``torch.nn.LSTM``, in float32 under CUDA autocast."""
