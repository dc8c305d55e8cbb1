"""Tiny synthetic reverse task and model helpers for the attention and beam-search tests.

Token ids follow ``rnnlab.data.vocab``: 0 ``<pad>``, 1 ``<unk>``, 2 ``<bos>``, 3 ``<eos>``; symbols
are ids 4 … 4 + NUM_SYMBOLS - 1 on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rnnlab.data.batching import pad_batch
from rnnlab.models.seq2seq import EncoderDecoder, build_seq2seq
from rnnlab.tasks.seq2seq_config import Seq2SeqModelConfig
from rnnlab.training.losses import masked_token_nll, select_valid

PAD, BOS, EOS = 0, 2, 3
NUM_SYMBOLS = 8
VOCAB_SIZE = 4 + NUM_SYMBOLS


@dataclass
class ReverseBatch:
    src: Tensor
    src_lengths: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    tgt_lengths: Tensor
    sources: list[list[int]]
    """Symbol ids of each source, without ``<eos>``."""


def reverse_batch(
    generator: torch.Generator, batch_size: int, *, min_len: int = 3, max_len: int = 8
) -> ReverseBatch:
    """Random symbol strings (source, with ``<eos>``) and their reversals (target)."""
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator).tolist()
    sources = [torch.randint(4, VOCAB_SIZE, (n,), generator=generator).tolist() for n in lengths]
    src, src_lengths = pad_batch([s + [EOS] for s in sources], PAD)
    tgt_out, tgt_lengths = pad_batch([s[::-1] + [EOS] for s in sources], PAD)
    tgt_in, _ = pad_batch([[BOS, *s[::-1]] for s in sources], PAD)
    return ReverseBatch(src, src_lengths, tgt_in, tgt_out, tgt_lengths, sources)


def tiny_model(seed: int = 0, **overrides: object) -> EncoderDecoder:
    fields = dict(embed_size=16, hidden_size=32, num_layers=1, dropout=0.0)
    fields.update(overrides)
    torch.manual_seed(seed)
    return build_seq2seq(
        Seq2SeqModelConfig(**fields),  # type: ignore[arg-type]
        src_vocab_size=VOCAB_SIZE,
        tgt_vocab_size=VOCAB_SIZE,
        padding_idx=PAD,
    )


def batch_nll(model: EncoderDecoder, batch: ReverseBatch) -> Tensor:
    """Summed teacher-forced NLL of the batch's valid target tokens."""
    features = model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, H)
    logits = model.project(select_valid(features, batch.tgt_lengths))  # (N, V)
    return masked_token_nll(logits, select_valid(batch.tgt_out, batch.tgt_lengths))


def train_steps(
    model: EncoderDecoder,
    steps: int,
    *,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 0.01,
    **batch_kwargs: int,
) -> EncoderDecoder:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = reverse_batch(generator, batch_size, **batch_kwargs)
        loss = batch_nll(model, batch) / int(batch.tgt_lengths.sum())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model.eval()
