"""The textbook (d2l) sequence-to-sequence recipe, written out as the baseline every figure divides by.

Written from the chapter's description (see ``/work/shared/TEXTBOOK.md``), not imported from rnnlab,
so that an rnnlab change can never speed up its own yardstick:

* every sentence is truncated or padded to ``num_steps`` (``<eos>`` appended first);
* the encoder is an embedding and a multi-layer GRU over the padded (T, B) input — no packing, so the
  context is the top layer's output after the padding;
* the decoder's GRU input is ``[embedding ; context]`` at every one of the ``num_steps`` positions,
  and its linear layer projects every position, padding included, to the vocabulary;
* ``MaskedSoftmaxCELoss`` is a per-sequence mean over all ``num_steps`` positions (padding in the
  denominator), ``loss.sum().backward()``, gradients clipped to norm 1 by hand (a host-side
  comparison every step), Adam; the running loss is read back to the host every step;
* batches come from a shuffling ``DataLoader`` over the padded arrays;
* ``predict_seq2seq`` translates one sentence at a time and, as in the book, without ``no_grad``.

Only the vocabulary and tokenisation are shared with rnnlab (both are the textbook's own), so both
systems see identical token ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


def truncate_pad(line: Sequence[int], num_steps: int, padding_token: int) -> list[int]:
    if len(line) > num_steps:
        return list(line[:num_steps])
    return list(line) + [padding_token] * (num_steps - len(line))


def build_array(
    lines: Sequence[Sequence[int]], num_steps: int, pad_id: int, eos_id: int
) -> tuple[Tensor, Tensor]:
    """Token ids (+ ``<eos>``) → (N, num_steps) padded array and (N,) valid lengths."""
    array = torch.tensor([truncate_pad([*line, eos_id], num_steps, pad_id) for line in lines])
    valid_len = (array != pad_id).type(torch.int32).sum(1)
    return array, valid_len


def load_array(arrays: tuple[Tensor, ...], batch_size: int, *, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(*arrays), batch_size, shuffle=True, generator=generator)


class TextbookEncoder(nn.Module):
    def __init__(
        self, vocab_size: int, embed_size: int, num_hiddens: int, num_layers: int, dropout=0.0
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.GRU(embed_size, num_hiddens, num_layers, dropout=dropout)

    def forward(self, X: Tensor) -> tuple[Tensor, Tensor]:
        X = self.embedding(X.t().type(torch.int64))  # (T, B, E)
        outputs, state = self.rnn(X)  # (T, B, H), (L, B, H)
        return outputs, state


class TextbookDecoder(nn.Module):
    def __init__(
        self, vocab_size: int, embed_size: int, num_hiddens: int, num_layers: int, dropout=0.0
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.GRU(embed_size + num_hiddens, num_hiddens, num_layers, dropout=dropout)
        self.dense = nn.Linear(num_hiddens, vocab_size)

    def init_state(self, enc_all_outputs: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return enc_all_outputs

    def forward(
        self, X: Tensor, state: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        embs = self.embedding(X.t().type(torch.int32))  # (T, B, E)
        enc_output, hidden_state = state
        context = enc_output[-1]  # (B, H): top layer after the last (possibly padded) step
        context = context.repeat(embs.shape[0], 1, 1)  # (T, B, H)
        embs_and_context = torch.cat((embs, context), -1)
        outputs, hidden_state = self.rnn(embs_and_context, hidden_state)
        outputs = self.dense(outputs).swapaxes(0, 1)  # (B, T, V)
        return outputs, (enc_output, hidden_state)


class TextbookEncoderDecoder(nn.Module):
    def __init__(self, encoder: TextbookEncoder, decoder: TextbookDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, enc_X: Tensor, dec_X: Tensor) -> Tensor:
        enc_all_outputs = self.encoder(enc_X)
        dec_state = self.decoder.init_state(enc_all_outputs)
        return self.decoder(dec_X, dec_state)[0]


def xavier_init_weights(m: nn.Module) -> None:
    if type(m) is nn.Linear:
        nn.init.xavier_uniform_(m.weight)
    if type(m) is nn.GRU:
        for param in m._flat_weights_names:
            if "weight" in param:
                nn.init.xavier_uniform_(m._parameters[param])


def build_textbook_model(
    *,
    src_vocab_size: int,
    tgt_vocab_size: int,
    embed_size: int,
    num_hiddens: int,
    num_layers: int,
    dropout: float,
) -> TextbookEncoderDecoder:
    net = TextbookEncoderDecoder(
        TextbookEncoder(src_vocab_size, embed_size, num_hiddens, num_layers, dropout),
        TextbookDecoder(tgt_vocab_size, embed_size, num_hiddens, num_layers, dropout),
    )
    net.apply(xavier_init_weights)
    return net


def sequence_mask(X: Tensor, valid_len: Tensor, value: float = 0) -> Tensor:
    maxlen = X.size(1)
    mask = torch.arange(maxlen, dtype=torch.float32, device=X.device)[None, :] < valid_len[:, None]
    X[~mask] = value
    return X


class MaskedSoftmaxCELoss(nn.CrossEntropyLoss):
    """pred (B, T, V), label (B, T), valid_len (B,) → per-sequence mean over all T positions (B,)."""

    def forward(self, pred: Tensor, label: Tensor, valid_len: Tensor) -> Tensor:  # type: ignore[override]
        weights = torch.ones_like(label)
        weights = sequence_mask(weights, valid_len)
        self.reduction = "none"
        unweighted_loss = super().forward(pred.permute(0, 2, 1), label)
        weighted_loss = (unweighted_loss * weights).mean(dim=1)
        return weighted_loss


def grad_clipping(net: nn.Module, theta: float) -> None:
    params = [p for p in net.parameters() if p.requires_grad]
    norm = torch.sqrt(sum(torch.sum(p.grad**2) for p in params))
    if norm > theta:
        for param in params:
            param.grad[:] *= theta / norm


class TextbookTrainer:
    """``train_seq2seq``'s loop body, one batch at a time so a benchmark can time windows of it."""

    def __init__(self, net: TextbookEncoderDecoder, *, lr: float, bos_id: int) -> None:
        self.net = net
        self.bos_id = bos_id
        self.optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        self.loss = MaskedSoftmaxCELoss()
        self.loss_sum = 0.0
        self.num_tokens = 0

    def step(self, batch: Sequence[Tensor]) -> int:
        """One optimizer step; returns the batch's non-pad target tokens."""
        self.net.train()
        self.optimizer.zero_grad()
        X, X_valid_len, Y, Y_valid_len = batch
        bos = torch.tensor([self.bos_id] * Y.shape[0]).reshape(-1, 1)
        dec_input = torch.cat([bos, Y[:, :-1]], 1)  # teacher forcing
        Y_hat = self.net(X, dec_input)
        l = self.loss(Y_hat, Y, Y_valid_len)  # noqa: E741 (the book's name)
        l.sum().backward()
        grad_clipping(self.net, 1)
        num_tokens = Y_valid_len.sum()
        self.optimizer.step()
        with torch.no_grad():
            self.loss_sum += float(l.sum())
            self.num_tokens += int(num_tokens)
        return int(num_tokens)


def predict_seq2seq(
    net: TextbookEncoderDecoder,
    src_tokens: Sequence[int],
    *,
    num_steps: int,
    pad_id: int,
    bos_id: int,
    eos_id: int,
) -> list[int]:
    """The book's one-sentence greedy loop; ``src_tokens`` are ids without ``<eos>``."""
    net.eval()
    src_tokens = [*src_tokens, eos_id]
    src_tokens = truncate_pad(src_tokens, num_steps, pad_id)
    enc_X = torch.unsqueeze(torch.tensor(src_tokens, dtype=torch.long), dim=0)
    enc_outputs = net.encoder(enc_X)
    dec_state = net.decoder.init_state(enc_outputs)
    dec_X = torch.unsqueeze(torch.tensor([bos_id], dtype=torch.long), dim=0)
    output_seq = []
    for _ in range(num_steps):
        Y, dec_state = net.decoder(dec_X, dec_state)
        dec_X = Y.argmax(dim=2)
        pred = dec_X.squeeze(dim=0).type(torch.int32).item()
        if pred == eos_id:
            break
        output_seq.append(pred)
    return output_seq


@torch.no_grad()
def token_nll(
    net: TextbookEncoderDecoder,
    X: Tensor,
    Y: Tensor,
    Y_valid_len: Tensor,
    *,
    bos_id: int,
    batch_size: int = 256,
) -> float:
    """Teacher-forced loss per non-pad target token (for comparing loss after equal steps)."""
    net.eval()
    total, count = 0.0, 0
    for start in range(0, X.size(0), batch_size):
        x, y, n = (t[start : start + batch_size] for t in (X, Y, Y_valid_len))
        dec_input = torch.cat([torch.full((y.size(0), 1), bos_id), y[:, :-1]], 1)
        logits = net(x, dec_input)  # (B, T, V)
        losses = nn.functional.cross_entropy(logits.permute(0, 2, 1), y, reduction="none")
        mask = torch.arange(y.size(1))[None, :] < n[:, None]
        total += float(losses[mask].sum())
        count += int(mask.sum())
    return total / max(count, 1)
