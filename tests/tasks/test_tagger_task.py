"""The tagger task end to end in-process: it learns, it scores honestly, its configs load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rnnlab.config import load_config
from rnnlab.metrics.tagging import TaggingScores
from rnnlab.tasks import TASKS
from rnnlab.tasks.tagger import TaggerConfig, TaggerTask
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
