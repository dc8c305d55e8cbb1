"""Part-of-speech (or any per-token) tagging: data, batches, loss, validation, tagging and metrics.

Training batches are length-bucketed (``bucket_batches``); tagging sorts sentences by length
(``sorted_batches``) and puts every result back at its input position, so a user sees outputs in
input order whatever the batching. Empty sentences are never sent to the model (a packed sequence
cannot have length 0); they get no tags.

Run directory files: ``vocab.words.json`` (word embeddings' vocabulary, ``data.min_freq``),
``vocab.chars.json`` (characters of the training words), ``tags.json`` (the tag set),
``train_words.json`` (every training word form, to report accuracy on unseen words) and, with
``data.aux_tag_column``, the label set of each auxiliary output: ``aux_tags.json`` for the first
column, ``aux_tags_<column>.json`` for each further one (``data.aux_outputs``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from rnnlab.atomic import atomic_write_text
from rnnlab.data.batching import bucket_batches, pad_batch, sorted_batches
from rnnlab.data.embeddings import lookup_id
from rnnlab.data.tagged import TaggedSentence, iter_tagged, read_tagged
from rnnlab.data.tagset import TagSet
from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, DataError, RnnlabError
from rnnlab.metrics.tagging import TaggingScores
from rnnlab.models.char_encoder import CharCNNEncoder, CharRNNEncoder
from rnnlab.models.tagger import RNNTagger
from rnnlab.nn.adversarial import adversarial_perturbation
from rnnlab.nn.precision import full_precision
from rnnlab.tasks import pretrained
from rnnlab.tasks.base import Batch, LossOutput, Task
from rnnlab.tasks.tagger_config import (
    TaggerConfig,
)


@dataclass
class TaggerBatch(Batch):
    words: Tensor
    """(B, T) word ids."""
    lengths: Tensor
    """(B,) sentence lengths, all ≥ 1."""
    chars: Tensor
    """(U, C) character ids of the batch's U distinct words."""
    char_lengths: Tensor
    """(U,)"""
    word_types: Tensor
    """(B, T) row of ``chars`` spelling each token."""
    tags: Tensor | None = None
    """(B, T) gold tag ids (training only)."""
    freq_bins: Tensor | None = None
    """(B, T) frequency bin of each token (training with ``model.freq_bin_weight`` only)."""
    aux_tags: dict[str, Tensor] = field(default_factory=dict)
    """Auxiliary output name → (B, T) label ids of its column (training with
    ``data.aux_tag_column`` only)."""
    word_classes: Tensor | None = None
    """(B, T) each token's class for the language-modelling objective (training with
    ``model.lm_weight`` only)."""

    def shard_rows(self, rows: slice) -> TaggerBatch:
        """The sentences ``rows`` of the batch (a data-parallel rank's share).

        ``chars`` is indexed by word type, not by sentence: the share keeps the spellings its own
        tokens use, renumbered, so ``word_types`` still points at each token's word.
        """
        word_types = self.word_types[rows]
        used, renumbered = torch.unique(word_types, return_inverse=True)

        def take(rows_of: Tensor | None) -> Tensor | None:
            return None if rows_of is None else rows_of[rows]

        return TaggerBatch(
            words=self.words[rows],
            lengths=self.lengths[rows],
            chars=self.chars[used],
            char_lengths=self.char_lengths[used],
            word_types=renumbered,
            tags=take(self.tags),
            freq_bins=take(self.freq_bins),
            aux_tags={name: ids[rows] for name, ids in self.aux_tags.items()},
            word_classes=take(self.word_classes),
        )


@dataclass
class TaggedData:
    words: list[list[str]]
    tags: list[list[str]]
    tag_ids: list[list[int]]
    freq_bins: list[list[int]] | None = None
    """Each token's frequency bin (training data, with ``model.freq_bin_weight`` only)."""
    aux_tag_ids: dict[str, list[list[int]]] = field(default_factory=dict)
    """Auxiliary output name → label ids of its column (training data, with
    ``data.aux_tag_column`` only)."""
    word_classes: list[list[int]] | None = None
    """Each token's class for the language-modelling objective (training data, with
    ``model.lm_weight`` only)."""


FREQ_BINS = 16
"""Frequency bins of the auxiliary output: int(ln count), the last bin holding every count ≥ e^15."""


def tag_in_batches(
    sentences: list[list[str]],
    decode: Callable[[list[list[str]]], Tensor],
    batch_size: int,
    *,
    batch_tokens: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """Tag ids per sentence, in input order, from ``decode`` of batches of similar length (at most
    ``batch_size`` sentences and, above 0, ``batch_tokens`` padded words each).

    ``decode`` maps non-empty sentences to tag ids (B, T), T ≥ every length; an empty sentence gets
    no tags and never reaches it. ``progress`` is called with each finished batch's size.
    """
    results: list[list[int]] = [[] for _ in sentences]
    keep = [i for i, s in enumerate(sentences) if s]
    lengths = [len(sentences[i]) for i in keep]
    for ids in sorted_batches(lengths, max(batch_size, 1), max_tokens=batch_tokens):
        rows = [keep[j] for j in ids]
        predicted = decode([sentences[i] for i in rows]).tolist()
        for i, tags in zip(rows, predicted, strict=True):
            results[i] = tags[: len(sentences[i])]
        if progress is not None:
            progress(len(rows))
    return results


def frequency_bins(sentences: list[list[str]]) -> list[list[int]]:
    """Each token's bin, min(int(ln c), FREQ_BINS − 1), c its count among ``sentences``."""
    counts = Counter(w for s in sentences for w in s)
    bins = {w: min(int(math.log(c)), FREQ_BINS - 1) for w, c in counts.items()}
    return [[bins[w] for w in s] for s in sentences]


def word_classes(sentences: list[list[str]], size: int) -> list[list[int]]:
    """Each token's class: its rank among the ``size`` most frequent words of ``sentences`` (ties in
    order of first occurrence), or ``size`` for every other word."""
    counts = Counter(w for s in sentences for w in s)
    rank = {w: i for i, (w, _) in enumerate(counts.most_common(size))}
    return [[rank.get(w, size) for w in s] for s in sentences]


def _fingerprint(items: list[str]) -> str:
    return hashlib.sha1("\n".join(items).encode("utf-8")).hexdigest()[:16]


class TaggerTask(Task):
    name = "tagger"
    config_class = TaggerConfig
    primary_metric = "valid_accuracy"
    higher_is_better = True

    def __init__(self, config: TaggerConfig, run_dir: Path) -> None:
        super().__init__(config, run_dir)
        self.word_vocab: Vocab | None = None
        self.char_vocab: Vocab | None = None
        self.tagset: TagSet | None = None
        self.aux_tagsets: dict[str, TagSet] = {}
        """Auxiliary output name (``data.aux_outputs``) → the labels of its column."""
        self.train_words: frozenset[str] = frozenset()
        self.train_data: TaggedData | None = None
        self.valid_data: TaggedData | None = None
        self.pretrained: dict[str, pretrained.PretrainedMatch] = {}

    # -- data -----------------------------------------------------------------------------------
    def read_sentences(self, path: str) -> list[TaggedSentence]:
        data = self.config.data
        return read_tagged(path, fmt=data.format, tag_column=data.tag_column)

    def read_scored_sentences(self, path: str) -> list[TaggedSentence]:
        """The gold sentences of an evaluation; none is the user's mistake, not accuracy 0."""
        sentences = self.read_sentences(path)
        if not any(sentence.words for sentence in sentences):
            raise DataError(path, "no tagged sentences to score")
        return sentences

    def _train_sentences(self) -> list[TaggedSentence]:
        data = self.config.data
        streamed = iter_tagged(
            data.train,
            fmt=data.format,
            tag_column=data.tag_column,
            aux_columns=data.aux_columns,
        )
        sentences = list(islice(streamed, data.max_examples) if data.max_examples > 0 else streamed)
        if not sentences:
            raise DataError(data.train, "no tagged sentences")
        if data.max_len > 0:
            n = data.max_len
            sentences = [
                TaggedSentence(
                    s.words[i : i + n],
                    s.tags[i : i + n],
                    s.line,
                    {column: labels[i : i + n] for column, labels in s.aux_tags.items()},
                )
                for s in sentences
                for i in range(0, len(s.words), n)
            ]
        return sentences

    def normalise(self, word: str) -> str:
        return word.lower() if self.config.data.lowercase else word

    def prepare_training(self) -> None:
        sentences = self._train_sentences()
        counts = Counter(self.normalise(w) for s in sentences for w in s.words)
        self.word_vocab = Vocab.build([counts.elements()], min_freq=self.config.data.min_freq)
        self.word_vocab, self.pretrained = pretrained.match_word_embeddings(
            self.config,
            self.word_vocab,
            counts,
            self.run_dir,
            side="word",
            normalise=self.normalise,
        )
        self.char_vocab = Vocab.build((w for s in sentences for w in s.words), min_freq=1)
        self.tagset = TagSet.build(s.tags for s in sentences)
        for column, name in self.config.data.aux_outputs.items():
            self.aux_tagsets[name] = TagSet.build(s.aux_tags[column] for s in sentences)
            self.aux_tagsets[name].save(self.run_dir / f"{name}.json")
        self.train_words = frozenset(w for s in sentences for w in s.words)
        self.word_vocab.save(self.run_dir / "vocab.words.json")
        self.char_vocab.save(self.run_dir / "vocab.chars.json")
        self.tagset.save(self.run_dir / "tags.json")
        atomic_write_text(
            self.run_dir / "train_words.json",
            json.dumps(sorted(self.train_words), ensure_ascii=False),
        )
        self._encode_training(sentences)

    def load_artifacts(self) -> None:
        self.word_vocab = Vocab.load(self.run_dir / "vocab.words.json")
        self.char_vocab = Vocab.load(self.run_dir / "vocab.chars.json")
        self.tagset = TagSet.load(self.run_dir / "tags.json")
        for name in self.config.data.aux_outputs.values():
            self.aux_tagsets[name] = TagSet.load(self.run_dir / f"{name}.json")
        path = self.run_dir / "train_words.json"
        try:
            self.train_words = frozenset(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise DataError(path, "training word list is missing") from None
        except (ValueError, TypeError) as exc:
            raise DataError(path, f"not a valid word list ({exc})") from None

    def read_training_data(self) -> None:
        self._encode_training(self._train_sentences())

    def setup_notes(self) -> list[str]:
        return pretrained.coverage_notes(self.pretrained)

    def encode_tagged(self, sentences: list[TaggedSentence]) -> TaggedData:
        assert self.tagset is not None
        return TaggedData(
            words=[s.words for s in sentences],
            tags=[s.tags for s in sentences],
            tag_ids=[self.tagset.encode(s.tags) for s in sentences],
        )

    def _encode_training(self, sentences: list[TaggedSentence]) -> None:
        self.train_data = self.encode_tagged(sentences)
        if self.config.model.freq_bin_weight > 0:
            self.train_data.freq_bins = frequency_bins(
                [[self.normalise(w) for w in s.words] for s in sentences]
            )
        if self.config.model.lm_weight > 0:
            self.train_data.word_classes = word_classes(
                [[self.normalise(w) for w in s.words] for s in sentences],
                self.config.model.lm_vocab_size,
            )
        for column, name in self.config.data.aux_outputs.items():
            self.train_data.aux_tag_ids[name] = [
                self.aux_tagsets[name].encode(s.aux_tags[column]) for s in sentences
            ]
        if self.config.data.valid:
            self.valid_data = self.encode_tagged(self.read_sentences(self.config.data.valid))

    def build_model(self) -> RNNTagger:
        assert self.word_vocab is not None and self.char_vocab is not None
        assert self.tagset is not None
        cfg = self.config.model
        char_encoder: CharRNNEncoder | CharCNNEncoder | None = None
        if cfg.char_encoder == "rnn":
            char_encoder = CharRNNEncoder(
                num_chars=len(self.char_vocab),
                embed_size=cfg.char_embed_size,
                hidden_size=cfg.char_hidden_size,
                cell=cfg.cell,
                rnn_impl=cfg.rnn_impl,
                padding_idx=self.char_vocab.pad_id,
            )
        elif cfg.char_encoder == "cnn":
            if cfg.char_kernel_size % 2 != 1:
                raise ConfigError(f"model.char_kernel_size: {cfg.char_kernel_size} is not odd")
            char_encoder = CharCNNEncoder(
                num_chars=len(self.char_vocab),
                embed_size=cfg.char_embed_size,
                hidden_size=cfg.char_hidden_size,
                kernel_size=cfg.char_kernel_size,
                padding_idx=self.char_vocab.pad_id,
            )
        tagger = RNNTagger(
            vocab_size=len(self.word_vocab),
            num_tags=len(self.tagset),
            embed_size=cfg.embed_size,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout,
            cell=cfg.cell,
            rnn_impl=cfg.rnn_impl,
            bidirectional=cfg.bidirectional,
            char_encoder=char_encoder,
            crf=cfg.crf,
            word_dropout=cfg.word_dropout,
            variational_dropout=cfg.variational_dropout,
            trainable_embed_size=cfg.trainable_embed_size,
            known_words=self._known_words() if cfg.trainable_embed_size > 0 else None,
            auxiliary=self._auxiliary_outputs(),
            lm_classes=cfg.lm_vocab_size + 1 if cfg.lm_weight > 0 else 0,
            padding_idx=self.word_vocab.pad_id,
            unk_idx=self.word_vocab.unk_id,
        )
        pretrained.install_word_embeddings(
            tagger.embedding, self.pretrained, cfg, side="word", pad_id=self.word_vocab.pad_id
        )
        return tagger

    def seen_forms(self) -> frozenset[str]:
        """The training words as the model reads them (folded by ``data.lowercase``): a word is
        unseen, for OOV accuracy and word dropout alike, when its folded form is not here."""
        return frozenset(map(self.normalise, self.train_words))

    def _known_words(self) -> Tensor:
        """(V,) True for the vocabulary's words seen in training (as ``data.lowercase`` folds them)."""
        assert self.word_vocab is not None
        seen = self.seen_forms()
        return torch.tensor([w in seen for w in self.word_vocab.itos], dtype=torch.bool)

    def _auxiliary_outputs(self) -> dict[str, int]:
        """Name → number of classes of each auxiliary output the config asks for."""
        outputs = {}
        if self.config.model.freq_bin_weight > 0:
            outputs["freq_bin"] = FREQ_BINS
        outputs.update({name: len(labels) for name, labels in self.aux_tagsets.items()})
        return outputs

    def model_meta(self) -> dict[str, Any]:
        assert self.word_vocab is not None and self.char_vocab is not None
        assert self.tagset is not None
        return {
            "task": self.name,
            "word_vocab": _fingerprint(self.word_vocab.itos),
            "char_vocab": _fingerprint(self.char_vocab.itos),
            "tags": _fingerprint(self.tagset.itos),
            **{name: _fingerprint(labels.itos) for name, labels in self.aux_tagsets.items()},
        }

    # -- batches --------------------------------------------------------------------------------
    def spell(self, word: str) -> list[int]:
        """Character ids of ``word``, at most ``data.max_word_chars`` (first and last halves)."""
        assert self.char_vocab is not None
        limit = self.config.data.max_word_chars
        if 0 < limit < len(word):
            word = word[: limit // 2] + word[len(word) - (limit - limit // 2) :]
        return self.char_vocab.encode(word) or [self.char_vocab.unk_id]

    def encode_words(self, words: list[str]) -> list[int]:
        """Word ids; with a vocabulary extended from vectors, an unknown word is also looked up
        lower-cased and digit-normalised, as its vector would have been."""
        assert self.word_vocab is not None
        forms = [self.normalise(w) for w in words]
        if not self.config.data.extend_vocab_from_embeddings:
            return self.word_vocab.encode_text(forms)
        unk, stoi = self.word_vocab.unk_id, self.word_vocab.text_stoi
        return [lookup_id(stoi, w, unk) for w in forms]

    def make_batch(
        self,
        sentences: list[list[str]],
        tag_ids: list[list[int]] | None = None,
        freq_bins: list[list[int]] | None = None,
        aux_tag_ids: dict[str, list[list[int]]] | None = None,
        classes: list[list[int]] | None = None,
    ) -> TaggerBatch:
        """Pad a batch of non-empty sentences; padded positions hold id 0 and are masked by length."""
        assert self.word_vocab is not None and self.char_vocab is not None
        words, lengths = pad_batch(
            [self.encode_words(s) for s in sentences],
            self.word_vocab.pad_id,
        )
        rows: dict[str, int] = {}
        types = [[rows.setdefault(w, len(rows)) for w in s] for s in sentences]
        word_types, _ = pad_batch(types, 0)
        chars, char_lengths = pad_batch([self.spell(w) for w in rows], self.char_vocab.pad_id)
        tags = pad_batch(tag_ids, 0)[0] if tag_ids is not None else None
        bins = pad_batch(freq_bins, 0)[0] if freq_bins is not None else None
        aux = {name: pad_batch(ids, 0)[0] for name, ids in (aux_tag_ids or {}).items()}
        lm = pad_batch(classes, 0)[0] if classes is not None else None
        return TaggerBatch(words, lengths, chars, char_lengths, word_types, tags, bins, aux, lm)

    def train_batches(self, epoch: int) -> list[TaggerBatch]:
        assert self.train_data is not None
        data = self.train_data
        order = bucket_batches(
            [len(s) for s in data.words],
            self.config.train.batch_size,
            bucket=self.config.train.bucket,
            seed=self.config.seed * 1000 + epoch,
        )

        def pick(rows: list[list[int]] | None, ids: list[int]) -> list[list[int]] | None:
            return [rows[i] for i in ids] if rows is not None else None

        return [
            self.make_batch(
                [data.words[i] for i in ids],
                [data.tag_ids[i] for i in ids],
                pick(data.freq_bins, ids),
                {name: [rows[i] for i in ids] for name, rows in data.aux_tag_ids.items()},
                pick(data.word_classes, ids),
            )
            for ids in order
        ]

    # -- loss -----------------------------------------------------------------------------------
    def _emissions(self, model: nn.Module, batch: TaggerBatch) -> Tensor:
        return model(batch.words, batch.lengths, batch.chars, batch.char_lengths, batch.word_types)

    def batch_loss(self, model: nn.Module, batch: TaggerBatch, carry: Any = None) -> LossOutput:
        model = cast(RNNTagger, model)  # the task's own model: its methods, not nn.Module's
        inputs = model.embed(batch.words, batch.chars, batch.char_lengths, batch.word_types)
        epsilon = self.config.model.adversarial_epsilon
        adversarial = epsilon > 0 and torch.is_grad_enabled()
        if adversarial and not inputs.requires_grad:  # frozen word vectors, no character encoder
            inputs = inputs.detach().requires_grad_()
        loss, lower = self._loss_from_inputs(model, inputs, batch)
        if adversarial:
            # The graph stays for the trainer's backward pass through the clean loss.
            (gradient,) = torch.autograd.grad(loss, inputs, retain_graph=True)
            perturbation = adversarial_perturbation(gradient, batch.lengths, epsilon)
            loss = loss + self._loss_from_inputs(model, inputs + perturbation, batch)[0]
        if batch.word_classes is not None:
            # On the clean pass only: the perturbation targets the tags, and a second language-
            # modelling loss on the perturbed pass would double its cost.
            lm_loss = model.lm_loss_sum(lower, batch.word_classes, batch.lengths)
            loss = loss + self.config.model.lm_weight * lm_loss
        return LossOutput(loss, int(batch.lengths.sum()))

    def _loss_from_inputs(
        self, model: RNNTagger, inputs: Tensor, batch: TaggerBatch
    ) -> tuple[Tensor, Tensor]:
        """The summed tag loss (and weighted auxiliary losses) given the token representations, and
        the first recurrent layer's outputs (``RNNTagger.encode_layers``)."""
        assert batch.tags is not None
        features, lower = model.encode_layers(inputs, batch.lengths)
        # (B, T, K); the loss (a CRF's sums of scores especially) in float32 even under autocast.
        emissions = full_precision(model.output(features))
        smoothing = self.config.train.label_smoothing if model.training else 0.0
        loss = model.loss_sum(emissions, batch.tags, batch.lengths, label_smoothing=smoothing)
        weight = self.config.model.aux_tag_weight
        auxiliary = [(name, targets, weight) for name, targets in batch.aux_tags.items()]
        if batch.freq_bins is not None:
            auxiliary.append(("freq_bin", batch.freq_bins, self.config.model.freq_bin_weight))
        for name, targets, weight in auxiliary:
            loss = loss + weight * model.auxiliary_loss_sum(name, features, targets, batch.lengths)
        return loss, lower

    # -- tagging --------------------------------------------------------------------------------
    @torch.no_grad()
    def tag_ids(
        self,
        model: nn.Module,
        sentences: list[list[str]],
        device: torch.device,
        *,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[list[int]]:
        """Tag ids per sentence, in input order; an empty sentence gets none.

        ``progress`` is called with the number of sentences of each finished batch.
        """
        model = cast(RNNTagger, model)  # the task's own model: its methods, not nn.Module's
        model.eval()

        def decode(batch_sentences: list[list[str]]) -> Tensor:
            emissions, lengths = self.emissions(model, batch_sentences, device)
            return model.decode(emissions, lengths)

        size = batch_size or self.config.decode.batch_size
        tokens = self.config.decode.batch_tokens
        return tag_in_batches(sentences, decode, size, batch_tokens=tokens, progress=progress)

    @torch.no_grad()
    def emissions(
        self, model: nn.Module, sentences: list[list[str]], device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """Emission scores (B, T, K) in float32 and lengths (B,) of non-empty ``sentences``."""
        batch = self.make_batch(sentences).to(device)
        return full_precision(self._emissions(model, batch)), batch.lengths

    def tag(
        self,
        model: nn.Module,
        sentences: list[list[str]],
        device: torch.device,
        *,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[list[str]]:
        """Tags per sentence (strings), in input order."""
        assert self.tagset is not None
        return [
            self.tagset.decode(ids)
            for ids in self.tag_ids(
                model, sentences, device, batch_size=batch_size, progress=progress
            )
        ]

    # -- metrics --------------------------------------------------------------------------------
    def score(self, model: nn.Module, data: TaggedData, device: torch.device) -> TaggingScores:
        return self.score_tags(data, self.tag(model, data.words, device))

    def score_tags(self, data: TaggedData, tags: list[list[str]]) -> TaggingScores:
        """Accuracy, OOV accuracy and per-tag scores of predicted ``tags`` against ``data``."""
        assert self.tagset is not None
        known = frozenset(self.tagset.itos)
        seen = self.seen_forms()
        scores = TaggingScores()
        for words, gold, predicted in zip(data.words, data.tags, tags, strict=True):
            oov = [self.normalise(w) not in seen for w in words]
            scores.add(gold, predicted, oov=oov, known_tags=known)
        return scores

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        assert self.valid_data is not None
        scores = self.score(model, self.valid_data, device)
        return {"valid_accuracy": scores.accuracy, "valid_oov_accuracy": scores.oov_accuracy}

    def evaluate(
        self,
        model: nn.Module,
        path: str,
        device: torch.device,
        *,
        per_tag: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        if options:
            raise RnnlabError(f"evaluate: {', '.join(sorted(options))} does not apply to a tagger")
        data = self.encode_tagged(self.read_scored_sentences(path))
        return self.score(model, data, device).summary(per_tag=per_tag)
