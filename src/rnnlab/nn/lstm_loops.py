"""Time loops of the LSTM family, forward and hand-derived backward, one direction at a time.

LSTM: Hochreiter & Schmidhuber 1997, with the forget gate of Gers, Schmidhuber & Cummins 2000 and the
output projection of Sak, Senior & Beaufays 2014 (``proj_size``). Peepholes: Gers & Schmidhuber 2000,
"Recurrent nets that time and count". Coupled input and forget gates (i = 1 - f): Greff et al. 2017,
"LSTM: A Search Space Odyssey".

The loops only hold what must be sequential: the recurrent product and the gate arithmetic. The input
projection ``xw`` (N, G·H) of every token arrives precomputed in one matrix product, and the backward
loops return the pre-activation gate gradients ``d_gates`` (N, G·H) so that the caller gets the weight
gradients from one matrix product over all tokens instead of one per step. Rows follow the layout in
:mod:`rnnlab.nn.schedule`; gate blocks follow ``torch.nn.LSTM`` (i, f, g, o), the coupled LSTM drops
the input gate (f, g, o).

``xw`` is overwritten with the gate activations, which the backward loop then reads: it is a buffer the
caller made for this call, never a user tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.nn.schedule import CompiledLoop, final_state, fit_state, time_index


def _empty(rows: int, cols: int, like: Tensor) -> Tensor:
    return torch.empty((rows, cols), dtype=like.dtype, device=like.device)


def lstm_forward(
    xw: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_hh_t: Tensor,
    w_hr_t: Tensor | None,
    batch_sizes: list[int],
    offsets: list[int],
    reverse: bool,
    keep: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Run one direction. Shapes: xw (N, 4H), h0 (B, P), c0 (B, H), w_hh_t (P, 4H), w_hr_t (H, P).

    Returns out (N, P), h_n (B, P), c_n (B, H) and, when ``keep`` (a backward pass will follow), the
    states entering each step h_prev (N, P), the local derivatives (N, 5H) described below, and the
    projection inputs o * tanh(c) (N, H) (empty without projection). P = H without projection.

    The backward step needs, per token, only products of this step's activations; computing them
    here, while they are at hand, turns ~20 elementwise kernels per backward step into 4::

        local = [ g i(1-i) | c_prev f(1-f) | i(1-g²) | tanh(c) o(1-o) | o(1-tanh²(c)) ]
                  d/d i_pre  d/d f_pre       d/d g_pre  d/d o_pre (by dh) dc/dh
    """
    n, hidden, out_size = xw.size(0), c0.size(1), h0.size(1)
    kept = n if keep else 0
    out, h_prev = _empty(n, out_size, xw), _empty(kept, out_size, xw)
    local = _empty(kept, 5 * hidden, xw)
    unprojected = _empty(kept if w_hr_t is not None else 0, hidden, xw)
    steps = len(batch_sizes)
    first = batch_sizes[time_index(0, steps, reverse)]
    h, c = h0[:first], c0[:first]
    h_done: list[Tensor] = []
    c_done: list[Tensor] = []
    for s in range(steps):
        t = time_index(s, steps, reverse)
        b, lo = batch_sizes[t], offsets[t]
        hi = lo + b
        h, c = fit_state(h, h0, b, h_done), fit_state(c, c0, b, c_done)
        gates = xw[lo:hi].addmm_(h, w_hh_t)  # (b, 4H), pre-activation
        gates[:, : 2 * hidden].sigmoid_()
        gates[:, 2 * hidden : 3 * hidden].tanh_()
        gates[:, 3 * hidden :].sigmoid_()
        i, f = gates[:, :hidden], gates[:, hidden : 2 * hidden]
        g, o = gates[:, 2 * hidden : 3 * hidden], gates[:, 3 * hidden :]
        c_new = torch.addcmul(f * c, i, g)
        tanh_c = torch.tanh(c_new)
        if keep:
            h_prev[lo:hi] = h
            loc = local[lo:hi]
            sig = gates[:, : 2 * hidden]
            d_sig = sig - sig * sig  # (b, 2H): i(1-i), f(1-f)
            torch.mul(d_sig[:, :hidden], g, out=loc[:, :hidden])
            torch.mul(d_sig[:, hidden:], c, out=loc[:, hidden : 2 * hidden])
            torch.addcmul(i, i * g, g, value=-1.0, out=loc[:, 2 * hidden : 3 * hidden])
            torch.mul(tanh_c, o - o * o, out=loc[:, 3 * hidden : 4 * hidden])
            torch.addcmul(o, o * tanh_c, tanh_c, value=-1.0, out=loc[:, 4 * hidden :])
        c = c_new
        h = o * tanh_c
        if w_hr_t is not None:
            if keep:
                unprojected[lo:hi] = h
            h = h.mm(w_hr_t)
        out[lo:hi] = h
    h_n, c_n = final_state(h, h_done), final_state(c, c_done)
    return out, h_n, c_n, h_prev, local, unprojected


def lstm_backward(
    grad_out: Tensor,
    grad_h_n: Tensor,
    grad_c_n: Tensor,
    gates: Tensor,
    local: Tensor,
    w_hh: Tensor,
    w_hr: Tensor | None,
    batch_sizes: list[int],
    offsets: list[int],
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Back-propagate one direction through time.

    Shapes: grad_out (N, P), grad_h_n (B, P), grad_c_n (B, H), gates (N, 4H) activations, local (N, 5H)
    from :func:`lstm_forward`, w_hh (4H, P), w_hr (P, H). Returns d_gates (N, 4H) pre-activation,
    grad_h0 (B, P), grad_c0 (B, H) and the total gradient reaching every output (N, P) (empty
    without projection).
    """
    n, hidden = gates.size(0), grad_c_n.size(1)
    d_gates = torch.empty_like(gates)
    d_out_total = _empty(n if w_hr is not None else 0, grad_out.size(1), gates)
    steps = len(batch_sizes)
    first = batch_sizes[time_index(0, steps, not reverse)]
    dh, dc = grad_h_n[:first], grad_c_n[:first]
    dh_done: list[Tensor] = []
    dc_done: list[Tensor] = []
    for s in range(steps):
        t = time_index(s, steps, not reverse)
        b, lo = batch_sizes[t], offsets[t]
        hi = lo + b
        dh, dc = fit_state(dh, grad_h_n, b, dh_done), fit_state(dc, grad_c_n, b, dc_done)
        dh = dh + grad_out[lo:hi]
        if w_hr is not None:
            d_out_total[lo:hi] = dh
            dh = dh.mm(w_hr)  # (b, H), gradient of o * tanh(c)
        loc = local[lo:hi]
        dc = torch.addcmul(dc, dh, loc[:, 4 * hidden :])  # (b, H), total gradient of c_t
        d = d_gates[lo:hi]
        ifg = d[:, : 3 * hidden].view(b, 3, hidden)
        torch.mul(loc[:, : 3 * hidden].view(b, 3, hidden), dc.unsqueeze(1), out=ifg)
        torch.mul(dh, loc[:, 3 * hidden : 4 * hidden], out=d[:, 3 * hidden :])
        dh = d.mm(w_hh)
        dc = dc * gates[lo:hi, hidden : 2 * hidden]  # through c_t = f c_{t-1} + ...
    return d_gates, final_state(dh, dh_done), final_state(dc, dc_done), d_out_total


def peephole_forward(
    xw: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_hh_t: Tensor,
    w_ci: Tensor,
    w_cf: Tensor,
    w_co: Tensor,
    batch_sizes: list[int],
    offsets: list[int],
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Peephole LSTM: i and f also see c_{t-1}, o sees c_t, each through a diagonal (H,) weight.

    Shapes as :func:`lstm_forward` with P = H; returns out, h_n, c_n, h_prev, c_prev, cells, tanh(cells).
    """
    n, hidden = xw.size(0), c0.size(1)
    out, h_prev, c_prev = _empty(n, hidden, xw), _empty(n, hidden, xw), _empty(n, hidden, xw)
    cells, tanh_cells = _empty(n, hidden, xw), _empty(n, hidden, xw)
    steps = len(batch_sizes)
    first = batch_sizes[time_index(0, steps, reverse)]
    h, c = h0[:first], c0[:first]
    h_done: list[Tensor] = []
    c_done: list[Tensor] = []
    for s in range(steps):
        t = time_index(s, steps, reverse)
        b, lo = batch_sizes[t], offsets[t]
        hi = lo + b
        h, c = fit_state(h, h0, b, h_done), fit_state(c, c0, b, c_done)
        h_prev[lo:hi] = h
        c_prev[lo:hi] = c
        gates = xw[lo:hi].addmm_(h, w_hh_t)  # (b, 4H), pre-activation
        i = gates[:, :hidden].addcmul_(c, w_ci).sigmoid_()
        f = gates[:, hidden : 2 * hidden].addcmul_(c, w_cf).sigmoid_()
        g = gates[:, 2 * hidden : 3 * hidden].tanh_()
        c = torch.addcmul(f * c, i, g)
        o = gates[:, 3 * hidden :].addcmul_(c, w_co).sigmoid_()
        tanh_c = torch.tanh(c)
        h = o * tanh_c
        cells[lo:hi] = c
        tanh_cells[lo:hi] = tanh_c
        out[lo:hi] = h
    h_n, c_n = final_state(h, h_done), final_state(c, c_done)
    return out, h_n, c_n, h_prev, c_prev, cells, tanh_cells


def peephole_backward(
    grad_out: Tensor,
    grad_h_n: Tensor,
    grad_c_n: Tensor,
    gates: Tensor,
    c_prev: Tensor,
    tanh_cells: Tensor,
    w_hh: Tensor,
    w_ci: Tensor,
    w_cf: Tensor,
    w_co: Tensor,
    batch_sizes: list[int],
    offsets: list[int],
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Back-propagate the peephole LSTM; returns d_gates (N, 4H), grad_h0 (B, H), grad_c0 (B, H)."""
    hidden = c_prev.size(1)
    d_gates = torch.empty_like(gates)
    steps = len(batch_sizes)
    first = batch_sizes[time_index(0, steps, not reverse)]
    dh, dc = grad_h_n[:first], grad_c_n[:first]
    dh_done: list[Tensor] = []
    dc_done: list[Tensor] = []
    for s in range(steps):
        t = time_index(s, steps, not reverse)
        b, lo = batch_sizes[t], offsets[t]
        hi = lo + b
        dh, dc = fit_state(dh, grad_h_n, b, dh_done), fit_state(dc, grad_c_n, b, dc_done)
        dh = dh + grad_out[lo:hi]
        act = gates[lo:hi]
        i, f = act[:, :hidden], act[:, hidden : 2 * hidden]
        g, o = act[:, 2 * hidden : 3 * hidden], act[:, 3 * hidden :]
        tanh_c = tanh_cells[lo:hi]
        d = d_gates[lo:hi]
        d_o = dh * tanh_c * o * (1 - o)
        d[:, 3 * hidden :] = d_o
        dc = dc + dh * o * (1 - tanh_c * tanh_c) + d_o * w_co
        d_i = dc * g * i * (1 - i)
        d_f = dc * c_prev[lo:hi] * f * (1 - f)
        d[:, :hidden] = d_i
        d[:, hidden : 2 * hidden] = d_f
        d[:, 2 * hidden : 3 * hidden] = dc * i * (1 - g * g)
        dh = d.mm(w_hh)
        dc = dc * f + d_i * w_ci + d_f * w_cf
    return d_gates, final_state(dh, dh_done), final_state(dc, dc_done)


def coupled_forward(
    xw: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_hh_t: Tensor,
    batch_sizes: list[int],
    offsets: list[int],
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Coupled LSTM, gate blocks (f, g, o) in xw (N, 3H): c_t = f c_{t-1} + (1 - f) g.

    Returns out (N, H), h_n, c_n (B, H), h_prev, c_prev, tanh(cells) (N, H).
    """
    n, hidden = xw.size(0), c0.size(1)
    out, h_prev, c_prev = _empty(n, hidden, xw), _empty(n, hidden, xw), _empty(n, hidden, xw)
    tanh_cells = _empty(n, hidden, xw)
    steps = len(batch_sizes)
    first = batch_sizes[time_index(0, steps, reverse)]
    h, c = h0[:first], c0[:first]
    h_done: list[Tensor] = []
    c_done: list[Tensor] = []
    for s in range(steps):
        t = time_index(s, steps, reverse)
        b, lo = batch_sizes[t], offsets[t]
        hi = lo + b
        h, c = fit_state(h, h0, b, h_done), fit_state(c, c0, b, c_done)
        h_prev[lo:hi] = h
        c_prev[lo:hi] = c
        gates = xw[lo:hi].addmm_(h, w_hh_t)  # (b, 3H), pre-activation
        f = gates[:, :hidden].sigmoid_()
        g = gates[:, hidden : 2 * hidden].tanh_()
        o = gates[:, 2 * hidden :].sigmoid_()
        c = torch.addcmul(g, f, c - g)  # f c + (1 - f) g
        tanh_c = torch.tanh(c)
        h = o * tanh_c
        tanh_cells[lo:hi] = tanh_c
        out[lo:hi] = h
    h_n, c_n = final_state(h, h_done), final_state(c, c_done)
    return out, h_n, c_n, h_prev, c_prev, tanh_cells


def coupled_backward(
    grad_out: Tensor,
    grad_h_n: Tensor,
    grad_c_n: Tensor,
    gates: Tensor,
    c_prev: Tensor,
    tanh_cells: Tensor,
    w_hh: Tensor,
    batch_sizes: list[int],
    offsets: list[int],
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Back-propagate the coupled LSTM; returns d_gates (N, 3H), grad_h0 (B, H), grad_c0 (B, H)."""
    hidden = c_prev.size(1)
    d_gates = torch.empty_like(gates)
    steps = len(batch_sizes)
    first = batch_sizes[time_index(0, steps, not reverse)]
    dh, dc = grad_h_n[:first], grad_c_n[:first]
    dh_done: list[Tensor] = []
    dc_done: list[Tensor] = []
    for s in range(steps):
        t = time_index(s, steps, not reverse)
        b, lo = batch_sizes[t], offsets[t]
        hi = lo + b
        dh, dc = fit_state(dh, grad_h_n, b, dh_done), fit_state(dc, grad_c_n, b, dc_done)
        dh = dh + grad_out[lo:hi]
        act = gates[lo:hi]
        f, g, o = act[:, :hidden], act[:, hidden : 2 * hidden], act[:, 2 * hidden :]
        tanh_c = tanh_cells[lo:hi]
        dc = dc + dh * o * (1 - tanh_c * tanh_c)
        d = d_gates[lo:hi]
        d[:, :hidden] = dc * (c_prev[lo:hi] - g) * f * (1 - f)
        d[:, hidden : 2 * hidden] = dc * (1 - f) * (1 - g * g)
        d[:, 2 * hidden :] = dh * tanh_c * o * (1 - o)
        dh = d.mm(w_hh)
        dc = dc * f
    return d_gates, final_state(dh, dh_done), final_state(dc, dc_done)


LSTM_FORWARD = CompiledLoop(lstm_forward)
LSTM_BACKWARD = CompiledLoop(lstm_backward)
PEEPHOLE_FORWARD = CompiledLoop(peephole_forward)
PEEPHOLE_BACKWARD = CompiledLoop(peephole_backward)
COUPLED_FORWARD = CompiledLoop(coupled_forward)
COUPLED_BACKWARD = CompiledLoop(coupled_backward)
