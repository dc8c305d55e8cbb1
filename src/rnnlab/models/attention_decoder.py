"""Decoders that attend over the encoder outputs (Bahdanau et al. 2015; Luong et al. 2015).

Both keep the encoder outputs (the *memory*), their key projection and the valid source lengths in
the decoder state, so one ``init_state`` per sentence serves every later step, and ``select`` can
drop or reorder batch rows for greedy and beam search. A beam's K rows of one sentence share that
sentence's memory (``AttentionDecoderState.group``) and attend over it as one block of K queries, so
reordering beams copies the recurrent state only, never the memory.

Bahdanau (additive attention): the previous top-layer state s_{t-1} is the query, so attention has
to run *before* the recurrent step::

    c_t = attend(s_{t-1});  s_t = RNN([e(y_{t-1}) ; c_t], s_{t-1});  o_t = tanh(W_o [s_t ; c_t ; e(y_{t-1})])

Luong (multiplicative attention): the new state h_t is the query; the attentional state h̃_t is
what predicts the next token, and with *input feeding* it is also fed into the next step::

    h_t = RNN([e(y_{t-1}) ; h̃_{t-1}], h_{t-1});  c_t = attend(h_t);  h̃_t = tanh(W_c [c_t ; h_t])

Speed: Bahdanau's recurrence needs c_t, and Luong's with input feeding needs h̃_{t-1}, so teacher
forcing runs a Python loop over T. Only what depends on the previous step stays inside it; the rest
is computed for all T positions at once::

    before the loop   embeddings (B, T, E) and their share of the RNN input projection (B, T, G·H)
                      (``rnnlab.nn.stepwise``); the padding mask; the keys (in ``init_state``)
    inside the loop   attention for one query, the context's share of the input projection, the cell
    after the loop    Bahdanau's deep-output layer over (B, T, H + C + E) in one matmul; the gradients
                      of what every step reads (the recurrent and query weights, the memory) summed
                      by one product each (``rnnlab.nn.loop_products``)

Cells with no ``torch.nn`` counterpart (peephole, coupled) run the stack one time step per call
instead. Luong *without* input feeding (``input_feed=False``) runs the RNN over the whole target in one
fused call and attends for all T positions with one batched matmul.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.models.attention import BahdanauAttention, LuongAttention, padding_mask
from rnnlab.models.encoder import EncoderOutput
from rnnlab.models.feedback import Feedback, mix
from rnnlab.nn.dropout import Dropout
from rnnlab.nn.factory import make_rnn
from rnnlab.nn.loop_products import LoopBmm, LoopLinear
from rnnlab.nn.precision import autocast_operand, step_read_operand, tanh_in_float32_on_cpu
from rnnlab.nn.state import RecurrentState, hidden_of, select_batch
from rnnlab.nn.stepwise import LayerWeights, StackStepper


@dataclass
class AttentionDecoderState:
    hidden: RecurrentState
    """(L, B, H), or a pair for LSTMs."""
    memory: Tensor
    """(B, S, C) encoder outputs."""
    keys: Tensor
    """(B, S, K) the attention's key projection of ``memory``, computed once per sentence."""
    memory_lengths: Tensor
    """(B,) valid source lengths; attention gives the positions after them zero weight."""
    attentional: Tensor | None = None
    """(B, H) the previous attentional state h̃ (Luong input feeding); None otherwise."""
    group: int = 1
    """Decoder rows per memory row: row r reads memory row r // group. Beam search's K beams of a
    sentence share its memory, keys and lengths instead of holding K copies that every reorder
    would copy again; ``memory``, ``keys`` and ``memory_lengths`` then have B / group rows."""

    def select(self, indices: Tensor) -> AttentionDecoderState:
        """Keep decoder rows ``indices`` (for finished sentences and beam reordering)."""
        owners = indices // self.group if self.group > 1 else indices  # (R,) memory row of each
        memory_rows, group = _shared_memory_rows(owners, self.memory.size(0), self.group)
        memory, keys, lengths = self.memory, self.keys, self.memory_lengths
        if memory_rows is not None:
            memory, keys = memory.index_select(0, memory_rows), keys.index_select(0, memory_rows)
            lengths = lengths.index_select(0, memory_rows)
        return AttentionDecoderState(
            hidden=select_batch(self.hidden, indices),
            memory=memory,
            keys=keys,
            memory_lengths=lengths,
            attentional=(
                self.attentional.index_select(0, indices) if self.attentional is not None else None
            ),
            group=group,
        )

    def with_hidden(
        self, hidden: RecurrentState, attentional: Tensor | None = None
    ) -> AttentionDecoderState:
        """The state after a decoder call: new recurrent state, the same memory."""
        return AttentionDecoderState(
            hidden=hidden,
            memory=self.memory,
            keys=self.keys,
            memory_lengths=self.memory_lengths,
            attentional=attentional,
            group=self.group,
        )


def _shared_memory_rows(
    owners: Tensor, num_memory_rows: int, group: int
) -> tuple[Tensor | None, int]:
    """The memory rows to keep (None: all, unchanged) and the new group, for decoder rows that read
    memory rows ``owners`` (R,).

    Three shapes cover the searches: each memory row read by the next ``g`` rows in order (beam
    search's expansion and reordering: the memory stays as it is); blocks of ``group`` rows that
    each read one memory row (finished sentences leaving a beam: their memory rows go); anything
    else (greedy search's finished rows) keeps one memory row per decoder row.
    """
    rows = owners.numel()
    if rows and rows % num_memory_rows == 0:
        g = rows // num_memory_rows
        expected = torch.arange(num_memory_rows, device=owners.device).repeat_interleave(g)
        if torch.equal(owners, expected):
            return None, g
    if group > 1 and rows % group == 0:
        blocks = owners.view(-1, group)
        if bool((blocks == blocks[:, :1]).all()):
            return blocks[:, 0], group
    return owners, 1


class HoistedInput(NamedTuple):
    """The stepwise teacher-forced loop's set-up, computed once before its first step."""

    stepper: StackStepper
    weights: list[LayerWeights]
    """Every layer's weights, read from the stack itself."""
    w_embedded: Tensor
    """(G·H, E) the columns of layer 0's input weights that read the embedding."""
    fed: LoopLinear
    """The product with the columns (G·H, F) that read what the loop feeds in (context, or
    h̃_{t-1}), its weight gradient summed after the loop."""
    b_ih: Tensor | None
    embedded_gates: tuple[Tensor, ...]
    """T × (B, G·H): the embeddings' share of layer 0's input projection, for all positions in one
    product. Unbound once: slicing [:, t] at every step would make backward fill a (B, T, G·H)
    zero tensor per step."""


class AttentionDecoder(nn.Module):
    """What the two attention decoders share: embeddings, the output layer, state set-up.

    Subclasses implement ``forward_with_attention``; ``forward`` drops the weights so that the model's
    teacher-forcing path is the same for every decoder.
    """

    attention: BahdanauAttention | LuongAttention
    rnn: nn.Module
    stepper: StackStepper | None

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_size: int,
        hidden_size: int,
        embed_dropout: float,
        padding_idx: int,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=padding_idx)
        self.embed_dropout = Dropout(embed_dropout)
        self.output_dropout = Dropout(embed_dropout)
        self.output = nn.Linear(hidden_size, vocab_size)
        self.hidden_size = hidden_size
        self.embed_size = embed_size

    def _build_stack(
        self,
        *,
        fed_size: int,
        cell: str,
        rnn_impl: str,
        num_layers: int,
        dropout: float,
        stepwise: bool = True,
    ) -> None:
        """The recurrent stack, which reads the embedding and ``fed_size`` more inputs at every step
        (the context for Bahdanau, h̃_{t-1} for Luong's input feeding, none without it), and its
        stepper where the teacher-forced loop can run on the stack's own weights (``stepwise``).

        Subclasses call it right after building their attention, so parameters are created, and
        drawn from the random generator, in the same order for every decoder.
        """
        self.rnn = make_rnn(
            cell,
            rnn_impl,
            input_size=self.embed_size + fed_size,
            hidden_size=self.hidden_size,
            num_layers=num_layers,
            dropout=dropout,
        )
        self.stepper = StackStepper.of(self.rnn) if stepwise else None

    def init_state(
        self, encoder_output: EncoderOutput, hidden: RecurrentState
    ) -> AttentionDecoderState:
        """Start from ``hidden`` (the encoder's final state, bridged if bidirectional).

        Under autocast the memory is cast once here, to the dtype every step reads it in
        (``step_read_operand``: float32 on the CPU, the autocast dtype elsewhere).
        """
        memory = step_read_operand(encoder_output.outputs)  # (B, S, C)
        return AttentionDecoderState(
            hidden=hidden,
            memory=memory,
            keys=self.attention.project_keys(memory),
            memory_lengths=encoder_output.lengths.to(memory.device),
            attentional=self._initial_attentional(memory),
        )

    def _initial_attentional(self, memory: Tensor) -> Tensor | None:
        return None

    def forward_with_attention(
        self, tgt_in: Tensor, state: AttentionDecoderState, feedback: Feedback | None = None
    ) -> tuple[Tensor, AttentionDecoderState, Tensor]:
        """``tgt_in`` (B, T) → features (B, T, H), the next state, weights (B, T, S).

        With ``feedback`` (scheduled sampling) the same loop runs, reading at each position after
        the first the token that ``feedback`` chooses instead of ``tgt_in``'s.
        """
        raise NotImplementedError

    def forward(
        self, tgt_in: Tensor, state: AttentionDecoderState, feedback: Feedback | None = None
    ) -> tuple[Tensor, AttentionDecoderState]:
        """``tgt_in`` (B, T) ids → features (B, T, H) before the vocabulary projection."""
        features, state, _ = self.forward_with_attention(tgt_in, state, feedback)
        return features, state

    def _hoisted_input(self, embedded: Tensor) -> HoistedInput:
        """What the stepwise loop needs before its first step (see ``HoistedInput``)."""
        stepper = self.stepper
        assert stepper is not None
        weights = stepper.weights(self.rnn, loop=True)
        w_embedded, w_fed = stepper.split_input(weights, self.embed_size)
        b_ih = weights[0].b_ih
        gates = F.linear(embedded, w_embedded, b_ih).unbind(1)
        return HoistedInput(stepper, weights, w_embedded, LoopLinear(w_fed), b_ih, gates)

    def _read_fed(
        self, feedback: Feedback, gold: Tensor, features: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Gold tokens (B,), the previous step's features (B, H) → use_gold (B,) and the embedding
        (B, E) of the tokens ``feedback`` chose (gold rows are replaced by the hoisted ones)."""
        tokens, use_gold = feedback.choose(gold, features)
        return use_gold, self.embed_dropout(self.embedding(tokens))

    def project(self, features: Tensor) -> Tensor:
        """Features (…, H) → vocabulary logits (…, V)."""
        return self.output(features)

    def _attend(
        self, query: Tensor, state: AttentionDecoderState, padding: Tensor, **options: Any
    ) -> tuple[Tensor, Tensor]:
        """Queries (R, Q, H) of R decoder rows → contexts (R, Q, C) and weights (R, Q, S).

        With ``state.group`` g > 1 the g rows that share a memory row query it together, as one
        (R / g, g·Q) block of queries: one attention over the shared memory, no per-row copies.
        ``options`` go to the attention's ``attend``.
        """
        g = state.group
        if g == 1:
            return self.attention.attend(query, state.keys, state.memory, padding, **options)
        rows, q, _ = query.shape
        context, weights = self.attention.attend(
            query.reshape(rows // g, g * q, -1), state.keys, state.memory, padding, **options
        )
        return context.reshape(rows, q, -1), weights.reshape(rows, q, -1)


class BahdanauDecoder(AttentionDecoder):
    """RNN decoder with additive attention queried by the previous state (Bahdanau et al. 2015)."""

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_size: int,
        hidden_size: int,
        memory_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        embed_dropout: float = 0.0,
        cell: str = "gru",
        rnn_impl: str = "fused",
        padding_idx: int = 0,
    ) -> None:
        super().__init__(
            vocab_size=vocab_size,
            embed_size=embed_size,
            hidden_size=hidden_size,
            embed_dropout=embed_dropout,
            padding_idx=padding_idx,
        )
        self.attention = BahdanauAttention(
            query_size=hidden_size, memory_size=memory_size, attention_size=hidden_size
        )
        self._build_stack(
            fed_size=memory_size,
            cell=cell,
            rnn_impl=rnn_impl,
            num_layers=num_layers,
            dropout=dropout,
        )
        # "Deep output": the prediction sees the state, the context and the previous word.
        self.pre_output = nn.Linear(hidden_size + memory_size + embed_size, hidden_size)

    def forward_with_attention(
        self, tgt_in: Tensor, state: AttentionDecoderState, feedback: Feedback | None = None
    ) -> tuple[Tensor, AttentionDecoderState, Tensor]:
        embedded = self.embed_dropout(self.embedding(tgt_in))  # (B, T, E)
        padding = padding_mask(state.memory_lengths, state.memory.size(1))  # (B, 1, S)
        recur = self._recur_stepwise if self.stepper is not None else self._recur_per_call
        outputs, contexts, embedded, hidden, weights = recur(
            tgt_in, embedded, state, padding, feedback
        )
        # All T positions in one matmul (scheduled sampling too: bit for bit teacher forcing's).
        features = self._deep_output(outputs, contexts, embedded)
        return self.output_dropout(features), state.with_hidden(hidden), weights

    def _deep_output(self, outputs: Tensor, contexts: Tensor, embedded: Tensor) -> Tensor:
        """States (…, H), contexts (…, C), embeddings (…, E) → features (…, H)."""
        return tanh_in_float32_on_cpu(self.pre_output(torch.cat([outputs, contexts, embedded], -1)))

    def _recur_stepwise(
        self,
        tgt_in: Tensor,
        embedded: Tensor,
        state: AttentionDecoderState,
        padding: Tensor,
        feedback: Feedback | None,
    ) -> tuple[Tensor, Tensor, Tensor, RecurrentState, Tensor]:
        """The loop with the embeddings' input projection hoisted.

        → outputs (B, T, H), contexts (B, T, C), the embeddings read (B, T, E), state, weights.
        """
        stepper, weights, w_embedded, context_gates, b_ih, embedded_gates = self._hoisted_input(
            embedded
        )
        read = list(embedded.unbind(1))  # T × (B, E)
        layers = stepper.unstack(state.hidden)
        top = hidden_of(state.hidden)[-1]  # (B, H): s_{t-1}, top layer
        assert isinstance(self.attention, BahdanauAttention)
        loop_products = {  # their gradients summed after the loop (``rnnlab.nn.loop_products``)
            "query_layer": LoopLinear(autocast_operand(self.attention.query_layer.weight)),
            "read_memory": LoopBmm(state.memory),
        }
        outputs: list[Tensor] = []
        contexts: list[Tensor] = []
        attention: list[Tensor] = []
        for t in range(embedded.size(1)):
            gates_t = embedded_gates[t]
            if feedback is not None and t > 0:
                features = self._deep_output(top, contexts[-1], read[t - 1])  # (B, H)
                use_gold, fed = self._read_fed(feedback, tgt_in[:, t], features)
                read[t] = mix(use_gold, read[t], fed)
                gates_t = mix(use_gold, gates_t, F.linear(fed, w_embedded, b_ih))
            context, step_weights = self._attend(top.unsqueeze(1), state, padding, **loop_products)
            # (B, 1, C), (B, 1, S)
            context = context.squeeze(1)
            gates = gates_t + context_gates(context)  # (B, G·H)
            top, layers = stepper.step(gates, layers, weights, training=self.training)
            outputs.append(top)
            contexts.append(context)
            attention.append(step_weights)
        return (
            torch.stack(outputs, 1),  # (B, T, H)
            torch.stack(contexts, 1),  # (B, T, C)
            embedded if feedback is None else torch.stack(read, 1),  # (B, T, E)
            stepper.stack(layers),
            torch.cat(attention, 1),  # (B, T, S)
        )

    def _recur_per_call(
        self,
        tgt_in: Tensor,
        embedded: Tensor,
        state: AttentionDecoderState,
        padding: Tensor,
        feedback: Feedback | None,
    ) -> tuple[Tensor, Tensor, Tensor, RecurrentState, Tensor]:
        """The same loop for any stack, one single-step call of it per position."""
        hidden = state.hidden
        read = list(embedded.unbind(1))  # T × (B, E)
        outputs: list[Tensor] = []
        contexts: list[Tensor] = []
        attention: list[Tensor] = []
        for t in range(embedded.size(1)):
            if feedback is not None and t > 0:
                features = self._deep_output(outputs[-1][:, 0], contexts[-1][:, 0], read[t - 1])
                use_gold, fed = self._read_fed(feedback, tgt_in[:, t], features)
                read[t] = mix(use_gold, read[t], fed)
            query = hidden_of(hidden)[-1].unsqueeze(1)  # (B, 1, H): s_{t-1}, top layer
            context, step_weights = self._attend(query, state, padding)  # (B, 1, C), (B, 1, S)
            output, hidden = self.rnn(torch.cat([read[t].unsqueeze(1), context], -1), hidden)
            outputs.append(output)
            contexts.append(context)
            attention.append(step_weights)
        return (
            torch.cat(outputs, 1),
            torch.cat(contexts, 1),
            embedded if feedback is None else torch.stack(read, 1),
            hidden,
            torch.cat(attention, 1),
        )


class LuongDecoder(AttentionDecoder):
    """RNN decoder with dot or general attention queried by the new state (Luong et al. 2015)."""

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_size: int,
        hidden_size: int,
        memory_size: int,
        method: str = "general",
        input_feed: bool = True,
        num_layers: int = 1,
        dropout: float = 0.0,
        embed_dropout: float = 0.0,
        cell: str = "gru",
        rnn_impl: str = "fused",
        padding_idx: int = 0,
    ) -> None:
        super().__init__(
            vocab_size=vocab_size,
            embed_size=embed_size,
            hidden_size=hidden_size,
            embed_dropout=embed_dropout,
            padding_idx=padding_idx,
        )
        self.attention = LuongAttention(
            query_size=hidden_size, memory_size=memory_size, method=method
        )
        self.input_feed = input_feed
        self._build_stack(
            fed_size=hidden_size if input_feed else 0,
            cell=cell,
            rnn_impl=rnn_impl,
            num_layers=num_layers,
            dropout=dropout,
            stepwise=input_feed,
        )
        self.combine = nn.Linear(memory_size + hidden_size, hidden_size, bias=False)

    def _initial_attentional(self, memory: Tensor) -> Tensor | None:
        if not self.input_feed:
            return None
        return memory.new_zeros(memory.size(0), self.hidden_size)  # h̃_0 = 0

    def _attentional(
        self,
        outputs: Tensor,
        state: AttentionDecoderState,
        padding: Tensor,
        combine: Callable[[Tensor], Tensor] | None = None,
        **options: Any,
    ) -> tuple[Tensor, Tensor]:
        """RNN outputs (B, T, H) → attentional states h̃ (B, T, H) and weights (B, T, S).

        ``combine`` stands in for ``self.combine``; ``options`` go to the attention's ``attend``.
        """
        context, weights = self._attend(outputs, state, padding, **options)
        combined = (combine or self.combine)(torch.cat([context, outputs], dim=-1))
        return tanh_in_float32_on_cpu(combined), weights

    def forward_with_attention(
        self, tgt_in: Tensor, state: AttentionDecoderState, feedback: Feedback | None = None
    ) -> tuple[Tensor, AttentionDecoderState, Tensor]:
        embedded = self.embed_dropout(self.embedding(tgt_in))  # (B, T, E)
        padding = padding_mask(state.memory_lengths, state.memory.size(1))  # (B, 1, S)
        if not self.input_feed and feedback is None:
            # One fused RNN call over all T, one batched attention: no Python loop.
            outputs, hidden = self.rnn(embedded, state.hidden)  # (B, T, H)
            attentional, weights = self._attentional(outputs, state, padding)
        elif self.stepper is not None:
            attentional, hidden, weights = self._recur_stepwise(
                tgt_in, embedded, state, padding, feedback
            )
        else:
            attentional, hidden, weights = self._recur_per_call(
                tgt_in, embedded, state, padding, feedback
            )
        next_state = state.with_hidden(hidden, attentional[:, -1] if self.input_feed else None)
        return self.output_dropout(attentional), next_state, weights

    def _recur_stepwise(
        self,
        tgt_in: Tensor,
        embedded: Tensor,
        state: AttentionDecoderState,
        padding: Tensor,
        feedback: Feedback | None,
    ) -> tuple[Tensor, RecurrentState, Tensor]:
        """Input feeding with the embeddings' input projection hoisted; → h̃ (B, T, H), state, weights."""
        assert state.attentional is not None
        stepper, weights, w_embedded, feed_gates, b_ih, embedded_gates = self._hoisted_input(
            embedded
        )
        layers = stepper.unstack(state.hidden)
        last = state.attentional  # (B, H): h̃_{t-1}
        loop_products = {  # their gradients summed after the loop (``rnnlab.nn.loop_products``)
            "combine": LoopLinear(autocast_operand(self.combine.weight)),
            "read_keys": LoopBmm(state.keys.transpose(1, 2)),
            "read_memory": LoopBmm(state.memory),
        }
        steps: list[Tensor] = []
        attention: list[Tensor] = []
        for t in range(embedded.size(1)):
            gates_t = embedded_gates[t]
            if feedback is not None and t > 0:
                use_gold, fed = self._read_fed(feedback, tgt_in[:, t], last)
                gates_t = mix(use_gold, gates_t, F.linear(fed, w_embedded, b_ih))
            gates = gates_t + feed_gates(last)  # (B, G·H)
            output, layers = stepper.step(gates, layers, weights, training=self.training)
            step, step_weights = self._attentional(
                output.unsqueeze(1), state, padding, **loop_products
            )  # (B, 1, H)
            last = step.squeeze(1)
            steps.append(step)
            attention.append(step_weights)
        return torch.cat(steps, 1), stepper.stack(layers), torch.cat(attention, 1)

    def _recur_per_call(
        self,
        tgt_in: Tensor,
        embedded: Tensor,
        state: AttentionDecoderState,
        padding: Tensor,
        feedback: Feedback | None,
    ) -> tuple[Tensor, RecurrentState, Tensor]:
        """The same loop for any stack (and for scheduled sampling without input feeding), one
        single-step call of it per position."""
        hidden, last = state.hidden, state.attentional
        steps: list[Tensor] = []
        attention: list[Tensor] = []
        for t, embedded_t in enumerate(embedded.unbind(1)):  # T × (B, E)
            if feedback is not None and t > 0:
                use_gold, fed = self._read_fed(feedback, tgt_in[:, t], steps[-1][:, 0])
                embedded_t = mix(use_gold, embedded_t, fed)
            rnn_in = embedded_t if last is None else torch.cat([embedded_t, last], dim=-1)
            output, hidden = self.rnn(rnn_in.unsqueeze(1), hidden)  # (B, 1, H)
            step, step_weights = self._attentional(output, state, padding)  # (B, 1, H), (B, 1, S)
            last = step.squeeze(1) if self.input_feed else None
            steps.append(step)
            attention.append(step_weights)
        return torch.cat(steps, 1), hidden, torch.cat(attention, 1)
