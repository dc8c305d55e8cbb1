import pytest
import torch

from rnnlab.config import load_config
from rnnlab.decoding.greedy import greedy_search
from rnnlab.errors import ConfigError
from rnnlab.models.encoder import Seq2SeqEncoder
from rnnlab.models.seq2seq import build_seq2seq
from rnnlab.tasks.seq2seq_config import Seq2SeqConfig


def test_encoder_state_shape_textbook_check():
    encoder = Seq2SeqEncoder(vocab_size=10, embed_size=8, hidden_size=16, num_layers=2)
    src = torch.zeros((4, 7), dtype=torch.long)
    out = encoder(src, torch.full((4,), 7))
    assert out.outputs.shape == (4, 7, 16)
    assert out.state.shape == (2, 4, 16)


def test_packed_encoder_final_state_ignores_padding():
    torch.manual_seed(0)
    encoder = Seq2SeqEncoder(vocab_size=10, embed_size=8, hidden_size=16, num_layers=1).eval()
    short = torch.tensor([[4, 5, 6]])
    padded = torch.tensor([[4, 5, 6, 0, 0]])
    a = encoder(short, torch.tensor([3]))
    b = encoder(padded, torch.tensor([3]))
    torch.testing.assert_close(a.state, b.state)
    assert torch.all(b.outputs[0, 3:] == 0)


def _model(cell: str):
    config = load_config(
        Seq2SeqConfig,
        None,
        [f"model.cell={cell}", "model.embed_size=8", "model.hidden_size=12", "model.num_layers=2"],
    )
    torch.manual_seed(0)
    return build_seq2seq(config.model, src_vocab_size=15, tgt_vocab_size=13).eval()


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_decoder_input_is_embedding_plus_context_and_state_type(cell):
    model = _model(cell)
    assert model.decoder.rnn.input_size == 8 + 12
    src = torch.randint(4, 15, (3, 5))
    features = model(src, torch.tensor([5, 3, 1]), torch.randint(4, 13, (3, 4)))
    assert features.shape == (3, 4, 12)
    state = model.start(src, torch.tensor([5, 3, 1]))
    assert isinstance(state.hidden, tuple) == (cell == "lstm")


def test_teacher_forced_steps_equal_one_pass():
    model = _model("gru")
    src, lengths = torch.randint(4, 15, (2, 5)), torch.tensor([5, 2])
    tgt_in = torch.randint(4, 13, (2, 4))
    full = torch.log_softmax(model.project(model(src, lengths, tgt_in)), -1)
    state = model.start(src, lengths)
    for t in range(4):
        log_probs, state = model.step(tgt_in[:, t], state)
        torch.testing.assert_close(log_probs, full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_batched_greedy_equals_one_sentence_at_a_time(cell):
    model = _model(cell)
    torch.manual_seed(3)
    lengths = torch.tensor([5, 1, 3, 4, 2, 5])
    src = torch.randint(4, 15, (6, 5)) * (torch.arange(5) < lengths[:, None])
    kwargs = dict(bos_id=2, eos_id=3, max_len=9)
    batched = greedy_search(model, model.start(src, lengths), batch_size=6, **kwargs)
    for i in range(6):
        alone = greedy_search(
            model,
            model.start(src[i : i + 1, : lengths[i]], lengths[i : i + 1]),
            batch_size=1,
            **kwargs,
        )
        assert alone[0] == batched[i]
    assert all(len(out) <= 9 for out in batched)


def test_greedy_stops_each_sentence_at_its_own_eos():
    class Scripted:
        """Sentence 0 emits <eos> at step 2, sentence 1 never does."""

        def __init__(self):
            self.calls = []

        def step(self, tokens, state, *, normalize=True):
            self.calls.append(len(tokens))
            log_probs = torch.full((len(tokens), 6), -10.0)
            t = state["t"]
            for row, sentence in enumerate(state["ids"].tolist()):
                log_probs[row, 3 if (sentence == 0 and t == 1) else 4 + sentence] = 0.0
            return log_probs, {"ids": state["ids"], "t": state["t"] + 1}

        def select_state(self, state, indices):
            return {"ids": state["ids"][indices], "t": state["t"]}

    model = Scripted()
    out = greedy_search(
        model, {"ids": torch.tensor([0, 1]), "t": 0}, batch_size=2, bos_id=2, eos_id=3, max_len=4
    )
    assert out == [[4], [5, 5, 5, 5]]
    assert model.calls == [2, 2, 1, 1]  # the finished sentence left the batch


def _tied(attention: str, tie: bool = True):
    config = load_config(
        Seq2SeqConfig,
        None,
        [
            f"model.attention={attention}",
            "model.embed_size=12",
            "model.hidden_size=12",
            "model.num_layers=1",
            f"model.tie_weights={str(tie).lower()}",
        ],
    )
    torch.manual_seed(0)
    return build_seq2seq(config.model, src_vocab_size=15, tgt_vocab_size=13).eval()


def _parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong_general"])
def test_tied_decoder_projects_with_its_embedding_matrix(attention):
    tied, untied = _tied(attention), _tied(attention, tie=False)
    decoder = tied.decoder
    assert decoder.output.weight is decoder.embedding.weight
    # One V×H matrix fewer than the untied model.
    assert _parameter_count(untied) - _parameter_count(tied) == 13 * 12
    assert decoder.embedding.weight.abs().max() <= 0.1
    assert torch.all(decoder.embedding.weight[decoder.embedding.padding_idx] == 0)
    # The logits are features times the embedding matrix, computed here independently.
    src, lengths = torch.randint(4, 15, (2, 5)), torch.tensor([5, 3])
    state = tied.start(src, lengths)
    tokens = torch.tensor([2, 2])
    log_probs, _ = tied.step(tokens, state)
    features, _ = decoder(tokens.unsqueeze(1), tied.start(src, lengths))
    logits = features[:, 0] @ decoder.embedding.weight.T + decoder.output.bias
    torch.testing.assert_close(log_probs, torch.log_softmax(logits, -1))


def test_tied_weights_get_one_gradient_from_both_uses():
    model = _tied("bahdanau").train()
    src, lengths = torch.randint(4, 15, (2, 5)), torch.tensor([5, 3])
    tgt_in = torch.tensor([[2, 5, 6], [2, 7, 0]])
    model.project(model(src, lengths, tgt_in)).sum().backward()
    shared = model.decoder.embedding.weight.grad
    # Rows never read as input (e.g. 9) still learn through the output projection.
    assert shared is not None and shared[9].abs().sum() > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.embed_size=8", "model.hidden_size=12"], "embed_size == model.hidden_size"),
        (
            [
                "model.embed_size=12",
                "model.hidden_size=12",
                "model.tgt_embeddings=vectors.txt",
                "model.freeze_tgt_embeddings=true",
            ],
            "freeze",
        ),
    ],
)
def test_tie_weights_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Seq2SeqConfig, None, ["model.tie_weights=true", *overrides])
