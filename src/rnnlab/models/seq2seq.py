"""The encoder–decoder model and its one-step decoding interface.

``forward`` serves teacher-forced training; ``start``/``step``/``select_state`` are the step protocol
shared with every search in ``rnnlab.decoding`` (greedy, beam, sampling), so searches never look
inside a model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rnnlab.models.decoder import ContextDecoder
from rnnlab.models.encoder import Seq2SeqEncoder


class EncoderDecoder(nn.Module):
    """A composite of an encoder and a decoder; built by ``build_seq2seq``."""

    def __init__(self, *, encoder: Seq2SeqEncoder, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: (B, S), (B,), (B, T) → decoder features (B, T, H)."""
        state = self.decoder.init_state(self.encoder(src, src_lengths))
        features, _ = self.decoder(tgt_in, state)
        return features

    def project(self, features: Tensor) -> Tensor:
        return self.decoder.project(features)

    # -- step protocol -------------------------------------------------------------------------
    def start(self, src: Tensor, src_lengths: Tensor) -> Any:
        """Encode once; returns the decoder state the first ``step`` consumes."""
        return self.decoder.init_state(self.encoder(src, src_lengths))

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One decoding step: tokens (B,) → log-probabilities (B, V) and the next state."""
        features, state = self.decoder(tokens.unsqueeze(1), state)  # (B, 1, H)
        logits = self.decoder.project(features.squeeze(1))  # (B, V)
        return torch.log_softmax(logits.float(), dim=-1), state

    def select_state(self, state: Any, indices: Tensor) -> Any:
        return state.select(indices)


def build_seq2seq(
    model_config: Any, *, src_vocab_size: int, tgt_vocab_size: int, padding_idx: int = 0
) -> EncoderDecoder:
    """Assemble the model named by a ``Seq2SeqModelConfig``."""
    cfg = model_config
    encoder = Seq2SeqEncoder(
        vocab_size=src_vocab_size,
        embed_size=cfg.embed_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        dropout=cfg.dropout,
        embed_dropout=cfg.embed_dropout,
        cell=cfg.cell,
        rnn_impl=cfg.rnn_impl,
        padding_idx=padding_idx,
    )
    decoder = ContextDecoder(
        vocab_size=tgt_vocab_size,
        embed_size=cfg.embed_size,
        hidden_size=cfg.hidden_size,
        context_size=encoder.output_size,
        num_layers=cfg.num_layers,
        dropout=cfg.dropout,
        embed_dropout=cfg.embed_dropout,
        cell=cfg.cell,
        rnn_impl=cfg.rnn_impl,
        padding_idx=padding_idx,
    )
    return EncoderDecoder(encoder=encoder, decoder=decoder)
