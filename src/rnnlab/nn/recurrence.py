"""One direction of one recurrent layer as an autograd function.

Autograd through a per-step loop records every small kernel of every step and, in backward, forms
the weight gradients as T small matrix products. Here the backward loop is written out by hand
(:mod:`rnnlab.nn.lstm_loops`, :mod:`rnnlab.nn.rnn_loops`): it carries only what is truly sequential,
collects the pre-activation gradients of all tokens, and the weight and input gradients then come
from one matrix product each::

    forward   xw = x W_ih^T + b          one GEMM over all N tokens   (N, G·H)
              loop over t: gates_t = xw_t + h_{t-1} W_hh^T ...        one small GEMM per step
    backward  loop over t (reversed): d_gates_t, dh_{t-1} = d_gates_t W_hh
              dW_ih = d_gates^T x, dW_hh = d_gates^T h_prev, dx = d_gates W_ih, db = sum d_gates

The gradients are exact (the same arithmetic autograd would do, in a different summation order);
they support first-order differentiation only.

Every function takes ``x`` (N, I) in the token layout of :mod:`rnnlab.nn.schedule`, initial states
(B, ·) and the parameters of one direction, and returns ``(out (N, ·), h_n (B, ·)[, c_n (B, H)])``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from rnnlab.nn import lstm_loops, rnn_loops
from rnnlab.nn.schedule import Schedule


def _project(x: Tensor, w_ih: Tensor, bias: Tensor | None) -> Tensor:
    """The input side of every gate for every token, (N, G·H), in a fresh buffer the loop may reuse."""
    if bias is None:
        return x.mm(w_ih.t())
    return torch.addmm(bias, x, w_ih.t())


def _folded_bias(b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor | None:
    """b_ih + b_hh: where both biases add to the same pre-activation, one add per token suffices."""
    if b_ih is None or b_hh is None:
        return b_ih if b_hh is None else b_hh
    return b_ih + b_hh


def _input_grads(
    needs: tuple[bool, ...], d_x_side: Tensor, x: Tensor, w_ih: Tensor
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of x (N, I) and W_ih (G·H, I) from the pre-activation gradients (N, G·H)."""
    grad_x = d_x_side.mm(w_ih) if needs[0] else None
    grad_w_ih = d_x_side.t().mm(x) if needs[1] else None
    return grad_x, grad_w_ih


class _Elman(Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, relu: bool, schedule: Schedule):
        xw = _project(x, w_ih, _folded_bias(b_ih, b_hh))
        s = schedule
        out, h_n, h_prev = rnn_loops.ELMAN_FORWARD(
            xw, h0, w_hh.t(), relu, s.batch_sizes, s.offsets, s.reverse
        )
        ctx.save_for_backward(x, w_ih, w_hh, out, h_prev)
        ctx.relu, ctx.schedule = relu, schedule
        return out, h_n.clone()  # h_n may be a view of ``out``; outputs must not alias

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n):
        x, w_ih, w_hh, out, h_prev = ctx.saved_tensors
        s, needs = ctx.schedule, ctx.needs_input_grad
        d_pre, grad_h0 = rnn_loops.ELMAN_BACKWARD(
            grad_out, grad_h_n, out, w_hh, ctx.relu, s.batch_sizes, s.offsets, s.reverse
        )
        grad_x, grad_w_ih = _input_grads((needs[0], needs[2]), d_pre, x, w_ih)
        grad_w_hh = d_pre.t().mm(h_prev) if needs[3] else None
        grad_b = d_pre.sum(0) if needs[4] or needs[5] else None
        return grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b, grad_b, None, None


class _GRU(Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, schedule: Schedule):
        xw = _project(x, w_ih, b_ih)
        s = schedule
        out, h_n, h_prev, hn_all, gates = rnn_loops.GRU_FORWARD(
            xw, h0, w_hh.t(), b_hh, s.batch_sizes, s.offsets, s.reverse
        )
        ctx.save_for_backward(x, w_ih, w_hh, gates, h_prev, hn_all)
        ctx.schedule = schedule
        return out, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n):
        x, w_ih, w_hh, gates, h_prev, hn_all = ctx.saved_tensors
        s, needs = ctx.schedule, ctx.needs_input_grad
        d_gx, d_gh, grad_h0 = rnn_loops.GRU_BACKWARD(
            grad_out, grad_h_n, gates, h_prev, hn_all, w_hh, s.batch_sizes, s.offsets, s.reverse
        )
        grad_x, grad_w_ih = _input_grads((needs[0], needs[2]), d_gx, x, w_ih)
        grad_w_hh = d_gh.t().mm(h_prev) if needs[3] else None
        grad_b_ih = d_gx.sum(0) if needs[4] else None
        grad_b_hh = d_gh.sum(0) if needs[5] else None
        return grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, None


class _LSTM(Function):
    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, schedule: Schedule):
        xw = _project(x, w_ih, _folded_bias(b_ih, b_hh))
        s = schedule
        w_hr_t = None if w_hr is None else w_hr.t()
        keep = any(ctx.needs_input_grad)
        out, h_n, c_n, h_prev, local, unprojected = lstm_loops.LSTM_FORWARD(
            xw, h0, c0, w_hh.t(), w_hr_t, s.batch_sizes, s.offsets, s.reverse, keep
        )
        ctx.save_for_backward(x, w_ih, w_hh, w_hr, xw, h_prev, local, unprojected)
        ctx.schedule = schedule
        return out, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n, grad_c_n):
        x, w_ih, w_hh, w_hr, gates, h_prev, local, unprojected = ctx.saved_tensors
        s, needs = ctx.schedule, ctx.needs_input_grad
        d_gates, grad_h0, grad_c0, d_out_total = lstm_loops.LSTM_BACKWARD(
            grad_out, grad_h_n, grad_c_n, gates, local, w_hh, w_hr,
            s.batch_sizes, s.offsets, s.reverse,
        )  # fmt: skip
        grad_x, grad_w_ih = _input_grads((needs[0], needs[3]), d_gates, x, w_ih)
        grad_w_hh = d_gates.t().mm(h_prev) if needs[4] else None
        grad_b = d_gates.sum(0) if needs[5] or needs[6] else None
        grad_w_hr = d_out_total.t().mm(unprojected) if w_hr is not None and needs[7] else None
        return grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b, grad_b, grad_w_hr, None


class _PeepholeLSTM(Function):
    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ci, w_cf, w_co, schedule: Schedule):
        xw = _project(x, w_ih, _folded_bias(b_ih, b_hh))
        s = schedule
        out, h_n, c_n, h_prev, c_prev, cells, tanh_cells = lstm_loops.PEEPHOLE_FORWARD(
            xw, h0, c0, w_hh.t(), w_ci, w_cf, w_co, s.batch_sizes, s.offsets, s.reverse
        )
        ctx.save_for_backward(
            x, w_ih, w_hh, w_ci, w_cf, w_co, xw, h_prev, c_prev, cells, tanh_cells
        )
        ctx.schedule = schedule
        return out, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n, grad_c_n):
        x, w_ih, w_hh, w_ci, w_cf, w_co, gates, h_prev, c_prev, cells, tanh_cells = (
            ctx.saved_tensors
        )
        s, needs = ctx.schedule, ctx.needs_input_grad
        d_gates, grad_h0, grad_c0 = lstm_loops.PEEPHOLE_BACKWARD(
            grad_out, grad_h_n, grad_c_n, gates, c_prev, tanh_cells, w_hh, w_ci, w_cf, w_co,
            s.batch_sizes, s.offsets, s.reverse,
        )  # fmt: skip
        hidden = c_prev.size(1)
        grad_x, grad_w_ih = _input_grads((needs[0], needs[3]), d_gates, x, w_ih)
        grad_w_hh = d_gates.t().mm(h_prev) if needs[4] else None
        grad_b = d_gates.sum(0) if needs[5] or needs[6] else None
        # The peepholes are diagonal: each weight collects its gate's gradient times the cell it saw.
        grad_w_ci = (d_gates[:, :hidden] * c_prev).sum(0)
        grad_w_cf = (d_gates[:, hidden : 2 * hidden] * c_prev).sum(0)
        grad_w_co = (d_gates[:, 3 * hidden :] * cells).sum(0)
        return (
            grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b, grad_b,
            grad_w_ci, grad_w_cf, grad_w_co, None,
        )  # fmt: skip


class _CoupledLSTM(Function):
    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, schedule: Schedule):
        xw = _project(x, w_ih, _folded_bias(b_ih, b_hh))
        s = schedule
        out, h_n, c_n, h_prev, c_prev, tanh_cells = lstm_loops.COUPLED_FORWARD(
            xw, h0, c0, w_hh.t(), s.batch_sizes, s.offsets, s.reverse
        )
        ctx.save_for_backward(x, w_ih, w_hh, xw, h_prev, c_prev, tanh_cells)
        ctx.schedule = schedule
        return out, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n, grad_c_n):
        x, w_ih, w_hh, gates, h_prev, c_prev, tanh_cells = ctx.saved_tensors
        s, needs = ctx.schedule, ctx.needs_input_grad
        d_gates, grad_h0, grad_c0 = lstm_loops.COUPLED_BACKWARD(
            grad_out, grad_h_n, grad_c_n, gates, c_prev, tanh_cells, w_hh,
            s.batch_sizes, s.offsets, s.reverse,
        )  # fmt: skip
        grad_x, grad_w_ih = _input_grads((needs[0], needs[3]), d_gates, x, w_ih)
        grad_w_hh = d_gates.t().mm(h_prev) if needs[4] else None
        grad_b = d_gates.sum(0) if needs[5] or needs[6] else None
        return grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b, grad_b, None


def elman_direction(
    x: Tensor, h0: Tensor, params: list[Tensor | None], schedule: Schedule, *, relu: bool
) -> tuple[Tensor, Tensor]:
    """params: w_ih (H, I), w_hh (H, H), b_ih (H,) or None, b_hh (H,) or None."""
    w_ih, w_hh, b_ih, b_hh = params
    return _Elman.apply(x, h0, w_ih, w_hh, b_ih, b_hh, relu, schedule)


def gru_direction(
    x: Tensor, h0: Tensor, params: list[Tensor | None], schedule: Schedule
) -> tuple[Tensor, Tensor]:
    """params: w_ih (3H, I), w_hh (3H, H), b_ih (3H,) or None, b_hh (3H,) or None; gates r, z, n."""
    w_ih, w_hh, b_ih, b_hh = params
    return _GRU.apply(x, h0, w_ih, w_hh, b_ih, b_hh, schedule)


def lstm_direction(
    x: Tensor, h0: Tensor, c0: Tensor, params: list[Tensor | None], schedule: Schedule
) -> tuple[Tensor, Tensor, Tensor]:
    """params: w_ih (4H, I), w_hh (4H, P), b_ih, b_hh (4H,) or None, w_hr (P, H) or None."""
    w_ih, w_hh, b_ih, b_hh, w_hr = params
    return _LSTM.apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, schedule)


def peephole_direction(
    x: Tensor, h0: Tensor, c0: Tensor, params: list[Tensor | None], schedule: Schedule
) -> tuple[Tensor, Tensor, Tensor]:
    """params: w_ih (4H, I), w_hh (4H, H), b_ih, b_hh (4H,) or None, w_ci, w_cf, w_co (H,)."""
    w_ih, w_hh, b_ih, b_hh, w_ci, w_cf, w_co = params
    return _PeepholeLSTM.apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ci, w_cf, w_co, schedule)


def coupled_direction(
    x: Tensor, h0: Tensor, c0: Tensor, params: list[Tensor | None], schedule: Schedule
) -> tuple[Tensor, Tensor, Tensor]:
    """params: w_ih (3H, I), w_hh (3H, H), b_ih, b_hh (3H,) or None; gates f, g, o."""
    w_ih, w_hh, b_ih, b_hh = params
    return _CoupledLSTM.apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh, schedule)
