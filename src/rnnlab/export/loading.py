"""Open an export folder from rnnlab: the folder's runtime, with its errors as rnnlab's one-line errors.

The runtime in the package is the file every export folder carries a copy of (the manifest's sha256
of ``runtime.py`` says which), so rnnlab imports its own rather than executing a file from the
folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from rnnlab.errors import RnnlabError

MANIFEST = "rnnlab-export.json"
"""The file that makes a folder an export (``rnnlab.export.runtime.MANIFEST``)."""


def is_export_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def open_export(path: str | Path, *, num_threads: int = 0) -> Any:
    """``OnnxTranslator``, ``OnnxTagger`` or ``OnnxLanguageModel`` for an export folder."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise RnnlabError(
            f"{path}: running an exported model needs onnxruntime; "
            "install it with: pip install 'rnnlab[export]'"
        )
    from rnnlab.export import runtime

    try:
        return runtime.load(path, num_threads=num_threads)
    except runtime.ExportError as exc:
        raise RnnlabError(str(exc)) from None


def open_export_as(path: str | Path, task: str, *, command: str, num_threads: int = 0) -> Any:
    """``open_export`` for a command that needs one task; a one-line error for another."""
    model = open_export(path, num_threads=num_threads)
    if model.task_name != task:
        raise RnnlabError(
            f"{path}: {command} needs a {task} model, this export is a {model.task_name} model"
        )
    return model


def runtime_call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call into the runtime, turning its user errors into ``RnnlabError``."""
    from rnnlab.export import runtime

    try:
        return function(*args, **kwargs)
    except runtime.ExportError as exc:
        raise RnnlabError(str(exc)) from None
