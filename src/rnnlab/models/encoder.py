"""The recurrent encoder of an encoder–decoder (Sutskever et al. 2014; Cho et al. 2014).

embedding → (dropout) → multi-layer recurrent network run by lengths, so each sentence's final state
is the state after its own last token, not after a tail of padding: ``run_by_lengths`` for cells whose
state is h alone (it picks packing or the faster padded kernel), packing for LSTMs, whose final cell
state c only packing gives.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.nn.by_lengths import run_by_lengths
from rnnlab.nn.dropout import Dropout
from rnnlab.nn.factory import has_cell_state, make_rnn
from rnnlab.nn.state import RecurrentState


@dataclass
class EncoderOutput:
    outputs: Tensor
    """(B, S, D·H) top-layer outputs at every source position; zeros at padding."""
    state: RecurrentState
    """Final state per layer and direction: (L·D, B, H), or a pair for LSTMs."""
    lengths: Tensor
    """(B,) valid source lengths."""


class Seq2SeqEncoder(nn.Module):
    """Encode a padded source batch into per-position outputs and a final state."""

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        embed_dropout: float = 0.0,
        cell: str = "gru",
        rnn_impl: str = "fused",
        bidirectional: bool = False,
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=padding_idx)
        self.embed_dropout = Dropout(embed_dropout)
        self.rnn = make_rnn(
            cell,
            rnn_impl,
            input_size=embed_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout,
            bidirectional=bidirectional,
        )
        self.has_cell_state = has_cell_state(cell)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1

    @property
    def output_size(self) -> int:
        return self.hidden_size * self.num_directions

    def forward(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """``src`` (B, S) ids, ``src_lengths`` (B,) → ``EncoderOutput``."""
        embedded = self.embed_dropout(self.embedding(src))  # (B, S, E)
        if not self.has_cell_state:
            outputs, final = run_by_lengths(self.rnn, embedded, src_lengths)  # zeros at padding
            return EncoderOutput(outputs=outputs, state=final, lengths=src_lengths)
        packed = pack_padded_sequence(
            embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        packed_outputs, state = self.rnn(packed)
        outputs, _ = pad_packed_sequence(
            packed_outputs, batch_first=True, total_length=src.size(1)
        )  # (B, S, D·H)
        return EncoderOutput(outputs=outputs, state=state, lengths=src_lengths)
