"""Tagger invariants: lengths, padding, batching and order never change a sentence's result."""

from __future__ import annotations

import pytest
import torch

from rnnlab.data.batching import pad_batch
from rnnlab.models.tagger import RNNTagger


def _sentences(task):
    return [list(s) for s in task.train_data.words]


@pytest.fixture(params=["rnn", "cnn", "none"])
def char_encoder(request):
    return request.param


def test_batch_equals_each_sentence_alone_on_valid_positions(
    make_task, tmp_path, data_dir, char_encoder
):
    torch.manual_seed(0)
    task = make_task(tmp_path, data_dir / "toy.txt", char_encoder=char_encoder)
    model = task.build_model().eval()
    sentences = _sentences(task)
    batch = task.make_batch(sentences)
    emissions = model(batch.words, batch.lengths, batch.chars, batch.char_lengths, batch.word_types)
    padded_run_differs = False
    with torch.no_grad():
        inputs = model.embed(batch.words, batch.chars, batch.char_lengths, batch.word_types)
        unpacked_padded, _ = model.rnn(inputs)  # reads padding: the backward direction differs
        for b, n in enumerate(batch.lengths.tolist()):
            alone, _ = model.rnn(inputs[b : b + 1, :n])  # (1, n, 2H), no padding, no packing
            assert torch.allclose(model.output(alone)[0], emissions[b, :n], atol=1e-6)
            if n < inputs.size(1):
                padded_run_differs |= not torch.allclose(
                    unpacked_padded[b, :n], alone[0], atol=1e-6
                )
    assert padded_run_differs, "an unpacked padded batch should differ; the check is too weak"


@pytest.mark.parametrize("crf", [False, True])
def test_padding_never_reaches_loss_gradients_or_predictions(make_task, tmp_path, data_dir, crf):
    torch.manual_seed(0)
    task = make_task(tmp_path, data_dir / "toy.txt", crf=crf)
    model = task.build_model().train()  # dropout is 0: train mode is deterministic here
    data = task.train_data
    batch = task.make_batch(data.words, data.tag_ids)
    noisy = task.make_batch(data.words, data.tag_ids)
    mask = torch.arange(batch.words.size(1)).unsqueeze(0) < batch.lengths.unsqueeze(1)
    noisy.words = batch.words.masked_fill(~mask, 7)
    noisy.tags = batch.tags.masked_fill(~mask, 3)
    noisy.word_types = batch.word_types.masked_fill(~mask, 2)
    assert not torch.equal(noisy.words, batch.words)

    def run(b):
        model.zero_grad()
        loss = task.batch_loss(model, b).loss_sum
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        with torch.no_grad():
            model.eval()
            tags = task.tag_ids(model, data.words, torch.device("cpu"))
            model.train()
        return loss.detach(), grads, tags

    loss, grads, tags = run(batch)
    noisy_loss, noisy_grads, noisy_tags = run(noisy)
    assert torch.allclose(loss, noisy_loss, atol=1e-6)
    assert all(torch.allclose(g, h, atol=1e-6) for g, h in zip(grads, noisy_grads, strict=True))
    assert tags == noisy_tags
    assert task.batch_loss(model, batch).num_tokens == sum(len(s) for s in data.words)


def test_loss_counts_every_valid_token_including_tag_id_zero(make_task, tmp_path, data_dir):
    """The recipe's bug: masking by "tag id > 0" would drop the most frequent tag from the loss."""
    torch.manual_seed(0)
    task = make_task(tmp_path, data_dir / "toy.txt")
    model = task.build_model().eval()
    batch = task.make_batch(task.train_data.words, task.train_data.tag_ids)
    assert (batch.tags == 0).any()
    emissions = model(batch.words, batch.lengths, batch.chars, batch.char_lengths, batch.word_types)
    log_probs = emissions.log_softmax(dim=2)
    expected = -sum(
        log_probs[b, t, batch.tags[b, t]]
        for b, n in enumerate(batch.lengths.tolist())
        for t in range(n)
    )
    assert torch.allclose(model.loss_sum(emissions, batch.tags, batch.lengths), expected, atol=1e-5)


def test_batch_of_one_equals_big_batch_and_order_is_kept(make_task, tmp_path, sample_dir):
    torch.manual_seed(0)
    task = make_task(tmp_path, sample_dir / "dev.conllu")
    task.config.data.max_examples = 0
    model = task.build_model().eval()
    cpu = torch.device("cpu")
    sentences = _sentences(task)[:40]
    together = task.tag_ids(model, sentences, cpu, batch_size=16)
    singly = [task.tag_ids(model, [s], cpu, batch_size=1)[0] for s in sentences]
    assert together == singly
    assert [len(t) for t in together] == [len(s) for s in sentences]
    reversed_run = task.tag_ids(model, sentences[::-1], cpu, batch_size=7)
    assert reversed_run[::-1] == together


def test_empty_sentences_get_no_tags(make_task, tmp_path, data_dir):
    task = make_task(tmp_path, data_dir / "toy.txt")
    model = task.build_model()
    tags = task.tag(model, [[], ["The", "dog"], []], torch.device("cpu"))
    assert tags[0] == [] and tags[2] == [] and len(tags[1]) == 2
    assert task.tag(model, [], torch.device("cpu")) == []


def test_initial_state_is_zero_not_random(make_task, tmp_path, data_dir):
    task = make_task(tmp_path, data_dir / "toy.txt")
    model = task.build_model().eval()
    sentences = _sentences(task)
    torch.manual_seed(1)
    first = task.tag_ids(model, sentences, torch.device("cpu"))
    batch = task.make_batch(sentences)
    e1 = model(batch.words, batch.lengths, batch.chars, batch.char_lengths, batch.word_types)
    torch.manual_seed(2)
    e2 = model(batch.words, batch.lengths, batch.chars, batch.char_lengths, batch.word_types)
    assert torch.equal(e1, e2)
    assert task.tag_ids(model, sentences, torch.device("cpu")) == first


def test_long_words_keep_prefix_and_suffix(make_task, tmp_path, data_dir):
    task = make_task(tmp_path, data_dir / "toy.txt")
    task.config.data.max_word_chars = 6
    assert task.char_vocab is not None
    ids = task.spell("Theedddogg")
    assert len(ids) == 6
    assert task.char_vocab.decode(ids) == list("Theogg")
    chars, lengths = pad_batch([task.spell(""), task.spell("dog")], 0)
    assert lengths.tolist() == [1, 3]


@pytest.mark.parametrize("variational", [False, True])
def test_variational_dropout_drops_a_feature_for_a_whole_sentence(
    make_task, tmp_path, data_dir, variational
):
    torch.manual_seed(0)
    task = make_task(tmp_path, data_dir / "toy.txt", dropout=0.5, variational_dropout=variational)
    model = task.build_model().train()
    ratios = []  # kept / input of each dropout call: the recurrent layers' inputs, then outputs
    model.dropout.register_forward_hook(lambda _, args, out: ratios.append(out / args[0]))
    batch = task.make_batch(_sentences(task))
    model(batch.words, batch.lengths, batch.chars, batch.char_lengths, batch.word_types)
    assert len(ratios) == 2
    for ratio in ratios:
        same_over_time = all(
            torch.allclose(ratio[b, :n], ratio[b, :1].expand(n, -1))
            for b, n in enumerate(batch.lengths.tolist())
        )
        assert same_over_time == variational


def _two_part_tagger(**options):
    """A tagger over 6 words: ids 0–3 specials, 4 seen in training, 5 known only from vectors."""
    known = torch.tensor([False, False, False, False, True, False])
    return RNNTagger(
        vocab_size=6,
        num_tags=3,
        embed_size=4,
        hidden_size=5,
        trainable_embed_size=3,
        known_words=known,
        **options,
    )


def test_trainable_part_starts_at_zero_and_unseen_words_share_unk_row():
    torch.manual_seed(0)
    model = _two_part_tagger().eval()
    assert torch.count_nonzero(model.trainable_embedding.weight) == 0
    with torch.no_grad():
        model.trainable_embedding.weight.normal_()
    words = torch.tensor([[4, 5, 1, 0]])
    vectors = model.word_vectors(words)  # (1, 4, 4 + 3)
    assert vectors.shape == (1, 4, 7)
    assert torch.equal(vectors[0, :, :4], model.embedding.weight[[4, 5, 1, 0]])
    trainable = model.trainable_embedding.weight
    assert trainable.shape == (3, 3)  # rows for <pad>, <unk> and word 4 only
    assert torch.equal(vectors[0, 0, 4:], trainable[2])  # a training word: its own row
    assert torch.equal(vectors[0, 1, 4:], trainable[1])  # known only from vectors: <unk>'s row
    assert torch.equal(vectors[0, 2, 4:], trainable[1])
    assert torch.equal(vectors[0, 3, 4:], trainable[0])  # <pad> keeps its own row
    assert len({tuple(trainable[i].tolist()) for i in range(3)}) == 3  # three distinct rows read


def test_word_dropout_draws_each_part_independently():
    torch.manual_seed(0)
    model = _two_part_tagger(word_dropout=0.5).train()
    with torch.no_grad():  # row i holds i everywhere, so an output tells which row was read
        model.embedding.weight.copy_(torch.arange(6.0).unsqueeze(1).expand(6, 4))
        model.trainable_embedding.weight.copy_(torch.arange(3.0).unsqueeze(1).expand(3, 3))
    vectors = model.word_vectors(torch.full((1, 40_000), 4))
    pretrained_dropped = vectors[0, :, 0] == 1  # <unk> is id 1 of the vocabulary
    trainable_dropped = vectors[0, :, 4] == 1  # and row 1 of the trainable part
    assert pretrained_dropped.float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert trainable_dropped.float().mean().item() == pytest.approx(0.5, abs=0.01)
    both = (pretrained_dropped & trainable_dropped).float().mean().item()
    assert both == pytest.approx(0.25, abs=0.01)  # one draw for both parts would give 0.5
    assert torch.equal(
        model.eval().word_vectors(torch.full((1, 50), 4))[0, :, 0], torch.full((50,), 4.0)
    )


def test_trainable_part_needs_a_mask_of_the_vocabulary():
    with pytest.raises(ValueError, match="known_words"):
        RNNTagger(vocab_size=6, num_tags=3, embed_size=4, hidden_size=5, trainable_embed_size=3)


def _lm_tagger(num_layers: int = 2, bidirectional: bool = True) -> RNNTagger:
    return RNNTagger(
        vocab_size=30,
        num_tags=5,
        embed_size=6,
        hidden_size=7,
        num_layers=num_layers,
        bidirectional=bidirectional,
        lm_classes=11,
        lm_hidden_size=4,
    ).eval()


def test_language_model_objective_splits_the_stack_into_the_same_function():
    """With the objective the stack runs as layer 1 + the rest: with the fused stack's weights copied
    in, its features equal torch.nn.LSTM's two-layer stack on every valid position."""
    torch.manual_seed(0)
    model = _lm_tagger()
    assert model.upper_rnn is not None and model.rnn.num_layers == 1
    fused = torch.nn.LSTM(6, 7, num_layers=2, bidirectional=True, batch_first=True)
    for name, value in fused.named_parameters():
        part, index = (model.rnn, 0) if "_l0" in name else (model.upper_rnn, 1)
        getattr(part, name.replace(f"_l{index}", "_l0")).data.copy_(value.data)
    words = torch.randint(2, 30, (3, 5))
    lengths = torch.tensor([5, 3, 1])
    features = model.features(words, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone, _ = fused(model.embed(words[b : b + 1, :n]))
        assert torch.allclose(features[b, :n], alone[0], atol=1e-6)
    one_layer = _lm_tagger(num_layers=1)
    assert one_layer.upper_rnn is None  # nothing to split


def test_language_model_objective_never_reads_the_word_it_predicts():
    """The forward half at t must not depend on words after t, nor the backward half at t on words
    before t: otherwise predicting the neighbour would be copying it. (The second layer's forward
    state does depend on word t + 1, which is why the objective reads the first layer.)"""
    torch.manual_seed(0)
    model = _lm_tagger()
    words = torch.randint(2, 30, (1, 6))
    lengths = torch.tensor([6])
    changed = words.clone()
    changed[0, 3] = (words[0, 3] + 1 - 2) % 28 + 2  # another word at t = 3
    with torch.no_grad():
        features, lower = model.encode_layers(model.embed(words), lengths)
        features2, lower2 = model.encode_layers(model.embed(changed), lengths)
    h = 7
    assert torch.equal(lower[0, :3, :h], lower2[0, :3, :h])  # forward, before word 3
    assert torch.equal(lower[0, 4:, h:], lower2[0, 4:, h:])  # backward, after word 3
    assert not torch.allclose(lower[0, 3:, :h], lower2[0, 3:, :h])
    # The upper layer's forward state before word 3 does read it (through layer 1's backward half).
    assert not torch.allclose(features[0, :3, :h], features2[0, :3, :h])


@pytest.mark.parametrize("bidirectional", [True, False])
def test_language_model_loss_equals_each_prediction_summed_by_hand(bidirectional):
    torch.manual_seed(0)
    model = _lm_tagger(bidirectional=bidirectional)
    width = 14 if bidirectional else 7
    lower = torch.randn(3, 5, width)
    targets = torch.randint(0, 11, (3, 5))
    lengths = torch.tensor([5, 2, 1])
    expected = 0.0
    with torch.no_grad():
        for b, n in enumerate(lengths.tolist()):
            for t in range(n - 1):  # forward at t → word t + 1; backward at t + 1 → word t
                logits = model.lm_heads[0](lower[b, t, :7])
                expected -= float(torch.log_softmax(logits, -1)[targets[b, t + 1]])
                if bidirectional:
                    logits = model.lm_heads[1](lower[b, t + 1, 7:])
                    expected -= float(torch.log_softmax(logits, -1)[targets[b, t]])
    targets[2, 1:] = 99  # padding may hold anything, even an id out of range
    targets[1, 2:] = 99
    got = model.lm_loss_sum(lower, targets, lengths)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-5)
    assert len(model.lm_heads) == (2 if bidirectional else 1)


def test_language_model_loss_needs_the_objective():
    model = RNNTagger(vocab_size=10, num_tags=3, embed_size=4, hidden_size=4)
    with pytest.raises(ValueError, match="no language-modelling objective"):
        model.lm_loss_sum(
            torch.zeros(1, 2, 8), torch.zeros(1, 2, dtype=torch.long), torch.tensor([2])
        )
