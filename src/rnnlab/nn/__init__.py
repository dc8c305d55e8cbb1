"""Recurrent building blocks: masks, the layer factory, and from-scratch cells and layers."""

from rnnlab.nn.by_lengths import final_states_by_lengths, run_by_lengths
from rnnlab.nn.cells import CoupledLSTMCell, GRUCell, LSTMCell, PeepholeLSTMCell, RNNCell
from rnnlab.nn.describe import describe, parameter_table
from rnnlab.nn.dropout import SequenceDropout
from rnnlab.nn.factory import CELLS, IMPLS, has_cell_state, make_rnn
from rnnlab.nn.layers import GRU, LSTM, RNN, CoupledLSTM, PeepholeLSTM
from rnnlab.nn.masking import length_mask, masked_softmax, sequence_mask

__all__ = [
    "CELLS",
    "GRU",
    "IMPLS",
    "LSTM",
    "RNN",
    "CoupledLSTM",
    "CoupledLSTMCell",
    "GRUCell",
    "LSTMCell",
    "PeepholeLSTM",
    "PeepholeLSTMCell",
    "RNNCell",
    "SequenceDropout",
    "describe",
    "final_states_by_lengths",
    "has_cell_state",
    "length_mask",
    "make_rnn",
    "masked_softmax",
    "parameter_table",
    "run_by_lengths",
    "sequence_mask",
]
