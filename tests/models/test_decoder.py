"""``rnnlab.models.decoder``: the Cho et al. (2014) context decoder.

References: the GRU and LSTM cell equations written out by hand over ``[embedding ; context]``,
a bidirectional ``torch.nn.GRU``'s own outputs for where the context comes from, one-token decoding
calls looped by hand against the one teacher-forced call over T (every cell, both implementations),
row selection before and after a step, a teacher-forced pass over the tokens a ``Feedback`` picks,
and central finite differences in float64. (``tests/models/test_context_decoder.py`` checks a single
step against the fused call and the projected context; this file covers whole sequences.)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.models.bridge import Bridge
from rnnlab.models.decoder import ContextDecoder, ContextDecoderState
from rnnlab.models.encoder import EncoderOutput
from rnnlab.models.feedback import Feedback
from rnnlab.nn.state import RecurrentState
from tests.numeric import assert_near, check_gradients

VOCAB, EMBED, HIDDEN, BATCH, STEPS, LAYERS = 7, 3, 4, 3, 5, 2
CELLS = ["rnn", "gru", "lstm", "peephole_lstm", "coupled_lstm"]


def assert_states_near(actual: RecurrentState, expected: RecurrentState) -> None:
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple)
        assert_near(actual[0], expected[0])
        assert_near(actual[1], expected[1])
    else:
        assert isinstance(actual, Tensor)
        assert_near(actual, expected)


def make_decoder(cell: str, impl: str = "fused", *, layers: int = LAYERS) -> ContextDecoder:
    torch.manual_seed(0)
    decoder = ContextDecoder(
        vocab_size=VOCAB,
        embed_size=EMBED,
        hidden_size=HIDDEN,
        context_size=HIDDEN,
        num_layers=layers,
        cell=cell,
        rnn_impl=impl,
    )
    return decoder.double().eval()


def encoder_output(cell: str, *, layers: int = LAYERS, seed: int = 1) -> EncoderOutput:
    """A unidirectional encoder's result: only its final state matters to this decoder."""
    generator = torch.Generator().manual_seed(seed)
    h = torch.randn(layers, BATCH, HIDDEN, generator=generator, dtype=torch.float64)  # (L, B, H)
    c = torch.randn(layers, BATCH, HIDDEN, generator=generator, dtype=torch.float64)
    state: RecurrentState = (h, c) if cell.endswith("lstm") else h
    return EncoderOutput(
        outputs=torch.zeros(BATCH, 2, HIDDEN), state=state, lengths=torch.full((BATCH,), 2)
    )


def targets(seed: int = 2) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (BATCH, STEPS), generator=generator)  # (B, T)


def gru_cell(x: Tensor, h: Tensor, rnn: nn.Module, layer: int) -> Tensor:
    """torch.nn.GRU's equations, one layer, one step: x (B, I), h (B, H) → (B, H)."""
    w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
    b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
    x_r, x_z, x_n = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    reset = torch.sigmoid(x_r + h_r)
    update = torch.sigmoid(x_z + h_z)
    candidate = torch.tanh(x_n + reset * h_n)  # the reset gate scales W_hn h + b_hn
    return (1 - update) * candidate + update * h


def lstm_cell(
    x: Tensor, state: tuple[Tensor, Tensor], rnn: nn.Module, layer: int
) -> tuple[Tensor, Tensor]:
    """torch.nn.LSTM's equations, one layer, one step (gates in the order i, f, g, o)."""
    h, c = state
    w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
    b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def decode_by_hand(decoder: ContextDecoder, tokens: Tensor, encoded: EncoderOutput) -> Tensor:
    """Features (B, T, H) of the stack run step by step on [E y_t ; c], c = top final state."""
    if isinstance(encoded.state, tuple):
        hidden, cell = encoded.state
        pairs = list(zip(hidden, cell, strict=True))  # L × ((B, H), (B, H))
    else:
        hidden, pairs = encoded.state, []
    layers = list(hidden)  # L × (B, H)
    context = hidden[-1]  # (B, H): the encoder's top layer, unidirectional
    features = []
    for t in range(tokens.size(1)):
        x = torch.cat([decoder.embedding.weight[tokens[:, t]], context], dim=-1)  # (B, E + C)
        for layer in range(len(layers)):
            if pairs:
                pairs[layer] = lstm_cell(x, pairs[layer], decoder.rnn, layer)
                x = pairs[layer][0]
            else:
                layers[layer] = gru_cell(x, layers[layer], decoder.rnn, layer)
                x = layers[layer]
        features.append(x)
    return torch.stack(features, dim=1)  # (B, T, H)


@pytest.mark.parametrize("impl", ["fused", "scratch"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_teacher_forced_features_follow_the_cell_equations(cell: str, impl: str) -> None:
    decoder = make_decoder(cell, impl)
    encoded = encoder_output(cell)
    tokens = targets()
    with torch.no_grad():
        features, _ = decoder(tokens, decoder.init_state(encoded))  # (B, T, H)
        expected = decode_by_hand(decoder, tokens, encoded)
    assert_near(features, expected)


@pytest.mark.parametrize("impl", ["fused", "scratch"])
@pytest.mark.parametrize("cell", CELLS)
def test_decoding_one_token_per_call_equals_the_teacher_forced_call(cell: str, impl: str) -> None:
    """Decoding's one-token calls (the stepwise path where the cell has a stepper) thread the state
    and the precomputed context through T steps to the features of one call over T."""
    decoder = make_decoder(cell, impl)
    tokens = targets()
    start = decoder.init_state(encoder_output(cell))
    with torch.no_grad():
        full, full_state = decoder(tokens, start)  # (B, T, H)
        state, steps = start, []
        for t in range(STEPS):
            feature, state = decoder(tokens[:, t : t + 1], state)  # (B, 1, H)
            steps.append(feature)
    assert_near(torch.cat(steps, dim=1), full)
    assert_states_near(state.hidden, full_state.hidden)
    assert state.context is start.context  # the context is fixed for the sentence


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_selecting_rows_commutes_with_a_step(cell: str) -> None:
    """Beam search reorders the state between steps: selecting rows then stepping must give the
    selected rows of stepping the whole batch."""
    decoder = make_decoder(cell)
    start = decoder.init_state(encoder_output(cell))
    tokens = targets()[:, :1]  # (B, 1)
    indices = torch.tensor([2, 0, 2])  # a beam may keep one row twice and drop another
    with torch.no_grad():
        whole, whole_state = decoder(tokens, start)
        picked, picked_state = decoder(tokens[indices], start.select(indices))
    assert_near(picked, whole[indices])
    assert_states_near(picked_state.hidden, whole_state.select(indices).hidden)
    assert_near(picked_state.context, start.context[indices])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bidirectional_encoders_context_is_both_directions_of_the_top_layer(cell: str) -> None:
    torch.manual_seed(0)
    kind = nn.LSTM if cell == "lstm" else nn.GRU
    encoder = kind(2, HIDDEN, num_layers=LAYERS, bidirectional=True, batch_first=True).double()
    outputs, state = encoder(torch.randn(BATCH, STEPS, 2, dtype=torch.float64))  # (B, S, 2H)
    encoded = EncoderOutput(outputs=outputs, state=state, lengths=torch.full((BATCH,), STEPS))
    decoder = ContextDecoder(
        vocab_size=VOCAB,
        embed_size=EMBED,
        hidden_size=HIDDEN,
        context_size=2 * HIDDEN,
        num_layers=LAYERS,
        cell=cell,
    ).double()
    with pytest.raises(ValueError, match="bridge"):
        decoder.init_state(encoded)  # (2·L, B, H) is not an L-layer state
    bridged = Bridge(hidden_size=HIDDEN, cell_state=cell == "lstm").double()(state)
    start = decoder.init_state(encoded, bridged)
    # The forward direction ends at the last position, the backward one at the first.
    top = torch.cat([outputs[:, -1, :HIDDEN], outputs[:, 0, HIDDEN:]], dim=-1)  # (B, 2H)
    assert_near(start.context, top)
    assert start.hidden is bridged
    w_context = decoder.rnn.weight_ih_l0[:, EMBED:]  # (G·H, 2H)
    assert start.context_gates is not None
    assert_near(start.context_gates, top @ w_context.T + decoder.rnn.bias_ih_l0)


@pytest.mark.parametrize("cell", ["gru", "peephole_lstm"])
def test_feedback_replaces_every_token_after_the_first(cell: str) -> None:
    """A ``Feedback`` that always picks token k (ε = 0) gives the features of a teacher-forced pass
    over [y_0, k, k, …]; it is asked T − 1 times, with the previous position's features. The
    peephole cell has no stepper and takes the per-step fused call instead."""
    decoder = make_decoder(cell)
    start = decoder.init_state(encoder_output(cell))
    tokens = targets()
    chosen = 5
    seen: list[Tensor] = []

    def always_chosen(features: Tensor) -> Tensor:
        seen.append(features)
        return F.one_hot(torch.full((features.size(0),), chosen), VOCAB).double()  # (B, V)

    with torch.no_grad():
        fed, _ = decoder(tokens, start, Feedback(0.0, always_chosen))  # (B, T, H)
        replaced = tokens.clone()
        replaced[:, 1:] = chosen
        expected, _ = decoder(replaced, start)
    assert_near(fed, expected)
    assert len(seen) == STEPS - 1
    for t, features in enumerate(seen):
        assert_near(features, expected[:, t])  # features of the position before the choice


def test_one_token_calls_pass_gradients_to_the_encoder_state() -> None:
    """The stepwise path adds the context's projection computed once in ``init_state``; the
    gradient must still reach the encoder's state through both the context and the initial state."""
    torch.manual_seed(0)
    decoder = ContextDecoder(
        vocab_size=VOCAB, embed_size=2, hidden_size=2, context_size=2, num_layers=2, cell="lstm"
    ).double()
    tokens = torch.tensor([[1, 4, 2], [3, 3, 6]])  # (B, T)
    generator = torch.Generator().manual_seed(3)
    h = torch.randn(2, 2, 2, generator=generator, dtype=torch.float64)  # (L, B, H)
    c = torch.randn(2, 2, 2, generator=generator, dtype=torch.float64)

    def decode(h: Tensor, c: Tensor) -> Tensor:
        encoded = EncoderOutput(outputs=h.new_zeros(2, 1, 2), state=(h, c), lengths=h.new_ones(2))
        state = decoder.init_state(encoded)
        assert state.context_gates is not None  # the stepwise path is the one under test
        features = []
        for t in range(tokens.size(1)):
            feature, state = decoder(tokens[:, t : t + 1], state)  # (B, 1, H)
            features.append(feature)
        return torch.cat(features, dim=1)  # (B, T, H)

    check_gradients(decode, [h, c], nonzero=True)


def test_state_select_keeps_the_hidden_rows_on_the_batch_axis() -> None:
    h = torch.arange(24.0).view(2, 4, 3)  # (L, B, H)
    state = ContextDecoderState(hidden=(h, -h), context=torch.arange(8.0).view(4, 2))
    picked = state.select(torch.tensor([3, 1]))
    assert isinstance(picked.hidden, tuple)
    assert torch.equal(picked.hidden[0], h[:, [3, 1]])
    assert torch.equal(picked.hidden[1], -h[:, [3, 1]])
    assert torch.equal(picked.context, torch.tensor([[6.0, 7.0], [2.0, 3.0]]))
    assert picked.context_gates is None
