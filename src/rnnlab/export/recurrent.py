"""Recurrent layers as ONNX's own ``RNN``/``GRU``/``LSTM`` operators, for the exporter.

``torch.onnx.export(..., dynamo=True)`` traces a model with ``torch.export``, which cannot follow a
``PackedSequence`` (its ``batch_sizes`` are data, not shapes) nor rnnlab's scratch layers (their time
loops run in Python over those ``batch_sizes``). Yet ONNX has had recurrent operators since opset 7,
with a ``sequence_lens`` input that does what packing does: each sequence stops at its own length,
the backward direction starts at the sequence's own last token, outputs past the end are zero and the
final state is the state after the last real token. ONNX Runtime runs them as fused loops.

So every recurrent stack is exported as one custom PyTorch operator per layer,
``rnnlab_export::recurrent``, which the exporter's ``custom_translation_table`` maps to the ONNX
operator. The weights are converted once, here, from the ``torch.nn`` layout (shared by rnnlab's
scratch layers) to the ONNX layout::

    torch.nn  weight_ih_l{k}[_reverse]  (G·H, I)  gates  LSTM i f g o   GRU r z n
    ONNX      W  (D, G·H, I), R (D, G·H, H), B (D, 2·G·H)  LSTM i o f c   GRU z r h  (linear_before_reset)

Peephole LSTMs (Gers & Schmidhuber 2000) use the ``P`` input, whose i and f peepholes read c_{t-1}
and o reads c_t, exactly as ``rnnlab.nn.PeepholeLSTM``. The coupled LSTM (i = 1 − f) uses the LSTM
operator's ``input_forget`` coupling; ONNX Runtime derives f = 1 − i from the input gate, so the
input-gate block holds the negated forget-gate weights: σ(−z_f) = 1 − σ(z_f) = i, and 1 − i = f.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rnnlab.nn import cells
from rnnlab.nn.factory import has_cell_state

# torch.nn gate blocks → ONNX gate blocks
_GATE_ORDER: dict[str, list[int]] = {
    "rnn": [0],
    "gru": [1, 0, 2],  # r z n → z r h
    "lstm": [0, 3, 1, 2],  # i f g o → i o f c
    "peephole_lstm": [0, 3, 1, 2],
}


@torch.library.custom_op("rnnlab_export::recurrent", mutates_args=())
def recurrent(
    x: Tensor,
    lengths: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    w: Tensor,
    r: Tensor,
    b: Tensor,
    p: Tensor | None,
    cell: str,
    hidden_size: int,
    bidirectional: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """One layer, as ONNX defines it: x (T, B, I) → y (T, D, B, H), h_n (D, B, H), c_n (D, B, H).

    Only ever traced (see ``_recurrent_shapes``); the ONNX graph runs it.
    """
    raise NotImplementedError("rnnlab_export::recurrent exists only to be exported to ONNX")


@recurrent.register_fake
def _recurrent_shapes(x, lengths, h0, c0, *weights_and_options):  # noqa: ANN001, ANN202
    """Output shapes from input shapes: what ``torch.export`` traces instead of running the op."""
    hidden_size, bidirectional = weights_and_options[-2:]
    y = x.new_empty(x.shape[0], 2 if bidirectional else 1, x.shape[1], hidden_size)
    return y, h0.new_empty(h0.shape), c0.new_empty(c0.shape)


def recurrent_to_onnx(
    x, lengths, h0, c0, w, r, b, p, cell: str, hidden_size: int, bidirectional: bool
):  # noqa: ANN001, ANN201 - onnxscript values
    """The ONNX operator for one ``rnnlab_export::recurrent`` call (for ``custom_translation_table``)."""
    from onnxscript import opset18 as op

    direction = "bidirectional" if bidirectional else "forward"
    seq_lens: Any = op.Cast(lengths, to=6) if lengths is not None else None  # int32
    if cell in ("lstm", "peephole_lstm", "coupled_lstm"):
        y, h_n, c_n = op.LSTM(
            x,
            w,
            r,
            b,
            seq_lens,
            h0,
            c0,
            p,
            hidden_size=hidden_size,
            direction=direction,
            input_forget=1 if cell == "coupled_lstm" else 0,
        )
        return y, h_n, c_n
    if cell == "gru":
        y, h_n = op.GRU(
            x,
            w,
            r,
            b,
            seq_lens,
            h0,
            hidden_size=hidden_size,
            direction=direction,
            linear_before_reset=1,
        )
    else:
        y, h_n = op.RNN(x, w, r, b, seq_lens, h0, hidden_size=hidden_size, direction=direction)
    return y, h_n, op.Identity(h_n)


def translation_table() -> dict:
    return {torch.ops.rnnlab_export.recurrent.default: recurrent_to_onnx}


def _blocks(weight: Tensor, order: list[int], hidden: int) -> Tensor:
    return torch.cat([weight[i * hidden : (i + 1) * hidden] for i in order])


class PortableRecurrent(nn.Module):
    """A trained recurrent stack (``torch.nn`` or rnnlab scratch) in the ONNX operators' layout.

    Called like the stack it replaces, ``(x (B, T, I), state) → (outputs (B, T, D·H), state)``, plus
    optional ``lengths`` (B,) that play the part of packing.
    """

    def __init__(self, rnn: Any, cell: str) -> None:
        super().__init__()
        if getattr(rnn, "proj_size", 0):
            raise ValueError("LSTM projections (proj_size) have no ONNX operator")
        nonlinearity = getattr(rnn, "nonlinearity", "tanh")
        if nonlinearity != "tanh":
            raise ValueError(f"an RNN with {nonlinearity} activation is not exported")
        if not rnn.batch_first:
            raise ValueError("expected a batch-first recurrent stack")
        self.cell = cell
        self.hidden_size = int(rnn.hidden_size)
        self.num_layers = int(rnn.num_layers)
        self.bidirectional = bool(rnn.bidirectional)
        self.carries_cell = has_cell_state(cell)
        directions = 2 if self.bidirectional else 1
        hidden = self.hidden_size
        for layer in range(self.num_layers):
            ws, rs, bs, ps = [], [], [], []
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                w_ih = getattr(rnn, "weight_ih" + suffix).detach().float()
                w_hh = getattr(rnn, "weight_hh" + suffix).detach().float()
                b_ih = getattr(rnn, "bias_ih" + suffix, None)
                b_hh = getattr(rnn, "bias_hh" + suffix, None)
                b_ih = b_ih.detach().float() if b_ih is not None else w_ih.new_zeros(w_ih.size(0))
                b_hh = b_hh.detach().float() if b_hh is not None else w_hh.new_zeros(w_hh.size(0))
                if cell == "coupled_lstm":
                    # f g o → i (= −f, see the module docstring), o, f (unused), c
                    f, g, o = (slice(k * hidden, (k + 1) * hidden) for k in range(3))
                    zero_w = w_ih.new_zeros(hidden, w_ih.size(1))
                    w = torch.cat([-w_ih[f], w_ih[o], zero_w, w_ih[g]])
                    zero_r = w_hh.new_zeros(hidden, w_hh.size(1))
                    rr = torch.cat([-w_hh[f], w_hh[o], zero_r, w_hh[g]])
                    zero_b = b_ih.new_zeros(hidden)
                    bi = torch.cat([-b_ih[f], b_ih[o], zero_b, b_ih[g]])
                    bh = torch.cat([-b_hh[f], b_hh[o], zero_b, b_hh[g]])
                else:
                    order = _GATE_ORDER[cell]
                    w = _blocks(w_ih, order, hidden)
                    rr = _blocks(w_hh, order, hidden)
                    bi, bh = _blocks(b_ih, order, hidden), _blocks(b_hh, order, hidden)
                ws.append(w)
                rs.append(rr)
                bs.append(torch.cat([bi, bh]))
                if cell == "peephole_lstm":
                    peep = [getattr(rnn, f"weight_c{g}" + suffix).detach().float() for g in "iof"]
                    ps.append(torch.cat(peep))
            self.register_buffer(f"w{layer}", torch.stack(ws))  # (D, G·H, I)
            self.register_buffer(f"r{layer}", torch.stack(rs))  # (D, G·H, H)
            self.register_buffer(f"b{layer}", torch.stack(bs))  # (D, 2·G·H)
            self.register_buffer(f"p{layer}", torch.stack(ps) if ps else None)  # (D, 3·H)

    def forward(
        self,
        x: Tensor,
        state: Tensor | tuple[Tensor, Tensor] | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        """x (B, T, I), state (L·D, B, H) or an (h, c) pair or None, lengths (B,) → (B, T, D·H), state."""
        directions = 2 if self.bidirectional else 1
        if state is None:
            h = x.new_zeros(self.num_layers * directions, x.size(0), self.hidden_size)
            c = h
        elif isinstance(state, tuple):
            h, c = state
        else:
            h, c = state, state
        layer_input = x.transpose(0, 1)  # (T, B, I)
        h_out, c_out = [], []
        for layer in range(self.num_layers):
            rows = slice(layer * directions, (layer + 1) * directions)
            y, h_n, c_n = torch.ops.rnnlab_export.recurrent(
                layer_input,
                lengths,
                h[rows],
                c[rows],
                getattr(self, f"w{layer}"),
                getattr(self, f"r{layer}"),
                getattr(self, f"b{layer}"),
                getattr(self, f"p{layer}"),
                self.cell,
                self.hidden_size,
                self.bidirectional,
            )  # y (T, D, B, H)
            steps, batch = y.size(0), y.size(2)
            layer_input = y.permute(0, 2, 1, 3).reshape(steps, batch, directions * self.hidden_size)
            h_out.append(h_n)
            c_out.append(c_n)
        outputs = layer_input.transpose(0, 1)  # (B, T, D·H)
        h_final = torch.cat(h_out) if len(h_out) > 1 else h_out[0]  # (L·D, B, H)
        if self.carries_cell:
            c_final = torch.cat(c_out) if len(c_out) > 1 else c_out[0]
            return outputs, (h_final, c_final)
        return outputs, h_final


_CELLS = {
    "rnn": cells.RNNCell,
    "gru": cells.GRUCell,
    "lstm": cells.LSTMCell,
    "peephole_lstm": cells.PeepholeLSTMCell,
    "coupled_lstm": cells.CoupledLSTMCell,
}


class CellStack(nn.Module):
    """A unidirectional stack read one token at a time, as rnnlab's single-step cells.

    A decoder or language-model step reads one token, so it needs no time loop: the cells' plain
    matrix products export as ``MatMul``/``Gemm`` nodes, which ONNX Runtime's dynamic quantisation
    turns into int8 (it has no int8 ``GRU`` or ``RNN`` operator). Called like the stack it replaces,
    with x (B, 1, I).
    """

    def __init__(self, rnn: Any, cell: str) -> None:
        super().__init__()
        if rnn.bidirectional or getattr(rnn, "proj_size", 0):
            raise ValueError("a step stack is unidirectional and without projection")
        self.carries_cell = has_cell_state(cell)
        state = rnn.state_dict()
        layers = []
        for layer in range(rnn.num_layers):
            input_size = rnn.input_size if layer == 0 else rnn.hidden_size
            step_cell = _CELLS[cell](input_size, rnn.hidden_size)
            own = {name: state[f"{name}_l{layer}"] for name in step_cell.state_dict()}
            step_cell.load_state_dict(own)
            layers.append(step_cell)
        self.layers = nn.ModuleList(layers)

    def forward(
        self, x: Tensor, state: Tensor | tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        """x (B, 1, I), state (L, B, H) or an (h, c) pair → output (B, 1, H), next state."""
        layer_input = x.squeeze(1)  # (B, I)
        h_next, c_next = [], []
        for layer, step_cell in enumerate(self.layers):
            if self.carries_cell:
                h, c = step_cell(layer_input, (state[0][layer], state[1][layer]))
                c_next.append(c)
            else:
                h = step_cell(layer_input, state[layer])
            h_next.append(h)
            layer_input = h
        h_stack = torch.stack(h_next)  # (L, B, H)
        next_state = (h_stack, torch.stack(c_next)) if self.carries_cell else h_stack
        return layer_input.unsqueeze(1), next_state
