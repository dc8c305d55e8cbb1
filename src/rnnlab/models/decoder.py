"""The context decoder of Cho et al. (2014), as in the d2l seq2seq chapter.

At every step the recurrent input is ``[embedding(y_{t-1}) ; c]``, where the context ``c`` is the
encoder's final top-layer hidden state, repeated over time; the initial state is the encoder's final
state. Because ``c`` is fixed, teacher-forced training runs the whole target in one fused RNN call.

Decoding runs one step per call, and there the fixed context would be projected again at every step:
``W_ih [e ; c] = W_e e + W_c c``, and ``W_c c`` (3·H·C multiply-adds per row for a GRU, more than the
embedding's share) depends only on the sentence. ``init_state`` computes it once and keeps it in the
state; a one-token ``forward`` adds it to the embedding's share and runs the cell equations
(``rnnlab.nn.stepwise``) instead of the fused call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.models.bridge import merge_directions
from rnnlab.models.encoder import EncoderOutput
from rnnlab.models.feedback import Feedback, mix
from rnnlab.nn.dropout import Dropout
from rnnlab.nn.factory import make_rnn
from rnnlab.nn.state import RecurrentState, hidden_of, select_batch
from rnnlab.nn.stepwise import StackStepper


@dataclass
class ContextDecoderState:
    hidden: RecurrentState
    """(L, B, H) or a pair for LSTMs."""
    context: Tensor
    """(B, C) fixed context vector."""
    context_gates: Tensor | None = None
    """(B, G·H) the context's share of layer 0's input projection plus its bias, W_c c + b_ih, once
    per sentence; None for stacks without a ``StackStepper``."""

    def select(self, indices: Tensor) -> ContextDecoderState:
        """Keep batch rows ``indices`` (for finished sentences and beam reordering)."""
        gates = self.context_gates
        return ContextDecoderState(
            hidden=select_batch(self.hidden, indices),
            context=self.context.index_select(0, indices),
            context_gates=gates.index_select(0, indices) if gates is not None else None,
        )


class ContextDecoder(nn.Module):
    """Decoder whose every step sees the same encoder summary."""

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_size: int,
        hidden_size: int,
        context_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        embed_dropout: float = 0.0,
        cell: str = "gru",
        rnn_impl: str = "fused",
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=padding_idx)
        self.embed_dropout = Dropout(embed_dropout)
        self.rnn = make_rnn(
            cell,
            rnn_impl,
            input_size=embed_size + context_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout,
        )
        self.output_dropout = Dropout(embed_dropout)
        self.output = nn.Linear(hidden_size, vocab_size)
        self.num_layers = num_layers
        self.embed_size = embed_size
        self.stepper = StackStepper.of(self.rnn)

    def init_state(
        self, encoder_output: EncoderOutput, hidden: RecurrentState | None = None
    ) -> ContextDecoderState:
        """Seed the decoder with ``hidden`` (default: the encoder's final state).

        The context is the encoder's final top-layer state with every direction, (B, D·H); a
        bidirectional encoder's state reaches here through a ``Bridge`` as ``hidden``.
        """
        encoder_state = hidden_of(encoder_output.state)  # (L·D, B, H)
        state = encoder_output.state if hidden is None else hidden
        if hidden_of(state).size(0) != self.num_layers:
            raise ValueError(
                f"ContextDecoder has {self.num_layers} layers but got an initial state with "
                f"{hidden_of(state).size(0)} layer-directions (a bidirectional encoder needs a bridge)"
            )
        num_directions = encoder_state.size(0) // self.num_layers
        context = merge_directions(encoder_state, num_directions)[-1]  # (B, D·H)
        context_gates = None
        if self.stepper is not None:
            weights = self.stepper.weights(self.rnn)
            _, w_context = self.stepper.split_input(weights, self.embed_size)
            context_gates = F.linear(context, w_context, weights[0].b_ih)  # (B, G·H)
        return ContextDecoderState(hidden=state, context=context, context_gates=context_gates)

    def forward(
        self, tgt_in: Tensor, state: ContextDecoderState, feedback: Feedback | None = None
    ) -> tuple[Tensor, ContextDecoderState]:
        """``tgt_in`` (B, T) ids → features (B, T, H) before the vocabulary projection.

        With ``feedback`` (scheduled sampling) it runs one decoding step per position, reading at
        each position after the first the token ``feedback`` chooses instead of ``tgt_in``'s.
        """
        embedded = self.embed_dropout(self.embedding(tgt_in))  # (B, T, E)
        if feedback is None:
            outputs, state = self._recur(embedded, state)
        else:
            outputs, state = self._recur_fed(tgt_in, embedded, state, feedback)
        return self.output_dropout(outputs), state

    def _recur(
        self, embedded: Tensor, state: ContextDecoderState
    ) -> tuple[Tensor, ContextDecoderState]:
        """Embeddings (B, T, E) → RNN outputs (B, T, H): one step from the state's context gates, or
        the fused RNN over all T."""
        stepper = self.stepper
        if embedded.size(1) == 1 and state.context_gates is not None and stepper is not None:
            return self._one_step(embedded, state, stepper)
        context = state.context.unsqueeze(1).expand(-1, embedded.size(1), -1)  # (B, T, C)
        outputs, hidden = self.rnn(torch.cat([embedded, context], dim=-1), state.hidden)
        return outputs, ContextDecoderState(
            hidden=hidden, context=state.context, context_gates=state.context_gates
        )

    def _recur_fed(
        self, tgt_in: Tensor, embedded: Tensor, state: ContextDecoderState, feedback: Feedback
    ) -> tuple[Tensor, ContextDecoderState]:
        """The decoding step per position, fed back through ``feedback``: (B, T, E) → (B, T, H).

        Teacher forcing's fused call computes every position's input projection inside one kernel;
        this loop cannot call it per position and stay equal bit for bit (the kernel's rounding
        depends on T), so it takes decoding's faster step instead (the context's share precomputed).
        """
        outputs: list[Tensor] = []
        for t, embedded_t in enumerate(embedded.unbind(1)):  # T × (B, E)
            if t > 0:
                tokens, use_gold = feedback.choose(tgt_in[:, t], outputs[-1][:, 0])
                fed = self.embed_dropout(self.embedding(tokens))  # (B, E)
                embedded_t = mix(use_gold, embedded_t, fed)
            output, state = self._recur(embedded_t.unsqueeze(1), state)  # (B, 1, H)
            outputs.append(output)
        return torch.cat(outputs, 1), state

    def _one_step(
        self, embedded: Tensor, state: ContextDecoderState, stepper: StackStepper
    ) -> tuple[Tensor, ContextDecoderState]:
        """A decoding step with the context's projection taken from the state: (B, 1, E) → (B, 1, H)."""
        assert state.context_gates is not None
        weights = stepper.weights(self.rnn)
        w_embedded, _ = stepper.split_input(weights, self.embed_size)
        # W_e e + (W_c c + b_ih): one addmm per step.
        gates = torch.addmm(state.context_gates, embedded.squeeze(1), w_embedded.t())
        output, layers = stepper.step(
            gates, stepper.unstack(state.hidden), weights, training=self.training
        )
        next_state = ContextDecoderState(
            hidden=stepper.stack(layers), context=state.context, context_gates=state.context_gates
        )
        return output.unsqueeze(1), next_state

    def project(self, features: Tensor) -> Tensor:
        """Features (…, H) → vocabulary logits (…, V)."""
        return self.output(features)
