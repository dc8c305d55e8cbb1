"""Character encoders: each word's vector is the one it gets alone, whatever else the batch spells."""

from __future__ import annotations

import pytest
import torch

from rnnlab.data.batching import pad_batch
from rnnlab.models.char_encoder import LENGTH_GROUPS, CharRNNEncoder


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_encoder_gives_each_word_its_final_states_read_alone(cell: str) -> None:
    torch.manual_seed(0)
    encoder = CharRNNEncoder(num_chars=30, embed_size=6, hidden_size=5, cell=cell).eval()
    lengths = [1, 12, 3, 7, 2, 30, 5, 5, 9, 1, 4, 16, 6, 2, 8, 3]  # enough words for the groups
    assert len(lengths) >= 2 * LENGTH_GROUPS
    words = [torch.randint(1, 30, (n,)).tolist() for n in lengths]
    chars, char_lengths = pad_batch(words, pad_id=0)
    with torch.no_grad():
        vectors = encoder(chars, char_lengths)  # (U, 2H)
        for row, word in enumerate(words):
            embedded = encoder.embedding(torch.tensor([word]))  # (1, n, E): no padding at all
            outputs, _ = encoder.rnn(embedded)
            forward_last = outputs[0, -1, :5]  # the forward direction after the last character
            backward_first = outputs[0, 0, 5:]  # the backward direction after the first
            expected = torch.cat([forward_last, backward_first])
            torch.testing.assert_close(vectors[row], expected, rtol=1e-5, atol=1e-6)
