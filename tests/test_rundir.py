"""``rnnlab.rundir``: creating, reading and opening run directories, and refusing broken ones.

References: the ``yaml`` module and ``dataclasses.asdict`` for the saved config, ``safetensors``
for the saved weights, ``torch.nn.Linear`` state dicts built by hand, and hand-written broken run
directories (missing or corrupt ``config.yaml``, missing, truncated or pickled weights, missing
vocabularies, unknown tasks). Each broken input must give a one-line ``RnnlabError`` naming the
file, never a traceback. ``tests/cli/test_errors.py`` covers a few of these through the CLI with
trained runs; here a run is assembled directly (vocabularies plus untrained weights), which takes
milliseconds, and the library functions are called one by one.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from rnnlab.config import from_dict
from rnnlab.errors import ConfigError, DataError, RnnlabError
from rnnlab.rundir import (
    CONFIG_FILE,
    REPLACED_DIR,
    apply_weights,
    check_compatible,
    create_run_dir,
    load_task_config,
    open_run,
    read_run_config,
    run_curves,
    task_class,
)
from rnnlab.tasks import TASKS
from rnnlab.training import checkpoint
from rnnlab.training.run_lock import LOCK_FILE
from tests.pickles import CreatesAFileWhenUnpickled


def tiny_config(train: Path) -> Any:
    return from_dict(
        task_class("seq2seq").config_class,
        {
            "task": "seq2seq",
            "data": {"train": str(train), "valid": "", "min_freq": 1, "preprocess": "none"},
            "model": {"embed_size": 4, "hidden_size": 4, "num_layers": 1},
            "train": {"device": "cpu"},
        },
    )


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A seq2seq run directory with its config, vocabularies and (untrained) best weights."""
    train = tmp_path / "train.tsv"
    train.write_text("a b\tb a\nc d\td c\n", encoding="utf-8")
    config = tiny_config(train)
    path = tmp_path / "run"
    create_run_dir(path, config)
    task = task_class("seq2seq")(config, path)
    task.prepare_training()
    torch.manual_seed(0)
    checkpoint.save_model(path / "best", task.build_model(), task.model_meta())
    return path


def assert_one_line(error: BaseException, *fragments: str) -> None:
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    for fragment in fragments:
        assert fragment in message, message


# --------------------------------------------------------------------------------------------------
# Tasks and task configs


def test_task_class_knows_every_registered_task_and_names_them_for_an_unknown_one() -> None:
    for name, cls in TASKS.items():
        assert task_class(name) is cls
    for wrong in ("nope", "", "Seq2Seq", "seq2seq "):
        with pytest.raises(ConfigError) as info:
            task_class(wrong)
        assert_one_line(info.value, f"unknown task {wrong!r}", *TASKS)


def test_load_task_config_refuses_a_config_of_another_task_by_name(tmp_path: Path) -> None:
    path = tmp_path / "lm.yaml"
    path.write_text("task: lm\ntrain:\n  not_a_key: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_task_config("seq2seq", path)
    assert str(info.value).startswith(f"{path}: config is for task 'lm', not 'seq2seq'")
    assert_one_line(info.value, f"rnnlab train lm --config {path}")
    assert "not_a_key" not in str(info.value)  # the wrong task is named before any key


@pytest.mark.parametrize("task", list(TASKS))
def test_load_task_config_defaults_and_an_override_of_the_task(task: str) -> None:
    assert load_task_config(task, None).task == task
    other = next(name for name in TASKS if name != task)
    with pytest.raises(ConfigError) as info:
        load_task_config(task, None, [f"task={other}"])
    assert_one_line(info.value, f"task {other!r} set, but the command trains {task!r}")


def test_load_task_config_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_task_config("lm", tmp_path / "missing.yaml")
    assert_one_line(info.value, f"{tmp_path / 'missing.yaml'}: no such config file")
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: lm\nmodel:\n  hidden_size: [\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_task_config("lm", broken)
    assert_one_line(info.value, f"{broken}:4: invalid YAML")
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        load_task_config("nope", None)


def test_load_task_config_with_a_directory_is_a_config_error(tmp_path: Path) -> None:
    folder = tmp_path / "config.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError) as info:
        load_task_config("lm", folder)
    assert_one_line(info.value, str(folder))


# --------------------------------------------------------------------------------------------------
# create_run_dir


def test_create_run_dir_saves_the_resolved_config_as_yaml(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "train.tsv")
    path = tmp_path / "deep" / "er" / "run"
    create_run_dir(path, config)
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE]  # no temporary file left
    saved = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8"))
    assert saved == dataclasses.asdict(config)
    assert list(saved) == [f.name for f in dataclasses.fields(config)]  # schema order
    assert read_run_config(path) == config


def test_create_run_dir_refuses_a_non_empty_directory_and_keeps_it(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "train.tsv")
    path = tmp_path / "run"
    path.mkdir()
    (path / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(RnnlabError) as info:
        create_run_dir(path, config)
    assert_one_line(info.value, f"{path}: run directory exists", "--resume", "--overwrite")
    with pytest.raises(RnnlabError) as info:
        create_run_dir(path, config, overwrite=True)  # not a run: never deleted
    assert_one_line(info.value, f"{path}: refusing to overwrite")
    assert sorted(p.name for p in path.iterdir()) == ["notes.txt"]
    assert (path / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_the_run_lock_alone_does_not_make_a_directory_used(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "train.tsv")
    path = tmp_path / "run"
    path.mkdir()
    (path / LOCK_FILE).write_text("123", encoding="utf-8")
    create_run_dir(path, config)
    assert sorted(p.name for p in path.iterdir()) == sorted([LOCK_FILE, CONFIG_FILE])


def test_overwrite_clears_a_run_but_keeps_the_lock_and_never_follows_links(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "train.tsv")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep", encoding="utf-8")
    path = tmp_path / "run"
    create_run_dir(path, config)
    (path / LOCK_FILE).write_text("123", encoding="utf-8")
    (path / "best").mkdir()
    (path / "best" / "model.safetensors").write_bytes(b"old")
    (path / "metrics.jsonl").write_text("{}\n", encoding="utf-8")
    (path / "linked-dir").symlink_to(outside, target_is_directory=True)
    (path / "linked-file").symlink_to(outside / "precious.txt")
    with create_run_dir(path, config, overwrite=True):
        assert (path / REPLACED_DIR / "best" / "model.safetensors").read_bytes() == b"old"
    assert sorted(p.name for p in path.iterdir()) == sorted([LOCK_FILE, CONFIG_FILE])
    assert (path / LOCK_FILE).read_text(encoding="utf-8") == "123"
    # The links are removed, not the directory and file they point to.
    assert (outside / "precious.txt").read_text(encoding="utf-8") == "keep"


def _files(path: Path) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in path.rglob("*") if f.is_file()}


def test_an_overwrite_that_fails_before_training_puts_the_old_run_back(tmp_path: Path) -> None:
    old_config = tiny_config(tmp_path / "old.tsv")
    path = tmp_path / "run"
    create_run_dir(path, old_config)
    (path / LOCK_FILE).write_text("123", encoding="utf-8")
    (path / "best").mkdir()
    (path / "best" / "model.safetensors").write_bytes(b"old weights")
    before = _files(path)
    new_config = tiny_config(tmp_path / "new.tsv")
    with (
        pytest.raises(RnnlabError, match="bad data"),
        create_run_dir(path, new_config, overwrite=True),
    ):
        (path / "vocab.json").write_text("new", encoding="utf-8")  # what the new run wrote
        raise RnnlabError("bad data")
    assert _files(path) == before
    assert read_run_config(path) == old_config


def test_an_overwrite_that_cannot_write_its_config_puts_the_old_run_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rnnlab.rundir

    path = tmp_path / "run"
    create_run_dir(path, tiny_config(tmp_path / "old.tsv"))
    (path / "metrics.jsonl").write_text("{}\n", encoding="utf-8")
    before = _files(path)

    def disk_full(config: object, target: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rnnlab.rundir, "save_config", disk_full)
    with pytest.raises(OSError):
        create_run_dir(path, tiny_config(tmp_path / "new.tsv"), overwrite=True)
    assert _files(path) == before


def test_an_overwrite_killed_midway_is_cleared_by_the_next_one(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "train.tsv")
    path = tmp_path / "run"
    create_run_dir(path, config)
    (path / REPLACED_DIR).mkdir()
    (path / REPLACED_DIR / "metrics.jsonl").write_text("{}\n", encoding="utf-8")
    with create_run_dir(path, config, overwrite=True):
        pass
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE]


def test_a_new_run_that_fails_before_training_leaves_its_directory_empty(tmp_path: Path) -> None:
    path = tmp_path / "run"
    path.mkdir()
    (path / LOCK_FILE).write_text("123", encoding="utf-8")
    with pytest.raises(RnnlabError), create_run_dir(path, tiny_config(tmp_path / "train.tsv")):
        (path / "vocab.json").write_text("new", encoding="utf-8")
        raise RnnlabError("bad data")
    assert sorted(p.name for p in path.iterdir()) == [LOCK_FILE]
    create_run_dir(path, tiny_config(tmp_path / "train.tsv"))  # the corrected command starts it


def test_a_new_run_that_starts_keeps_what_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "run"
    with create_run_dir(path, tiny_config(tmp_path / "train.tsv")) as replaced:
        (path / "vocab.json").write_text("new", encoding="utf-8")
        replaced.discard()
        replaced.restore()  # too late: the run is under way
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE, "vocab.json"]


# --------------------------------------------------------------------------------------------------
# read_run_config: a run directory a user points at


def test_read_run_config_applies_overrides(run: Path) -> None:
    config = read_run_config(run, ["model.hidden_size=12", "decode.beam_size=3"])
    assert (config.model.hidden_size, config.decode.beam_size) == (12, 3)
    assert read_run_config(run).model.hidden_size == 4  # the file itself is not changed


def test_read_run_config_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RnnlabError) as info:
        read_run_config(tmp_path / "missing")
    assert_one_line(info.value, f"{tmp_path / 'missing'}: no such run directory")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RnnlabError) as info:
        read_run_config(tmp_path / "empty")
    assert_one_line(info.value, "not an rnnlab run directory", CONFIG_FILE)
    (tmp_path / "folder" / CONFIG_FILE).mkdir(parents=True)  # config.yaml that is a directory
    with pytest.raises(RnnlabError) as info:
        read_run_config(tmp_path / "folder")
    assert_one_line(info.value, "not an rnnlab run directory")
    (tmp_path / "a-file").write_text("task: lm\n", encoding="utf-8")
    with pytest.raises(RnnlabError):
        read_run_config(tmp_path / "a-file")


BROKEN_CONFIGS: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "unknown task ''"),
    "no-task": (b"seed: 1\n", "unknown task ''"),
    "unknown-task": (b"task: translate\n", "unknown task 'translate'"),
    "task-a-list": (b"task: [seq2seq]\n", "unknown task"),
    "a-list": (b"- task: seq2seq\n", "expected a mapping"),
    "unknown-key": (b"task: seq2seq\nmodle:\n  hidden_size: 4\n", "unknown config key modle"),
    "wrong-type": (b"task: seq2seq\nmodel:\n  hidden_size: big\n", "model.hidden_size"),
    "section-a-number": (b"task: seq2seq\nmodel: 5\n", "model: expected a mapping"),
    "latin-1": (b"task: seq2seq\n# caf\xe9\n", "not UTF-8"),
    "nul": (b"task: seq2seq\n\x00\n", "not allowed"),
}


@pytest.mark.parametrize("name", list(BROKEN_CONFIGS))
def test_a_broken_config_yaml_is_a_one_line_error_naming_it(run: Path, name: str) -> None:
    content, fragment = BROKEN_CONFIGS[name]
    (run / CONFIG_FILE).write_bytes(content)
    for read in (lambda: read_run_config(run), lambda: open_run(run, device="cpu")):
        with pytest.raises(ConfigError) as info:
            read()
        assert str(info.value).startswith(f"{run / CONFIG_FILE}"), str(info.value)
        assert_one_line(info.value, fragment)


def test_a_yaml_error_in_the_middle_names_its_line(run: Path) -> None:
    text = (run / CONFIG_FILE).read_text(encoding="utf-8").splitlines()
    text.insert(5, "  bad: [unclosed")  # becomes line 6
    text.insert(6, "  next: 1")
    (run / CONFIG_FILE).write_text("\n".join(text) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_run_config(run)
    assert str(info.value).startswith(f"{run / CONFIG_FILE}:7: invalid YAML"), str(info.value)


def test_a_config_with_bom_and_crlf_is_still_read(run: Path) -> None:
    text = (run / CONFIG_FILE).read_text(encoding="utf-8")
    (run / CONFIG_FILE).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    assert read_run_config(run).model.hidden_size == 4


# --------------------------------------------------------------------------------------------------
# Weights: compatibility and shape


def test_check_compatible_compares_only_the_keys_the_checkpoint_has() -> None:
    task: Any = SimpleNamespace(model_meta=lambda: {"task": "seq2seq", "src_vocab": "abc"})
    source = Path("run/best/model.safetensors")
    check_compatible(task, {"task": "seq2seq", "src_vocab": "abc"}, source)
    check_compatible(task, {}, source)  # an old checkpoint: nothing to compare
    check_compatible(task, {"task": "seq2seq", "other": 1}, source)
    with pytest.raises(RnnlabError) as info:
        check_compatible(task, {"task": "seq2seq", "src_vocab": "xyz"}, source)
    assert_one_line(info.value, f"{source}: checkpoint does not match", "src_vocab: xyz != abc")


def test_apply_weights_loads_a_fitting_state_dict() -> None:
    torch.manual_seed(0)
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    apply_weights(target, source.state_dict(), Path("w.safetensors"))
    assert torch.equal(target.weight, source.weight) and torch.equal(target.bias, source.bias)


@pytest.mark.parametrize(
    ("state", "fragment"),
    [
        ({"weight": torch.zeros(4, 3), "bias": torch.zeros(2)}, "size mismatch for weight"),
        ({"weight": torch.zeros(2, 3)}, "Missing key"),
        (
            {"weight": torch.zeros(2, 3), "bias": torch.zeros(2), "extra": torch.zeros(1)},
            "Unexpected key",
        ),
    ],
    ids=["shape", "missing", "unexpected"],
)
def test_apply_weights_turns_a_mismatch_into_one_line(
    state: dict[str, torch.Tensor], fragment: str
) -> None:
    path = Path("run/best/model.safetensors")
    with pytest.raises(RnnlabError) as info:
        apply_weights(nn.Linear(3, 2), state, path)
    assert str(info.value).startswith(f"{path}: weights do not fit the configured model")
    assert_one_line(info.value, fragment)


# --------------------------------------------------------------------------------------------------
# open_run


def test_open_run_loads_the_saved_weights(run: Path) -> None:
    opened = open_run(run, device="cpu")
    saved = load_file(str(run / "best" / "model.safetensors"))
    state = opened.model.state_dict()
    assert set(state) == set(saved)
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name
    assert not opened.model.training and opened.device == torch.device("cpu")
    assert opened.task.config == read_run_config(run)
    assert opened.task.src_vocab.itos[4:] == ["a", "b", "c", "d"]


def test_open_run_falls_back_from_best_to_last_but_not_back(run: Path) -> None:
    (run / "best").rename(run / "last")
    assert open_run(run, device="cpu").model is not None
    (run / "last").rename(run / "best")
    with pytest.raises(RnnlabError) as info:
        open_run(run, which="last", device="cpu")
    assert_one_line(info.value, f"{run}: no checkpoint found")


def test_missing_weights_are_a_one_line_error(run: Path) -> None:
    (run / "best" / "model.safetensors").unlink()
    with pytest.raises(RnnlabError) as info:
        open_run(run, device="cpu")
    assert_one_line(info.value, f"{run}: no checkpoint found")
    (run / "best" / "model.safetensors").mkdir()  # a directory is not weights either
    with pytest.raises(RnnlabError, match="no checkpoint found"):
        open_run(run, device="cpu")


@pytest.mark.parametrize("damage", ["empty", "truncated", "text", "pickle", "torch.save"])
def test_damaged_weights_are_refused_without_unpickling(
    run: Path, tmp_path: Path, damage: str
) -> None:
    weights = run / "best" / "model.safetensors"
    marker = tmp_path / "unpickled"
    payload = CreatesAFileWhenUnpickled(marker)
    if damage == "empty":
        weights.write_bytes(b"")
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-7])
    elif damage == "text":
        weights.write_text("not weights\n", encoding="utf-8")
    elif damage == "pickle":
        weights.write_bytes(pickle.dumps({"weight": payload}))
    else:
        torch.save({"weight": payload}, weights)
    with pytest.raises(RnnlabError) as info:
        open_run(run, device="cpu")
    assert str(info.value).startswith(f"{weights}: not a readable safetensors checkpoint")
    assert_one_line(info.value)
    assert not marker.exists()


def test_weights_with_metadata_that_is_not_json_are_refused(run: Path) -> None:
    weights = run / "best" / "model.safetensors"
    from safetensors.torch import save_file

    save_file(load_file(str(weights)), str(weights), metadata={"rnnlab": "{not json"})
    with pytest.raises(RnnlabError) as info:
        open_run(run, device="cpu")
    assert_one_line(info.value, f"{weights}: checkpoint metadata is not valid JSON")


def test_weights_of_another_size_are_refused_with_an_override(run: Path) -> None:
    with pytest.raises(RnnlabError) as info:
        open_run(run, device="cpu", overrides=["model.hidden_size=8"])
    assert_one_line(info.value, "model.safetensors: weights do not fit the configured model")


@pytest.mark.parametrize("side", ["src", "tgt"])
def test_missing_or_broken_vocabularies_are_data_errors(run: Path, side: str) -> None:
    vocab = run / f"vocab.{side}.json"
    vocab.unlink()
    with pytest.raises(DataError) as info:
        open_run(run, device="cpu")
    assert_one_line(info.value, f"{vocab}: vocabulary file is missing")
    vocab.write_text('{"tokens": []}', encoding="utf-8")
    with pytest.raises(DataError) as info:
        open_run(run, device="cpu")
    assert_one_line(info.value, f"{vocab}: not a valid vocabulary file")


def test_a_vocabulary_that_is_a_directory_is_a_data_error(run: Path) -> None:
    vocab = run / "vocab.src.json"
    vocab.unlink()
    vocab.mkdir()
    with pytest.raises(DataError):
        open_run(run, device="cpu")


@pytest.mark.parametrize("device", ["tpu", "cpu:x", ""])
def test_an_unknown_device_name_is_a_user_error(run: Path, device: str) -> None:
    with pytest.raises(RnnlabError) as info:
        open_run(run, device=device)
    assert_one_line(info.value, repr(device))


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_asking_for_cuda_without_cuda_is_a_user_error(run: Path) -> None:
    with pytest.raises(RnnlabError) as info:
        open_run(run, device="cuda")
    assert_one_line(info.value, "cuda")


# --------------------------------------------------------------------------------------------------
# run_curves


def test_run_curves_reads_the_json_object_lines(run: Path) -> None:
    lines = [
        '{"step": 1, "loss": 2.5}',
        "torn line from a kill {",
        "[1, 2]",  # JSON, but not a record
        '{"step": 2, "loss": 2.0, "valid_bleu": 3.0}',
    ]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    curves = run_curves(run)
    assert curves.records == [
        {"step": 1, "loss": 2.5},
        {"step": 2, "loss": 2.0, "valid_bleu": 3.0},
    ]
    assert curves.metric == "valid_bleu"


def test_run_curves_errors(run: Path) -> None:
    with pytest.raises(RnnlabError) as info:
        run_curves(run)
    assert_one_line(info.value, f"{run}: no training records yet")
    (run / "metrics.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(RnnlabError, match="no training records yet"):
        run_curves(run)
    (run / "metrics.jsonl").write_text('{"step": 1}\n', encoding="utf-8")
    with pytest.raises(RnnlabError) as info:
        run_curves(run, x="epoch")
    assert_one_line(info.value, f"{run / 'metrics.jsonl'}: no 'epoch' field")


def test_run_curves_with_a_metrics_directory_is_a_user_error(run: Path) -> None:
    (run / "metrics.jsonl").mkdir()
    with pytest.raises(RnnlabError):
        run_curves(run)
