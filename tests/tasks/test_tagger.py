"""The tagger task end to end in-process: it learns, it scores honestly, its configs load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rnnlab.config import load_config
from rnnlab.metrics.tagging import TaggingScores
from rnnlab.tasks import TASKS
from rnnlab.tasks.tagger import FREQ_BINS, TaggedData, TaggerTask, frequency_bins, word_classes
from rnnlab.tasks.tagger_config import TaggerConfig
from rnnlab.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("crf", [False, True])
def test_toy_sentences_are_learnt_perfectly(make_task, tmp_path, data_dir, crf):
    torch.manual_seed(0)
    task = make_task(tmp_path, data_dir / "toy.txt", crf=crf, hidden_size=16, embed_size=16)
    task.config.train.epochs = 60
    task.config.train.batch_size = 2
    task.config.train.lr = 0.02
    task.config.train.log_every = 0
    task.config.train.valid_every = 10**6  # no checkpoint per epoch: only the fsyncs at the end
    model = task.build_model()
    Trainer(
        task=task,
        model=model,
        config=task.config.train,
        run_dir=tmp_path,
        device=torch.device("cpu"),
    ).fit()
    metrics = task.evaluate(model, str(data_dir / "toy.txt"), torch.device("cpu"))
    assert metrics["accuracy"] == 1.0
    assert metrics["tokens"] == 20 and metrics["sentences"] == 5
    assert metrics["oov_tokens"] == 0
    words = ["is", "it", "too", "late", "now", "say", "sorry"]
    assert task.tag(model, [words], torch.device("cpu"))[0] == [
        "AUX", "PRON", "ADV", "ADJ", "ADV", "VERB", "ADJ"
    ]  # fmt: skip


def test_unseen_tags_and_words_are_counted_not_fatal(make_task, tmp_path, data_dir):
    task = make_task(tmp_path, data_dir / "toy.txt")
    model = task.build_model()
    test = tmp_path / "test.txt"
    test.write_text("The/DET zebra/NOUN wow/WOW\n\n", encoding="utf-8")
    metrics = task.evaluate(model, str(test), torch.device("cpu"), per_tag=True)
    assert metrics["tokens"] == 3
    assert metrics["oov_tokens"] == 2  # zebra, wow
    assert metrics["unseen_tags"] == {"WOW": 1}
    assert metrics["per_tag"]["WOW"]["recall"] == 0.0
    assert metrics["accuracy"] <= 2 / 3


def test_scores_by_hand():
    scores = TaggingScores()
    known = frozenset({"A", "B"})
    scores.add(["A", "A", "B", "C"], ["A", "B", "B", "A"], oov=[1, 0, 0, 1], known_tags=known)
    summary = scores.summary(per_tag=True)
    assert summary["accuracy"] == 0.5 and summary["oov_accuracy"] == 0.5
    table = summary["per_tag"]
    assert table["A"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert table["B"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert table["C"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert summary["unseen_tags"] == {"C": 1}


def test_registered_and_shipped_configs_load():
    assert TASKS["tagger"] is TaggerTask
    paths = sorted((REPO / "configs" / "tagger").glob("*.yaml"))
    assert {p.name for p in paths} >= {"ud-ewt-upos.yaml", "ud-ewt-sample.yaml"}
    for path in paths:
        config = load_config(TaggerConfig, path)
        assert config.task == "tagger"
    sample = load_config(TaggerConfig, REPO / "configs/tagger/ud-ewt-sample.yaml")
    assert (REPO / sample.data.train).is_file() and (REPO / sample.data.valid).is_file()
    full = load_config(TaggerConfig, REPO / "configs/tagger/ud-ewt-upos.yaml")
    assert full.data.train.endswith("en_ewt-ud-train.conllu.gz")
    default = Path(TaggerConfig().data.train)  # defaults point to the sample
    assert default.resolve() == (REPO / sample.data.train).resolve()


def test_defaults_and_overrides():
    config = load_config(TaggerConfig, None, ["model.crf=true", "data.tag_column=xpos"])
    assert config.model.crf and config.data.tag_column == "xpos"
    assert config.model.cell == "lstm" and config.model.bidirectional
    from rnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean data.tag_column"):
        load_config(TaggerConfig, None, ["data.tag_colum=upos"])


def test_training_data_without_sentences_is_a_user_error(tmp_path):
    from rnnlab.errors import DataError

    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\n", encoding="utf-8")
    config = TaggerConfig()
    config.data.train = str(empty)
    config.data.valid = ""
    with pytest.raises(DataError, match=r"empty.txt: no tagged sentences"):
        TaggerTask(config, tmp_path).prepare_training()


def test_lowercase_merges_word_forms_but_characters_keep_case(tmp_path, data_dir):
    """data.lowercase: "The" and "the" are one word; the character encoder still sees "T"."""
    config = TaggerConfig()
    config.data.train, config.data.valid = str(data_dir / "toy.txt"), ""
    config.data.lowercase = True
    config.data.min_freq = 1
    task = TaggerTask(config, tmp_path)
    task.prepare_training()
    words = set(task.word_vocab.itos)
    assert {"the", "everybody"} <= words and not {"The", "Everybody"} & words
    assert task.encode_words(["The", "THE"]) == task.encode_words(["the", "the"])
    assert {"T", "E"} <= set(task.char_vocab.itos)
    assert task.train_words >= {"The", "the"}


@pytest.mark.parametrize("lowercase", [False, True])
def test_oov_is_judged_on_the_words_as_the_model_reads_them(tmp_path, data_dir, lowercase):
    """With ``data.lowercase`` "DOG" is the trained word "dog", not an unseen one; "Zebra" is
    unseen either way. Counted by hand over the four tokens."""
    config = TaggerConfig()
    config.data.train, config.data.valid = str(data_dir / "toy.txt"), ""
    config.data.lowercase = lowercase
    task = TaggerTask(config, tmp_path)
    task.prepare_training()
    words, tags = [["DOG", "Zebra", "the", "ATE"]], [["NOUN", "NOUN", "DET", "VERB"]]
    data = TaggedData(words=words, tags=tags, tag_ids=[[0, 0, 0, 0]])
    scores = task.score_tags(data, tags)
    assert scores.oov_tokens == (1 if lowercase else 3)
    assert scores.accuracy == 1.0


def test_frequency_bins_by_hand():
    # counts: a 1, b 2, c 3, d 8, e 21 → int(ln c): 0, 0, 1, 2, 3.
    text = [["a", "b", "c", "d", "e"], ["b", "c", "c"] + ["d"] * 7 + ["e"] * 20]
    assert frequency_bins(text) == [[0, 0, 1, 2, 3], [0, 1, 1] + [2] * 7 + [3] * 20]
    many = frequency_bins([["x"] * 3_300_000, ["y"]])  # ln 3.3 M = 15.01: the last bin
    assert many[0][0] == FREQ_BINS - 1 == 15 and many[1] == [0]


def _auxiliary_nll(task, model, name, targets):
    """Σ −log p(target) of auxiliary output ``name``, each sentence run alone (no padding)."""
    total = 0.0
    with torch.no_grad():
        for words, classes in zip(task.train_data.words, targets, strict=True):
            alone = task.make_batch([words])
            features = model.features(
                alone.words, alone.lengths, alone.chars, alone.char_lengths, alone.word_types
            )[0]
            log_probs = torch.log_softmax(model.auxiliary[name](features), dim=-1)
            total -= sum(float(log_probs[t, c]) for t, c in enumerate(classes))
    return total


def test_frequency_bin_loss_is_added_with_its_weight(make_task, tmp_path, data_dir):
    """batch_loss = the tagging loss + weight · Σ −log p(bin) over the tokens."""
    torch.manual_seed(0)
    task = make_task(tmp_path, data_dir / "toy.txt", crf=True, freq_bin_weight=0.3)
    data = task.train_data
    # toy.txt: "ooh" twice, "sorry" twice, every other word once (case kept).
    assert data.freq_bins[3] == [0, 0] and data.freq_bins[0] == [0] * 5  # int(ln 2) = 0
    data.freq_bins = [[(i + j) % 3 for j in range(len(s))] for i, s in enumerate(data.words)]
    model = task.build_model().train()  # dropout 0: deterministic
    assert model.auxiliary["freq_bin"].out_features == FREQ_BINS and len(model.auxiliary) == 1
    batch = task.make_batch(data.words, data.tag_ids, data.freq_bins)
    with_aux = task.batch_loss(model, batch).loss_sum
    task.config.model.freq_bin_weight = 0.0
    tagging_only = task.batch_loss(model, batch).loss_sum
    expected = 0.3 * _auxiliary_nll(task, model, "freq_bin", data.freq_bins)
    assert float((with_aux - tagging_only).detach()) == pytest.approx(expected, rel=1e-5)


def test_aux_label_losses_are_added_with_their_weight(tmp_path, sample_dir):
    """XPOS and DEPREL beside UPOS: each its own label set and output, and weight · Σ −log p(label)
    of each added to the loss."""
    import conllu

    torch.manual_seed(0)
    overrides = [f"data.train={sample_dir / 'train.conllu'}", "data.valid=", "data.max_examples=40"]
    overrides += ["data.aux_tag_column=[xpos, deprel]", "model.aux_tag_weight=0.7"]
    overrides += ["model.hidden_size=8", "model.embed_size=8", "model.dropout=0"]
    config = load_config(TaggerConfig, None, overrides)
    task = TaggerTask(config, tmp_path)
    task.prepare_training()
    parsed = conllu.parse((sample_dir / "train.conllu").read_text(encoding="utf-8"))[:40]
    words = [[t for t in sentence if isinstance(t["id"], int)] for sentence in parsed]
    gold = {
        "aux_tags": [[t["xpos"] for t in s] for s in words],  # the first column keeps this name
        "aux_tags_deprel": [[t["deprel"] for t in s] for s in words],
    }
    assert set(task.aux_tagsets) == set(gold)
    for name, labels in gold.items():
        assert set(task.aux_tagsets[name].itos) == {label for s in labels for label in s}
        assert task.train_data.aux_tag_ids[name] == [
            task.aux_tagsets[name].encode(s) for s in labels
        ]
        assert (tmp_path / f"{name}.json").is_file()
    pieces = TaggerTask(load_config(TaggerConfig, None, [*overrides, "data.max_len=3"]), tmp_path)
    pieces.prepare_training()  # sentences cut into pieces of 3: the label ids are cut alike
    for name, ids in task.train_data.aux_tag_ids.items():
        cut = pieces.train_data.aux_tag_ids[name]
        assert [i for s in cut for i in s] == [i for s in ids for i in s]
        assert [len(s) for s in cut] == [len(s) for s in pieces.train_data.words]
    assert max(len(s) for s in pieces.train_data.words) == 3
    model = task.build_model().train()
    assert set(model.auxiliary) == set(gold)
    data = task.train_data
    batch = task.make_batch(data.words, data.tag_ids, None, data.aux_tag_ids)
    moved = batch.to(torch.device("meta"))  # to a device: the label ids in the dict go too
    assert {t.device.type for t in [moved.words, *moved.aux_tags.values()]} == {"meta"}
    assert set(moved.aux_tags) == set(gold)
    with_aux = task.batch_loss(model, batch).loss_sum
    task.config.model.aux_tag_weight = 0.0
    tagging_only = task.batch_loss(model, batch).loss_sum
    expected = 0.7 * sum(
        _auxiliary_nll(task, model, name, ids) for name, ids in data.aux_tag_ids.items()
    )
    assert float((with_aux - tagging_only).detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("crf", [False, True])
def test_adversarial_loss_adds_each_sentence_at_its_own_worst_case_step(
    make_task, tmp_path, data_dir, crf
):
    """batch_loss = Σ_b L_b(x_b) + L_b(x_b + ε·√(n_b·F)·g_b/‖g_b‖), g_b = ∇L_b(x_b), sentence by sentence."""
    torch.manual_seed(0)
    task = make_task(tmp_path, data_dir / "toy.txt", crf=crf, adversarial_epsilon=0.2)
    model = task.build_model().train()  # dropout and word dropout 0: deterministic
    data = task.train_data
    total = float(
        task.batch_loss(model, task.make_batch(data.words, data.tag_ids)).loss_sum.detach()
    )
    task.config.model.adversarial_epsilon = 0.0
    clean_total = float(
        task.batch_loss(model, task.make_batch(data.words, data.tag_ids)).loss_sum.detach()
    )
    expected = 0.0
    for words, tags in zip(data.words, data.tag_ids, strict=True):
        alone = task.make_batch([words], [tags])  # one sentence: no padding, its own gradient norm
        x = model.embed(alone.words, alone.chars, alone.char_lengths, alone.word_types)
        x = x.detach().requires_grad_()

        def loss(inputs, alone=alone):
            return model.loss_sum(
                model.output(model.encode(inputs, alone.lengths)), alone.tags, alone.lengths
            )

        clean = loss(x)
        (g,) = torch.autograd.grad(clean, x)
        step = 0.2 * (len(words) * x.size(2)) ** 0.5 * g / g.norm()
        with torch.no_grad():
            adversarial = float(loss(x + step))
        assert adversarial > float(clean.detach())  # the step is uphill
        expected += float(clean.detach()) + adversarial
    assert total == pytest.approx(expected, rel=1e-5)
    assert total > clean_total + 1e-3  # the adversarial term is really there


def test_adversarial_training_reaches_inputs_that_need_no_gradient(make_task, tmp_path, data_dir):
    """Frozen word vectors and no character encoder: the step still needs d loss / d inputs."""
    torch.manual_seed(0)
    task = make_task(tmp_path, data_dir / "toy.txt", char_encoder="none", adversarial_epsilon=0.2)
    model = task.build_model().train()
    model.embedding.weight.requires_grad_(False)
    batch = task.make_batch(task.train_data.words, task.train_data.tag_ids)
    total = task.batch_loss(model, batch).loss_sum
    total.backward()
    assert model.embedding.weight.grad is None and model.output.weight.grad is not None
    task.config.model.adversarial_epsilon = 0.0
    assert float(total.detach()) > float(task.batch_loss(model, batch).loss_sum.detach()) + 1e-3


def test_frequency_bin_output_trains_and_tags(make_task, tmp_path, data_dir):
    torch.manual_seed(0)
    task = make_task(tmp_path, data_dir / "toy.txt", freq_bin_weight=1.0, hidden_size=16)
    task.config.train.epochs = 40
    task.config.train.batch_size = 2
    task.config.train.lr = 0.02
    task.config.train.log_every = 0
    task.config.train.valid_every = 10**6
    model = task.build_model()
    head = model.auxiliary["freq_bin"].weight.detach().clone()
    Trainer(
        task=task,
        model=model,
        config=task.config.train,
        run_dir=tmp_path,
        device=torch.device("cpu"),
    ).fit()
    assert not torch.equal(
        model.auxiliary["freq_bin"].weight, head
    )  # the auxiliary loss reached it
    metrics = task.evaluate(model, str(data_dir / "toy.txt"), torch.device("cpu"))
    assert metrics["accuracy"] == 1.0


def test_bad_auxiliary_settings_are_config_errors():
    from rnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^model.freq_bin_weight: -0.5 is negative; 0 turns"):
        load_config(TaggerConfig, None, ["model.freq_bin_weight=-0.5"])
    with pytest.raises(ConfigError, match=r"^model.aux_tag_weight: -1.0 is negative; 0 turns"):
        load_config(TaggerConfig, None, ["model.aux_tag_weight=-1.0"])
    with pytest.raises(ConfigError, match=r"^model.adversarial_epsilon: -0.1 is negative; 0 turns"):
        load_config(TaggerConfig, None, ["model.adversarial_epsilon=-0.1"])
    with pytest.raises(ConfigError, match=r"data.aux_tag_column: 'upos' is data.tag_column itself"):
        load_config(TaggerConfig, None, ["data.aux_tag_column=upos"])
    with pytest.raises(ConfigError, match=r"data.aux_tag_column: 'upos' is data.tag_column itself"):
        load_config(TaggerConfig, None, ["data.aux_tag_column=[xpos, upos]"])
    with pytest.raises(ConfigError, match=r"\['deprel', 'xpos', 'deprel'\] names a column twice"):
        load_config(TaggerConfig, None, ["data.aux_tag_column=[deprel, xpos, deprel]"])
    columns = r"'upos' \| 'xpos' \| 'feats' \| 'deprel'"
    message = rf"^data.aux_tag_column: \['lemma'\] is not '' \| {columns} or a list of {columns}$"
    with pytest.raises(ConfigError, match=message):
        load_config(TaggerConfig, None, ["data.aux_tag_column=[lemma]"])


def test_a_rank_share_of_a_batch_spells_its_own_words(make_task, tmp_path, data_dir):
    """shard_rows keeps only the spellings its sentences use, and every token keeps its word."""
    from rnnlab.training.distributed import _take_rows

    torch.manual_seed(0)
    task = make_task(tmp_path, data_dir / "toy.txt", crf=True, freq_bin_weight=0.5)
    model = task.build_model().eval()
    data = task.train_data
    aux = {"aux_tags": data.tag_ids, "aux_tags_deprel": data.freq_bins}  # any label ids
    batch = task.make_batch(data.words, data.tag_ids, data.freq_bins, aux)
    with torch.no_grad():
        whole = model(batch.words, batch.lengths, batch.chars, batch.char_lengths, batch.word_types)
        for rank in range(2):
            rows = slice(rank, None, 2)
            share = _take_rows(batch, rows)
            assert share.chars.size(0) < batch.chars.size(0)  # only its own words
            assert share.word_types.max() < share.chars.size(0)
            assert torch.equal(share.tags, batch.tags[rows])
            assert torch.equal(share.freq_bins, batch.freq_bins[rows])
            assert set(share.aux_tags) == set(aux)
            for name, ids in share.aux_tags.items():
                assert torch.equal(ids, batch.aux_tags[name][rows])
            mine = model(
                share.words, share.lengths, share.chars, share.char_lengths, share.word_types
            )
            for b, n in enumerate(share.lengths.tolist()):
                torch.testing.assert_close(mine[b, :n], whole[rows][b, :n], rtol=0, atol=1e-6)


def test_word_classes_by_hand():
    # counts: c 3, a 2, b 2 (a first), d 1 → with 2 classes: c 0, a 1, every other word 2.
    text = [["a", "b", "c"], ["c", "a", "d", "b", "c"]]
    assert word_classes(text, 2) == [[1, 2, 0], [0, 1, 2, 2, 0]]
    assert word_classes(text, 10) == [[1, 2, 0], [0, 1, 3, 2, 0]]  # d is ranked last: class 3


def test_language_model_loss_is_added_with_its_weight_on_the_clean_pass(tmp_path, sample_dir):
    """batch_loss = the tagging losses + weight · the objective of ``RNNTagger.lm_loss_sum``, once,
    also with adversarial training (whose perturbed pass adds only the tagging loss)."""
    overrides = [
        f"data.train={sample_dir / 'train.conllu'}",
        "data.valid=",
        "data.max_examples=40",
        "data.lowercase=true",
        "model.num_layers=2",
        "model.hidden_size=8",
        "model.embed_size=8",
        "model.dropout=0",
        "model.lm_weight=0.25",
        "model.lm_vocab_size=30",
    ]
    config = load_config(TaggerConfig, None, overrides)
    task = TaggerTask(config, tmp_path)
    task.prepare_training()
    data = task.train_data
    lowered = [[w.lower() for w in s] for s in data.words]
    assert data.word_classes == word_classes(lowered, 30)
    torch.manual_seed(0)
    model = task.build_model().train()  # dropout 0: deterministic
    assert model.lm_heads[0][-1].out_features == 31 and model.upper_rnn is not None
    batch = task.make_batch(data.words, data.tag_ids, None, {}, data.word_classes)
    assert batch.shard_rows(slice(0, None, 2)).word_classes.shape[0] == (len(data.words) + 1) // 2
    for epsilon in (0.0, 0.05):
        task.config.model.adversarial_epsilon = epsilon
        task.config.model.lm_weight = 0.25
        torch.manual_seed(1)
        with_lm = task.batch_loss(model, batch).loss_sum
        task.config.model.lm_weight = 0.0
        torch.manual_seed(1)
        tagging_only = task.batch_loss(model, batch).loss_sum
        with torch.no_grad():
            inputs = model.embed(batch.words, batch.chars, batch.char_lengths, batch.word_types)
            _, lower = model.encode_layers(inputs, batch.lengths)
            objective = model.lm_loss_sum(lower, batch.word_classes, batch.lengths)
        difference = float((with_lm - tagging_only).detach())
        assert difference == pytest.approx(0.25 * float(objective), rel=1e-4)
    assert all(b.word_classes is not None for b in task.train_batches(0))


def test_bad_language_model_settings_are_config_errors():
    from rnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^model.lm_weight: -0.1 is negative; 0 turns"):
        load_config(TaggerConfig, None, ["model.lm_weight=-0.1"])
    with pytest.raises(ConfigError, match=r"model.lm_vocab_size"):
        load_config(TaggerConfig, None, ["model.lm_vocab_size=0"])
