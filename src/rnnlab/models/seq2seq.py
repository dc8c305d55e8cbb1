"""The encoder–decoder model and its one-step decoding interface.

``forward`` serves teacher-forced training; ``start``/``step``/``select_state`` are the step protocol
shared with every search in ``rnnlab.decoding`` (greedy, beam, sampling), so searches never look
inside a model.

``build_seq2seq`` assembles the parts a config names::

    Seq2SeqEncoder ─ outputs (B, S, D·H) ───────────────────────────────┐
                   └ final state (L·D, B, H) ─ Bridge if D = 2 ─ (L, B, H) ─ decoder
                                                                       │
    decoder: ContextDecoder (attention: none) | BahdanauDecoder | LuongDecoder (dot, general)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rnnlab.errors import ConfigError
from rnnlab.models.attention_decoder import AttentionDecoder, BahdanauDecoder, LuongDecoder
from rnnlab.models.bridge import Bridge
from rnnlab.models.decoder import ContextDecoder
from rnnlab.models.encoder import Seq2SeqEncoder
from rnnlab.models.feedback import Feedback
from rnnlab.nn.factory import has_cell_state
from rnnlab.nn.row_blocks import step_scores


class EncoderDecoder(nn.Module):
    """A composite of an encoder, an optional bridge and a decoder; built by ``build_seq2seq``."""

    def __init__(
        self,
        *,
        encoder: Seq2SeqEncoder,
        decoder: ContextDecoder | AttentionDecoder,
        bridge: Bridge | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.bridge = bridge
        self.decoder: ContextDecoder | AttentionDecoder = decoder

    @property
    def has_attention(self) -> bool:
        return isinstance(self.decoder, AttentionDecoder)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: (B, S), (B,), (B, T) → decoder features (B, T, H)."""
        features, _ = self.decoder(tgt_in, self.start(src, src_lengths))
        return features

    def forward_scheduled(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        *,
        teacher_forcing: float,
        sample: bool = False,
    ) -> Tensor:
        """Scheduled sampling (Bengio et al. 2015): (B, S), (B,), (B, T) → features (B, T, H).

        With ``teacher_forcing`` 1 every input is gold, so this *is* teacher forcing and takes its
        path (``forward``): the losses are those of teacher forcing bit for bit, dropout masks
        included. Below 1 it runs ``scheduled_loop``.
        """
        if teacher_forcing >= 1.0:
            return self(src, src_lengths, tgt_in)
        return self.scheduled_loop(
            src, src_lengths, tgt_in, teacher_forcing=teacher_forcing, sample=sample
        )

    def scheduled_loop(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        *,
        teacher_forcing: float,
        sample: bool = False,
    ) -> Tensor:
        """The decoder run one position at a time, feeding back its own predictions: (B, T, H).

        Position 0 reads ``<bos>``; at each later position every sentence independently reads the
        gold previous token with probability ``teacher_forcing``, otherwise the model's prediction
        from the step before (argmax, or a sample from its softmax, of the features before output
        dropout). The choice of token is not differentiated through.

        Each decoder runs its own teacher-forced loop with a ``Feedback`` (``models/feedback.py``),
        so gold tokens use the embeddings and input projections hoisted for all T: for the looping
        decoders (Bahdanau, Luong with input feeding) ``teacher_forcing`` 1 gives teacher forcing's
        features bit for bit. The decoders whose teacher forcing is one fused call (context, Luong
        without input feeding) take one decoding step per position here: that is their speed cost.
        """
        feedback = Feedback(teacher_forcing=teacher_forcing, project=self.project, sample=sample)
        features, _ = self.decoder(tgt_in, self.start(src, src_lengths), feedback)
        return features  # (B, T, H)

    def project(self, features: Tensor) -> Tensor:
        return self.decoder.project(features)

    def attention_weights(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Attention under teacher forcing: (B, S), (B,), (B, T) → weights (B, T, S).

        Row t is the distribution over source positions while predicting the token after
        ``tgt_in[:, t]``; to inspect a translation ``y``, pass ``[<bos>, *y]`` (the last row is the
        attention that produced ``<eos>``). Padded source positions have weight exactly 0.
        """
        if not isinstance(self.decoder, AttentionDecoder):
            raise ValueError("this model has no attention (model.attention: none)")
        _, _, weights = self.decoder.forward_with_attention(tgt_in, self.start(src, src_lengths))
        return weights

    # -- step protocol -------------------------------------------------------------------------
    def start(self, src: Tensor, src_lengths: Tensor) -> Any:
        """Encode once; returns the decoder state the first ``step`` consumes."""
        encoded = self.encoder(src, src_lengths)
        hidden = self.bridge(encoded.state) if self.bridge is not None else encoded.state
        return self.decoder.init_state(encoded, hidden)

    def step(self, tokens: Tensor, state: Any, *, normalize: bool = True) -> tuple[Tensor, Any]:
        """One decoding step: tokens (B,) → log-probabilities (B, V) and the next state.

        ``normalize=False`` returns the logits: the same ranking without a softmax over the
        vocabulary, for a search that only needs the best token.
        """
        features, state = self.decoder(tokens.unsqueeze(1), state)  # (B, 1, H)
        return step_scores(self.decoder.output, features.squeeze(1), normalize), state  # (B, V)

    def select_state(self, state: Any, indices: Tensor) -> Any:
        return state.select(indices)


def build_seq2seq(
    model_config: Any, *, src_vocab_size: int, tgt_vocab_size: int, padding_idx: int = 0
) -> EncoderDecoder:
    """Assemble the model named by a ``Seq2SeqModelConfig``."""
    cfg = model_config
    # Encoder and decoder share every size and cell setting; only their vocabularies differ.
    shared = dict(
        embed_size=cfg.embed_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        dropout=cfg.dropout,
        embed_dropout=cfg.embed_dropout,
        cell=cfg.cell,
        rnn_impl=cfg.rnn_impl,
        padding_idx=padding_idx,
    )
    encoder = Seq2SeqEncoder(
        vocab_size=src_vocab_size, bidirectional=cfg.bidirectional_encoder, **shared
    )
    bridge = (
        Bridge(hidden_size=cfg.hidden_size, cell_state=has_cell_state(cfg.cell))
        if cfg.bidirectional_encoder
        else None
    )
    common = dict(vocab_size=tgt_vocab_size, **shared)
    memory_size = encoder.output_size  # D·H
    decoder: nn.Module
    if cfg.attention == "none":
        decoder = ContextDecoder(context_size=memory_size, **common)
    elif cfg.attention == "bahdanau":
        decoder = BahdanauDecoder(memory_size=memory_size, **common)
    elif cfg.attention in ("luong_dot", "luong_general"):
        if cfg.attention == "luong_dot" and memory_size != cfg.hidden_size:
            raise ConfigError(
                "model.attention=luong_dot scores hidden states against encoder outputs of the "
                f"same size, but a bidirectional encoder's are {memory_size} wide, not "
                f"{cfg.hidden_size}; use luong_general or bahdanau"
            )
        decoder = LuongDecoder(
            memory_size=memory_size,
            method=cfg.attention.removeprefix("luong_"),
            input_feed=cfg.input_feed,
            **common,
        )
    else:
        raise ValueError(f"unknown attention {cfg.attention!r}")
    if cfg.tie_weights:
        tie_output_to_embedding(decoder.output, decoder.embedding)
    return EncoderDecoder(encoder=encoder, decoder=decoder, bridge=bridge)


def tie_output_to_embedding(output: nn.Linear, embedding: nn.Embedding) -> None:
    """Make ``output`` (H → V) project with ``embedding``'s (V, H) matrix (Press & Wolf 2017).

    The shared matrix starts small and uniform, as in Zaremba et al. (2014): ``nn.Embedding``'s
    N(0, 1) would give logits of standard deviation ~√H at the first step. The padding row stays 0.
    """
    if output.weight.shape != embedding.weight.shape:
        raise ConfigError(
            "model.tie_weights needs model.embed_size == model.hidden_size "
            f"(the output layer is {tuple(output.weight.shape)}, the embedding "
            f"{tuple(embedding.weight.shape)})"
        )
    with torch.no_grad():
        nn.init.uniform_(embedding.weight, -0.1, 0.1)
        if embedding.padding_idx is not None:
            embedding.weight[embedding.padding_idx].zero_()
    output.weight = embedding.weight
