"""Model numerics and the inference paths on them, against independent references.

CRF partition function, Viterbi and gradients against enumeration of every tag path; the attention
decoders against hand-written loops of their documented equations; batch and padding invariance of
the character encoders, taggers and translators; beam search against brute force over a trained tiny
translator's outputs; tagger ensembles against averaging by hand; bfloat16 autocast against float32;
scheduled sampling's schedules, variational dropout, weight tying and perplexity by hand.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rnnlab.data.batching import pad_batch
from rnnlab.data.tagset import TagSet
from rnnlab.decoding.beam import beam_search_hypotheses
from rnnlab.decoding.hypothesis import length_penalty
from rnnlab.inference import LanguageModel, Tagger, Translator, load_as
from rnnlab.inference.ensemble import TaggerEnsemble, load_ensemble
from rnnlab.models.attention_decoder import BahdanauDecoder, LuongDecoder
from rnnlab.models.char_encoder import CharCNNEncoder, CharRNNEncoder
from rnnlab.models.crf import LinearChainCRF
from rnnlab.models.encoder import EncoderOutput
from rnnlab.models.language_model import RNNLanguageModel
from rnnlab.models.seq2seq import build_seq2seq
from rnnlab.models.tagger import RNNTagger
from rnnlab.nn.dropout import SequenceDropout
from rnnlab.nn.precision import autocast, full_precision
from rnnlab.tasks.seq2seq_config import Seq2SeqModelConfig
from rnnlab.training.scheduled_sampling import teacher_forcing_probability

CPU = torch.device("cpu")


# -- CRF against enumeration ------------------------------------------------------------------------


def _random_crf(num_tags: int, seed: int, std: float = 1.5) -> LinearChainCRF:
    torch.manual_seed(seed)
    crf = LinearChainCRF(num_tags)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_(std=std)
    return crf


def _path_score(crf: LinearChainCRF, emissions: torch.Tensor, path: tuple[int, ...]):
    """s(y) by the module docstring's formula, for one unpadded sentence (n, K)."""
    total = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
    for t, tag in enumerate(path):
        total = total + emissions[t, tag]
        if t > 0:
            total = total + crf.transitions[path[t - 1], tag]
    return total


def _enumerate(crf: LinearChainCRF, emissions: torch.Tensor, n: int):
    paths = list(itertools.product(range(crf.num_tags), repeat=n))
    scores = torch.stack([_path_score(crf, emissions[:n], p) for p in paths])
    return paths, scores


@pytest.mark.parametrize("num_tags", [1, 2, 3])
def test_crf_with_every_sentence_shorter_than_the_batch_and_length_one_rows(num_tags):
    """T larger than every length (all rows end in padding), several length-1 rows, K = 1."""
    crf = _random_crf(num_tags, seed=num_tags)
    lengths = torch.tensor([1, 3, 1, 2, 1])
    emissions = torch.randn(5, 6, num_tags) * 3
    emissions[:, 3:] = 1e4  # padding that would dominate any sum that read it
    with torch.no_grad():
        log_z = crf.log_partition(emissions, lengths)
        best = crf.viterbi(emissions, lengths)
        for b, n in enumerate(lengths.tolist()):
            paths, scores = _enumerate(crf, emissions[b], n)
            torch.testing.assert_close(log_z[b], torch.logsumexp(scores, 0), atol=1e-4, rtol=1e-5)
            assert best[b, :n].tolist() == list(paths[int(scores.argmax())])
            assert best[b, n:].eq(0).all()


def test_crf_nll_gradient_equals_the_gradient_of_enumerated_log_likelihood():
    """∂ nll / ∂ (emissions, transitions, start, end) by autograd through the forward algorithm and
    through the explicit sum over all paths; padded emissions get no gradient."""
    crf = _random_crf(3, seed=11)
    lengths = torch.tensor([4, 2, 1])
    emissions = torch.randn(3, 4, 3, requires_grad=True)
    tags = torch.tensor([[0, 2, 1, 1], [2, 2, 0, 0], [1, 0, 0, 0]])
    crf.nll(emissions, tags, lengths).sum().backward()
    ours = [emissions.grad.clone()] + [p.grad.clone() for p in crf.parameters()]

    reference = LinearChainCRF(3)
    reference.load_state_dict(crf.state_dict())
    leaf = emissions.detach().clone().requires_grad_()
    total = torch.zeros(())
    for b, n in enumerate(lengths.tolist()):
        _, scores = _enumerate(reference, leaf[b], n)
        gold = _path_score(reference, leaf[b], tuple(tags[b, :n].tolist()))
        total = total + torch.logsumexp(scores, 0) - gold
    total.backward()
    expected = [leaf.grad] + [p.grad for p in reference.parameters()]
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert emissions.grad[1, 2:].eq(0).all() and emissions.grad[2, 1:].eq(0).all()


def test_crf_stays_finite_and_exact_for_large_scores_in_float64():
    crf = _random_crf(3, seed=5, std=30.0).double()
    emissions = torch.randn(2, 3, 3, dtype=torch.float64) * 200
    lengths = torch.tensor([3, 2])
    with torch.no_grad():
        log_z = crf.log_partition(emissions, lengths)
        assert log_z.dtype == torch.float64 and torch.isfinite(log_z).all()
        for b, n in enumerate(lengths.tolist()):
            _, scores = _enumerate(crf, emissions[b], n)
            torch.testing.assert_close(log_z[b], torch.logsumexp(scores, 0))


# -- attention decoders against their equations ------------------------------------------------------

B, S, T, V, E, H, C = 3, 5, 4, 11, 6, 8, 10


def _memory_case(cell: str, layers: int, memory_size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(B, S, memory_size, generator=g)
    lengths = torch.tensor([5, 2, 3])
    memory = memory * (torch.arange(S)[None, :, None] < lengths[:, None, None])  # zeros at padding
    h0 = torch.randn(layers, B, H, generator=g)
    hidden = (h0, torch.randn(layers, B, H, generator=g)) if cell == "lstm" else h0
    tgt = torch.randint(1, V, (B, T), generator=g)
    return memory, lengths, hidden, tgt


def _hand_softmax(scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    valid = torch.arange(scores.size(-1))[None] < lengths[:, None]
    return torch.where(valid, torch.softmax(scores.masked_fill(~valid, -1e30), -1), 0.0)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_bahdanau_decoder_follows_its_equations_step_by_step(cell, layers):
    """c_t = attend(s_{t-1}); s_t = RNN([e ; c_t], s_{t-1}); o_t = tanh(W_o [s_t ; c_t ; e])."""
    torch.manual_seed(0)
    memory, lengths, hidden, tgt = _memory_case(cell, layers, C)
    decoder = BahdanauDecoder(
        vocab_size=V, embed_size=E, hidden_size=H, memory_size=C, num_layers=layers, cell=cell
    ).eval()
    att = decoder.attention
    with torch.no_grad():
        encoded = EncoderOutput(memory, hidden, lengths)
        features, _, weights = decoder.forward_with_attention(
            tgt, decoder.init_state(encoded, hidden)
        )
        state, expected, expected_weights = hidden, [], []
        for t in range(T):
            query = (state[0] if cell == "lstm" else state)[-1]
            energy = torch.tanh(att.query_layer(query)[:, None] + att.key_layer(memory))
            a = _hand_softmax((energy @ att.energy_layer.weight.T).squeeze(-1), lengths)
            context = (a[:, :, None] * memory).sum(1)
            e = decoder.embedding(tgt[:, t])
            out, state = decoder.rnn(torch.cat([e, context], -1)[:, None], state)
            expected.append(torch.tanh(decoder.pre_output(torch.cat([out[:, 0], context, e], -1))))
            expected_weights.append(a)
    torch.testing.assert_close(features, torch.stack(expected, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, torch.stack(expected_weights, 1), atol=1e-6, rtol=1e-5)
    assert weights[1, :, 2:].eq(0).all() and weights[2, :, 3:].eq(0).all()


@pytest.mark.parametrize("method", ["general", "dot"])
@pytest.mark.parametrize("input_feed", [True, False])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_luong_decoder_follows_its_equations_step_by_step(method, input_feed, cell):
    """h_t = RNN([e ; h̃_{t-1}], h_{t-1}); c_t = attend(h_t); h̃_t = tanh(W_c [c_t ; h_t])."""
    torch.manual_seed(1)
    size = C if method == "general" else H
    memory, lengths, hidden, tgt = _memory_case(cell, 2, size, seed=1)
    decoder = LuongDecoder(
        vocab_size=V,
        embed_size=E,
        hidden_size=H,
        memory_size=size,
        num_layers=2,
        cell=cell,
        method=method,
        input_feed=input_feed,
    ).eval()
    with torch.no_grad():
        encoded = EncoderOutput(memory, hidden, lengths)
        features, _, weights = decoder.forward_with_attention(
            tgt, decoder.init_state(encoded, hidden)
        )
        keys = decoder.attention.key_layer(memory) if method == "general" else memory
        state, last, expected = hidden, torch.zeros(B, H), []
        for t in range(T):
            e = decoder.embedding(tgt[:, t])
            out, state = decoder.rnn(
                (torch.cat([e, last], -1) if input_feed else e)[:, None], state
            )
            a = _hand_softmax((keys @ out[:, 0, :, None]).squeeze(-1), lengths)
            context = (a[:, :, None] * memory).sum(1)
            last = torch.tanh(decoder.combine(torch.cat([context, out[:, 0]], -1)))
            expected.append(last)
    torch.testing.assert_close(features, torch.stack(expected, 1), atol=1e-5, rtol=1e-5)
    assert weights[1, :, 2:].eq(0).all() and weights[2, :, 3:].eq(0).all()


def _tiny_seq2seq(**fields):
    torch.manual_seed(0)
    config = Seq2SeqModelConfig(embed_size=8, hidden_size=8, dropout=0.0, **fields)
    return build_seq2seq(config, src_vocab_size=12, tgt_vocab_size=12, padding_idx=0).eval()


SOURCES = [[4, 5, 6, 3], [7, 8, 9, 10, 11, 4, 5, 3], [6, 3], [9, 9, 8, 3]]
TARGETS = [[6, 5, 4, 3], [5, 4, 11, 10, 9, 8, 7, 3], [6, 3], [8, 9, 3]]


@pytest.mark.parametrize(
    "fields",
    [
        dict(attention="bahdanau", bidirectional_encoder=True, cell="lstm", num_layers=2),
        dict(attention="luong_general", bidirectional_encoder=True, cell="gru", input_feed=False),
        dict(attention="luong_dot", cell="coupled_lstm", rnn_impl="scratch"),
        dict(attention="none", bidirectional_encoder=True, cell="rnn", num_layers=2),
    ],
    ids=["bahdanau-bilstm", "luong-general-nofeed", "luong-dot-coupled", "context-rnn"],
)
def test_translator_features_and_attention_do_not_depend_on_batch_or_extra_padding(fields):
    model = _tiny_seq2seq(**fields)
    src, src_lengths = pad_batch(SOURCES, 0)
    src = torch.cat([src, torch.full((len(SOURCES), 3), 0)], 1)  # more padding than needed
    tgt_in, _ = pad_batch([[2, *t[:-1]] for t in TARGETS], 0)
    with torch.no_grad():
        batched = model(src, src_lengths, tgt_in)
        weights = model.attention_weights(src, src_lengths, tgt_in) if model.has_attention else None
        for i, (s, t) in enumerate(zip(SOURCES, TARGETS, strict=True)):
            alone = model(torch.tensor([s]), torch.tensor([len(s)]), torch.tensor([[2, *t[:-1]]]))
            torch.testing.assert_close(alone[0], batched[i, : len(t)], atol=1e-5, rtol=1e-5)
            if weights is not None:
                assert weights[i, :, len(s) :].eq(0).all()
                torch.testing.assert_close(weights[i].sum(-1), torch.ones(weights.size(1)))


# -- character encoders and taggers -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rnn-gru", "rnn-lstm", "cnn-5"])
def test_char_encoder_word_vector_ignores_the_rest_of_the_batch_while_training(kind):
    """In train mode with gradients (the padded-kernel path and its length groups for recurrent
    encoders), every word's vector is the one it gets alone, whatever padding follows it."""
    torch.manual_seed(0)
    if kind.startswith("rnn"):
        cell = kind.split("-")[1]
        encoder = CharRNNEncoder(num_chars=30, embed_size=6, hidden_size=5, cell=cell)
    else:
        encoder = CharCNNEncoder(num_chars=30, embed_size=6, hidden_size=5, kernel_size=5)
    encoder.train()
    lengths = [1, 12, 3, 7, 2, 30, 5, 5, 9, 1, 4, 16, 6, 2, 8, 3]
    words = [torch.randint(1, 30, (n,)).tolist() for n in lengths]
    chars, char_lengths = pad_batch(words, pad_id=0)
    noisy = torch.cat([chars, torch.full((len(words), 4), 0)], 1)
    noisy[char_lengths[:, None] <= torch.arange(noisy.size(1))[None]] = 7  # junk, not pad ids
    vectors = encoder(chars, char_lengths)
    assert vectors.requires_grad
    torch.testing.assert_close(encoder(noisy, char_lengths), vectors, atol=1e-6, rtol=1e-5)
    for row, word in enumerate(words):
        alone = encoder(torch.tensor([word]), torch.tensor([len(word)]))
        torch.testing.assert_close(alone[0], vectors[row], atol=1e-6, rtol=1e-5)


def _tagger_batch(sentences, extra: int = 0):
    spell = {w: list(range(1, 2 + w % 5)) for w in range(40)}
    words, lengths = pad_batch(sentences, 0)
    rows: dict[int, int] = {}
    types, _ = pad_batch([[rows.setdefault(w, len(rows)) for w in s] for s in sentences], 0)
    if extra:
        words = torch.cat([words, torch.full((len(sentences), extra), 9)], 1)
        types = torch.cat([types, torch.zeros(len(sentences), extra, dtype=torch.long)], 1)
    chars, char_lengths = pad_batch([spell[w] for w in rows], 0)
    return words, lengths, chars, char_lengths, types


@pytest.mark.parametrize(
    "options",
    [
        dict(cell="gru", crf=True, num_layers=2, lm_classes=3, char="cnn"),
        dict(cell="lstm", crf=True, num_layers=1, char="rnn"),
        dict(cell="peephole_lstm", rnn_impl="scratch", crf=False, num_layers=2, char="rnn"),
    ],
    ids=["gru-crf-lm", "lstm-crf-charrnn", "peephole-scratch"],
)
def test_tagger_scores_and_viterbi_tags_of_a_sentence_alone_equal_those_in_a_batch(options):
    options = dict(options)
    torch.manual_seed(0)
    char = options.pop("char")
    impl = options.get("rnn_impl", "fused")
    if char == "rnn":
        encoder = CharRNNEncoder(num_chars=10, embed_size=4, hidden_size=3, rnn_impl=impl)
    else:
        encoder = CharCNNEncoder(num_chars=10, embed_size=4, hidden_size=3)
    model = RNNTagger(
        vocab_size=40, num_tags=4, embed_size=5, hidden_size=6, char_encoder=encoder, **options
    )
    model.train()  # dropout 0: deterministic, and the gradient-recording paths
    sentences = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [5], [14, 15, 16, 6]]
    emissions = model(*_tagger_batch(sentences, extra=2))
    tags = model.decode(emissions, torch.tensor([len(s) for s in sentences]))
    for i, s in enumerate(sentences):
        alone = model(*_tagger_batch([s]))
        torch.testing.assert_close(alone[0], emissions[i, : len(s)], atol=1e-5, rtol=1e-5)
        assert model.decode(alone, torch.tensor([len(s)]))[0].tolist() == tags[i, : len(s)].tolist()


# -- tagger ensembles ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crf_tagger_run(tmp_path_factory) -> Path:
    """Another tiny tagger of the same tag set: CRF output, CNN characters, a word vocabulary of
    its own (min_freq 1, lower-cased)."""
    from tests.tiny_runs import train_tagger

    return train_tagger(
        tmp_path_factory.mktemp("crf_tagger"),
        seed=3,
        **{
            "data.min_freq": 1,
            "data.lowercase": "true",
            "model.crf": "true",
            "model.char_encoder": "cnn",
        },
    )


ENSEMBLE_SENTENCES = [
    ["The", "cat", "sat", "on", "the", "Mat", "."],
    ["Where", "is", "it", "?"],
    ["Go"],
    ["I", "lost", "my", "keys", "in", "Zürich", "!"],
]


def test_ensemble_of_members_with_different_vocabularies_is_viterbi_over_hand_averaged_scores(
    tagger_run: Path, crf_tagger_run: Path
):
    ensemble = load_ensemble([tagger_run, crf_tagger_run], device="cpu")
    first, second = ensemble.members
    assert first.task.word_vocab.itos != second.task.word_vocab.itos
    assert first.model.crf is None and second.model.crf is not None
    got = ensemble.tag_ids(ENSEMBLE_SENTENCES)
    crf = second.model.crf
    num_tags = len(first.task.tagset)
    for sentence, tags in zip(ENSEMBLE_SENTENCES, got, strict=True):
        mean = sum(m.task.emissions(m.model, [sentence], CPU)[0][0] for m in ensemble.members) / 2
        n = len(sentence)
        # Viterbi by hand over the mean scores, the mean CRF being half the one CRF's scores.
        with torch.no_grad():
            delta = (crf.start_transitions / 2 + mean[0]).double()
            back = []
            for t in range(1, n):
                scores = delta[:, None] + crf.transitions.double() / 2
                delta, pointer = scores.max(0)
                delta = delta + mean[t].double()
                back.append(pointer)
            last = int((delta + crf.end_transitions.double() / 2).argmax())
            path = [last]
            for pointer in reversed(back):
                last = int(pointer[last])
                path.append(last)
        assert tags == path[::-1]
        assert all(0 <= t < num_tags for t in tags)
        # Batching: each sentence alone gets the same tags.
        assert ensemble.tag_ids([sentence])[0] == tags


def _permuted_member(run: Path, seed: int) -> tuple[Tagger, list[int]]:
    """The run loaded with its tag set listed in another order and its output rows permuted to
    match: the very same tagger, tag for tag."""
    member = load_as(Tagger, run, command="tag", device="cpu")
    tags = list(member.task.tagset.itos)
    order = torch.randperm(len(tags), generator=torch.Generator().manual_seed(seed)).tolist()
    member.task.tagset = TagSet([tags[i] for i in order])
    with torch.no_grad():
        member.model.output.weight.copy_(member.model.output.weight[order])
        member.model.output.bias.copy_(member.model.output.bias[order])
    return member, order


def test_a_member_whose_tag_order_is_permuted_still_tags_the_same_words(tagger_run: Path):
    """The premise of the next test: permuting the tag set and the output rows together changes
    no tag string."""
    single = load_as(Tagger, tagger_run, command="tag", device="cpu")
    permuted, order = _permuted_member(tagger_run, seed=1)
    assert order != sorted(order)
    assert [t.tags for t in permuted.tag(ENSEMBLE_SENTENCES)] == [
        t.tags for t in single.tag(ENSEMBLE_SENTENCES)
    ]


def test_members_sharing_a_tag_set_in_another_order_tag_as_one(tagger_run: Path):
    """README: members "must share the tag set". Two runs on different samples of one treebank can
    hold the same tags in another frequency order (e.g. the first 100 vs 105 EWT sample sentences);
    the ensemble should align the tags by name, not refuse."""
    single = load_as(Tagger, tagger_run, command="tag", device="cpu")
    permuted, _ = _permuted_member(tagger_run, seed=1)
    ensemble = TaggerEnsemble([single, permuted])
    expected = [t.tags for t in single.tag(ENSEMBLE_SENTENCES)]
    assert [t.tags for t in ensemble.tag(ENSEMBLE_SENTENCES)] == expected


# -- beam search against brute force on a trained translator --------------------------------------------


def _all_outputs(emit: list[int], eos: int, max_len: int) -> list[tuple[list[int], bool]]:
    """Every output beam search could return: up to max_len − 1 tokens + <eos>, or max_len tokens
    without <eos> (the beams still live at max_len)."""
    outputs = []
    for n in range(max_len):
        outputs += [(list(seq), True) for seq in itertools.product(emit, repeat=n)]
    outputs += [(list(seq), False) for seq in itertools.product(emit, repeat=max_len)]
    return outputs


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_equals_brute_force_over_every_output_of_a_trained_translator(
    translator_run: Path, alpha: float
):
    translator = load_as(Translator, translator_run, command="translate", device="cpu")
    task, model = translator.task, translator.model
    vocab = task.tgt_vocab
    emit = [i for i in range(len(vocab)) if i not in set(vocab.never_emitted) and i != vocab.eos_id]
    max_len = 3
    candidates = _all_outputs(emit, vocab.eos_id, max_len)
    full = [seq + ([vocab.eos_id] if eos else []) for seq, eos in candidates]
    lengths = torch.tensor([len(f) for f in full])
    tgt_in, _ = pad_batch([[vocab.bos_id, *f[:-1]] for f in full], vocab.pad_id)
    tgt_out, _ = pad_batch(full, vocab.pad_id)
    for line in ["a b", "h c"]:
        src = task.encode_source(line)
        with torch.no_grad():
            rows = len(full)
            features = model(
                torch.tensor([src]).expand(rows, -1), torch.full((rows,), len(src)), tgt_in
            )
            log_probs = torch.log_softmax(model.project(features).double(), -1)
            picked = log_probs.gather(2, tgt_out.unsqueeze(2)).squeeze(2)
            valid = torch.arange(tgt_out.size(1))[None] < lengths[:, None]
            totals = (picked * valid).sum(1)
            ranked = sorted(
                ((float(totals[i]) / length_penalty(len(full[i]), alpha), i) for i in range(rows)),
                reverse=True,
            )
            state = model.start(torch.tensor([src]), torch.tensor([len(src)]))
            hyps = beam_search_hypotheses(
                model,
                state,
                batch_size=1,
                beam_size=len(emit) ** (max_len - 1),  # wide enough to be exhaustive
                n_best=4,
                bos_id=vocab.bos_id,
                eos_id=vocab.eos_id,
                max_len=max_len,
                length_penalty_alpha=alpha,
                banned=vocab.never_emitted,
            )[0]
        assert [h.tokens for h in hyps] == [candidates[i][0] for _, i in ranked[:4]]
        for h, (score, _) in zip(hyps, ranked, strict=False):
            assert h.score == pytest.approx(score, abs=1e-4)


def test_translations_alone_equal_those_in_a_batch_with_beam_and_n_best(translator_run: Path):
    translator = load_as(Translator, translator_run, command="translate", device="cpu")
    lines = ["a b c", "h g f e d c", "a", "", "c d e f g h a b"]
    batched = translator.translate(lines, beam=3, n_best=2)
    for line, together in zip(lines, batched, strict=True):
        alone = translator.translate([line], beam=3, n_best=2)[0]
        assert [t for t, _ in alone.n_best] == [t for t, _ in together.n_best]
        for (_, a), (_, b) in zip(alone.n_best, together.n_best, strict=True):
            assert a == pytest.approx(b, abs=1e-4)


# -- bfloat16 autocast against float32 -----------------------------------------------------------------


def test_bf16_decoding_of_a_trained_translator_stays_close_to_fp32(translator_run: Path):
    fp32 = load_as(Translator, translator_run, command="translate", device="cpu")
    bf16 = load_as(
        Translator,
        translator_run,
        command="translate",
        device="cpu",
        overrides=["decode.precision=bf16"],
    )
    lines = ["a b c", "h g f e d c", "b b", "e"]
    for beam in (1, 3):
        ours = bf16.translate(lines, beam=beam)
        reference = fp32.translate(lines, beam=beam)
        assert [t.text for t in ours] == [t.text for t in reference]
        for a, b in zip(ours, reference, strict=True):
            assert isinstance(a.score, float)
            assert a.score == pytest.approx(b.score, abs=0.05)


def test_bf16_tagger_losses_run_in_float32_and_stay_close():
    """CRF and softmax tag losses, the auxiliary and language-modelling losses under bf16 autocast:
    float32 results within 1% of float32 autocast-free values; the emissions themselves are bf16."""
    torch.manual_seed(0)
    words = torch.randint(2, 30, (3, 6))
    lengths = torch.tensor([6, 3, 1])
    tags = torch.randint(0, 5, (3, 6))
    for crf in (False, True):
        model = RNNTagger(
            vocab_size=30,
            num_tags=5,
            embed_size=8,
            hidden_size=8,
            cell="gru",
            crf=crf,
            auxiliary={"x": 3},
            lm_classes=4,
        )

        def losses(model=model):
            features, lower = model.encode_layers(model.embed(words), lengths)
            emissions = model.output(features)
            return emissions.dtype, [
                model.loss_sum(full_precision(emissions), tags, lengths),
                model.auxiliary_loss_sum("x", features, tags.clamp(max=2), lengths),
                model.lm_loss_sum(lower, tags.clamp(max=3), lengths),
            ]

        _, reference = losses()
        with autocast("cpu", "bf16"):
            dtype, ours = losses()
        assert dtype == torch.bfloat16
        for a, b in zip(ours, reference, strict=True):
            assert a.dtype == torch.float32
            assert abs(a.item() - b.item()) < 0.01 * abs(b.item())


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_bf16_language_model_loss_and_log_probs_are_float32_and_normalised(softmax):
    torch.manual_seed(0)
    model = RNNLanguageModel(
        vocab_size=40, embed_size=8, hidden_size=16, softmax=softmax, cutoffs=[10, 20]
    )
    tokens, targets = torch.randint(0, 40, (2, 7)), torch.randint(0, 40, (14,))
    features, _ = model(tokens)
    reference = model.token_nll(features.flatten(0, 1), targets)
    with autocast("cpu", "bf16"):
        features, _ = model(tokens)
        loss = model.token_nll(features.flatten(0, 1), targets)
        log_probs = model.log_probs(features)
        step, _ = model.step(tokens[:, 0], model.start(2))
    assert loss.dtype == log_probs.dtype == step.dtype == torch.float32
    assert abs(loss.item() - reference.item()) < 0.01 * reference.item()
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 7))


# -- scheduled sampling, variational dropout, weight tying, perplexity ----------------------------------


@pytest.mark.parametrize(
    ("kind", "k", "step", "minimum", "expected"),
    [
        ("linear", 100, 25, 0.0, 0.75),
        ("linear", 100, 250, 0.1, 0.1),
        ("exponential", 0.99, 100, 0.0, 0.99**100),
        ("exponential", 0.5, 10, 0.2, 0.2),
        ("inverse_sigmoid", 10, 0, 0.0, 10 / 11),
        ("inverse_sigmoid", 10, 30, 0.0, 10 / (10 + math.exp(3))),
        ("none", 0, 10_000, 0.0, 1.0),
    ],
)
def test_teacher_forcing_probability_matches_bengio_et_al(kind, k, step, minimum, expected):
    got = teacher_forcing_probability(kind, step, k=k, minimum=minimum)
    assert got == pytest.approx(expected, rel=1e-12)


def test_language_model_variational_dropout_keeps_one_mask_per_row_for_input_and_output():
    """Both the embedding dropout (seen at the recurrent layer's input) and the dropout before the
    projection zero a feature at every position of a row, and the rows differ."""
    torch.manual_seed(0)
    model = RNNLanguageModel(
        vocab_size=20, embed_size=16, hidden_size=16, dropout=0.5, variational_dropout=True
    ).train()
    seen: dict[str, torch.Tensor] = {}

    def keep_input(module, args, output) -> None:
        seen["input"] = args[0]

    model.rnn.register_forward_hook(keep_input)
    features, _ = model(torch.randint(0, 20, (4, 9)))
    for tensor in (seen["input"], features):
        zero = tensor == 0
        assert zero.any()
        assert torch.equal(zero, zero[:, :1].expand_as(zero))  # the same features at every step
        assert not torch.equal(zero[0, 0], zero[1, 0])
    assert isinstance(model.dropout, SequenceDropout)


def test_language_model_tied_matrix_gets_the_sum_of_both_uses_gradients():
    torch.manual_seed(0)
    tied = RNNLanguageModel(vocab_size=15, embed_size=8, hidden_size=8, tie_weights=True)
    assert tied.output.weight is tied.embedding.weight
    untied = RNNLanguageModel(vocab_size=15, embed_size=8, hidden_size=8)
    untied.load_state_dict(tied.state_dict())
    tokens, targets = torch.randint(0, 15, (3, 5)), torch.randint(0, 15, (15,))
    for model in (tied, untied):
        features, _ = model(tokens)
        model.token_nll(features.flatten(0, 1), targets).backward()
    expected = untied.embedding.weight.grad + untied.output.weight.grad
    torch.testing.assert_close(tied.embedding.weight.grad, expected)
    names = [name for name, _ in tied.named_parameters()]
    assert "output.weight" not in names  # one parameter, counted once


def test_language_model_perplexity_equals_a_hand_computation_across_chunks(lm_run: Path, tmp_path):
    """exp(mean −log p) over every token after the first, in one unbroken pass, even where the
    scorer cuts the stream into chunks (256 tokens); unknown characters scored as <unk>."""
    lm = load_as(LanguageModel, lm_run, command="evaluate", device="cpu")
    task, model = lm.task, lm.model
    text = "the quick brown fox jumps over the lazy dog\n" * 14 + "ZZ quick\n"
    path = tmp_path / "eval.txt"
    path.write_text(text, encoding="utf-8")
    report = task.evaluate(model, str(path), CPU)
    ids = torch.tensor(task.vocab.encode(list(text)))
    assert ids.numel() > 2 * 256
    with torch.no_grad():
        model.eval()
        features, _ = model(ids[:-1].unsqueeze(0))
        log_probs = F.log_softmax(model.project(features[0]).double(), -1)
        nll = -log_probs.gather(1, ids[1:].unsqueeze(1)).sum().item()
    assert report["tokens"] == ids.numel() - 1
    assert report["oov_tokens"] == 2
    assert report["perplexity"] == pytest.approx(math.exp(nll / (ids.numel() - 1)), rel=1e-5)
    assert lm.perplexity(text) == pytest.approx(report["perplexity"], rel=1e-9)


def test_attention_matrix_rows_are_the_decoding_steps_attention(translator_run: Path):
    """The plotted matrix of a translation that ended in <eos>: one row per output token plus the
    <eos> row, each a distribution over the source."""
    translator = load_as(Translator, translator_run, command="translate", device="cpu")
    out = translator.translate(["a b c"], attention=True)[0]
    matrix = out.attention
    assert matrix is not None and matrix.out_tokens == [*out.tokens, "<eos>"]
    assert matrix.weights.shape == (len(out.tokens) + 1, len(matrix.src_tokens))
    torch.testing.assert_close(matrix.weights.sum(1), torch.ones(matrix.weights.size(0)))


def test_attention_matrix_of_a_translation_cut_at_max_len_has_no_eos_row(translator_run: Path):
    translator = load_as(Translator, translator_run, command="translate", device="cpu")
    out = translator.translate(["a b c d e f"], max_len=2, attention=True)[0]
    assert len(out.tokens) == 2  # stopped by max_len: no <eos> was produced
    matrix = out.attention
    assert matrix is not None
    assert matrix.out_tokens == out.tokens
    assert matrix.weights.size(0) == len(out.tokens)
