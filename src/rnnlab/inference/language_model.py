"""Generate text from, and score text with, a trained language model.

``temperature=0`` asks for greedy search (the most probable token every step), the convention of
most sampling APIs; any positive temperature samples. ``seed=None`` draws a fresh seed, so two calls
give two samples; a fixed seed reproduces one.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from rnnlab.data.lm_corpus import corpus_tokens
from rnnlab.errors import RnnlabError
from rnnlab.inference.inputs import SEED_LIMIT, real_number, string_argument, whole_number
from rnnlab.metrics.perplexity import perplexity
from rnnlab.models.language_model import RNNLanguageModel
from rnnlab.tasks.lm import LanguageModelTask, stream_nll


class LanguageModel:
    """A language model with its vocabulary, ready to generate and score text."""

    task_name = "lm"

    def __init__(
        self, *, task: LanguageModelTask, model: RNNLanguageModel, device: torch.device
    ) -> None:
        self.task = task
        self.model = model
        self.device = device

    def describe(self) -> dict[str, Any]:
        """Facts a client shows when picking a model (``GET /v1/models``)."""
        assert self.task.vocab is not None
        config = self.task.config
        return {
            "task": self.task_name,
            "tokenizer": config.data.tokenizer,
            "vocab_size": len(self.task.vocab),
            "cell": config.model.cell,
        }

    def generate(
        self,
        prefix: str,
        *,
        length: int,
        temperature: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
    ) -> str:
        """The (cleaned) prefix followed by ``length`` generated tokens, as text."""
        prefix, length, temperature, top_k, seed = generate_options(
            prefix, length, temperature, top_k, seed
        )
        greedy = temperature == 0
        return self.task.generate(
            self.model,
            prefix,
            self.device,
            length=length,
            greedy=greedy,
            temperature=1.0 if greedy else temperature,
            top_k=top_k,
            seed=seed,
        )[0]

    def perplexity(self, text: str) -> float:
        """exp of the mean NLL per token of ``text``, read as one stream like ``rnnlab evaluate``."""
        config = self.task.config.data
        tokens = corpus_tokens(
            string_argument(text, "text"), level=config.tokenizer, clean=config.clean
        )
        assert self.task.vocab is not None
        if len(tokens) < 2:
            raise RnnlabError("text too short to score (a language model needs at least 2 tokens)")
        ids = torch.tensor(self.task.vocab.encode(tokens), dtype=torch.long)  # (N,)
        nll, count = stream_nll(self.model, ids, self.device)
        return perplexity(nll, count)


def generate_options(
    prefix: object, length: object, temperature: object, top_k: object, seed: object
) -> tuple[str, int, float, int, int]:
    """``generate``'s arguments checked by name; ``seed=None`` becomes a fresh random seed."""
    prefix = string_argument(prefix, "prefix")
    length, top_k = whole_number(length, "length"), whole_number(top_k, "top_k")
    temperature = real_number(temperature, "temperature")
    if not temperature >= 0:  # also refuses nan
        raise RnnlabError(f"temperature must be 0 (greedy) or more, got {temperature}")
    if seed is None:
        seed = random.SystemRandom().randrange(SEED_LIMIT)
    seed = whole_number(seed, "seed")
    if not 0 <= seed < SEED_LIMIT:
        raise RnnlabError(f"seed must be between 0 and 2^63 - 1, got {seed}")
    return prefix, length, temperature, top_k, seed
