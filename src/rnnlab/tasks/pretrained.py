"""Pretrained word vectors in a task: match a vocabulary, fill and freeze embeddings, keep coverage.

The vector file is read only when a run is prepared (``match``); the vectors then live in the model's
weights and the (possibly extended) vocabulary in the run directory, so evaluating, decoding and
resuming a run never need the file again. Coverage figures go to ``embeddings.json`` in the run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from rnnlab.data.embeddings import PretrainedMatch, match_vocabulary
from rnnlab.data.vocab import SPECIALS, Vocab
from rnnlab.errors import ConfigError
from rnnlab.nn.pretrained import freeze_rows, load_rows

COVERAGE_FILE = "embeddings.json"


def match(
    path: str,
    vocab: Vocab,
    *,
    embed_size: int,
    token_counts: Counter[str] | None = None,
    extend: bool = False,
    max_added: int = 0,
    normalise: Callable[[str], str] | None = None,
) -> tuple[Vocab, PretrainedMatch]:
    """Vectors for ``vocab`` from ``path``, and the vocabulary extended by the file's other words."""
    found = match_vocabulary(
        path,
        vocab.itos,
        specials=SPECIALS,
        embed_size=embed_size,
        token_counts=token_counts,
        extend=extend,
        max_added=max_added,
        normalise=normalise,
    )
    extended = Vocab(found.words, min_freq=vocab.min_freq) if found.words != vocab.itos else vocab
    return extended, found


def match_word_embeddings(
    config: Any,
    vocab: Vocab,
    token_counts: Counter[str],
    run_dir: Path,
    *,
    side: str,
    normalise: Callable[[str], str] | None = None,
) -> tuple[Vocab, dict[str, PretrainedMatch]]:
    """For a task with one word embedding (tagger, language model): its ``model.pretrained_embeddings``
    matched to ``vocab`` (extended when ``data.extend_vocab_from_embeddings``), coverage saved."""
    model, data = config.model, config.data
    if not model.pretrained_embeddings:
        return vocab, {}
    vocab, found = match(
        model.pretrained_embeddings,
        vocab,
        embed_size=model.embed_size,
        token_counts=token_counts,
        extend=data.extend_vocab_from_embeddings,
        max_added=data.max_vocab_from_embeddings,
        normalise=normalise,
    )
    matches = {side: found}
    save_coverage(run_dir, matches)
    return vocab, matches


def install_word_embeddings(
    embedding: nn.Embedding | None,
    matches: dict[str, PretrainedMatch],
    model_config: Any,
    *,
    side: str,
    pad_id: int,
) -> None:
    """``install`` for a task with one word embedding, as its model config asks."""
    if model_config.pretrained_embeddings and embedding is not None:
        install(embedding, matches.get(side), freeze=model_config.freeze_embeddings, pad_id=pad_id)


def install(
    embedding: nn.Embedding, found: PretrainedMatch | None, *, freeze: bool, pad_id: int
) -> None:
    """Copy matched vectors into ``embedding`` (when there are any) and freeze their rows if asked.

    A model rebuilt for evaluation or resuming has no match: with ``freeze`` it still gets the mask
    buffer, which loading its weights fills.
    """
    mask = load_rows(embedding, found.vectors, pad_id=pad_id) if found is not None else None
    if freeze:
        freeze_rows(embedding, mask)


def check_config(
    *, path: str, freeze: bool, extend: bool, one_hot: bool, weight_decay: float
) -> None:
    """Cross-field rules of the pretrained-embedding keys (called from a config's ``__post_init__``)."""
    if freeze and not path:
        raise ConfigError("model.freeze_embeddings needs model.pretrained_embeddings")
    if extend and not path:
        raise ConfigError("data.extend_vocab_from_embeddings needs model.pretrained_embeddings")
    if path and one_hot:
        raise ConfigError("model.pretrained_embeddings needs an embedding; not with model.one_hot")
    if freeze and weight_decay > 0:
        raise ConfigError(
            "frozen embeddings and train.weight_decay > 0: Adam's weight decay would still move "
            "the frozen rows; set train.weight_decay=0"
        )


def save_coverage(run_dir: Path, matches: dict[str, PretrainedMatch]) -> None:
    data = {side: m.coverage.as_dict() for side, m in matches.items() if m.coverage is not None}
    (run_dir / COVERAGE_FILE).write_text(json.dumps(data, indent=2), encoding="utf-8")


def coverage_notes(matches: dict[str, PretrainedMatch]) -> list[str]:
    """One line per embedding: what share of the vocabulary and of the training tokens is covered."""
    return [
        f"pretrained {side} embeddings: {m.coverage.summary()}"
        for side, m in matches.items()
        if m.coverage is not None
    ]


def read_coverage(run_dir: Path) -> dict[str, Any]:
    path = run_dir / COVERAGE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
