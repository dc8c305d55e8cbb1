"""Learning-rate schedules over a run's budget.

A run stopped by ``train.max_minutes`` at a constant learning rate ends far from the minimum the
same steps could reach with annealing; a schedule keyed to the budget lands there whichever limit
(steps, epochs or minutes) ends the run. The schedule is a factor of the base learning rate,
multiplied by the plateau decay factor (``train.lr_decay``) when both are on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ScheduleKind = Literal["constant", "linear", "cosine"]


@dataclass(frozen=True)
class LrSchedule:
    """``factor(step, progress)``: a linear warm-up over ``warmup_steps`` times the annealing of
    ``kind``. Both count from the first step (the annealing does not wait for the warm-up to end),
    so a warm-up of a few percent of the run barely changes the annealed rates after it."""

    kind: ScheduleKind = "constant"
    warmup_steps: int = 0

    @property
    def varies(self) -> bool:
        """False when every step runs at the base rate (constant, no warm-up)."""
        return self.kind != "constant" or self.warmup_steps > 0

    def factor(self, step: int, progress: float) -> float:
        """The multiplier for the step about to run; ``progress`` is the fraction of the run done."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        done = min(max(progress, 0.0), 1.0)
        if self.kind == "linear":
            anneal = 1.0 - done
        elif self.kind == "cosine":
            anneal = 0.5 * (1.0 + math.cos(math.pi * done))
        else:
            anneal = 1.0
        return warm * anneal


def run_progress(
    *,
    step: int,
    planned_steps: int,
    train_seconds: float,
    max_minutes: float,
) -> float:
    """Fraction of the run done: the furthest along of the step plan and the time budget."""
    by_steps = step / planned_steps if planned_steps > 0 else 0.0
    by_time = train_seconds / (max_minutes * 60.0) if max_minutes > 0 else 0.0
    return max(by_steps, by_time)
