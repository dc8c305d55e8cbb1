"""The modules that are exported, run in PyTorch against the models they are cut from.

A step graph (``Seq2SeqStep``, ``LMGraph(step=True)``) steps with ``CellStack``, plain PyTorch, so it
runs eagerly here and is compared with the trained model's own ``step`` (its fused stack or its
stepwise runner), over every cell, attention, encoder direction and both layer implementations,
for two steps in a row. The state flattening is checked against hand-built nested states. The
graphs with ``PortableRecurrent`` stacks run only under ONNX Runtime (``test_recurrent.py`` and the
export tests); here they are only checked not to touch the model they copy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from rnnlab.export.graphs import (
    LMGraph,
    Seq2SeqStep,
    TaggerEmissions,
    flatten_state,
    portable_seq2seq,
    state_names,
    unflatten_state,
)
from rnnlab.export.recurrent import CellStack, PortableRecurrent
from rnnlab.models.language_model import build_language_model
from rnnlab.models.seq2seq import build_seq2seq
from rnnlab.tasks.lm_config import LMModelConfig
from rnnlab.tasks.seq2seq_config import Seq2SeqModelConfig

ATOL = 1e-5
SRC_VOCAB, TGT_VOCAB, LM_VOCAB = 11, 13, 17

# ---------------------------------------------------------------------------------------------------
# Flattening states


@dataclasses.dataclass
class Inner:
    h: Tensor
    c: Tensor


@dataclasses.dataclass
class Outer:
    hidden: tuple[Tensor, Tensor]
    memory: Tensor
    cached: Tensor | None
    group: int
    inner: Inner


def test_a_nested_state_flattens_in_field_order_and_rebuilds():
    tensors = [torch.full((2,), float(i)) for i in range(5)]
    state = Outer(
        hidden=(tensors[0], tensors[1]),
        memory=tensors[2],
        cached=None,
        group=3,
        inner=Inner(h=tensors[3], c=tensors[4]),
    )
    flat, structure = flatten_state(state)
    assert len(flat) == 5 and all(a is b for a, b in zip(flat, tensors, strict=True))
    assert state_names(structure) == ["hidden.0", "hidden.1", "memory", "inner.h", "inner.c"]
    replaced = [t + 10 for t in flat]
    rebuilt = unflatten_state(structure, replaced)
    assert isinstance(rebuilt, Outer) and isinstance(rebuilt.inner, Inner)
    # Non-tensor fields come back as they were; tensors come back in the order they were taken.
    assert rebuilt.cached is None and rebuilt.group == 3
    assert rebuilt.hidden[0] is replaced[0] and rebuilt.hidden[1] is replaced[1]
    assert rebuilt.memory is replaced[2]
    assert rebuilt.inner.h is replaced[3] and rebuilt.inner.c is replaced[4]


def test_plain_states_are_named_by_position():
    h, c = torch.zeros(1), torch.ones(1)
    assert state_names(flatten_state(h)[1]) == ["state"]
    flat, structure = flatten_state((h, c))
    assert state_names(structure) == ["0", "1"]
    rebuilt = unflatten_state(structure, flat)
    assert isinstance(rebuilt, tuple) and rebuilt[0] is h and rebuilt[1] is c


# ---------------------------------------------------------------------------------------------------
# seq2seq

# (cell, attention, bidirectional encoder, input feeding, rnn_impl): every cell and attention, both
# directions and both implementations at least once (luong_dot needs a unidirectional encoder).
SEQ2SEQ = [
    ("gru", "none", False, True, "fused"),
    ("lstm", "none", True, True, "scratch"),
    ("lstm", "bahdanau", True, True, "fused"),
    ("gru", "bahdanau", False, True, "scratch"),
    ("peephole_lstm", "luong_general", True, False, "scratch"),
    ("coupled_lstm", "luong_dot", False, True, "fused"),
    ("rnn", "luong_general", False, True, "fused"),
]


def seq2seq_model(
    cell: str, attention: str, bidirectional: bool, input_feed: bool, impl: str
) -> Any:
    config = Seq2SeqModelConfig(
        cell=cell,
        rnn_impl=impl,
        embed_size=6,
        hidden_size=5,
        num_layers=2,
        dropout=0.0,
        attention=attention,
        bidirectional_encoder=bidirectional,
        input_feed=input_feed,
    )
    torch.manual_seed(0)
    return build_seq2seq(config, src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB).eval()


def sources() -> tuple[Tensor, Tensor]:
    """A padded batch of three sources of different lengths (pad id 0)."""
    lengths = torch.tensor([4, 1, 3])
    src = torch.randint(4, SRC_VOCAB, (3, 4), generator=torch.Generator().manual_seed(1))
    src[torch.arange(4)[None, :] >= lengths[:, None]] = 0
    return src, lengths


def without_cached_gates(state: Any) -> Any:
    """The state as a step graph keeps it: the eager stepper's cached projection of the context
    (``context_gates``) is not carried; the step graph computes it anew."""
    if getattr(state, "context_gates", None) is not None:
        return dataclasses.replace(state, context_gates=None)
    return state


@pytest.mark.parametrize("spec", SEQ2SEQ, ids=lambda spec: "-".join(map(str, spec)))
def test_step_graph_equals_the_model_step(spec: tuple[str, str, bool, bool, str]):
    model = seq2seq_model(*spec)
    src, lengths = sources()
    with torch.no_grad():
        state = model.start(src, lengths)
    tensors, structure = flatten_state(without_cached_gates(state))
    portable = portable_seq2seq(model, spec[0])
    assert isinstance(portable.decoder.rnn, CellStack)
    tokens = torch.tensor([1, 5, 7])  # <bos> and two other tokens
    for _ in range(2):
        with torch.no_grad():
            want_log_probs, next_state = model.step(tokens, state)
            want = flatten_state(without_cached_gates(next_state))[0]
            # The tensors a step passes through unchanged are what the graph may leave out.
            static = [
                torch.equal(after, before) for after, before in zip(want, tensors, strict=True)
            ]
            got = Seq2SeqStep(portable, structure, static)(tokens, *tensors)
        torch.testing.assert_close(got[0], want_log_probs, atol=ATOL, rtol=0)
        first_moving = 1
        if model.has_attention:
            with torch.no_grad():
                weights = model.decoder.forward_with_attention(tokens.unsqueeze(1), state)[2]
            torch.testing.assert_close(got[1], weights.squeeze(1), atol=ATOL, rtol=0)
            first_moving = 2
        moving = [t for t, passed in zip(want, static, strict=True) if not passed]
        assert len(got) == first_moving + len(moving)
        for have, expected in zip(got[first_moving:], moving, strict=True):
            torch.testing.assert_close(have, expected, atol=ATOL, rtol=0)
        # The next step starts from the graph's own outputs, the static tensors fed again.
        outputs = iter(got[first_moving:])
        tensors = [
            before if passed else next(outputs)
            for before, passed in zip(tensors, static, strict=True)
        ]
        state, tokens = next_state, want_log_probs.argmax(-1)


def test_attention_memory_is_static_and_the_hidden_state_is_not():
    model = seq2seq_model("lstm", "bahdanau", True, True, "fused")
    src, lengths = sources()
    with torch.no_grad():
        state = model.start(src, lengths)
        after = model.step(torch.tensor([1, 1, 1]), state)[1]
    before_tensors, structure = flatten_state(state)
    after_tensors = flatten_state(after)[0]
    names = state_names(structure)
    passed = {
        name: torch.equal(a, b)
        for name, a, b in zip(names, after_tensors, before_tensors, strict=True)
    }
    assert passed["memory"] and passed["keys"] and passed["memory_lengths"]
    assert not passed["hidden.0"] and not passed["hidden.1"]


def test_portable_copy_leaves_the_model_as_it_was():
    model = seq2seq_model("gru", "none", True, True, "fused")
    encoder_rnn, decoder_rnn = model.encoder.rnn, model.decoder.rnn
    stepper = model.decoder.stepper
    src, lengths = sources()
    with torch.no_grad():
        before = flatten_state(model.start(src, lengths))[0]
    portable = portable_seq2seq(model, "gru")
    assert isinstance(portable.encoder.rnn, PortableRecurrent)
    assert model.encoder.rnn is encoder_rnn and model.decoder.rnn is decoder_rnn
    assert model.decoder.stepper is stepper
    with torch.no_grad():
        after = flatten_state(model.start(src, lengths))[0]
        portable.encoder.embedding.weight.add_(1.0)  # a copy: the model's weights do not move
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(portable.encoder.embedding.weight, model.encoder.embedding.weight)


# ---------------------------------------------------------------------------------------------------
# language model

LMS = [
    ("gru", "fused", {}),
    ("lstm", "fused", {}),
    ("rnn", "scratch", {}),
    ("peephole_lstm", "scratch", {}),
    ("coupled_lstm", "scratch", {}),
    ("gru", "fused", {"one_hot": True}),
    ("lstm", "fused", {"tie_weights": True, "embed_size": 6}),
]


def language_model(cell: str, impl: str, **options: Any) -> Any:
    settings: dict[str, Any] = {"embed_size": 4, "hidden_size": 6, "num_layers": 2, "dropout": 0.0}
    settings.update(options)
    config = LMModelConfig(cell=cell, rnn_impl=impl, **settings)
    torch.manual_seed(0)
    return build_language_model(config, vocab_size=LM_VOCAB).eval()


def random_state(model: Any, batch: int) -> Any:
    """A non-zero state of the model's structure, so that carrying it over is tested."""
    generator = torch.Generator().manual_seed(3)
    start = model.start(batch)
    if isinstance(start, tuple):
        return tuple(torch.randn(t.shape, generator=generator) for t in start)
    return torch.randn(start.shape, generator=generator)


@pytest.mark.parametrize(
    ("cell", "impl", "options"),
    LMS,
    ids=[f"{c}-{i}" + "".join(f"-{k}" for k in o) for c, i, o in LMS],
)
def test_lm_step_graph_equals_the_model_step(cell: str, impl: str, options: dict[str, Any]):
    model = language_model(cell, impl, **options)
    graph = LMGraph(model, cell, step=True).eval()
    state = random_state(model, 3)
    flat = flatten_state(state)[0]
    tokens = torch.tensor([0, 5, LM_VOCAB - 1])
    for _ in range(2):
        with torch.no_grad():
            want_log_probs, state = model.step(tokens, state)
            got = graph(tokens, *flat)
        torch.testing.assert_close(got[0], want_log_probs, atol=ATOL, rtol=0)
        want = flatten_state(state)[0]
        assert len(got) == 1 + len(want)
        for have, expected in zip(got[1:], want, strict=True):
            torch.testing.assert_close(have, expected, atol=ATOL, rtol=0)
        flat, tokens = list(got[1:]), want_log_probs.argmax(-1)


def test_lm_graphs_copy_the_model():
    model = language_model("lstm", "fused")
    rnn = model.rnn
    score = LMGraph(model, "lstm", step=False)
    step = LMGraph(model, "lstm", step=True)
    assert isinstance(score.model.rnn, PortableRecurrent) and isinstance(step.model.rnn, CellStack)
    assert model.rnn is rnn and score.carries_cell and step.carries_cell
    assert not LMGraph(language_model("gru", "fused"), "gru", step=True).carries_cell


def test_an_adaptive_softmax_language_model_has_a_step_graph():
    model = language_model("gru", "fused", softmax="adaptive", cutoffs=[8])
    state = random_state(model, 2)
    tokens = torch.tensor([3, 12])
    with torch.no_grad():
        want, _ = model.step(tokens, state)
        got = LMGraph(model, "gru", step=True)(tokens, state)
    torch.testing.assert_close(got[0], want, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------------
# tagger


@pytest.mark.parametrize("char_encoder", ["rnn", "cnn"])
def test_tagger_graph_swaps_every_stack_of_a_copy(
    make_task, data_dir: Path, tmp_path, char_encoder
):
    task = make_task(
        tmp_path, data_dir / "toy.txt", char_encoder=char_encoder, num_layers=2, lm_weight=0.1
    )
    tagger = task.build_model().eval()
    stacks = (tagger.rnn, tagger.upper_rnn, getattr(tagger.char_encoder, "rnn", None))
    assert tagger.upper_rnn is not None  # the language-modelling objective splits the stack
    batch = task.make_batch([["The", "dog", "ate"], ["sorry"]])
    inputs = (batch.words, batch.lengths, batch.chars, batch.char_lengths, batch.word_types)
    with torch.no_grad():
        before = tagger(*inputs)
    graph = TaggerEmissions(tagger, "lstm")
    assert isinstance(graph.tagger.rnn, PortableRecurrent)
    assert isinstance(graph.tagger.upper_rnn, PortableRecurrent)
    assert graph.char_rnn == (char_encoder == "rnn")
    if char_encoder == "rnn":
        assert isinstance(graph.tagger.char_encoder.rnn, PortableRecurrent)
    assert (tagger.rnn, tagger.upper_rnn, getattr(tagger.char_encoder, "rnn", None)) == stacks
    with torch.no_grad():
        assert torch.equal(tagger(*inputs), before)
