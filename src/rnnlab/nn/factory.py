"""The one place where rnnlab builds a recurrent layer.

Every model asks ``make_rnn`` for its recurrent stack, so ``model.cell`` and ``model.rnn_impl`` mean the
same thing in every task. ``fused`` uses ``torch.nn`` (cuDNN on CUDA, oneDNN-backed kernels on CPU);
``scratch`` uses rnnlab's readable implementations, which take the same arguments and return the same
values, so a model never needs to know which one it holds.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from rnnlab.nn import fused
from rnnlab.nn.layers import check_dropout

CellName = Literal["rnn", "gru", "lstm", "peephole_lstm", "coupled_lstm"]
RnnImpl = Literal["fused", "scratch"]

CELLS: tuple[str, ...] = ("rnn", "gru", "lstm", "peephole_lstm", "coupled_lstm")
IMPLS: tuple[str, ...] = ("fused", "scratch")

# ``torch.nn``'s classes, kept in float32 under CUDA autocast (see ``rnnlab.nn.fused``).
_FUSED: dict[str, type[nn.Module]] = {"rnn": fused.RNN, "gru": fused.GRU, "lstm": fused.LSTM}


def _scratch_classes() -> dict[str, type[nn.Module]]:
    from rnnlab.nn import layers

    return {
        "rnn": layers.RNN,
        "gru": layers.GRU,
        "lstm": layers.LSTM,
        "peephole_lstm": layers.PeepholeLSTM,
        "coupled_lstm": layers.CoupledLSTM,
    }


def has_cell_state(cell: str) -> bool:
    """True when the layer's state is a pair (h, c) rather than a single tensor h."""
    return cell.endswith("lstm")


def make_rnn(
    cell: str,
    impl: str = "fused",
    *,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    dropout: float = 0.0,
    bidirectional: bool = False,
    batch_first: bool = True,
) -> nn.Module:
    """Build a recurrent stack with the ``torch.nn.RNN``/``GRU``/``LSTM`` calling convention.

    The LSTM variants have no ``torch.nn`` kernel; asking for them with ``impl="fused"`` falls back to
    the scratch implementation rather than failing, because "fused where it exists" is the contract.
    """
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(CELLS)}")
    if impl not in IMPLS:
        raise ValueError(f"unknown rnn_impl {impl!r}; expected one of {', '.join(IMPLS)}")
    # Checked here because one layer's dropout is replaced by 0 below, unseen by the layer.
    check_dropout(dropout)
    kwargs = dict(
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
        batch_first=batch_first,
    )
    if impl == "fused" and cell in _FUSED:
        return _FUSED[cell](**kwargs)
    return _scratch_classes()[cell](**kwargs)
