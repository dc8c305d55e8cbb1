"""A recurrent language model: predict the next token from the hidden state.

Mikolov et al. (2010), "Recurrent neural network based language model": embed (or one-hot encode)
the current token, update a recurrent state, and project the state to a distribution over the
vocabulary. Dropout is applied to the non-recurrent connections only — the embeddings, between layers
and before the projection — as in Zaremba et al. (2014), "Recurrent Neural Network Regularization".
Optional weight tying shares the embedding matrix with the output projection (Press & Wolf 2017,
"Using the Output Embedding to Improve Language Models"; Inan et al. 2017, "Tying Word Vectors and Word
Classifiers"), which needs ``embed_size == hidden_size``.

With ``softmax="adaptive"`` the output layer is an adaptive softmax (Grave et al. 2017, "Efficient
softmax approximation for GPUs", ``torch.nn.AdaptiveLogSoftmaxWithLoss``): the most frequent words
(ids below the first cutoff; the vocabulary is sorted by frequency) sit in a head together with one
entry per tail cluster, and rarer words are scored by smaller projections only inside their cluster.
A word's probability is P(cluster) · P(word | cluster), so the distribution over all V words is still
exactly normalised and perplexity stays exact; training costs less because most targets never touch
the tails.

``forward`` runs whole (B, T) blocks for training and scoring; ``start``/``step``/``select_state`` are
the step protocol of ``rnnlab.decoding``, so sampling and greedy search never look inside the model.
``token_nll`` and ``log_probs`` are what tasks score with, whichever softmax the model has.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.nn.cross_entropy import summed_cross_entropy
from rnnlab.nn.dropout import Dropout, SequenceDropout
from rnnlab.nn.factory import has_cell_state, make_rnn
from rnnlab.nn.precision import full_precision
from rnnlab.nn.state import RecurrentState, select_batch

ADAPTIVE_DIV = 4
"""Each tail cluster of the adaptive softmax is projected to this factor fewer dimensions than the
one before (``div_value``, Grave et al. 2017)."""


class RNNLanguageModel(nn.Module):
    """Embedding (or one-hot) → recurrent stack → dropout → linear projection to V logits."""

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        variational_dropout: bool = False,
        cell: str = "gru",
        rnn_impl: str = "fused",
        tie_weights: bool = False,
        one_hot: bool = False,
        softmax: str = "full",
        cutoffs: list[int] | None = None,
    ) -> None:
        super().__init__()
        if softmax not in ("full", "adaptive"):
            raise ValueError(f"unknown softmax {softmax!r}; expected full or adaptive")
        if softmax == "adaptive":
            cutoffs = list(cutoffs or [])
            if tie_weights:
                raise ValueError("model.tie_weights needs model.softmax=full")
            if not cutoffs or cutoffs != sorted(set(cutoffs)) or not cutoffs[0] > 0:
                raise ValueError(
                    f"model.cutoffs must be increasing positive ids, got {cutoffs or '[]'}"
                )
            if cutoffs[-1] >= vocab_size:
                raise ValueError(
                    f"model.cutoffs must be below the vocabulary size {vocab_size}, got {cutoffs}"
                )
            # Tail cluster i is projected to hidden_size // 4^(i+1) dimensions; none would leave
            # its words a uniform distribution the model could never learn.
            if hidden_size // ADAPTIVE_DIV ** len(cutoffs) < 1:
                raise ValueError(
                    f"model.cutoffs: {len(cutoffs)} tail clusters need model.hidden_size of at "
                    f"least {ADAPTIVE_DIV ** len(cutoffs)} (the last is projected to hidden_size "
                    f"// {ADAPTIVE_DIV ** len(cutoffs)} dimensions), got {hidden_size}"
                )
        if tie_weights and one_hot:
            raise ValueError("model.tie_weights needs an embedding; it cannot be used with one_hot")
        if tie_weights and embed_size != hidden_size:
            raise ValueError(
                "model.tie_weights needs model.embed_size == model.hidden_size "
                f"(got {embed_size} and {hidden_size})"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        # One-hot input is the textbook's from-scratch model: the first layer's input weights then
        # play the role of the embedding matrix.
        self.embedding = None if one_hot else nn.Embedding(vocab_size, embed_size)
        self.rnn = make_rnn(
            cell,
            rnn_impl,
            input_size=vocab_size if one_hot else embed_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout,
        )
        # On the embeddings and before the projection: a mask per token, or one per row and
        # segment (variational).
        self.dropout = SequenceDropout(dropout) if variational_dropout else Dropout(dropout)
        self.adaptive = (
            nn.AdaptiveLogSoftmaxWithLoss(
                hidden_size, vocab_size, list(cutoffs or []), div_value=float(ADAPTIVE_DIV)
            )
            if softmax == "adaptive"
            else None
        )
        self.output = nn.Linear(hidden_size, vocab_size) if self.adaptive is None else None
        # Small uniform weights, as in Zaremba et al. (2014): nn.Embedding's N(0, 1) would give the
        # projection (a tied one especially) logits of standard deviation ~√H at the start.
        if self.embedding is not None:
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if self.output is not None:
            nn.init.zeros_(self.output.bias)
            if tie_weights:
                assert self.embedding is not None
                self.output.weight = self.embedding.weight
            else:
                nn.init.uniform_(self.output.weight, -0.1, 0.1)

    def embed(self, tokens: Tensor) -> Tensor:
        """Token ids (B, T) → recurrent inputs (B, T, E), or (B, T, V) one-hot vectors."""
        if self.embedding is None:
            return F.one_hot(tokens, self.vocab_size).to(self._dtype())
        return self.dropout(self.embedding(tokens))

    def forward(
        self, tokens: Tensor, state: RecurrentState | None = None
    ) -> tuple[Tensor, RecurrentState]:
        """Token ids (B, T) and a state (L, B, H) (or an (h, c) pair; None = zeros).

        Returns features (B, T, H) before the projection, and the state after the last step.
        """
        outputs, state = self.rnn(self.embed(tokens), state)  # (B, T, H)
        return self.dropout(outputs), state

    def project(self, features: Tensor) -> Tensor:
        """Features (…, H) → vocabulary logits (…, V); only a full softmax has logits."""
        if self.output is None:
            raise ValueError("an adaptive softmax has no logits; use log_probs or token_nll")
        return self.output(features)

    def log_probs(self, features: Tensor) -> Tensor:
        """Features (…, H) → normalised log-probabilities (…, V), in float32."""
        if self.adaptive is None:
            return torch.log_softmax(full_precision(self.project(features)), dim=-1)
        flat = features.reshape(-1, features.size(-1))  # (N, H)
        with torch.autocast(flat.device.type, enabled=False):
            log_probs = self.adaptive.log_prob(full_precision(flat))  # (N, V)
        return log_probs.view(*features.shape[:-1], -1)

    def token_nll(
        self, features: Tensor, targets: Tensor, *, label_smoothing: float = 0.0
    ) -> Tensor:
        """Summed negative log-likelihood of ``targets`` (N,) given ``features`` (N, H), in float32."""
        if self.adaptive is None:
            logits = self.project(features)  # (N, V)
            return summed_cross_entropy(logits, targets, label_smoothing=label_smoothing)
        if label_smoothing > 0:
            raise ValueError("label smoothing needs model.softmax=full")
        # The cluster scores are reduced in float32 even under bf16 autocast.
        with torch.autocast(features.device.type, enabled=False):
            return -self.adaptive(full_precision(features), targets).output.sum()

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # -- step protocol -------------------------------------------------------------------------
    def start(self, batch_size: int, device: torch.device | str = "cpu") -> RecurrentState:
        """The zero state (L, B, H) — an (h, c) pair for LSTMs — before any token is read."""
        h = torch.zeros(
            self.num_layers, batch_size, self.hidden_size, device=device, dtype=self._dtype()
        )
        return (h, torch.zeros_like(h)) if has_cell_state(self.cell) else h

    def step(self, tokens: Tensor, state: Any, *, normalize: bool = True) -> tuple[Tensor, Any]:
        """Read tokens (B,); return log-probabilities (B, V) of the next token and the new state.

        ``normalize=False`` returns the logits of a full softmax (the same ranking, without the
        softmax over V); an adaptive softmax has no logits and returns its log-probabilities.
        """
        features, state = self(tokens.unsqueeze(1), state)  # (B, 1, H)
        features = features.squeeze(1)
        if not normalize and self.adaptive is None:
            return self.project(features), state  # (B, V)
        return self.log_probs(features), state  # (B, V)

    def select_state(self, state: Any, indices: Tensor) -> Any:
        return select_batch(state, indices)


def build_language_model(model_config: Any, *, vocab_size: int) -> RNNLanguageModel:
    """Assemble the model named by an ``LMModelConfig``."""
    cfg = model_config
    return RNNLanguageModel(
        vocab_size=vocab_size,
        embed_size=cfg.embed_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        dropout=cfg.dropout,
        variational_dropout=cfg.variational_dropout,
        cell=cfg.cell,
        rnn_impl=cfg.rnn_impl,
        tie_weights=cfg.tie_weights,
        one_hot=cfg.one_hot,
        softmax=cfg.softmax,
        cutoffs=cfg.cutoffs,
    )
