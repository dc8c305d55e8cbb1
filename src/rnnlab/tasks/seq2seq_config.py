"""The translation task's config: data, model, training and decoding sections, each a typed
dataclass whose field docstrings are the reference for ``configs/seq2seq/*.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig, require_at_least
from rnnlab.data.bundled import bundled_path
from rnnlab.decoding.hypothesis import length_penalty_problem
from rnnlab.errors import ConfigError
from rnnlab.tasks import pretrained
from rnnlab.training.scheduled_sampling import (
    Schedule,
    check_schedule,
)


@dataclass
class Seq2SeqDataConfig(DataConfig):
    VOCABULARY_FIELDS: ClassVar[tuple[str, ...]] = (
        "src_lang",
        "tgt_lang",
        "tsv_langs",
        "preprocess",
        "tokenizer",
        "spm_vocab_size",
        "spm_model_type",
        "spm_joint",
    )

    train: str = field(default_factory=lambda: bundled_path("fra-eng/train.tsv.gz"))
    valid: str = field(default_factory=lambda: bundled_path("fra-eng/valid.tsv"))
    test: str = ""
    """Optional test data, evaluated at the end of training."""
    src_lang: str = "en"
    """Source language code (a TSV column name, or the suffix of aligned files)."""
    tgt_lang: str = "fr"
    """Target language code."""
    tsv_langs: list[str] = field(default_factory=lambda: ["en", "fr"])
    """Languages of a TSV's first two columns (Tatoeba fra.txt is English then French)."""
    format: Literal["auto", "tsv", "aligned"] = "auto"
    """tsv: src<TAB>tgt lines; aligned: PREFIX.src_lang + PREFIX.tgt_lang; auto: by what exists."""
    preprocess: Literal["textbook", "punct", "none"] = "textbook"
    """textbook: d2l normalisation (lower-case, split , . ! ?); punct: the same keeping case."""
    num_steps: int = 0
    """> 0: the textbook's fixed-length mode (truncate/pad every sequence to num_steps)."""
    tokenizer: Literal["word", "sentencepiece"] = "word"
    """word: split normalised text on spaces; sentencepiece: subwords trained on the train split."""
    spm_vocab_size: int = 8000
    """Sentencepiece pieces per model (an upper bound on tiny corpora)."""
    spm_model_type: Literal["unigram", "bpe"] = "unigram"
    """Sentencepiece segmentation algorithm."""
    spm_joint: bool = False
    """One sentencepiece model for both languages (spm.model) instead of spm.src/spm.tgt.model."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least("data.spm_vocab_size", self.spm_vocab_size, 1)


@dataclass
class Seq2SeqModelConfig(ModelConfig):
    embed_dropout: float = 0.0
    """Dropout on embeddings and decoder outputs (the textbook uses none)."""
    attention: Literal["none", "bahdanau", "luong_dot", "luong_general"] = "none"
    """Attention over encoder outputs; none = the Cho context decoder."""
    bidirectional_encoder: bool = False
    """Read the source in both directions; a bridge maps the 2·L final states to the decoder's L."""
    input_feed: bool = True
    """Luong attention: feed the attentional state into the next step (slower: a per-step loop)."""
    src_embeddings: str = ""
    """Initialise source embeddings from this GloVe / word2vec / fastText file (.gz ok)."""
    tgt_embeddings: str = ""
    """Initialise target embeddings from this vector file."""
    freeze_src_embeddings: bool = False
    """Keep the source rows that got a pretrained vector fixed while training."""
    freeze_tgt_embeddings: bool = False
    """Keep the target rows that got a pretrained vector fixed while training."""
    tie_weights: bool = False
    """The decoder's output projection uses its target embedding matrix (Press & Wolf 2017): one
    V×H matrix fewer to learn; needs embed_size == hidden_size."""


@dataclass
class Seq2SeqTrainConfig(TrainConfig):
    scheduled_sampling: Schedule = "none"
    """Decay of the teacher-forcing probability ε (Bengio et al. 2015); none = teacher forcing."""
    ss_k: float = 0.0
    """The schedule's k: linear: steps until ε reaches 0; exponential: 0 < k < 1; inverse_sigmoid: k ≥ 1."""
    ss_min_teacher_forcing: float = 0.0
    """ε never falls below this."""
    ss_sample: bool = False
    """Feed a token sampled from the model's softmax instead of its argmax."""


@dataclass
class DecodeConfig:
    max_len: int = 50
    """Maximum number of output tokens per sentence."""
    beam_size: int = 1
    """1 = greedy search."""
    length_penalty: float = 0.0
    """GNMT length-penalty alpha for beam search (0 = none)."""
    batch_size: int = 512
    """Sentences decoded together; large batches amortise the per-step overhead of greedy search.

    Beam search decodes fewer sentences at a time (``rnnlab.decoding.beam.beam_batch_size``): over an
    attention model ``batch_size // beam_size``, so that its B·K decoder rows, and the (B·K, S, A)
    attention energies they make, stay the size of greedy search's batch (on the Multi30k recipe beam
    5 ran 1.09× faster this way than with ``batch_size`` sentences at 1 and 2 threads, and 1.47× and
    1.30× in the exported translator), and never more than keep a step's scores within 16 MiB."""
    batch_tokens: int = 8192
    """A batch also holds at most as many sentences as keep its padded source (sentences × the
    longest one's tokens) within this (0 = no limit but ``batch_size``). Sentences are batched in
    length order, so the last batch of ``batch_size`` pads the longest sentences' tail: on the
    Multi30k test set, 512 at a time pad 17,157 source tokens to 30,640, and an attention decoder
    reads every padded position at every step. With 8,192, greedy search over the Multi30k attention
    recipe ran 1.21–1.35× faster in bf16, 0.96–1.16× in float32 and 1.18–1.25× in ONNX Runtime at 1
    and 2 threads (``benchmarks/README.md``). Beam search, whose batches are ``batch_size //
    beam_size`` sentences with attention, rarely reaches it."""
    beam_stop: Literal["exact", "heuristic"] = "exact"
    """When beam search lets a sentence go (``rnnlab.decoding.beam``): ``exact`` once no live beam
    could still win, ``heuristic`` once none would win by ending at the next step (faster with a
    length penalty; the same rule as ``exact`` when ``length_penalty`` is 0)."""
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    """bf16: decode under bfloat16 autocast (scores and search stay float32); auto: bf16 where the
    device runs bfloat16 natively and faster than float32, else fp32 (as ``train.precision``)."""

    def __post_init__(self) -> None:
        require_at_least("decode.batch_size", self.batch_size, 1)
        require_at_least("decode.batch_tokens", self.batch_tokens, 0)
        require_at_least("decode.max_len", self.max_len, 1)
        require_at_least("decode.beam_size", self.beam_size, 1)
        problem = length_penalty_problem(self.length_penalty)
        if problem is not None:
            raise ConfigError(f"decode.length_penalty: {problem}")


@dataclass
class Seq2SeqConfig(RunConfig):
    task: str = "seq2seq"
    data: Seq2SeqDataConfig = field(default_factory=Seq2SeqDataConfig)
    model: Seq2SeqModelConfig = field(default_factory=Seq2SeqModelConfig)
    train: Seq2SeqTrainConfig = field(default_factory=Seq2SeqTrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        train, model = self.train, self.model
        if train.scheduled_sampling != "none":
            check_schedule(train.scheduled_sampling, train.ss_k, train.ss_min_teacher_forcing)
        for side in ("src", "tgt"):
            pretrained.check_config(
                path=getattr(model, f"{side}_embeddings"),
                freeze=getattr(model, f"freeze_{side}_embeddings"),
                extend=False,
                one_hot=False,
                weight_decay=train.weight_decay,
            )
        if model.tie_weights and model.embed_size != model.hidden_size:
            raise ConfigError(
                "model.tie_weights needs model.embed_size == model.hidden_size "
                f"(got {model.embed_size} and {model.hidden_size})"
            )
        if model.tie_weights and model.freeze_tgt_embeddings:
            raise ConfigError(
                "model.tie_weights with model.freeze_tgt_embeddings would freeze the output "
                "projection's rows too; choose one"
            )

    def check_new_run(self) -> None:
        data = self.data
        if data.src_lang == data.tgt_lang:  # one column would be read as both sides: a copy model
            raise ConfigError(
                f"data.src_lang and data.tgt_lang are both {data.src_lang!r}; name the target "
                "language with data.tgt_lang"
            )
        if len(set(data.tsv_langs)) != len(data.tsv_langs):
            raise ConfigError(f"data.tsv_langs names a language twice: {data.tsv_langs}")
