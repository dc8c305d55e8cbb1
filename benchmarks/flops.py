"""FLOP counts of the seq2seq model, written out so the "fraction of matmul peak" figure can be checked.

Only the matrix products that every implementation must do are counted, once per *non-pad* token:

    one recurrent layer, per token:      G·H·(I + H) multiply-adds   (G = 3 gates for GRU, 4 for LSTM;
                                                                      I = the layer's input size)
    encoder, per source token:           Σ layers  G·H·(I_l + H),    I_0 = E, I_l = H
    decoder, per target token:           Σ layers  G·H·(I_l + H),    I_0 = E + H (the Cho context), I_l = H
                                         + H·V for the output projection
    training FLOPs per batch:            6 · (enc_macs · source tokens + dec_macs · target tokens)

A multiply-add is 2 FLOPs and backward costs about twice forward (one product for the input gradient,
one for the weight gradient), hence 2 · 3 = 6. Embedding lookups, gate nonlinearities, softmax and the
optimizer are not counted: they are memory-bound and small next to the products. Padding positions are
not counted either, so a recipe that computes them gets no credit for it.
"""

from __future__ import annotations


def gates(cell: str) -> int:
    return 3 if cell == "gru" else 4 if cell.endswith("lstm") else 1


def encoder_macs_per_token(
    *, embed_size: int, hidden_size: int, num_layers: int, cell: str = "gru"
) -> int:
    g, h = gates(cell), hidden_size
    return sum(g * h * ((embed_size if layer == 0 else h) + h) for layer in range(num_layers))


def decoder_macs_per_token(
    *, embed_size: int, hidden_size: int, num_layers: int, vocab_size: int, cell: str = "gru"
) -> int:
    g, h = gates(cell), hidden_size
    recurrent = sum(
        g * h * ((embed_size + h if layer == 0 else h) + h) for layer in range(num_layers)
    )
    return recurrent + h * vocab_size


def training_flops(*, enc_macs: int, dec_macs: int, src_tokens: int, tgt_tokens: int) -> float:
    """Forward + backward FLOPs of one batch (or a window of batches), non-pad tokens only."""
    return 6.0 * (enc_macs * src_tokens + dec_macs * tgt_tokens)
