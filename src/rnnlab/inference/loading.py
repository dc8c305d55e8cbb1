"""``rnnlab.load``: open a directory as the inference object of its task.

What a directory is decides how it is opened: a run directory (``config.yaml``) goes through
``rnnlab.rundir.open_run``; an export directory (``rnnlab-export.json``, written by ``rnnlab
export``) is opened by its ONNX Runtime runtime behind the same interface
(``rnnlab.inference.exported``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from rnnlab.errors import RnnlabError
from rnnlab.export.loading import MANIFEST as EXPORT_MANIFEST
from rnnlab.inference.inputs import settings, whole_number
from rnnlab.inference.language_model import LanguageModel
from rnnlab.inference.tagger import Tagger
from rnnlab.inference.translator import Translator
from rnnlab.rundir import CONFIG_FILE, open_run

InferenceModel = Translator | Tagger | LanguageModel
"""What ``load`` returns: one class per task."""

KINDS: dict[str, type[InferenceModel]] = {
    "seq2seq": Translator,
    "tagger": Tagger,
    "lm": LanguageModel,
}


Model = TypeVar("Model", Translator, Tagger, LanguageModel)


def directory_kind(path: Path) -> Literal["run", "export"]:
    """Which loader reads ``path``; a one-line error for anything else."""
    if (path / EXPORT_MANIFEST).is_file():
        return "export"
    if not path.is_dir():
        raise RnnlabError(f"{path}: no such run directory")
    if not (path / CONFIG_FILE).is_file():
        raise RnnlabError(f"{path}: not an rnnlab run directory (no {CONFIG_FILE})")
    return "run"


def load(
    path: str | Path,
    *,
    device: str = "auto",
    threads: int = 0,
    overrides: list[str] | None = None,
) -> InferenceModel:
    """The ``Translator``, ``Tagger`` or ``LanguageModel`` of a directory, with its best weights.

    ``threads`` > 0 sets PyTorch's intra-op threads (a process-wide setting; 0 = the run's
    ``train.num_threads`` when that is set, else PyTorch's default); ``overrides`` are
    ``section.key=value`` settings applied to the run's config (e.g. ``decode.max_len=80``).
    """
    from rnnlab.training.trainer import set_threads

    threads, overrides = whole_number(threads, "threads"), settings(overrides)
    if threads < 0:
        raise RnnlabError(f"threads must be 0 (the default) or more, got {threads}")
    path = Path(path)
    if directory_kind(path) == "export":
        from rnnlab.inference.exported import load_export

        if overrides:  # an export's settings were fixed when it was written
            raise RnnlabError(
                f"{path}: --set does not apply to an exported model (got {overrides[0]!r}); "
                "export the run again with the setting, or use the run directory"
            )
        return load_export(path, threads=threads)
    run = open_run(path, device=device, overrides=overrides)
    set_threads(threads if threads > 0 else run.task.config.train.num_threads)
    cls = KINDS[run.task.name]
    return cls(task=run.task, model=run.model, device=run.device)  # type: ignore[arg-type]


def load_as(
    cls: type[Model],
    path: str | Path,
    *,
    command: str,
    device: str = "auto",
    threads: int = 0,
    overrides: list[str] | None = None,
) -> Model:
    """``load`` for a command that needs one kind of model; a one-line error for another kind."""
    from rnnlab.rundir import read_run_config

    overrides = settings(overrides)
    kind = directory_kind(Path(path))
    if kind == "run":
        task_name = read_run_config(Path(path), overrides).task
        if task_name != cls.task_name:
            raise RnnlabError(
                f"{path}: {command} needs a {cls.task_name} run, this is a {task_name} run"
            )
    model = load(path, device=device, threads=threads, overrides=overrides)
    if not isinstance(model, cls):
        raise RnnlabError(
            f"{path}: {command} needs a {cls.task_name} model, this export is a "
            f"{model.task_name} model"
        )
    return model
