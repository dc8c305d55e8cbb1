"""The modules that are exported: each task's model cut into graphs with flat tensor inputs/outputs.

A graph sees the trained model's own layers (embeddings, attention, bridge, output layers, CRF
scores stay in the runtime) with only the recurrent stacks swapped for their exportable forms
(``rnnlab.export.recurrent``)::

    seq2seq   start.onnx   src (B, S), src_lengths (B,)       → state.0 … state.K-1
              step.onnx    tokens (B,), state.0 … state.K-1   → log_probs (B, V), [attention (B, S)],
                                                                next.0 … next.K-1
    tagger    tagger.onnx  words (B, T), lengths (B,), [chars (U, C), char_lengths (U,),
                           word_types (B, T)]                 → emissions (B, T, K)
    lm        step.onnx    tokens (B,), state…                → log_probs (B, V), next…
              score.onnx   tokens (B, T), state…              → log_probs (B, T, V), next…

A decoder state (a dataclass of tensors and (h, c) tuples) is flattened into K tensors in field
order; the manifest records each one's name and batch axis, so the runtime drops finished sentences
and reorders beams without knowing what a state means.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from rnnlab.export.recurrent import CellStack, PortableRecurrent
from rnnlab.models.attention_decoder import AttentionDecoder
from rnnlab.models.encoder import EncoderOutput

# ---------------------------------------------------------------------------------------------------
# Flattening a state to a list of tensors and back.
# A structure is ("tensor",) | ("tuple", [structures]) | ("dataclass", cls, [(field, structure)])
# | ("const", value).


def flatten_state(state: Any) -> tuple[list[Tensor], Any]:
    """The tensors of a nested state in a fixed order, and the structure to rebuild it."""
    tensors: list[Tensor] = []

    def walk(node: Any) -> Any:
        if isinstance(node, Tensor):
            tensors.append(node)
            return ("tensor",)
        if isinstance(node, tuple | list):
            return ("tuple", [walk(x) for x in node])
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            return (
                "dataclass",
                type(node),
                [(f.name, walk(getattr(node, f.name))) for f in dataclasses.fields(node)],
            )
        return ("const", node)

    return tensors, walk(state)


def unflatten_state(structure: Any, tensors: list[Tensor] | tuple[Tensor, ...]) -> Any:
    items = iter(tensors)

    def build(node: Any) -> Any:
        kind = node[0]
        if kind == "tensor":
            return next(items)
        if kind == "tuple":
            return tuple(build(x) for x in node[1])
        if kind == "dataclass":
            return node[1](**{name: build(child) for name, child in node[2]})
        return node[1]

    return build(structure)


def state_names(structure: Any) -> list[str]:
    """Readable names of the flattened tensors: ``hidden.0``, ``memory`` …"""
    names: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        kind = node[0]
        if kind == "tensor":
            names.append(prefix or "state")
        elif kind == "tuple":
            for i, child in enumerate(node[1]):
                walk(child, f"{prefix}.{i}" if prefix else str(i))
        elif kind == "dataclass":
            for name, child in node[2]:
                walk(child, f"{prefix}.{name}" if prefix else name)

    walk(structure, "")
    return names


# ---------------------------------------------------------------------------------------------------
# seq2seq


def portable_seq2seq(model: Any, cell: str) -> Any:
    """A copy of an ``EncoderDecoder`` whose encoder reads by lengths and whose decoder steps by cells."""
    portable = copy.deepcopy(model).cpu().eval()
    portable.encoder.rnn = PortableRecurrent(model.encoder.rnn, cell)
    portable.decoder.rnn = CellStack(model.decoder.rnn, cell)
    # The decoder's stepwise runner reads the weights of the stack it was built for; the cell stack
    # steps on its own, so the decoder takes its general path.
    portable.decoder.stepper = None
    return portable


class Seq2SeqStart(nn.Module):
    """``EncoderDecoder.start`` with ``sequence_lens`` in place of packing; a flat state out."""

    def __init__(self, portable: Any) -> None:
        super().__init__()
        self.model: Any = portable

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        encoder = self.model.encoder
        embedded = encoder.embedding(src)  # (B, S, E)
        outputs, state = encoder.rnn(embedded, None, src_lengths)  # (B, S, D·H)
        encoded = EncoderOutput(outputs=outputs, state=state, lengths=src_lengths)
        bridge = self.model.bridge
        hidden = bridge(state) if bridge is not None else state
        tensors, _ = flatten_state(self.model.decoder.init_state(encoded, hidden))
        return tuple(tensors)


class Seq2SeqStep(nn.Module):
    """``EncoderDecoder.step`` over a flat state, plus the attention weights of attention decoders.

    Only the state tensors a step changes are outputs; ``static`` marks those it passes through
    (the attention memory, its keys, the source lengths), which the runtime keeps and feeds again
    rather than receiving a copy of them at every step.
    """

    def __init__(self, portable: Any, structure: Any, static: list[bool]) -> None:
        super().__init__()
        self.model: Any = portable
        self.structure = structure
        self.static = static
        self.has_attention = isinstance(portable.decoder, AttentionDecoder)

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        decoder_state = unflatten_state(self.structure, state)
        attention: list[Tensor] = []
        if not self.has_attention:
            log_probs, next_state = self.model.step(tokens, decoder_state)
        else:
            features, next_state, weights = self.model.decoder.forward_with_attention(
                tokens.unsqueeze(1), decoder_state
            )  # (B, 1, H), state, (B, 1, S)
            logits = self.model.decoder.project(features.squeeze(1))  # (B, V)
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            attention = [weights.squeeze(1)]  # (B, S)
        moving = [
            t
            for t, static in zip(flatten_state(next_state)[0], self.static, strict=True)
            if not static
        ]
        return (log_probs, *attention, *moving)


# ---------------------------------------------------------------------------------------------------
# tagger


class TaggerEmissions(nn.Module):
    """``RNNTagger.forward`` (emission scores) with lengths in place of packing."""

    def __init__(self, tagger: Any, cell: str) -> None:
        super().__init__()
        self.tagger: Any = copy.deepcopy(tagger).cpu().eval()
        self.tagger.rnn = PortableRecurrent(tagger.rnn, cell)
        if tagger.upper_rnn is not None:  # the stack in two parts (``model.lm_weight``)
            self.tagger.upper_rnn = PortableRecurrent(tagger.upper_rnn, cell)
        char_encoder = tagger.char_encoder
        self.char_rnn = hasattr(char_encoder, "rnn")
        if self.char_rnn:
            self.tagger.char_encoder.rnn = PortableRecurrent(char_encoder.rnn, cell)

    def _char_vectors(self, chars: Tensor, char_lengths: Tensor) -> Tensor:
        encoder: Any = self.tagger.char_encoder
        if not self.char_rnn:
            return encoder(chars, char_lengths)  # the CNN needs no packing
        _, state = encoder.rnn(encoder.embedding(chars), None, char_lengths)
        final = state[0] if isinstance(state, tuple) else state  # (2, U, H)
        return final.transpose(0, 1).reshape(chars.size(0), encoder.output_size)  # (U, 2·H)

    def forward(self, words: Tensor, lengths: Tensor, *chars: Tensor) -> Tensor:
        tagger = self.tagger
        embedded = tagger.word_vectors(words)  # (B, T, E [+ Et])
        if tagger.char_encoder is not None:
            char_ids, char_lengths, word_types = chars
            vectors = self._char_vectors(char_ids, char_lengths)  # (U, Ec)
            embedded = torch.cat([embedded, vectors[word_types]], dim=2)  # (B, T, E + Ec)
        outputs, _ = tagger.rnn(embedded, None, lengths)  # (B, T, D·H), zeros past the end
        if tagger.upper_rnn is not None:
            outputs, _ = tagger.upper_rnn(outputs, None, lengths)
        return tagger.output(outputs)  # (B, T, K)


# ---------------------------------------------------------------------------------------------------
# language model


class LMGraph(nn.Module):
    """``RNNLanguageModel`` reading (B, T) tokens from a flat state: log-probabilities and next state.

    With a ``CellStack`` it is the generation step (T = 1, tokens (B,)); with a
    ``PortableRecurrent`` it scores a whole stretch of text in one call.
    """

    def __init__(self, model: Any, cell: str, *, step: bool) -> None:
        super().__init__()
        self.model: Any = copy.deepcopy(model).cpu().eval()
        self.step = step
        stack: Any = CellStack if step else PortableRecurrent
        self.model.rnn = stack(model.rnn, cell)
        self.carries_cell = isinstance(self.model.start(1), tuple)

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        recurrent_state: Any = tuple(state) if self.carries_cell else state[0]
        inputs = tokens.unsqueeze(1) if self.step else tokens  # (B, T)
        outputs, next_state = self.model.rnn(self.model.embed(inputs), recurrent_state)
        log_probs = self.model.log_probs(outputs)  # (B, T, V), a full or an adaptive softmax
        if self.step:
            log_probs = log_probs.squeeze(1)  # (B, V)
        return (log_probs, *flatten_state(next_state)[0])
