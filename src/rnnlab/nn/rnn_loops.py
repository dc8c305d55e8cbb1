"""Time loops of the Elman RNN and the GRU, forward and hand-derived backward, one direction at a time.

Elman RNN: Elman 1990, "Finding structure in time": h_t = phi(x_t W_ih^T + h_{t-1} W_hh^T + b).
GRU: Cho et al. 2014, "Learning phrase representations using RNN encoder-decoder", in the form of
``torch.nn.GRU``, where the reset gate scales the recurrent candidate *after* its bias:
n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn)), h_t = (1 - z_t) n_t + z_t h_{t-1}.

As in :mod:`rnnlab.nn.lstm_loops`, the input projection ``xw`` arrives precomputed for all tokens and
is overwritten (here: with the new states, or with the gate activations), and the backward loops
return pre-activation gradients so that weight gradients take one matrix product over all tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.nn.schedule import CompiledLoop, final_state, fit_state, time_index


def elman_forward(
    xw: Tensor,
    h0: Tensor,
    w_hh_t: Tensor,
    relu: bool,
    batch_sizes: list[int],
    offsets: list[int],
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run one direction. Shapes: xw (N, H) (both biases folded in), h0 (B, H), w_hh_t (H, H).

    Returns out (N, H) -- the buffer ``xw`` itself, now holding h_t --, h_n (B, H) and the states
    entering each step h_prev (N, H).
    """
    h_prev = torch.empty_like(xw)
    steps = len(batch_sizes)
    h = h0[: batch_sizes[time_index(0, steps, reverse)]]
    h_done: list[Tensor] = []
    for s in range(steps):
        t = time_index(s, steps, reverse)
        b, lo = batch_sizes[t], offsets[t]
        h = fit_state(h, h0, b, h_done)
        h_prev[lo : lo + b] = h
        pre = xw[lo : lo + b].addmm_(h, w_hh_t)  # (b, H)
        h = pre.relu_() if relu else pre.tanh_()
    return xw, final_state(h, h_done), h_prev


def elman_backward(
    grad_out: Tensor,
    grad_h_n: Tensor,
    out: Tensor,
    w_hh: Tensor,
    relu: bool,
    batch_sizes: list[int],
    offsets: list[int],
    reverse: bool,
) -> tuple[Tensor, Tensor]:
    """Back-propagate one direction; returns d_pre (N, H), the pre-activation gradient, and grad_h0."""
    d_pre = torch.empty_like(out)
    steps = len(batch_sizes)
    dh = grad_h_n[: batch_sizes[time_index(0, steps, not reverse)]]
    dh_done: list[Tensor] = []
    for s in range(steps):
        t = time_index(s, steps, not reverse)
        b, lo = batch_sizes[t], offsets[t]
        hi = lo + b
        dh = fit_state(dh, grad_h_n, b, dh_done) + grad_out[lo:hi]
        h = out[lo:hi]
        d = d_pre[lo:hi]
        if relu:
            torch.mul(dh, h > 0, out=d)
        else:
            torch.mul(dh, 1 - h * h, out=d)
        dh = d.mm(w_hh)
    return d_pre, final_state(dh, dh_done)


def gru_forward(
    xw: Tensor,
    h0: Tensor,
    w_hh_t: Tensor,
    b_hh: Tensor | None,
    batch_sizes: list[int],
    offsets: list[int],
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Run one direction. Shapes: xw (N, 3H) with b_ih folded in, h0 (B, H), w_hh_t (H, 3H), b_hh (3H,).

    Returns out (N, H), h_n (B, H) and, for the backward loop, h_prev (N, H) and the recurrent part of
    the candidate W_hn h_{t-1} + b_hn (N, H); ``xw`` then holds the activations r, z, n.
    """
    n, hidden = xw.size(0), h0.size(1)
    out = torch.empty((n, hidden), dtype=xw.dtype, device=xw.device)
    h_prev, hn_all = torch.empty_like(out), torch.empty_like(out)
    steps = len(batch_sizes)
    h = h0[: batch_sizes[time_index(0, steps, reverse)]]
    h_done: list[Tensor] = []
    for s in range(steps):
        t = time_index(s, steps, reverse)
        b, lo = batch_sizes[t], offsets[t]
        hi = lo + b
        h = fit_state(h, h0, b, h_done)
        h_prev[lo:hi] = h
        gh = h.mm(w_hh_t) if b_hh is None else torch.addmm(b_hh, h, w_hh_t)  # (b, 3H)
        gx = xw[lo:hi]
        rz = gx[:, : 2 * hidden].add_(gh[:, : 2 * hidden]).sigmoid_()
        r, z = rz[:, :hidden], rz[:, hidden:]
        hn = gh[:, 2 * hidden :]
        candidate = gx[:, 2 * hidden :].addcmul_(r, hn).tanh_()
        hn_all[lo:hi] = hn
        h = torch.addcmul(candidate, z, h - candidate)  # (1 - z) n + z h
        out[lo:hi] = h
    return out, final_state(h, h_done), h_prev, hn_all, xw


def gru_backward(
    grad_out: Tensor,
    grad_h_n: Tensor,
    gates: Tensor,
    h_prev: Tensor,
    hn_all: Tensor,
    w_hh: Tensor,
    batch_sizes: list[int],
    offsets: list[int],
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Back-propagate one direction.

    Returns the pre-activation gradients of the input side d_gx (N, 3H) and of the recurrent side
    d_gh (N, 3H) -- they differ only in the candidate block, scaled by r on the recurrent side -- and
    grad_h0 (B, H).
    """
    hidden = h_prev.size(1)
    d_gx, d_gh = torch.empty_like(gates), torch.empty_like(gates)
    steps = len(batch_sizes)
    dh = grad_h_n[: batch_sizes[time_index(0, steps, not reverse)]]
    dh_done: list[Tensor] = []
    for s in range(steps):
        t = time_index(s, steps, not reverse)
        b, lo = batch_sizes[t], offsets[t]
        hi = lo + b
        dh = fit_state(dh, grad_h_n, b, dh_done) + grad_out[lo:hi]
        act = gates[lo:hi]
        r, z, n = act[:, :hidden], act[:, hidden : 2 * hidden], act[:, 2 * hidden :]
        d_n = dh * (1 - z) * (1 - n * n)
        d_r = d_n * hn_all[lo:hi] * r * (1 - r)
        d_z = dh * (h_prev[lo:hi] - n) * z * (1 - z)
        dx, dr = d_gx[lo:hi], d_gh[lo:hi]
        dx[:, :hidden] = d_r
        dx[:, hidden : 2 * hidden] = d_z
        dx[:, 2 * hidden :] = d_n
        dr[:, : 2 * hidden] = dx[:, : 2 * hidden]
        dr[:, 2 * hidden :] = d_n * r
        dh = torch.addmm(dh * z, dr, w_hh)
    return d_gx, d_gh, final_state(dh, dh_done)


ELMAN_FORWARD = CompiledLoop(elman_forward)
ELMAN_BACKWARD = CompiledLoop(elman_backward)
GRU_FORWARD = CompiledLoop(gru_forward)
GRU_BACKWARD = CompiledLoop(gru_backward)
