"""``rnnlab evaluate EXPORT_DIR``: the metrics of a run directory, computed by the exported graphs.

An export folder holds its run's config and vocabularies under the run directory's file names, so
the task reads the data and scores the results exactly as for a run; only the model is the runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnlab.errors import RnnlabError
from rnnlab.export.loading import runtime_call
from rnnlab.rundir import read_run_config, task_class


def evaluate_export(
    model: Any,
    path: str,
    *,
    beam_size: int | None = None,
    per_tag: bool = False,
    progress: Any = None,
) -> dict[str, Any]:
    """Metrics of an opened export (``open_export``) on a data file in its task's format."""
    folder = Path(model.folder)
    task: Any = task_class(model.task_name)(read_run_config(folder), folder)
    task.load_artifacts()
    if per_tag and model.task_name != "tagger":
        raise RnnlabError(f"{folder}: --per-tag needs a tagger, this is a {model.task_name} model")
    if beam_size and model.task_name != "seq2seq":
        raise RnnlabError(f"{folder}: --beam applies to translators, not a {model.task_name} model")
    if model.task_name == "seq2seq":
        data = task.encode_pairs(task.read_pairs(path))
        nll, count = model.teacher_forced_nll(data.src, data.tgt)
        beam = beam_size or model.default_beam
        decoded = runtime_call(model.translate_ids, data.src, beam=beam, progress=progress)
        return task.translation_report(
            [model.detokenize(h[0].tokens) for h in decoded], data, nll, count
        )
    if model.task_name == "tagger":
        data = task.encode_tagged(task.read_scored_sentences(path))
        tags = [t.tags for t in model.tag(data.words)]
        return task.score_tags(data, tags).summary(per_tag=per_tag)
    tokens = [token for chunk in task.token_chunks(path) for token in chunk]
    ids = model.encode(tokens)
    if len(ids) < 2:
        raise RnnlabError(f"{path}: too short to score (a language model needs at least 2 tokens)")
    nll, count = model.nll(ids)
    return task.perplexity_report(path, nll, count)
