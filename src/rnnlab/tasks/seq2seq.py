"""Translation with an RNN encoder–decoder: data, batches, loss, validation and decoding.

Sequences on both sides are truncated to ``data.max_len`` tokens and then get ``<eos>``; the decoder
input is ``<bos>`` followed by the target without its last token (teacher forcing).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from rnnlab.data.batching import bucket_batches, pad_batch, sorted_batches, truncate_pad
from rnnlab.data.id_sequences import IdSequences
from rnnlab.data.parallel import SentencePair, iter_parallel
from rnnlab.data.text import preprocess_textbook
from rnnlab.data.tokenizers import SentencePieceTokenizer, Tokenizer, WordTokenizer
from rnnlab.data.vocab import EOS, FirstSeenIds, Vocab
from rnnlab.decoding.beam import beam_batch_size, beam_search_hypotheses
from rnnlab.decoding.greedy import greedy_hypotheses, greedy_search
from rnnlab.decoding.hypothesis import Hypothesis, unscored
from rnnlab.errors import RnnlabError
from rnnlab.metrics.bleu import corpus_bleu, corpus_bleu_with_signature, mean_d2l_bleu
from rnnlab.metrics.perplexity import perplexity
from rnnlab.models.seq2seq import EncoderDecoder, build_seq2seq
from rnnlab.nn.precision import autocast, project_padded_rows
from rnnlab.tasks import pretrained
from rnnlab.tasks.base import Batch, LossOutput, Task
from rnnlab.tasks.seq2seq_config import (
    Seq2SeqConfig,
)
from rnnlab.training.losses import masked_token_nll, select_valid
from rnnlab.training.scheduled_sampling import (
    teacher_forcing_probability,
)


@dataclass
class Seq2SeqBatch(Batch):
    src: Tensor
    """(B, S) source ids."""
    src_lengths: Tensor
    """(B,)"""
    tgt_in: Tensor
    """(B, T) ``<bos>`` + target."""
    tgt_out: Tensor
    """(B, T) target + ``<eos>``."""
    tgt_lengths: Tensor
    """(B,)"""


@dataclass
class AttentionMatrix:
    src_tokens: list[str]
    """The source as the encoder saw it (after the vocabulary: ``<unk>`` for unknown words)."""
    out_tokens: list[str]
    """The output tokens, ending in ``<eos>`` (whose row is the attention that produced it) when the
    search ended with it; a translation cut at ``max_len`` has no such row."""
    weights: Tensor
    """(T_out, S) attention weights; each row sums to 1."""


@dataclass
class EncodedPairs:
    src: IdSequences
    tgt: IdSequences
    references: list[str]
    """Targets as text, normalised like the model's output, for BLEU."""


def vocab_fingerprint(vocab: Vocab) -> str:
    return hashlib.sha1("\n".join(vocab.itos).encode("utf-8")).hexdigest()[:16]


class Seq2SeqTask(Task):
    name = "seq2seq"
    config_class = Seq2SeqConfig
    primary_metric = "valid_bleu"
    higher_is_better = True

    def __init__(self, config: Seq2SeqConfig, run_dir: Path) -> None:
        super().__init__(config, run_dir)
        self.src_tokenizer: Tokenizer = WordTokenizer(config.data.preprocess)
        self.tgt_tokenizer: Tokenizer = WordTokenizer(config.data.preprocess)
        self.src_vocab: Vocab | None = None
        self.tgt_vocab: Vocab | None = None
        self.train_data: EncodedPairs | None = None
        self.valid_data: EncodedPairs | None = None
        self.pretrained: dict[str, pretrained.PretrainedMatch] = {}
        self.teacher_forcing = 1.0
        """ε of the current training step (scheduled sampling)."""

    # -- data -----------------------------------------------------------------------------------
    def read_pairs(self, path: str) -> Iterator[SentencePair]:
        """The pairs of a data file, streamed: a training corpus is never held as text."""
        data = self.config.data
        return iter_parallel(
            path,
            src_lang=data.src_lang,
            tgt_lang=data.tgt_lang,
            tsv_langs=data.tsv_langs,
            fmt=data.format,
        )

    def _truncate(self, tokens: list[str]) -> list[str]:
        max_len = self.config.data.max_len
        return tokens[:max_len] if max_len > 0 else tokens

    def encode_source(self, text: str) -> list[int]:
        """Source ids ending in ``<eos>``; in the textbook's fixed-length mode (``data.num_steps``)
        cut to ``num_steps`` ids as training batches are (and the textbook's ``predict_seq2seq``),
        so translation never shows the encoder more of a sentence than training did."""
        assert self.src_vocab is not None
        tokens = self._truncate(self.src_tokenizer.encode(text))
        ids = self.src_vocab.encode_text(tokens) + [self.src_vocab.eos_id]
        num_steps = self.config.data.num_steps
        return ids[:num_steps] if num_steps > 0 else ids

    def encode_pairs(
        self, pairs: Iterable[SentencePair], *, references: bool = True
    ) -> EncodedPairs:
        """Token ids of both sides; ``references`` (target text for BLEU) only where it is scored."""
        assert self.tgt_vocab is not None
        src, tgt, refs = IdSequences(), IdSequences(), []
        for pair in pairs:
            src.append(self.encode_source(pair.src))
            tgt_tokens = self.tgt_tokenizer.encode(pair.tgt)
            tgt.append(
                self.tgt_vocab.encode_text(self._truncate(tgt_tokens)) + [self.tgt_vocab.eos_id]
            )
            if references:
                refs.append(self.tgt_tokenizer.decode(tgt_tokens))
        return EncodedPairs(src, tgt, refs)

    def _train_pairs(self) -> Iterator[SentencePair]:
        """The training pairs (the first ``data.max_examples``), streamed; call again to re-read."""
        pairs = self.read_pairs(self.config.data.train)
        limit = self.config.data.max_examples
        return islice(pairs, limit) if limit > 0 else pairs

    # -- subword models ----------------------------------------------------------------------
    def _spm_paths(self) -> tuple[Path, Path]:
        if self.config.data.spm_joint:
            return self.run_dir / "spm.model", self.run_dir / "spm.model"
        return self.run_dir / "spm.src.model", self.run_dir / "spm.tgt.model"

    def _train_sentencepiece(self) -> None:
        """Train the subword model(s) on the training split only and keep them in the run dir."""
        data = self.config.data
        src_path, tgt_path = self._spm_paths()
        options = dict(
            vocab_size=data.spm_vocab_size,
            model_type=data.spm_model_type,
            preprocess=data.preprocess,
            source=data.train,
        )
        if data.spm_joint:
            texts = chain(
                (p.src for p in self._train_pairs()), (p.tgt for p in self._train_pairs())
            )
            self.src_tokenizer = SentencePieceTokenizer.train(texts, src_path, **options)
            self.tgt_tokenizer = self.src_tokenizer
        else:
            self.src_tokenizer = SentencePieceTokenizer.train(
                (p.src for p in self._train_pairs()), src_path, **options
            )
            self.tgt_tokenizer = SentencePieceTokenizer.train(
                (p.tgt for p in self._train_pairs()), tgt_path, **options
            )

    def _load_sentencepiece(self) -> None:
        src_path, tgt_path = self._spm_paths()
        preprocess = self.config.data.preprocess
        self.src_tokenizer = SentencePieceTokenizer(src_path, preprocess)
        self.tgt_tokenizer = (
            self.src_tokenizer
            if self.config.data.spm_joint
            else SentencePieceTokenizer(tgt_path, preprocess)
        )

    def prepare_training(self) -> None:
        """Subword models, vocabularies, encoded data: streaming passes over the training file (one
        per subword model, then one that tokenises, counts and keeps ids), so the corpus is never
        held as text (only as token ids)."""
        min_freq = self.config.data.min_freq
        if self.config.data.tokenizer == "sentencepiece":
            self._train_sentencepiece()
            min_freq = 1  # every piece was chosen from the training data; keep them all
        src_seen, tgt_seen = FirstSeenIds(), FirstSeenIds()
        src_ids, tgt_ids = IdSequences(), IdSequences()
        for pair in self._train_pairs():
            src_ids.append(src_seen.encode(self._truncate(self.src_tokenizer.encode(pair.src))))
            tgt_ids.append(tgt_seen.encode(self._truncate(self.tgt_tokenizer.encode(pair.tgt))))
        counts = {"src": src_seen.counts(), "tgt": tgt_seen.counts()}
        self.src_vocab = Vocab.from_counts(counts["src"], min_freq=min_freq)
        self.tgt_vocab = Vocab.from_counts(counts["tgt"], min_freq=min_freq)
        self.src_vocab.save(self.run_dir / "vocab.src.json")
        self.tgt_vocab.save(self.run_dir / "vocab.tgt.json")
        self._match_pretrained(counts)
        self.train_data = EncodedPairs(
            src_seen.renumber(src_ids, self.src_vocab, end=self.src_vocab.eos_id),
            tgt_seen.renumber(tgt_ids, self.tgt_vocab, end=self.tgt_vocab.eos_id),
            [],
        )
        self._encode_validation()

    def _match_pretrained(self, counts: dict[str, Counter[str]]) -> None:
        """Pretrained vectors for each side that names a file; ``counts`` are its training tokens."""
        model = self.config.model
        sides = {
            "src": (model.src_embeddings, self.src_vocab),
            "tgt": (model.tgt_embeddings, self.tgt_vocab),
        }
        for side, (path, vocab) in sides.items():
            if not path:
                continue
            assert vocab is not None
            _, self.pretrained[side] = pretrained.match(
                path, vocab, embed_size=model.embed_size, token_counts=counts[side]
            )
        if self.pretrained:
            pretrained.save_coverage(self.run_dir, self.pretrained)

    def setup_notes(self) -> list[str]:
        return pretrained.coverage_notes(self.pretrained)

    def load_artifacts(self) -> None:
        if self.config.data.tokenizer == "sentencepiece":
            self._load_sentencepiece()
        self.src_vocab = Vocab.load(self.run_dir / "vocab.src.json")
        self.tgt_vocab = Vocab.load(self.run_dir / "vocab.tgt.json")

    def read_training_data(self) -> None:
        self.train_data = self.encode_pairs(self._train_pairs(), references=False)
        self._encode_validation()

    def _encode_validation(self) -> None:
        if self.config.data.valid:
            self.valid_data = self.encode_pairs(self.read_pairs(self.config.data.valid))

    def build_model(self) -> EncoderDecoder:
        assert self.src_vocab is not None and self.tgt_vocab is not None
        cfg = self.config.model
        model = build_seq2seq(
            cfg,
            src_vocab_size=len(self.src_vocab),
            tgt_vocab_size=len(self.tgt_vocab),
            padding_idx=self.src_vocab.pad_id,
        )
        embeddings = {"src": model.encoder.embedding, "tgt": model.decoder.embedding}
        for side, embedding in embeddings.items():
            if getattr(cfg, f"{side}_embeddings"):
                pretrained.install(
                    embedding,
                    self.pretrained.get(side),
                    freeze=getattr(cfg, f"freeze_{side}_embeddings"),
                    pad_id=self.src_vocab.pad_id,
                )
        return model

    def model_meta(self) -> dict[str, Any]:
        assert self.src_vocab is not None and self.tgt_vocab is not None
        return {
            "task": self.name,
            "src_vocab": vocab_fingerprint(self.src_vocab),
            "tgt_vocab": vocab_fingerprint(self.tgt_vocab),
        }

    # -- batches --------------------------------------------------------------------------------
    def make_batch(self, src: list[list[int]], tgt: list[list[int]]) -> Seq2SeqBatch:
        assert self.tgt_vocab is not None
        pad, bos = self.tgt_vocab.pad_id, self.tgt_vocab.bos_id
        num_steps = self.config.data.num_steps
        tgt_in = [[bos, *t[:-1]] for t in tgt]
        if num_steps > 0:
            src = [truncate_pad(s, num_steps, pad) for s in src]
            tgt = [truncate_pad(t, num_steps, pad) for t in tgt]
            tgt_in = [truncate_pad(t, num_steps, pad) for t in tgt_in]
            src_ids, tgt_out = torch.tensor(src), torch.tensor(tgt)
            src_lengths = (src_ids != pad).sum(1)
            tgt_lengths = (tgt_out != pad).sum(1)
            return Seq2SeqBatch(src_ids, src_lengths, torch.tensor(tgt_in), tgt_out, tgt_lengths)
        src_ids, src_lengths = pad_batch(src, pad)
        tgt_out, tgt_lengths = pad_batch(tgt, pad)
        tgt_in_ids, _ = pad_batch(tgt_in, pad)
        return Seq2SeqBatch(src_ids, src_lengths, tgt_in_ids, tgt_out, tgt_lengths)

    def batches_of(self, data: EncodedPairs, order: list[list[int]]) -> list[Seq2SeqBatch]:
        return [
            self.make_batch([data.src[i] for i in ids], [data.tgt[i] for i in ids]) for ids in order
        ]

    def train_batches(self, epoch: int) -> list[Seq2SeqBatch]:
        assert self.train_data is not None
        data = self.train_data
        lengths = [max(s, t) for s, t in zip(data.src.lengths(), data.tgt.lengths(), strict=True)]
        order = bucket_batches(
            lengths,
            self.config.train.batch_size,
            bucket=self.config.train.bucket and self.config.data.num_steps == 0,
            seed=self.config.seed * 1000 + epoch,
        )
        return self.batches_of(data, order)

    # -- loss -----------------------------------------------------------------------------------
    def begin_step(self, step: int) -> dict[str, float]:
        train = self.config.train
        if train.scheduled_sampling == "none":
            return {}
        self.teacher_forcing = teacher_forcing_probability(
            train.scheduled_sampling, step, k=train.ss_k, minimum=train.ss_min_teacher_forcing
        )
        return {"teacher_forcing": self.teacher_forcing}

    def batch_loss(self, model: nn.Module, batch: Seq2SeqBatch, carry: Any = None) -> LossOutput:
        model = cast(EncoderDecoder, model)  # the task's own model: its methods, not nn.Module's
        if model.training and self.config.train.scheduled_sampling != "none":
            features = model.forward_scheduled(
                batch.src,
                batch.src_lengths,
                batch.tgt_in,
                teacher_forcing=self.teacher_forcing,
                sample=self.config.train.ss_sample,
            )  # (B, T, H)
        else:
            features = model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, H)
        valid_features = select_valid(features, batch.tgt_lengths)  # (N, H)
        targets = select_valid(batch.tgt_out, batch.tgt_lengths)  # (N,)
        logits = project_padded_rows(model.project, valid_features)  # (N' ≥ N, V)
        smoothing = self.config.train.label_smoothing if model.training else 0.0
        loss = masked_token_nll(logits, targets, label_smoothing=smoothing, padded=True)
        return LossOutput(loss, int(targets.numel()))

    @torch.no_grad()
    def teacher_forced_nll(
        self, model: nn.Module, data: EncodedPairs, device: torch.device
    ) -> tuple[float, int]:
        model.eval()
        total, count = 0.0, 0
        lengths = data.src.lengths()
        decode = self.config.decode
        batches = sorted_batches(lengths, decode.batch_size, max_tokens=decode.batch_tokens)
        for batch in self.batches_of(data, batches):
            out = self.batch_loss(model, batch.to(device))
            total += float(out.loss_sum)
            count += out.num_tokens
        return total, count

    # -- decoding -------------------------------------------------------------------------------
    @torch.no_grad()
    def translate_hypotheses(
        self,
        model: nn.Module,
        sources: Sequence[list[int]],
        device: torch.device,
        *,
        beam_size: int | None = None,
        n_best: int = 1,
        max_len: int | None = None,
        length_penalty: float | None = None,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
        scored: bool = True,
        beam_stop: str | None = None,
    ) -> list[list[Hypothesis]]:
        """Decode encoded sources in length-sorted batches; ``n_best`` hypotheses each, input order.

        Greedy search runs when one hypothesis of one beam is asked for (beam search with one beam
        gives the same output, more slowly). ``progress`` is called with the sentences of each batch.
        ``scored=False`` lets greedy search skip the softmax: its hypotheses' scores are then NaN.
        Unset arguments take the config's ``decode`` values.
        """
        model = cast(EncoderDecoder, model)  # the task's own model: its methods, not nn.Module's
        assert self.tgt_vocab is not None and self.src_vocab is not None
        model.eval()
        decode = self.config.decode
        beam_size = beam_size or decode.beam_size
        max_len = max_len or decode.max_len
        alpha = decode.length_penalty if length_penalty is None else length_penalty
        size = max(batch_size or decode.batch_size, 1)
        beam = max(beam_size, n_best)
        if beam > 1:  # B·K rows at a time (DecodeConfig.batch_size)
            attention = bool(getattr(model, "has_attention", False))
            size = beam_batch_size(size, beam, len(self.tgt_vocab), attention=attention)
        results: list[list[Hypothesis]] = [[] for _ in sources]
        with autocast(device, decode.precision):
            lengths = [len(s) for s in sources]
            for ids in sorted_batches(lengths, size, max_tokens=decode.batch_tokens):
                src_ids, src_lengths = pad_batch([sources[i] for i in ids], self.src_vocab.pad_id)
                src_ids, src_lengths = src_ids.to(device), src_lengths.to(device)
                state = model.start(src_ids, src_lengths)
                search = dict(
                    batch_size=len(ids),
                    bos_id=self.tgt_vocab.bos_id,
                    eos_id=self.tgt_vocab.eos_id,
                    max_len=max_len,
                    device=device,
                    banned=self.tgt_vocab.never_emitted,
                )
                if beam > 1:
                    hyps = beam_search_hypotheses(
                        model,
                        state,
                        beam_size=beam,
                        n_best=n_best,
                        length_penalty_alpha=alpha,
                        stop=beam_stop or decode.beam_stop,
                        **search,
                    )
                elif scored:
                    greedy = greedy_hypotheses(model, state, length_penalty_alpha=alpha, **search)
                    hyps = [[h] for h in greedy]
                else:
                    hyps = [[unscored(out)] for out in greedy_search(model, state, **search)]
                for i, hyp in zip(ids, hyps, strict=True):
                    results[i] = hyp
                if progress is not None:
                    progress(len(ids))
        return results

    def translate_ids(
        self, model: nn.Module, sources: Sequence[list[int]], device: torch.device, **decode: Any
    ) -> list[list[list[int]]]:
        """Token ids of ``translate_hypotheses``: what metrics and benchmarks need (no scores)."""
        hyps = self.translate_hypotheses(model, sources, device, scored=False, **decode)
        return [[h.tokens for h in sentence] for sentence in hyps]

    @torch.no_grad()
    def attention_of(
        self,
        model: nn.Module,
        src: list[int],
        output: list[int],
        device: torch.device,
        *,
        ended: bool = True,
    ) -> AttentionMatrix:
        """Where each token of ``output`` (a decoded hypothesis of ``src``) attended in the source,
        and where ``<eos>`` did if the search ``ended`` with it."""
        model = cast(EncoderDecoder, model)  # the task's own model: its methods, not nn.Module's
        assert self.src_vocab is not None and self.tgt_vocab is not None
        if not getattr(model, "has_attention", False):
            raise RnnlabError("this model has no attention to plot (model.attention: none)")
        src_ids = torch.tensor([src], device=device)
        tgt_in = torch.tensor([[self.tgt_vocab.bos_id, *output]], device=device)
        weights = model.attention_weights(src_ids, torch.tensor([len(src)]), tgt_in)[0]
        out_tokens = self.tgt_vocab.decode(output, strip_specials=False)
        if ended:
            out_tokens.append(EOS)
        else:
            weights = weights[:-1]
        return AttentionMatrix(
            src_tokens=self.src_vocab.decode(src, strip_specials=False),
            out_tokens=out_tokens,
            weights=weights.cpu(),
        )

    def detokenize(self, ids: list[int]) -> str:
        assert self.tgt_vocab is not None
        return self.tgt_tokenizer.decode(self.tgt_vocab.decode(ids))

    # -- metrics --------------------------------------------------------------------------------
    def _bleu_metrics(
        self, model: nn.Module, data: EncodedPairs, device: torch.device
    ) -> tuple[list[str], float]:
        hyps = [
            self.detokenize(h[0]) for h in self.translate_ids(model, data.src, device, beam_size=1)
        ]
        return hyps, corpus_bleu(hyps, data.references)

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        assert self.valid_data is not None
        nll, count = self.teacher_forced_nll(model, self.valid_data, device)
        _, bleu = self._bleu_metrics(model, self.valid_data, device)
        return {"valid_loss": nll / count, "valid_ppl": perplexity(nll, count), "valid_bleu": bleu}

    def evaluate(
        self, model: nn.Module, path: str, device: torch.device, **decode: Any
    ) -> dict[str, Any]:
        """BLEU (sacreBLEU, cased and lower-cased), textbook BLEU, teacher-forced loss/perplexity.

        ``d2l_bleu`` is the chapter's sentence formula (k = 2) on punctuation-split tokens, averaged
        over sentences, so it is comparable with the textbook's figures whatever the tokenizer.
        """
        data = self.encode_pairs(self.read_pairs(path))
        nll, count = self.teacher_forced_nll(model, data, device)
        decoded = self.translate_ids(model, data.src, device, **decode)
        return self.translation_report([self.detokenize(h[0]) for h in decoded], data, nll, count)

    def translation_report(
        self, hyps: list[str], data: EncodedPairs, nll: float, count: int
    ) -> dict[str, Any]:
        """``evaluate``'s metrics from translations and the teacher-forced NLL of the references."""
        bleu, signature = corpus_bleu_with_signature(hyps, data.references)
        bleu_lowercase, signature_lowercase = corpus_bleu_with_signature(
            hyps, data.references, lowercase=True
        )

        def split(text: str) -> str:
            return preprocess_textbook(text, lowercase=False)

        return {
            "bleu": bleu,
            "bleu_lowercase": bleu_lowercase,
            "d2l_bleu": mean_d2l_bleu(
                [split(h) for h in hyps], [split(r) for r in data.references], k=2
            ),
            "loss": nll / count,
            "perplexity": perplexity(nll, count),
            "sentences": len(hyps),
            "tokens": count,
            "signature": signature,
            "signature_lowercase": signature_lowercase,
        }
