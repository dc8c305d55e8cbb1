"""Tag sentences with a trained tagger: the one implementation the CLI and server share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rnnlab.inference.inputs import token_sentences
from rnnlab.inference.results import TaggedSentence
from rnnlab.tasks.tagger import TaggerTask


class Tagger:
    """A tagger model with its vocabularies and tag set, ready to tag."""

    task_name = "tagger"

    def __init__(self, *, task: TaggerTask, model: nn.Module, device: torch.device) -> None:
        self.task = task
        self.model = model
        self.device = device
        self.batch_size = task.config.decode.batch_size
        """Sentences tagged together."""

    @property
    def tag_column(self) -> str:
        """The CoNLL-U column the tagger fills (``data.tag_column``: upos or xpos)."""
        return self.task.config.data.tag_column

    def describe(self) -> dict[str, Any]:
        """Facts a client shows when picking a model (``GET /v1/models``)."""
        task = self.task
        assert task.word_vocab is not None and task.tagset is not None
        return {
            "task": self.task_name,
            "tag_column": task.config.data.tag_column,
            "word_vocab_size": len(task.word_vocab),
            "tags": list(task.tagset.itos),
            "cell": task.config.model.cell,
            "crf": task.config.model.crf,
        }

    def tag(
        self,
        sentences: list[str] | list[list[str]],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> list[TaggedSentence]:
        """Tags per sentence, in order. A string is split on whitespace; an empty sentence gets no tags."""
        return tag_sentences(
            sentences,
            lambda words: self.task.tag(
                self.model, words, self.device, batch_size=self.batch_size, progress=progress
            ),
        )


def tag_sentences(
    sentences: list[str] | list[list[str]],
    tag_words: Callable[[list[list[str]]], list[list[str]]],
) -> list[TaggedSentence]:
    """``tag_words`` of the sentences as token lists (a string split on whitespace), paired with
    their tokens in input order."""
    words = token_sentences(sentences, "tag")
    tags = tag_words(words)
    return [TaggedSentence(tokens=w, tags=t) for w, t in zip(words, tags, strict=True)]
