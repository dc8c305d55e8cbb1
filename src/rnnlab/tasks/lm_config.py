"""The language model's config: data, model, training and run sections, each a typed dataclass
whose field docstrings are the reference for ``configs/lm/*.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rnnlab.config import (
    DataConfig,
    ModelConfig,
    PretrainedEmbeddingFields,
    RunConfig,
    TrainConfig,
    VocabFromEmbeddingsFields,
    require_at_least,
)
from rnnlab.data.bundled import bundled_path
from rnnlab.errors import ConfigError
from rnnlab.tasks import pretrained

EVAL_CHUNK = 256
"""Tokens per forward call when scoring a file; the state is carried, so this only trades memory."""


@dataclass
class LMDataConfig(VocabFromEmbeddingsFields, DataConfig):
    """LM data; ``max_len`` is unused (``train.bptt`` sets the sequence length)."""

    INERT_FIELDS: ClassVar[tuple[str, ...]] = ("max_len",)
    """Inherited fields this task never reads: a search space may not vary them."""
    VOCABULARY_FIELDS: ClassVar[tuple[str, ...]] = ("tokenizer", "clean")

    train: str = field(default_factory=lambda: bundled_path("timemachine/train.txt"))
    valid: str = field(default_factory=lambda: bundled_path("timemachine/valid.txt"))
    min_freq: int = 1
    """Tokens seen fewer times in training map to <unk>."""
    max_examples: int = 0
    """Use only the first N lines of the training file (0 = all)."""
    tokenizer: Literal["char", "word"] = "char"
    """char: every character is a token; word: whitespace tokens with <eos> at each line end."""
    clean: Literal["none", "timemachine"] = "timemachine"
    """timemachine: the textbook's cleaning (non-letters become spaces, lower-case); none: raw text."""
    batching: Literal["sequential", "random"] = "sequential"
    """sequential: parallel streams, state carried across batches; random: shuffled pieces, reset."""


@dataclass
class LMModelConfig(PretrainedEmbeddingFields, ModelConfig):
    num_layers: int = 1
    """Number of stacked recurrent layers."""
    dropout: float = 0.0
    """Dropout on embeddings, between recurrent layers and before the projection (Zaremba 2014)."""
    variational_dropout: bool = False
    """Drop the same features of a row at every position of a training segment (Gal & Ghahramani
    2016) in the dropout on the embeddings and before the projection, instead of a new mask per
    token; the dropout between recurrent layers stays per token (it is inside the fused stack)."""
    tie_weights: bool = False
    """Share the embedding matrix with the output projection (needs embed_size == hidden_size)."""
    one_hot: bool = False
    """Feed one-hot vectors instead of embeddings (the textbook's from-scratch model)."""
    softmax: Literal["full", "adaptive"] = "full"
    """adaptive: adaptive softmax over frequency-ranked clusters (Grave et al. 2017); exact ppl."""
    cutoffs: list[int] = field(default_factory=lambda: [2000, 6000])
    """Adaptive softmax: vocabulary ids where the head and each tail cluster end."""


@dataclass
class LMTrainConfig(TrainConfig):
    INERT_FIELDS: ClassVar[tuple[str, ...]] = ("bucket",)
    """A stream of text has no sentences to bucket by length."""

    bptt: int = 32
    """Tokens per row of a batch: the truncated back-propagation-through-time length."""


@dataclass
class LMConfig(RunConfig):
    task: str = "lm"
    data: LMDataConfig = field(default_factory=LMDataConfig)
    model: LMModelConfig = field(default_factory=LMModelConfig)
    train: LMTrainConfig = field(default_factory=LMTrainConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least("train.bptt", self.train.bptt, 1)
        pretrained.check_config(
            path=self.model.pretrained_embeddings,
            freeze=self.model.freeze_embeddings,
            extend=self.data.extend_vocab_from_embeddings,
            one_hot=self.model.one_hot,
            weight_decay=self.train.weight_decay,
        )

    def check_new_run(self) -> None:
        if self.model.tie_weights and self.model.freeze_embeddings:
            raise ConfigError(
                "model.tie_weights with model.freeze_embeddings would freeze the output "
                "projection's rows too; choose one"
            )
