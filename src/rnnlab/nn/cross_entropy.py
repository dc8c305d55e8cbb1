"""Summed cross-entropy over rows of logits, with its gradient written in one pass.

Every training step of a translator or a word language model ends in an (N, V) array of logits, one
row per target token. It is the largest array of the step: autograd's composition of
``F.cross_entropy`` walks it four times on the way back (a dense zero-filled gradient of the
log-probabilities, a second one for label smoothing, their sum, the log-softmax's own backward), and
once more under bf16 to cast the result. The gradient has a closed form, ``softmax(z_i) - q_i``, with
``q_i`` putting ``1 - ε`` on the target and ``ε / V`` on every word, so it is written directly from
the saved log-probabilities.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnlab.nn.precision import full_precision


class _SummedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: Tensor, targets: Tensor, smoothing: float) -> Tensor:
        rows = logits[: targets.size(0)]  # the padding rows past the targets are never read
        log_probs = torch.log_softmax(full_precision(rows), dim=-1)  # (N, V), float32
        loss = log_probs.gather(1, targets.unsqueeze(1)).sum().mul(-(1.0 - smoothing))
        if smoothing > 0:
            loss = loss - log_probs.sum() * (smoothing / log_probs.size(1))
        ctx.save_for_backward(log_probs, targets)
        ctx.smoothing = smoothing
        ctx.logits_shape, ctx.logits_dtype = logits.shape, logits.dtype
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor, None, None]:
        log_probs, targets = ctx.saved_tensors
        smoothing: float = ctx.smoothing
        grad = log_probs.exp()  # softmax (N, V); the saved log-probabilities stay intact
        if smoothing > 0:
            grad.sub_(smoothing / grad.size(1))
        n = grad.size(0)
        grad.index_put_(
            (torch.arange(n, device=grad.device), targets),
            grad.new_tensor(-(1.0 - smoothing)),
            accumulate=True,
        )
        grad.mul_(grad_loss)
        if ctx.logits_shape == grad.shape and ctx.logits_dtype == grad.dtype:
            return grad, None, None
        out = grad.new_empty(ctx.logits_shape, dtype=ctx.logits_dtype)
        out[:n].copy_(grad)  # cast and copy in one pass
        out[n:].zero_()
        return out, None, None


def summed_cross_entropy(
    logits: Tensor, targets: Tensor, *, label_smoothing: float = 0.0, padded: bool = False
) -> Tensor:
    """``F.cross_entropy(logits, targets, reduction="sum", label_smoothing=...)``, in value and gradient.

    ``logits`` (N, V) in any float dtype, ``targets`` (N,) word ids. The log-softmax and the sum run in
    float32 even when the logits come out of bfloat16 autocast; the gradient comes back in the
    logits' dtype, rounded once, after the subtraction at the target.

    ``padded=True`` accepts logits (N', V) with N' ≥ N that end in rows of padding, as
    ``rnnlab.nn.precision.project_padded_rows`` makes them: those rows add nothing to the loss and
    get a zero gradient, without the copy that slicing them off would cost on the way back.
    """
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
    rows_fit = targets.dim() == 1 and (
        logits.size(0) >= targets.size(0) if padded else logits.size(0) == targets.size(0)
    )
    if logits.dim() != 2 or not rows_fit:
        shape = "(N' ≥ N, V)" if padded else "(N, V)"
        raise ValueError(
            f"expected logits {shape} and targets (N,), got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    return _SummedCrossEntropy.apply(logits, targets, label_smoothing)


__all__ = ["summed_cross_entropy"]
