"""Step models whose next-token distribution is a fixed table, for brute-force checks of searches."""

from __future__ import annotations

import torch

EOS_ID = 2


class StepTable:
    """The state counts steps; row 0 of ``LOG_PROBS`` is the first step's distribution, row 1 that of
    every later step."""

    LOG_PROBS: torch.Tensor

    def step(self, tokens, state, *, normalize=True):
        return self.LOG_PROBS[state.clamp(max=1)].clone(), state + 1

    def select_state(self, state, indices):
        return state[indices]

    @classmethod
    def log_prob(cls, output: list[int], max_len: int) -> float:
        """The output's log-probability, with the ``<eos>`` it ends with below ``max_len`` tokens."""
        words = output + [EOS_ID] if len(output) < max_len else output
        return float(sum(cls.LOG_PROBS[min(t, 1), word] for t, word in enumerate(words)))
