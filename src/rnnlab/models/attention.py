"""Attention over encoder outputs: additive (Bahdanau et al. 2015) and multiplicative (Luong et al. 2015).

Both score a query against every source position, turn the scores into weights with a softmax that
gives padded positions exactly zero, and return the weighted sum of the encoder outputs (the
*context*)::

    memory (B, S, C) ── project_keys (once per sentence) ──> keys (B, S, K)
    query  (B, Q, Hq) ─┐
                       ├─ score (B, Q, S) ── masked softmax over valid S ──> weights (B, Q, S)
    keys ──────────────┘                                                       │
    memory ─────────────────────────────── weights @ memory ──> context (B, Q, C)

The key projection depends only on the source, so a decoder computes it once in ``init_state`` and
keeps it in its state rather than repeating it at every output step.

* Bahdanau (additive, "concat"): ``score(q, m) = vᵀ tanh(W_q q + W_k m)``.
* Luong dot: ``score(q, m) = qᵀ m`` (needs ``Hq == C``; no parameters).
* Luong general: ``score(q, m) = qᵀ W m``; the keys are ``W m``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.nn.masking import length_mask
from rnnlab.nn.precision import bmm_in_dtype, full_precision, step_read_operand


def padding_mask(memory_lengths: Tensor, source_len: int) -> Tensor:
    """(B,) lengths → (B, 1, S) True at padded source positions.

    A decoder loop builds it once per sentence and passes it to ``attend`` at every step.
    """
    return ~length_mask(memory_lengths, source_len).unsqueeze(1)


def additive_scores(projected: Tensor, keys: Tensor, energy: Tensor) -> Tensor:
    """``vᵀ tanh(q + k)`` for every query and key: (B, Q, A), (B, S, A), v (1, A) → (B, Q, S).

    On a CPU it is computed in float32 (or float64) as ``2·vᵀ σ(2(q + k)) − Σv``, the same function
    (tanh z = 2σ(2z) − 1): the (B, Q, S, A) energies are the largest tensor a decoder step makes (beam
    search: K queries per sentence), and ``torch.sigmoid`` over them ran about 7× faster than
    ``torch.tanh`` on one CPU, where tanh was the largest cost of decoding (on another, 0.7×). Under
    bfloat16 autocast too: ``torch.tanh`` in bfloat16 ran 3.5× slower than in float32 on a CPU, and
    float32 also avoids the cancellation of 2σ − 1 near 0, which eight bits of mantissa would not
    absorb. Elsewhere (CUDA) a 16-bit input keeps the tanh in its own dtype.
    """
    device_type = projected.device.type
    if device_type != "cpu" and (
        torch.is_autocast_enabled(device_type)
        or projected.dtype not in (torch.float32, torch.float64)
    ):
        return F.linear(torch.tanh(projected.unsqueeze(2) + keys.unsqueeze(1)), energy).squeeze(-1)
    projected, keys = full_precision(projected), full_precision(keys)
    with torch.autocast(device_type, enabled=False):
        # 2q + 2k in one pass over the broadcast tensor; the sigmoid overwrites it in place.
        doubled = torch.add(2 * projected.unsqueeze(2), keys.unsqueeze(1), alpha=2)
        energy = energy.to(doubled.dtype)
        return 2 * F.linear(doubled.sigmoid_(), energy).squeeze(-1) - energy.sum()


def _masked_weights(scores: Tensor, padding: Tensor) -> Tensor:
    """Scores (B, Q, S) → weights with exact zeros at padding (see ``masked_softmax``).

    The softmax runs in float32 even under bfloat16 autocast.
    """
    weights = torch.softmax(full_precision(scores).masked_fill(padding, float("-inf")), dim=-1)
    return torch.nan_to_num(weights, nan=0.0)


class BahdanauAttention(nn.Module):
    """Additive attention with an ``attention_size``-dimensional hidden layer."""

    def __init__(self, *, query_size: int, memory_size: int, attention_size: int) -> None:
        super().__init__()
        self.key_layer = nn.Linear(memory_size, attention_size, bias=False)
        self.query_layer = nn.Linear(query_size, attention_size, bias=False)
        self.energy_layer = nn.Linear(attention_size, 1, bias=False)

    def project_keys(self, memory: Tensor) -> Tensor:
        """Memory (B, S, C) → keys (B, S, A); on a CPU in float32 even under autocast
        (``step_read_operand``).

        ``additive_scores`` adds them to every step's query in float32 there: cast once per sentence
        here, not at every step.
        """
        return step_read_operand(self.key_layer(memory))

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, memory_lengths: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Query (B, Q, Hq), keys (B, S, A), memory (B, S, C), lengths (B,) → context (B, Q, C), weights (B, Q, S)."""
        padding = padding_mask(memory_lengths.to(memory.device), memory.size(1))
        return self.attend(query, keys, memory, padding)

    def attend(
        self,
        query: Tensor,
        keys: Tensor,
        memory: Tensor,
        padding: Tensor,
        *,
        query_layer: Callable[[Tensor], Tensor] | None = None,
        read_memory: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``forward`` with the (B, 1, S) ``padding_mask`` made beforehand.

        ``query_layer`` stands in for ``self.query_layer`` and ``read_memory`` for
        ``torch.bmm(·, memory)``: a teacher-forced loop passes the ``rnnlab.nn.loop_products`` of
        them, which sum the gradients of the weight and of the memory once, after the loop.
        """
        projected = (query_layer or self.query_layer)(query)  # (B, Q, A)
        scores = additive_scores(projected, keys, self.energy_layer.weight)  # (B, Q, S)
        weights = _masked_weights(scores, padding)  # (B, Q, S)
        if read_memory is not None:
            return read_memory(weights), weights
        return bmm_in_dtype(weights, memory), weights


class LuongAttention(nn.Module):
    """Multiplicative attention: ``method="dot"`` (no parameters) or ``"general"`` (a bilinear map)."""

    def __init__(self, *, query_size: int, memory_size: int, method: str = "general") -> None:
        super().__init__()
        if method not in ("dot", "general"):
            raise ValueError(f"unknown Luong attention method {method!r}; expected dot or general")
        if method == "dot" and query_size != memory_size:
            raise ValueError(
                f"dot attention needs query and memory of one size (got {query_size} and "
                f"{memory_size}); use luong_general"
            )
        self.method = method
        self.key_layer = (
            nn.Linear(memory_size, query_size, bias=False) if method == "general" else None
        )

    def project_keys(self, memory: Tensor) -> Tensor:
        """Memory (B, S, C) → keys (B, S, Hq): ``W m`` for general, the memory itself for dot; in
        the dtype every step reads them in (``step_read_operand``)."""
        return step_read_operand(self.key_layer(memory)) if self.key_layer is not None else memory

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, memory_lengths: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Query (B, Q, Hq), keys (B, S, Hq), memory (B, S, C), lengths (B,) → context (B, Q, C), weights (B, Q, S)."""
        padding = padding_mask(memory_lengths.to(memory.device), memory.size(1))
        return self.attend(query, keys, memory, padding)

    def attend(
        self,
        query: Tensor,
        keys: Tensor,
        memory: Tensor,
        padding: Tensor,
        *,
        read_keys: Callable[[Tensor], Tensor] | None = None,
        read_memory: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``forward`` with the (B, 1, S) ``padding_mask`` made beforehand.

        ``read_keys`` stands in for ``torch.bmm(·, keysᵀ)`` and ``read_memory`` for
        ``torch.bmm(·, memory)`` (a teacher-forced loop passes ``rnnlab.nn.loop_products.LoopBmm``).
        Both products run in the dtype of the keys and of the memory.
        """
        if read_keys is not None:
            scores = read_keys(query)  # (B, Q, S)
        else:
            scores = bmm_in_dtype(query, keys.transpose(1, 2))
        weights = _masked_weights(scores, padding)
        if read_memory is not None:
            return read_memory(weights), weights
        return bmm_in_dtype(weights, memory), weights


Attention = BahdanauAttention | LuongAttention
