"""Greedy, temperature and top-k sampling over the step protocol, for open-ended generation.

Every row of the batch generates exactly ``length`` tokens (a language model has no end to stop at).
Randomness comes only from the ``torch.Generator`` passed in, so a fixed seed reproduces a sample
whatever else the process has drawn from the global RNG.

* greedy: the most probable token at every step (the textbook's ``predict``);
* temperature T: sample from softmax(log p / T) — T < 1 sharpens, T > 1 flattens the distribution;
* top-k (Fan et al. 2018, "Hierarchical Neural Story Generation"): sample among the k most probable
  tokens only, renormalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from rnnlab.decoding.banned import ban, banned_index
from rnnlab.decoding.greedy import StepModel


def sampling_logits(log_probs: Tensor, *, temperature: float = 1.0, top_k: int = 0) -> Tensor:
    """Log-probabilities (B, V) → logits to sample from: scaled by 1/T, all but the top k at −inf."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    # Scaled from the row maximum, which softmax ignores, so a tiny T (one that even rounds to 0 in
    # the tensor's dtype) sends every other token to −inf, greedy in the limit, instead of
    # overflowing the maximum to inf and the softmax to nan; the maxima stay at 0, never 0 / 0.
    # The top k are chosen before the scaling, which keeps their order but, for a T beyond float
    # range, would turn every value into -0.0 and leave nothing to choose by.
    below_max = log_probs - log_probs.amax(dim=-1, keepdim=True)  # (B, V), ≤ 0
    if 0 < top_k < below_max.size(-1):
        kth = below_max.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        below_max = below_max.masked_fill(below_max < kth, float("-inf"))
    scaled = torch.where(below_max.isneginf(), below_max, below_max / temperature)
    return torch.where(below_max == 0, below_max, scaled)


@torch.no_grad()
def sample(
    model: StepModel,
    state: Any,
    tokens: Tensor,
    *,
    length: int,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    banned: Sequence[int] = (),
) -> list[list[int]]:
    """Continue every row for ``length`` tokens after reading ``tokens`` (B,) in ``state``.

    Returns the generated ids per row (without the given tokens), never one of ``banned``
    (``rnnlab.decoding.banned``). ``generator`` must live on the device of ``tokens``.
    """
    if length < 0:
        raise ValueError(f"length must be ≥ 0, got {length}")
    never = banned_index(banned, tokens.device)
    generated: list[Tensor] = []
    for _ in range(length):
        log_probs, state = model.step(tokens, state)  # (B, V)
        ban(log_probs, never)
        if greedy:
            tokens = log_probs.argmax(dim=-1)  # (B,)
        else:
            probs = torch.softmax(
                sampling_logits(log_probs, temperature=temperature, top_k=top_k), -1
            )
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)
        generated.append(tokens)
    if not generated:
        return [[] for _ in range(tokens.size(0))]
    return torch.stack(generated, dim=1).tolist()  # (B, length)
