"""Translate lines of text with a trained encoder–decoder: the one implementation the CLI and server share.

Blank lines are not sent to the model (a packed sequence cannot be empty) and come back as empty
translations at their positions; the rest are decoded in length-sorted batches by the task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rnnlab.decoding.hypothesis import ended, length_penalty_problem
from rnnlab.errors import RnnlabError
from rnnlab.inference.inputs import real_number, text_lines, whole_number
from rnnlab.inference.results import Translation
from rnnlab.tasks.seq2seq import Seq2SeqTask


class Translator:
    """A seq2seq model with its vocabularies and tokenizers, ready to translate."""

    task_name = "seq2seq"

    def __init__(self, *, task: Seq2SeqTask, model: nn.Module, device: torch.device) -> None:
        self.task = task
        self.model = model
        self.device = device
        self.batch_size = task.config.decode.batch_size
        """Sentences decoded together (the server's batches are smaller than this)."""

    @property
    def has_attention(self) -> bool:
        return bool(getattr(self.model, "has_attention", False))

    @property
    def attention_kind(self) -> str:
        """``model.attention`` of the run: none, bahdanau, luong_dot or luong_general."""
        return self.task.config.model.attention

    @property
    def default_beam(self) -> int:
        """The run's ``decode.beam_size``: what ``rnnlab translate`` uses without ``--beam``."""
        return self.task.config.decode.beam_size

    def describe(self) -> dict[str, Any]:
        """Facts a client shows when picking a model (``GET /v1/models``)."""
        config = self.task.config
        assert self.task.src_vocab is not None and self.task.tgt_vocab is not None
        return {
            "task": self.task_name,
            "src_lang": config.data.src_lang,
            "tgt_lang": config.data.tgt_lang,
            "src_vocab_size": len(self.task.src_vocab),
            "tgt_vocab_size": len(self.task.tgt_vocab),
            "cell": config.model.cell,
            "attention": config.model.attention,
            "has_attention": self.has_attention,
        }

    def translate(
        self,
        lines: list[str],
        *,
        beam: int = 1,
        n_best: int = 1,
        length_penalty: float | None = None,
        max_len: int | None = None,
        attention: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> list[Translation]:
        """One ``Translation`` per line, in order; ``n_best`` alternatives need ``n_best ≤ beam``.

        ``length_penalty`` (GNMT α) and ``max_len`` default to the run's ``decode`` settings.
        ``attention`` adds the best hypothesis's attention matrix when the model has attention.
        """
        lines = text_lines(lines, "translate")
        beam, n_best, length_penalty, max_len = translate_options(
            beam, n_best, length_penalty, max_len
        )
        task = self.task
        keep = [i for i, line in enumerate(lines) if line.strip()]
        sources = [task.encode_source(lines[i]) for i in keep]
        decoded = task.translate_hypotheses(
            self.model,
            sources,
            self.device,
            beam_size=beam,
            n_best=n_best,
            max_len=max_len,
            length_penalty=length_penalty,
            batch_size=self.batch_size,
            progress=progress,
        )
        out = [Translation(text="", tokens=[], score=0.0) for _ in lines]
        assert task.tgt_vocab is not None
        limit = max_len or task.config.decode.max_len
        for i, src, hyps in zip(keep, sources, decoded, strict=True):
            best = hyps[0]
            out[i] = Translation(
                text=task.detokenize(best.tokens),
                tokens=task.tgt_vocab.decode(best.tokens),
                score=best.score,
                n_best=[(task.detokenize(h.tokens), h.score) for h in hyps],
                attention=(
                    task.attention_of(
                        self.model, src, best.tokens, self.device, ended=ended(best, limit)
                    )
                    if attention and self.has_attention
                    else None
                ),
            )
        return out


def translate_options(
    beam: object, n_best: object, length_penalty: object, max_len: object
) -> tuple[int, int, float | None, int | None]:
    """``translate``'s numbers checked by name: whole numbers in range, a valid GNMT α."""
    beam, n_best = whole_number(beam, "beam"), whole_number(n_best, "n_best")
    if beam < 1:
        raise RnnlabError(f"beam must be 1 or more, got {beam}")
    if not 1 <= n_best <= beam:
        raise RnnlabError(f"n_best must be between 1 and the beam size {beam}, got {n_best}")
    if max_len is not None:
        max_len = whole_number(max_len, "max_len")
        if max_len < 1:
            raise RnnlabError(f"max_len must be 1 or more, got {max_len}")
    if length_penalty is not None:
        length_penalty = real_number(length_penalty, "length_penalty")
        problem = length_penalty_problem(length_penalty)
        if problem is not None:
            raise RnnlabError(f"length_penalty {problem}")
    return beam, n_best, length_penalty, max_len
