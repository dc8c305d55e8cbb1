"""Products with an operand that a Python loop reads at every step, its gradient summed after the loop.

A decoder's teacher-forced loop multiplies each step's input by the same weights (the recurrent
``W_hh``, the context's share of ``W_ih``, the attention query's projection) and reads the same
encoder outputs (the attention context). Autograd computes the gradient of such a shared operand as T
products, one per step, and adds them into one buffer: T small products and T additions of the
operand's size. The sum is one product of the stacked inputs and output gradients, which the
classes here compute instead::

    forward, step t    y_t = x_t Wᵀ + b                 (autograd sees x_t → y_t, and a token of W, b)
    backward, step t   ∂x_t = ∂y_t W                    (∂y_t and x_t kept)
    backward, last     ∂W = [∂y_1 ; … ; ∂y_T]ᵀ [x_1 ; … ; x_T],  ∂b = the column sums of [∂y_1 ; …]

``LoopLinear`` is that map; ``LoopBmm`` is ``torch.bmm(a_t, M)`` with a shared right operand (B, S, C),
whose gradient is ``bmm([a_1 … a_T]ᵀ, [∂y_1 … ∂y_T])``; it multiplies in M's dtype whatever autocast
says (``rnnlab.nn.precision.bmm_in_dtype``). The last line runs in the backward of the
node that made the token, which autograd reaches only after every step's backward. Under bfloat16
autocast the sum is then one product with a float32 accumulator, where autograd would round T partial
products to bfloat16 and add them in bfloat16.

On the Multi30k attention recipe (Intel Xeon with AMX; one process, alternating windows over batches
whose shapes were all compiled) a bf16 training step ran 1.04–1.06× faster at one thread and 1.02× at
two, a float32 one 1.00–1.02×: float32 products of 64 rows already run near the CPU's peak, so mostly
the additions are saved there. The bf16 gradients also moved closer to float64's (relative error of
the decoder's ``W_hh`` 0.0069 → 0.0049, of its ``W_ih`` 0.0071 → 0.0054).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Variable
from torch.autograd.function import once_differentiable

from rnnlab.nn.capture import capturing_graph
from rnnlab.nn.precision import bmm_in_dtype


class _PassPairs:
    """One backward pass's (input, output gradient) pairs."""

    __slots__ = ("items", "__weakref__")

    def __init__(self) -> None:
        self.items: list[tuple[Tensor, Tensor]] = []

    def clear(self) -> None:
        self.items = []


class _Shared:
    """A product with shared operands (detached), and the (input, output gradient) pairs of the
    steps already back-propagated."""

    def __init__(self, *operands: Tensor | None) -> None:
        self.operands = operands
        self.passes: dict[int, weakref.ref[_PassPairs]] = {}
        """Each backward pass's pairs (by autograd graph task). A pass that asks for the steps'
        input gradients only never reaches the token, so its pairs must not be summed into the
        operands' gradients by a later pass over the same (retained) graph; and a pass nested in
        another (``torch.autograd.grad`` in a hook) must not take or drop the outer pass's pairs.
        Only the engine's end-of-pass callback holds a pass's pairs, so they go when the pass ends,
        whether it reached the token, never did, or failed (then the callback goes unrun)."""

    def keep(self, x: Tensor, grad: Tensor) -> None:
        """Record one step's pair for the running backward pass."""
        task = torch._C._current_graph_task_id()
        ref = self.passes.get(task)
        pairs = ref() if ref is not None else None
        if pairs is None:
            self.passes = {t: r for t, r in self.passes.items() if r() is not None}
            pairs = _PassPairs()
            self.passes[task] = weakref.ref(pairs)
            Variable._execution_engine.queue_callback(pairs.clear)
        pairs.items.append((x, grad))

    def take_pairs(self) -> list[tuple[Tensor, Tensor]]:
        """The running pass's pairs, consumed."""
        ref = self.passes.pop(torch._C._current_graph_task_id(), None)
        pairs = ref() if ref is not None else None
        if pairs is None:
            return []
        items, pairs.items = pairs.items, []
        return items

    @property
    def dtype(self) -> torch.dtype:
        first = self.operands[0]
        assert first is not None
        return first.dtype

    def apply(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def input_grad(self, grad: Tensor) -> Tensor:
        raise NotImplementedError

    def operand_grads(
        self, pairs: list[tuple[Tensor, Tensor]], needed: tuple[bool, ...]
    ) -> tuple[Tensor | None, ...]:
        """The shared operands' gradients summed over the steps' (input, output gradient) pairs."""
        raise NotImplementedError


class _Linear(_Shared):
    def apply(self, x: Tensor) -> Tensor:
        weight, bias = self.operands
        assert weight is not None
        return F.linear(x, weight, bias)

    def input_grad(self, grad: Tensor) -> Tensor:
        weight = self.operands[0]
        assert weight is not None
        return grad.matmul(weight)

    def operand_grads(
        self, pairs: list[tuple[Tensor, Tensor]], needed: tuple[bool, ...]
    ) -> tuple[Tensor | None, ...]:
        inputs = torch.cat([x.reshape(-1, x.size(-1)) for x, _ in pairs])  # (T·B, I)
        grads = torch.cat([g.reshape(-1, g.size(-1)) for _, g in pairs])  # (T·B, O)
        has_bias = self.operands[1] is not None
        return (
            grads.t().mm(inputs) if needed[0] else None,
            grads.sum(0) if has_bias and needed[1] else None,
        )


class _Bmm(_Shared):
    def apply(self, x: Tensor) -> Tensor:
        (right,) = self.operands
        assert right is not None
        return bmm_in_dtype(x, right)

    def input_grad(self, grad: Tensor) -> Tensor:
        (right,) = self.operands
        assert right is not None
        return bmm_in_dtype(grad, right.transpose(1, 2))

    def operand_grads(
        self, pairs: list[tuple[Tensor, Tensor]], needed: tuple[bool, ...]
    ) -> tuple[Tensor | None, ...]:
        if not needed[0]:
            return (None,)
        inputs = torch.cat([x for x, _ in pairs], dim=1)  # (B, T·Q, S)
        grads = torch.cat([g for _, g in pairs], dim=1)  # (B, T·Q, C)
        return (torch.bmm(inputs.transpose(1, 2), grads),)


class _OperandToken(torch.autograd.Function):
    """Stands for the shared operands in every step's graph; its backward sums their gradients."""

    @staticmethod
    def forward(ctx: Any, shared: _Shared, *operands: Tensor | None) -> Tensor:
        ctx.shared = shared
        first = operands[0]
        assert first is not None
        return first.new_zeros(())

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, _token_grad: Tensor) -> tuple[Tensor | None, ...]:
        shared: _Shared = ctx.shared
        pairs = shared.take_pairs()
        if not pairs:
            return (None,) * len(ctx.needs_input_grad)
        return (None, *shared.operand_grads(pairs, ctx.needs_input_grad[1:]))


class _StepProduct(torch.autograd.Function):
    """One step's product; its backward returns the step input's gradient only."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, _token: Tensor, shared: _Shared) -> Tensor:
        x = x.to(shared.dtype)
        ctx.save_for_backward(x)
        ctx.shared = shared
        return shared.apply(x)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        (x,) = ctx.saved_tensors
        shared: _Shared = ctx.shared
        grad = grad.to(shared.dtype)
        shared.keep(x, grad)
        return (shared.input_grad(grad) if ctx.needs_input_grad[0] else None), None, None


class _LoopProduct:
    """Build one per forward pass, before the loop, from the operands as the loop's products read
    them (under autocast: already cast, ``rnnlab.nn.precision.autocast_operand``). Without autograd
    (or while tracing or exporting a graph) the product is the plain one."""

    def __init__(self, shared: _Shared) -> None:
        operands = [t for t in shared.operands if t is not None]
        self._plain = shared
        self._shared: _Shared | None = None
        self._token: Tensor | None = None
        if (
            any(t.requires_grad for t in operands)
            and torch.is_grad_enabled()
            and not capturing_graph()
        ):
            detached = type(shared)(*(None if t is None else t.detach() for t in shared.operands))
            self._shared = detached
            self._token = _OperandToken.apply(detached, *shared.operands)

    def __call__(self, x: Tensor) -> Tensor:
        if self._shared is None or not torch.is_grad_enabled():
            return self._plain.apply(x)
        return _StepProduct.apply(x, self._token, self._shared)


class LoopLinear(_LoopProduct):
    """``F.linear(x, weight, bias)`` at every step of a loop: (…, I) → (…, O)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__(_Linear(weight, bias))


class LoopBmm(_LoopProduct):
    """``torch.bmm(a, right)`` at every step of a loop: (B, Q, S) → (B, Q, C), ``right`` (B, S, C)."""

    def __init__(self, right: Tensor) -> None:
        super().__init__(_Bmm(right))


__all__ = ["LoopBmm", "LoopLinear"]
