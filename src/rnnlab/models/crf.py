"""A linear-chain conditional random field over padded batches (Lafferty et al. 2001), as the output
layer of a BiLSTM tagger (Huang et al. 2015; Lample et al. 2016).

The score of a tag sequence y₁…y_n for emissions e (the tagger's per-position tag scores) is

    s(y) = start[y₁] + Σₜ e[t, yₜ] + Σₜ trans[yₜ₋₁, yₜ] + end[y_n]

and p(y | x) = exp s(y) / Z. ``log_partition`` computes log Z with the forward algorithm, vectorised
over the batch and the tags (one (B, K, K) logsumexp per time step); ``viterbi`` finds argmax_y s(y)
with the same recursion using max. Both read ``lengths``: at a padded step the running scores are
carried unchanged (and Viterbi's back-pointers are the identity), so padding never changes a result.
A sequence of length 0 has log Z = 0 and score 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.nn.masking import length_mask


class LinearChainCRF(nn.Module):
    """Transition scores between K tags, plus start and end scores."""

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        # (K, K): transitions[i, j] scores tag i followed by tag j
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))
        nn.init.uniform_(self.transitions, -0.1, 0.1)

    def score(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """Unnormalised score s(y) of the given tags: emissions (B, T, K), tags (B, T) → (B,).

        Tag ids at padded positions may hold anything in ``[0, K)``; they are masked out.
        """
        batch, steps, _ = emissions.shape
        if steps == 0:
            return emissions.new_zeros(batch)
        lengths = lengths.to(emissions.device)
        mask = length_mask(lengths, steps)  # (B, T)
        maskf = mask.to(emissions.dtype)
        safe_tags = tags.masked_fill(~mask, 0)  # (B, T)
        emitted = emissions.gather(2, safe_tags.unsqueeze(2)).squeeze(2)  # (B, T)
        total = (emitted * maskf).sum(1)  # (B,)
        trans = self.transitions[safe_tags[:, :-1], safe_tags[:, 1:]]  # (B, T-1)
        total = total + (trans * maskf[:, 1:]).sum(1)
        last_tags = safe_tags.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)  # (B,)
        boundary = self.start_transitions[safe_tags[:, 0]] + self.end_transitions[last_tags]
        return total + boundary * (lengths > 0).to(emissions.dtype)

    def log_partition(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """log Z by the forward algorithm: emissions (B, T, K), lengths (B,) → (B,)."""
        batch, steps, _ = emissions.shape
        lengths = lengths.to(emissions.device)
        if steps == 0:
            return emissions.new_zeros(batch)
        alpha = self.start_transitions + emissions[:, 0]  # (B, K)
        for t in range(1, steps):
            # alpha[b, i] + trans[i, j] + e[b, t, j], summed out over the previous tag i
            scores = (
                alpha.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1)
            )  # (B, K, K)
            advanced = torch.logsumexp(scores, dim=1)  # (B, K)
            alpha = torch.where((t < lengths).unsqueeze(1), advanced, alpha)
        log_z = torch.logsumexp(alpha + self.end_transitions, dim=1)  # (B,)
        return log_z.masked_fill(lengths == 0, 0.0)

    def nll(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """Negative log-likelihood −log p(y | x) per sequence: (B,)."""
        return self.log_partition(emissions, lengths) - self.score(emissions, tags, lengths)

    @torch.no_grad()
    def viterbi(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """Best tag sequence per row: emissions (B, T, K) → (B, T) tag ids; 0 at padded positions."""
        batch, steps, num_tags = emissions.shape
        lengths = lengths.to(emissions.device)
        if steps == 0:
            return torch.zeros(batch, 0, dtype=torch.long, device=emissions.device)
        identity = torch.arange(num_tags, device=emissions.device).expand(batch, num_tags)
        delta = self.start_transitions + emissions[:, 0]  # (B, K)
        backpointers = []
        for t in range(1, steps):
            scores = delta.unsqueeze(2) + self.transitions  # (B, K, K)
            best, best_prev = scores.max(dim=1)  # (B, K) each
            active = (t < lengths).unsqueeze(1)  # (B, 1)
            delta = torch.where(active, best + emissions[:, t], delta)
            backpointers.append(torch.where(active, best_prev, identity))
        last = (delta + self.end_transitions).argmax(dim=1)  # (B,)
        path = [last]
        for pointers in reversed(backpointers):
            last = pointers.gather(1, last.unsqueeze(1)).squeeze(1)
            path.append(last)
        tags = torch.stack(path[::-1], dim=1)  # (B, T)
        return tags.masked_fill(~length_mask(lengths, steps), 0)
