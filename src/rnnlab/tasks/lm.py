"""Language modelling at character or word level: token streams, truncated BPTT, perplexity, generation.

Training reads the training file as one token stream (``rnnlab.data.lm_corpus``) and cuts it into
batches by sequential partitioning (state carried across batches, detached) or random sampling
(state reset every batch), see ``rnnlab.data.lm_stream``. The vocabulary comes from the training file
only; ``data.min_freq`` applies.

Perplexity (validation and ``rnnlab evaluate``) is exp of the mean negative log-likelihood per token
over a whole file, read as one unbroken stream: the state is carried from the first token to the last
and never reset, so no token is scored without the context before it. Every token after the first is
scored; tokens outside the vocabulary are scored as ``<unk>`` and counted in ``oov_tokens``.

Generation reads a prefix, cleaned and tokenised like the training text. A prefix token the model
never saw in training is an error that names it (rather than a silent ``<unk>``); at word level a
prefix starts a new sentence (it is read after an ``<eos>``), and a literal ``<unk>`` may be written.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.data.lm_corpus import iter_corpus, text_tokens, tokens_text
from rnnlab.data.lm_stream import epoch_offset, random_batches, sequential_batches
from rnnlab.data.vocab import EOS, UNK, Vocab
from rnnlab.decoding.sampling import sample
from rnnlab.errors import ConfigError, DataError, RnnlabError
from rnnlab.metrics.perplexity import perplexity
from rnnlab.models.language_model import RNNLanguageModel, build_language_model
from rnnlab.nn.state import detach_state, hidden_of
from rnnlab.tasks import pretrained
from rnnlab.tasks.base import Batch, LossOutput, Task
from rnnlab.tasks.lm_config import (
    LMConfig,
)

EVAL_CHUNK = 256
"""Tokens per forward call when scoring a file; the state is carried, so this only trades memory."""


@dataclass
class LMBatch(Batch):
    inputs: Tensor
    """(B, T) token ids."""
    targets: Tensor
    """(B, T) the next token of each input."""


def vocab_fingerprint(vocab: Vocab) -> str:
    return hashlib.sha1("\n".join(vocab.itos).encode("utf-8")).hexdigest()[:16]


@torch.no_grad()
def stream_nll(
    model: RNNLanguageModel, ids: Tensor, device: torch.device, *, chunk: int = EVAL_CHUNK
) -> tuple[float, int]:
    """Summed NLL (nats) of ``ids[1:]`` given everything before, in one unbroken pass; and the count."""
    model.eval()
    total, state = 0.0, None
    for start in range(0, ids.numel() - 1, chunk):
        targets = ids[start + 1 : start + 1 + chunk].to(device)  # (T,)
        inputs = ids[start : start + targets.numel()].to(device)  # (T,)
        features, state = model(inputs.unsqueeze(0), state)  # (1, T, H)
        total += float(model.token_nll(features.squeeze(0), targets))
    return total, max(ids.numel() - 1, 0)


class LanguageModelTask(Task):
    name = "lm"
    config_class = LMConfig
    primary_metric = "valid_ppl"
    higher_is_better = False

    def __init__(self, config: LMConfig, run_dir: Path) -> None:
        super().__init__(config, run_dir)
        self.vocab: Vocab | None = None
        self.train_ids: Tensor | None = None
        self.valid_ids: Tensor | None = None
        self.pretrained: dict[str, pretrained.PretrainedMatch] = {}

    # -- data -----------------------------------------------------------------------------------
    def token_chunks(self, path: str, *, max_lines: int = 0) -> Iterator[list[str]]:
        """The tokens of a file, streamed a line at a time."""
        data = self.config.data
        return iter_corpus(path, level=data.tokenizer, clean=data.clean, max_lines=max_lines)

    def encode_file(self, path: str, *, max_lines: int = 0) -> Tensor:
        """A file as ids (N,), built a line at a time into one int64 buffer (8 bytes a token)."""
        assert self.vocab is not None
        ids = array("q")
        for tokens in self.token_chunks(path, max_lines=max_lines):
            ids.extend(self.vocab.encode(tokens))
        return (
            torch.from_numpy(np.frombuffer(ids, dtype=np.int64))
            if ids
            else torch.empty(0, dtype=torch.long)
        )

    def read_ids(self, path: str) -> Tensor:
        """A whole file as ids (N,); needs at least two tokens, one to read and one to predict."""
        ids = self.encode_file(path)
        if ids.numel() < 2:
            raise DataError(path, "too short to score (a language model needs at least 2 tokens)")
        return ids

    def prepare_training(self) -> None:
        data = self.config.data
        counts: Counter[str] = Counter()
        for tokens in self.token_chunks(data.train, max_lines=data.max_examples):
            counts.update(tokens)
        self.vocab = Vocab.from_counts(counts, min_freq=data.min_freq)
        self.vocab, self.pretrained = pretrained.match_word_embeddings(
            self.config, self.vocab, counts, self.run_dir, side="token", normalise=self.file_word
        )
        self.vocab.save(self.run_dir / "vocab.json")
        self.train_ids = self.encode_file(data.train, max_lines=data.max_examples)
        self._read_valid()

    def load_artifacts(self) -> None:
        self.vocab = Vocab.load(self.run_dir / "vocab.json")

    def read_training_data(self) -> None:
        data = self.config.data
        self.train_ids = self.encode_file(data.train, max_lines=data.max_examples)
        self._read_valid()

    def setup_notes(self) -> list[str]:
        return pretrained.coverage_notes(self.pretrained)

    def _read_valid(self) -> None:
        if self.config.data.valid:
            self.valid_ids = self.read_ids(self.config.data.valid)

    def build_model(self) -> RNNLanguageModel:
        assert self.vocab is not None
        cfg = self.config.model
        if cfg.softmax == "adaptive" and self.config.train.label_smoothing > 0:
            raise ConfigError("train.label_smoothing needs model.softmax=full")
        try:
            model = build_language_model(cfg, vocab_size=len(self.vocab))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        pretrained.install_word_embeddings(
            model.embedding, self.pretrained, cfg, side="token", pad_id=self.vocab.pad_id
        )
        return model

    def model_meta(self) -> dict[str, Any]:
        assert self.vocab is not None
        return {"task": self.name, "vocab": vocab_fingerprint(self.vocab)}

    # -- batches and loss -----------------------------------------------------------------------
    def train_batches(self, epoch: int) -> list[LMBatch]:
        assert self.train_ids is not None
        cfg = self.config
        bptt, batch_size = cfg.train.bptt, cfg.train.batch_size
        offset = epoch_offset(cfg.seed, epoch, bptt)
        try:
            if cfg.data.batching == "sequential":
                pieces = sequential_batches(
                    self.train_ids, batch_size=batch_size, bptt=bptt, offset=offset
                )
            else:
                pieces = random_batches(
                    self.train_ids,
                    batch_size=batch_size,
                    bptt=bptt,
                    offset=offset,
                    seed=cfg.seed * 1000 + epoch,
                )
        except ValueError as exc:
            raise DataError(cfg.data.train, str(exc)) from None
        return [LMBatch(inputs, targets) for inputs, targets in pieces]

    def batch_loss(self, model: nn.Module, batch: LMBatch, carry: Any = None) -> LossOutput:
        """Summed NLL of a (B, T) batch; under sequential batching the final state is carried."""
        model = cast(RNNLanguageModel, model)  # the task's own model: its methods, not nn.Module's
        sequential = self.config.data.batching == "sequential"
        if carry is not None and hidden_of(carry).size(1) != batch.inputs.size(0):
            # The streams were cut differently (a run resumed with another train.batch_size):
            # a carried state belongs to streams that no longer exist, so start afresh.
            carry = None
        features, state = model(batch.inputs, carry if sequential else None)  # (B, T, H)
        smoothing = self.config.train.label_smoothing if model.training else 0.0
        loss = model.token_nll(
            features.flatten(0, 1), batch.targets.flatten(), label_smoothing=smoothing
        )
        return LossOutput(
            loss, int(batch.targets.numel()), carry=detach_state(state) if sequential else None
        )

    # -- metrics --------------------------------------------------------------------------------
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        assert self.valid_ids is not None
        nll, count = stream_nll(model, self.valid_ids, device)  # type: ignore[arg-type]
        return {"valid_loss": nll / count, "valid_ppl": perplexity(nll, count)}

    def evaluate(
        self, model: nn.Module, path: str, device: torch.device, **options: Any
    ) -> dict[str, Any]:
        """Perplexity of a text file; unknown tokens are scored as ``<unk>`` and counted."""
        assert self.vocab is not None
        if options:
            raise RnnlabError(
                f"evaluate options {', '.join(options)} do not apply to a language model"
            )
        ids = self.read_ids(path)
        nll, count = stream_nll(model, ids, device)  # type: ignore[arg-type]
        return self.perplexity_report(path, nll, count)

    def perplexity_report(self, path: str, nll: float, count: int) -> dict[str, Any]:
        """``evaluate``'s metrics from a file and its summed NLL (however it was computed)."""
        assert self.vocab is not None
        oov, first = 0, True
        for tokens in self.token_chunks(path):  # a second pass: the ids no longer tell <unk> apart
            oov += sum(1 for t in tokens[int(first) :] if t not in self.vocab and t != UNK)
            first = False
        return {
            "perplexity": perplexity(nll, count),
            "loss": nll / count,
            "tokens": count,
            "oov_tokens": oov,
            "vocab_size": len(self.vocab),
            "tokenizer": self.config.data.tokenizer,
        }

    # -- generation -----------------------------------------------------------------------------
    def prefix_tokens(self, prefix: str) -> list[str]:
        """The prefix as the model reads it; an error names tokens never seen in training."""
        assert self.vocab is not None
        data = self.config.data
        tokens = text_tokens(prefix, level=data.tokenizer, clean=data.clean)
        unknown = sorted({t for t in tokens if t not in self.vocab})
        if unknown:
            kind = "characters" if data.tokenizer == "char" else "words"
            shown = ", ".join(repr(t) for t in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            hint = " (write <unk> for an unknown word)" if data.tokenizer == "word" else ""
            raise RnnlabError(f"prefix has {kind} never seen in training: {shown}{more}{hint}")
        if data.tokenizer == "char" and not tokens:
            raise RnnlabError("prefix is empty; a character-level model needs text to continue")
        return tokens

    def file_word(self, word: str) -> str:
        """A vector file's word as this model's text reads it (``data.clean``), for words that join
        the vocabulary from the file; "" for one that cleans to no word or to several."""
        tokens = text_tokens(word, level="word", clean=self.config.data.clean)
        return tokens[0] if len(tokens) == 1 else ""

    def never_generated(self) -> tuple[int, ...]:
        """Tokens a generation never emits, as none is ever a training target: ``<pad>`` and
        ``<bos>`` (``Vocab.never_emitted``) and, at character level, ``<eos>`` (a line ends in a
        "\\n" there) and ``<unk>`` unless ``data.min_freq`` left some character below it."""
        assert self.vocab is not None
        never = list(self.vocab.never_emitted)
        if self.config.data.tokenizer == "char":
            never.append(self.vocab.eos_id)
            if self.config.data.min_freq <= 1:
                never.append(self.vocab.unk_id)
        return tuple(never)

    @torch.no_grad()
    def generate(
        self,
        model: RNNLanguageModel,
        prefix: str,
        device: torch.device,
        *,
        length: int,
        greedy: bool = True,
        temperature: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        num_samples: int = 1,
    ) -> list[str]:
        """``num_samples`` texts, each the (cleaned) prefix followed by ``length`` generated tokens.

        ``length`` 0 gives the prefix alone. Greedy search ignores ``temperature``, ``top_k`` and ``seed``.
        """
        assert self.vocab is not None
        if length < 0:
            raise RnnlabError(f"length must be 0 or more, got {length}")
        if not temperature > 0:  # also refuses nan
            raise RnnlabError(f"temperature must be positive, got {temperature}")
        if top_k < 0:
            raise RnnlabError(f"top-k must be 0 (no limit) or more, got {top_k}")
        level = self.config.data.tokenizer
        tokens = self.prefix_tokens(prefix)
        context = ([EOS] if level == "word" else []) + tokens
        ids = torch.tensor(self.vocab.encode(context), device=device)  # (P,)
        model.eval()
        state = model.start(num_samples, device)
        if ids.numel() > 1:
            _, state = model(ids[:-1].expand(num_samples, -1), state)
        generator = torch.Generator(device=device).manual_seed(seed)
        outputs = sample(
            model,
            state,
            ids[-1].expand(num_samples),
            length=length,
            greedy=greedy,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            banned=self.never_generated(),
        )
        return [
            tokens_text(tokens + self.vocab.decode(out, strip_specials=False), level=level)
            for out in outputs
        ]
