"""The teacher-forcing probability ε of scheduled sampling (Bengio et al. 2015).

"Scheduled Sampling for Sequence Prediction with Recurrent Neural Networks": while training, the
decoder's input at each target position is the gold previous token with probability ε, otherwise the
model's own prediction; ε starts at 1 (teacher forcing) and decays with the training step i, so the
model learns to continue from its own mistakes, as it must at test time. The paper's three decays,
each floored at ``minimum``::

    linear            ε_i = max(min, 1 − i / k)          k > 0: steps until ε would reach 0
    exponential       ε_i = max(min, k ** i)             0 < k < 1
    inverse_sigmoid   ε_i = max(min, k / (k + exp(i / k)))   k ≥ 1: the larger, the slower
"""

from __future__ import annotations

import math
from typing import Literal

from rnnlab.errors import ConfigError

Schedule = Literal["none", "linear", "exponential", "inverse_sigmoid"]


def check_schedule(kind: Schedule, k: float, minimum: float) -> None:
    """Refuse a ``k`` outside the schedule's range, naming the config keys."""
    if not 0.0 <= minimum <= 1.0:
        raise ConfigError(f"train.ss_min_teacher_forcing must be in [0, 1], got {minimum}")
    if kind == "linear" and k <= 0:
        raise ConfigError(f"train.ss_k: linear scheduled sampling needs k > 0 (steps), got {k}")
    if kind == "exponential" and not 0 < k < 1:
        raise ConfigError(f"train.ss_k: exponential scheduled sampling needs 0 < k < 1, got {k}")
    if kind == "inverse_sigmoid" and k < 1:
        raise ConfigError(f"train.ss_k: inverse_sigmoid scheduled sampling needs k ≥ 1, got {k}")


def teacher_forcing_probability(kind: Schedule, step: int, *, k: float, minimum: float) -> float:
    """ε at training step ``step`` (0-based); 1 for ``none``."""
    if kind == "none":
        return 1.0
    if kind == "linear":
        value = 1.0 - step / k
    elif kind == "exponential":
        value = k**step
    else:
        value = k / (k + math.exp(min(step / k, 700.0)))
    return max(minimum, min(1.0, value))
