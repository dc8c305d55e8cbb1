"""Run directories: create one for training, open one for evaluation, decoding or resuming.

A run directory is self-contained: ``config.yaml`` (the resolved config), the task's vocabularies,
``best/`` and ``last/`` checkpoints and ``metrics.jsonl``. Evaluation needs nothing else.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import torch
from torch import nn

from rnnlab.config import (
    apply_overrides,
    coerce_value,
    from_dict,
    load_config,
    read_yaml,
    save_config,
    vocabulary_fields,
)
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.nn.precision import check_bf16_kernels
from rnnlab.tasks import TASKS, Task
from rnnlab.training import checkpoint as ckpt
from rnnlab.training.run_lock import LOCK_FILE

CONFIG_FILE = "config.yaml"


def task_class(name: str) -> type[Task]:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}") from None


def load_task_config(task: str, path: str | Path | None, overrides: list[str] | None = None) -> Any:
    """The config to train ``task`` with: its defaults, then the YAML file, then the overrides.

    A config written for another task is refused first, by name: its keys would otherwise fail
    one by one against the wrong schema and point away from the real mistake.
    """
    if path is not None:
        named = read_yaml(path).get("task")
        if named not in (None, "", task):
            raise ConfigError(
                f"{path}: config is for task {named!r}, not {task!r} "
                f"(train it with: rnnlab train {named} --config {path})"
            )
    config = load_config(task_class(task).config_class, path, overrides)
    if config.task != task:
        raise ConfigError(f"task {config.task!r} set, but the command trains {task!r}")
    try:
        config.check_new_run()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None
    return config


REPLACED_DIR = ".replaced"
"""Where ``--overwrite`` keeps the old run's files until the new run has read its data."""


@dataclass
class ReplacedRun:
    """What a run directory held before ``create_run_dir``, until the new run is under way.

    A new run's mistakes show when its data is read, after the directory was made. So an
    overwritten run's files wait, renamed into ``RUN/.replaced`` (same filesystem, nothing
    copied), until the caller has read its data and built its model: ``discard`` then deletes
    them, ``restore`` removes whatever the new run wrote and puts them back. A directory that
    held no run is left as it was too, so the corrected command can start it again. As a context
    manager: restore on an exception, discard otherwise.
    """

    path: Path
    set_aside: bool = False
    pending: bool = True

    def __enter__(self) -> ReplacedRun:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.discard()
        else:
            self.restore()

    @contextmanager
    def restored_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.restore()
            raise

    def discard(self) -> None:
        if self.pending and self.set_aside:
            shutil.rmtree(self.path / REPLACED_DIR)
        self.pending = False

    def restore(self) -> None:
        if not self.pending:
            return
        for entry in self.path.iterdir():
            if entry.name not in (LOCK_FILE, REPLACED_DIR):
                _remove(entry)
        if self.set_aside:
            aside = self.path / REPLACED_DIR
            for entry in aside.iterdir():
                entry.rename(self.path / entry.name)
            aside.rmdir()
        self.pending = False


def _remove(entry: Path) -> None:
    """Delete a file or directory; a link is removed, never what it points to."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def create_run_dir(path: Path, config: Any, *, overwrite: bool = False) -> ReplacedRun:
    """Make a fresh run directory and save the resolved config in it.

    With ``overwrite`` an existing run's files are set aside, not deleted; the returned
    ``ReplacedRun`` deletes them or puts them back. The run lock (``RUN/.lock``, taken by the caller before this) does not count as content and
    stays where it is.
    """
    existing = [p for p in path.iterdir() if p.name != LOCK_FILE] if path.is_dir() else []
    replaced = ReplacedRun(path)
    if existing:
        if not overwrite:
            raise RnnlabError(
                f"{path}: run directory exists and is not empty (use --resume to continue it, "
                "or --overwrite to start again)"
            )
        if not any((where / CONFIG_FILE).is_file() for where in (path, path / REPLACED_DIR)):
            raise RnnlabError(
                f"{path}: refusing to overwrite a directory that is not an rnnlab run"
            )
        aside = path / REPLACED_DIR
        if aside.exists() or aside.is_symlink():  # left by an overwrite that was killed
            _remove(aside)
            existing.remove(aside)
        aside.mkdir()
        for entry in existing:
            entry.rename(aside / entry.name)
        replaced.set_aside = True
    with replaced.restored_on_error():
        path.mkdir(parents=True, exist_ok=True)
        save_config(config, path / CONFIG_FILE)  # a full disk: the old run goes back at once
    return replaced


def read_run_config(path: Path, overrides: list[str] | None = None) -> Any:
    """The config saved in a run directory (plus overrides), as the task's typed config."""
    if not path.is_dir():
        raise RnnlabError(f"{path}: no such run directory")
    if not (path / CONFIG_FILE).is_file():
        raise RnnlabError(f"{path}: not an rnnlab run directory (no {CONFIG_FILE})")
    data = apply_overrides(read_yaml(path / CONFIG_FILE), list(overrides or []))
    try:
        return from_dict(task_class(str(data.get("task", ""))).config_class, data)
    except ConfigError as exc:
        raise ConfigError(f"{path / CONFIG_FILE}: {exc}") from None


def refuse_vocabulary_changes(path: Path, config: Any) -> None:
    """A resumed run keeps the vocabularies it was prepared with, so ``--set`` may not change a
    key that shaped them (``config.vocabulary_fields``): the saved config would then describe a
    tokenization the model never saw.

    The saved values are read from the file as written, without the checks a config gets when it
    loads: a run saved before a newer check still resumes, with ``--set`` fixing what it refuses.
    """
    section = read_yaml(path / CONFIG_FILE).get("data")
    saved = section if isinstance(section, dict) else {}
    data_class = type(config.data)
    hints = get_type_hints(data_class)
    defaults = {f.name: f for f in dataclasses.fields(data_class)}
    for key in vocabulary_fields(data_class):
        name = key.removeprefix("data.")
        if name in saved:
            try:
                before = coerce_value(saved[name], hints[name], key)
            except ConfigError:
                continue  # not a value training could have used; loading the config says so
        else:
            field_ = defaults[name]
            factory = field_.default_factory
            before = factory() if factory is not dataclasses.MISSING else field_.default
        after = getattr(config.data, name)
        if before != after:
            raise RnnlabError(
                f"{path}: {key} cannot change on --resume ({before!r} → {after!r}): the run's "
                "vocabularies were built with the first; train a new run for the second"
            )


def refuse_new_run_problems(path: Path, config: Any) -> None:
    """``--resume --set`` may not create what a new run is refused (``check_new_run``) from a
    saved config that has none of it; a run saved before such a check keeps what it had."""
    try:
        read_run_config(path).check_new_run()
    except ConfigError:
        return
    try:
        config.check_new_run()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def check_compatible(task: Task, meta: dict[str, Any], source: Path) -> None:
    """Refuse weights trained for another task or with other vocabularies."""
    for key, expected in task.model_meta().items():
        if key in meta and meta[key] != expected:
            raise RnnlabError(
                f"{source}: checkpoint does not match this run ({key}: {meta[key]} != {expected}); "
                "was it copied from another model?"
            )


def apply_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load a state dict, turning a shape or key mismatch into a one-line user error."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise RnnlabError(
            f"{path}: weights do not fit the configured model ({first[-1].strip()})"
        ) from None


def run_curves(path: Path, *, x: str = "step") -> Any:
    """A run's ``metrics.jsonl`` as ``RunCurves`` for ``rnnlab.plotting.plot_learning_curves``."""
    from rnnlab.plotting import RunCurves
    from rnnlab.training.trainer import MetricsLog

    config = read_run_config(path)
    metrics = path / "metrics.jsonl"
    records = MetricsLog(metrics).read()  # an unreadable file is a one-line error there
    if not records:
        raise RnnlabError(f"{path}: no training records yet (metrics.jsonl is missing or empty)")
    if not any(x in r for r in records):
        raise RnnlabError(f"{metrics}: no '{x}' field in the records (this run predates it?)")
    return RunCurves(str(path), records, task_class(config.task).primary_metric)


@dataclass
class TrainedRun:
    """A task with its vocabularies and a model with trained weights, ready to use."""

    task: Task
    model: nn.Module
    device: torch.device


def open_run(
    path: str | Path,
    *,
    which: str = "best",
    device: str = "auto",
    overrides: list[str] | None = None,
    decodes: bool = True,
) -> TrainedRun:
    """Load a finished (or interrupted) run for evaluation and decoding.

    ``decodes=False`` (export) skips the check of ``decode.precision`` against the device's
    kernels: a run that is only converted never decodes under it here.
    """
    from rnnlab.training.trainer import resolve_device

    path = Path(path)
    config = read_run_config(path, overrides)
    task = task_class(config.task)(config, path)
    task.load_artifacts()
    weights = ckpt.find_weights(path, which)
    state, meta = ckpt.load_model_file(weights)
    check_compatible(task, meta, weights)
    model = task.new_model()
    apply_weights(model, state, weights)
    resolved = resolve_device(device, "--device")
    model.to(resolved).eval()
    decode = getattr(task.config, "decode", None)
    if decodes and decode is not None and hasattr(decode, "precision"):
        try:
            check_bf16_kernels(model, "decode.precision", decode.precision, resolved)
        except ConfigError as exc:  # name the run: a server loads several
            raise ConfigError(f"{path / CONFIG_FILE}: {exc}") from None
    return TrainedRun(task=task, model=model, device=resolved)
