from pathlib import Path

import pytest

from rnnlab.config import load_config
from rnnlab.errors import ConfigError
from rnnlab.rundir import task_class
from rnnlab.tasks.seq2seq_config import Seq2SeqConfig

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides():
    config = load_config(
        Seq2SeqConfig, None, ["train.epochs=3", "model.cell=lstm", "data.tsv_langs=[fr, en]"]
    )
    assert config.train.epochs == 3 and config.model.cell == "lstm"
    assert config.data.tsv_langs == ["fr", "en"]
    assert config.train.lr == 0.005  # a default untouched


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(
        ConfigError, match=r"unknown config key train.epoch; did you mean train.epochs\?"
    ):
        load_config(Seq2SeqConfig, None, ["train.epoch=3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=three", "train.epochs: expected an integer"),
        ("train.lr=true", "train.lr: expected a number"),
        ("model.cell=transformer", "model.cell: 'transformer' is not one of"),
        ("train.bucket=1", "train.bucket: expected true or false"),
    ],
)
def test_wrong_types_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Seq2SeqConfig, None, [override])


@pytest.mark.parametrize("task", ["seq2seq", "lm", "tagger"])
@pytest.mark.parametrize("dropout", ["1.0", "-0.1", "1.5"])
def test_dropout_outside_zero_one_is_an_error_in_every_task(task, dropout):
    with pytest.raises(ConfigError, match=r"model.dropout: .* is outside \[0, 1\)"):
        load_config(task_class(task).config_class, None, [f"model.dropout={dropout}"])
    load_config(task_class(task).config_class, None, ["model.dropout=0.0"])  # the bound itself


@pytest.mark.parametrize(
    ("task", "override", "message"),
    [
        ("seq2seq", "train.batch_size=0", r"train.batch_size: 0 is less than 1"),
        ("lm", "train.batch_size=-3", r"train.batch_size: -3 is less than 1"),
        ("seq2seq", "decode.batch_size=0", r"decode.batch_size: 0 is less than 1"),
        ("tagger", "decode.batch_size=0", r"decode.batch_size: 0 is less than 1"),
        ("seq2seq", "decode.batch_tokens=-1", r"decode.batch_tokens: -1 is less than 0"),
        ("tagger", "decode.batch_tokens=-2", r"decode.batch_tokens: -2 is less than 0"),
    ],
)
def test_batch_sizes_that_cannot_batch_are_errors(task, override, message):
    config_class = task_class(task).config_class
    with pytest.raises(ConfigError, match=message):
        load_config(config_class, None, [override])
    key = override.split("=")[0]
    least = "0" if key == "decode.batch_tokens" else "1"
    load_config(config_class, None, [f"{key}={least}"])  # the bound itself


def test_errors_in_files_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: [1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: invalid YAML"):
        load_config(Seq2SeqConfig, path)
    path.write_text("train:\n  batchsize: 3\n", encoding="utf-8")
    with pytest.raises(
        ConfigError,
        match=r"c.yaml: unknown config key train.batchsize; did you mean train.batch_size",
    ):
        load_config(Seq2SeqConfig, path)


def test_integers_and_exponent_strings_are_accepted_for_floats():
    assert load_config(Seq2SeqConfig, None, ["train.lr=1"]).train.lr == 1.0
    assert load_config(Seq2SeqConfig, None, ["train.lr=1e-4"]).train.lr == 1e-4


SPACES = "spaces/*.yaml"  # search spaces, checked in tests/tuning/test_space.py


@pytest.mark.parametrize(
    "path",
    sorted(set((ROOT / "configs").rglob("*.yaml")) - set((ROOT / "configs").glob(SPACES))),
    ids=lambda p: p.name,
)
def test_every_shipped_config_loads(path):
    import yaml

    task = yaml.safe_load(path.read_text(encoding="utf-8"))["task"]
    config = load_config(task_class(task).config_class, path)
    assert config.task == task


@pytest.mark.parametrize("task", ["seq2seq", "lm", "tagger"])
def test_retargeted_training_data_never_validates_on_the_bundled_corpus(task, tmp_path):
    from rnnlab.rundir import load_task_config

    assert load_task_config(task, None).data.valid  # the bundled corpus validates itself
    retargeted = load_task_config(task, None, ["data.train=my-train.txt"])
    assert retargeted.data.valid == ""
    config = tmp_path / "c.yaml"
    config.write_text(f"task: {task}\ndata:\n  train: my-train.txt\n", encoding="utf-8")
    assert load_task_config(task, config).data.valid == ""
    both = load_task_config(task, config, ["data.valid=my-valid.txt"])
    assert both.data.valid == "my-valid.txt"


@pytest.mark.parametrize("alpha", ["-0.1", "10.5", "nan"])
def test_a_length_penalty_outside_zero_to_ten_is_an_error(alpha):
    with pytest.raises(ConfigError, match="decode.length_penalty: must be between 0 and 10"):
        load_config(Seq2SeqConfig, None, [f"decode.length_penalty={alpha}"])
    load_config(Seq2SeqConfig, None, ["decode.length_penalty=10"])  # the bound itself


def test_an_override_is_read_by_its_keys_type_and_survives_a_copy():
    import copy

    from rnnlab.config import apply_overrides, from_dict

    data = apply_overrides(
        {}, ["data.src_lang=no", "data.tgt_lang='yes'", "train.bucket=no", "train.max_steps=3"]
    )
    config = from_dict(Seq2SeqConfig, copy.deepcopy(data))  # a tuning study copies its base
    assert (config.data.src_lang, config.data.tgt_lang) == ("no", "yes")
    assert config.train.bucket is False and config.train.max_steps == 3
    assert type(config.data.src_lang) is str  # saved to config.yaml by yaml.safe_dump
