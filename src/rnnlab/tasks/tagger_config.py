"""The tagger's config: data, model, training and decoding sections, each a typed dataclass whose
field docstrings are the reference for ``configs/tagger/*.yaml``.
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
from rnnlab.data.conllu_io import LabelColumn, TagColumn
from rnnlab.data.tagged import TaggedFormat
from rnnlab.errors import ConfigError
from rnnlab.tasks import pretrained


@dataclass
class TaggerDataConfig(VocabFromEmbeddingsFields, DataConfig):
    VOCABULARY_FIELDS: ClassVar[tuple[str, ...]] = (
        "tag_column",
        "aux_tag_column",
        "lowercase",
        "max_word_chars",
    )

    train: str = field(default_factory=lambda: bundled_path("ud-ewt-sample/train.conllu"))
    valid: str = field(default_factory=lambda: bundled_path("ud-ewt-sample/dev.conllu"))
    test: str = ""
    """Optional test data, evaluated at the end of training."""
    format: TaggedFormat = "auto"
    """conllu, word_tag (word/TAG tokens, a sentence per line), two_column (word<TAB>tag), or auto."""
    tag_column: TagColumn = "upos"
    """CoNLL-U column to learn and fill: upos or xpos."""
    aux_tag_column: Literal["", "upos", "xpos", "feats", "deprel"] | list[LabelColumn] = ""
    """Further CoNLL-U columns of the training data to predict beside the tags, one or a list,
    each an auxiliary loss weighted by ``model.aux_tag_weight`` (e.g. xpos, or [xpos, deprel],
    while learning upos; FEATS and DEPREL are whole strings, ``Number=Sing|Person=3`` one label,
    ``_`` the label "no features"); "": none."""
    lowercase: bool = False
    """Lower-case words for the word embeddings (characters keep their case)."""
    max_len: int = 0
    """Training sentences longer than this are cut into pieces this long (0 = never); tagging never cuts."""
    max_word_chars: int = 30
    """Characters read per word; a longer word keeps its first and last halves (prefix and suffix)."""

    @property
    def aux_columns(self) -> list[LabelColumn]:
        """``aux_tag_column`` as a list: one column, several, or none for ""."""
        value = self.aux_tag_column
        if isinstance(value, list):
            return list(value)
        return [value] if value else []

    @property
    def aux_outputs(self) -> dict[LabelColumn, str]:
        """Column → the name of its auxiliary output and label file (``<name>.json``):
        ``aux_tags`` for the first column, as runs with a single auxiliary column have always
        named it, ``aux_tags_<column>`` for each further one."""
        return {
            c: "aux_tags" if i == 0 else f"aux_tags_{c}" for i, c in enumerate(self.aux_columns)
        }


@dataclass
class TaggerModelConfig(PretrainedEmbeddingFields, ModelConfig):
    cell: Literal["rnn", "gru", "lstm", "peephole_lstm", "coupled_lstm"] = "lstm"
    embed_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.25
    """Dropout on the recurrent layers' inputs and outputs (and between layers)."""
    bidirectional: bool = True
    """Read each sentence in both directions."""
    crf: bool = False
    """Linear-chain CRF output layer (Viterbi decoding) instead of a per-token softmax."""
    char_encoder: Literal["none", "rnn", "cnn"] = "rnn"
    """Character-level word representation: a BiRNN of model.cell, a CNN, or none."""
    char_embed_size: int = 32
    """Character embedding size."""
    char_hidden_size: int = 32
    """Char BiRNN hidden size per direction, or the number of CNN filters."""
    char_kernel_size: int = 3
    """Char CNN window (odd)."""
    word_dropout: float = 0.0
    """Probability of replacing a training token's word id by <unk> (characters are kept); with
    model.trainable_embed_size, drawn for each part of the word vector on its own."""
    variational_dropout: bool = False
    """Drop the same features of a sentence at every position (Gal & Ghahramani 2016) in the
    dropout before and after the word-level recurrent layers, instead of a new mask per token."""
    freq_bin_weight: float = 0.0
    """Weight of an auxiliary loss predicting each token's frequency bin, min(int(ln count), 15),
    in the training data (Plank et al. 2016); 0: no such output."""
    aux_tag_weight: float = 1.0
    """Weight of the loss on each of ``data.aux_tag_column``'s columns (when that is set)."""
    trainable_embed_size: int = 0
    """With model.freeze_embeddings: a trainable embedding of this size beside the fixed pretrained
    vectors, one row per word seen in training, starting at zero; words only the vector file knows
    share <unk>'s row (Qi et al. 2020). 0: none."""
    lm_weight: float = 0.0
    """Weight of a language-modelling objective (Rei 2017): the first word-level recurrent layer's
    forward states predict the next word and its backward states the previous one, among the
    model.lm_vocab_size most frequent training words (the rest as one class), through a tanh layer
    of 50 units; 0: off. With it the first layer runs as its own module (two calls of the fused
    kernel instead of one). Tagging never reads it."""
    lm_vocab_size: int = 7500
    """Words the language-modelling objective tells apart (the most frequent in training, as
    data.lowercase folds them); every other word is one more class."""
    adversarial_epsilon: float = 0.0
    """Adversarial training (Yasunaga et al. 2018): each batch's loss also on its word + character
    representations moved along the loss gradient, by a root-mean-square of this much per
    coordinate; 0: off. About doubles the cost of a training step, and the training loss logged is
    the sum of both losses; tagging is unchanged."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in (
            "freq_bin_weight",
            "aux_tag_weight",
            "lm_weight",
            "adversarial_epsilon",
            "trainable_embed_size",
        ):
            if getattr(self, key) < 0:
                raise ConfigError(
                    f"model.{key}: {getattr(self, key)!r} is negative; 0 turns it off"
                )
        require_at_least("model.lm_vocab_size", self.lm_vocab_size, 1)


@dataclass
class TagDecodeConfig:
    batch_size: int = 256
    """Sentences tagged together."""
    batch_tokens: int = 4096
    """A batch also holds at most as many sentences as keep its padded size (sentences × the longest
    one's words) within this (0 = no limit but ``batch_size``): in length order, the last batch of
    ``batch_size`` pads the longest sentences' tail. Tagging UD English-EWT dev (2,001 sentences, the
    longest 77 words) ran 1.12–1.18× faster with 4,096, 1.10–1.44× in ONNX Runtime
    (``benchmarks/README.md``)."""

    def __post_init__(self) -> None:
        require_at_least("decode.batch_size", self.batch_size, 1)
        require_at_least("decode.batch_tokens", self.batch_tokens, 0)


def _tagger_train_defaults() -> TrainConfig:
    return TrainConfig(epochs=10, batch_size=32, lr=0.002, clip_norm=5.0)


@dataclass
class TaggerConfig(RunConfig):
    task: str = "tagger"
    data: TaggerDataConfig = field(default_factory=TaggerDataConfig)
    model: TaggerModelConfig = field(default_factory=TaggerModelConfig)
    train: TrainConfig = field(default_factory=_tagger_train_defaults)
    decode: TagDecodeConfig = field(default_factory=TagDecodeConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        pretrained.check_config(
            path=self.model.pretrained_embeddings,
            freeze=self.model.freeze_embeddings,
            extend=self.data.extend_vocab_from_embeddings,
            one_hot=False,
            weight_decay=self.train.weight_decay,
        )
        if self.train.label_smoothing > 0 and self.model.crf:
            raise ConfigError(
                "train.label_smoothing needs model.crf=false (a CRF is trained on whole tag "
                "sequences' likelihood, which has no per-token labels to smooth)"
            )
        if self.model.trainable_embed_size > 0 and not self.model.freeze_embeddings:
            raise ConfigError(
                "model.trainable_embed_size needs model.freeze_embeddings: true (without it the "
                "pretrained vectors are trainable themselves)"
            )
        columns = self.data.aux_columns
        if self.data.tag_column in columns:
            raise ConfigError(
                f"data.aux_tag_column: {self.data.tag_column!r} is data.tag_column itself"
            )
        if len(set(columns)) < len(columns):
            raise ConfigError(f"data.aux_tag_column: {columns!r} names a column twice")
