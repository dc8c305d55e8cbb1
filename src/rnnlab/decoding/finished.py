"""Each sentence's best finished hypotheses during beam search, kept in tensors.

Beam search finishes hypotheses at many steps, often thousands in one step on a large batch. Making a
Python object of each as it ends, and sorting every sentence's list again, cost beam search on the
textbook config (1,000 sentences, 32 units, 1 thread) about a fifth of its time: turning a 2-D
tensor into nested lists runs at about 0.1 µs per element. Only the ``n_best`` best finished
hypotheses of a sentence can be in its answer (a later one must score above them to enter), so
these are kept per sentence in (B, n_best) tensors, merged with each step's new ones by one stable
sort, and turned into ``Hypothesis`` objects once, at the end::

    kept (B_e, n) │ new (B_e, C) ─ stable sort by score, descending ─ first n → kept (B_e, n)

The stable sort puts a hypothesis that ended earlier (or ranked higher among its step's candidates)
first among equal scores, as sorting a list of all finished hypotheses in the order they ended does.
Scores are computed in float64 as ``log_prob / lp`` is in Python, so they equal those of such a list.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.decoding.hypothesis import Hypothesis


class FinishedHypotheses:
    """The ``n_best`` best finished hypotheses of each of ``batch_size`` sentences so far."""

    def __init__(self, batch_size: int, n_best: int, device: torch.device | str) -> None:
        self.n_best = n_best
        self.score = torch.full(
            (batch_size, n_best), float("-inf"), dtype=torch.float64, device=device
        )
        """Ranking scores, best first; ``-inf`` marks an empty slot."""
        self.log_prob = torch.zeros((batch_size, n_best), dtype=torch.float32, device=device)
        self.tokens = torch.zeros((batch_size, n_best, 0), dtype=torch.long, device=device)
        """Token ids, padded to the longest hypothesis kept so far."""
        self.length = torch.zeros((batch_size, n_best), dtype=torch.long, device=device)

    def add(self, sentences: Tensor, log_prob: Tensor, tokens: Tensor, lp: float) -> None:
        """Offer C hypotheses of each sentence in ``sentences`` (S,), all of ``tokens.size(2)`` tokens.

        ``log_prob`` (S, C) is ``-inf`` where a slot holds no hypothesis; ``tokens`` is (S, C, T);
        ``lp`` is the length penalty of their length.
        """
        length = tokens.size(2)
        if length > self.tokens.size(2):
            self.tokens = F.pad(self.tokens, (0, length - self.tokens.size(2)))
        width = self.tokens.size(2)
        score = torch.cat([self.score[sentences], log_prob.double() / lp], dim=1)  # (S, n + C)
        order = score.sort(dim=1, descending=True, stable=True).indices[:, : self.n_best]

        def kept(old: Tensor, new: Tensor) -> Tensor:
            """The rows of ``old`` (n) and ``new`` (C) per sentence that ``order`` keeps."""
            merged = torch.cat([old, new], dim=1)
            index = order.view(*order.shape, *([1] * (merged.dim() - 2))).expand(
                -1, -1, *merged.shape[2:]
            )
            return merged.gather(1, index)

        self.score[sentences] = score.gather(1, order)
        self.log_prob[sentences] = kept(self.log_prob[sentences], log_prob)
        self.length[sentences] = kept(
            self.length[sentences], torch.full_like(log_prob, length, dtype=torch.long)
        )
        self.tokens[sentences] = kept(self.tokens[sentences], F.pad(tokens, (0, width - length)))

    def nth_best(self, sentences: Tensor) -> Tensor:
        """(S,) float64 score of each sentence's ``n_best``-th best hypothesis; ``-inf`` if it has
        fewer."""
        return self.score[sentences, -1]

    def hypotheses(self) -> list[list[Hypothesis]]:
        """Each sentence's finished hypotheses, best first (at most ``n_best``)."""
        # Flat lists: nested ones cost one more Python list per row, and turning a 2-D tensor into
        # nested lists is far slower than slicing a flat one.
        width, n = self.tokens.size(2), self.n_best
        tokens = self.tokens.flatten().tolist()
        scores, log_probs = self.score.flatten().tolist(), self.log_prob.flatten().tolist()
        lengths = self.length.flatten().tolist()
        result: list[list[Hypothesis]] = []
        for first in range(0, len(scores), n):
            hyps = []
            for i in range(first, first + n):
                if scores[i] == float("-inf"):  # the empty slots come last
                    break
                start = i * width
                hyps.append(Hypothesis(tokens[start : start + lengths[i]], log_probs[i], scores[i]))
            result.append(hyps)
        return result
