"""Run a ``torch.nn`` recurrent stack over a right-padded batch so that each sequence stops at its
own length: what packing does, without packing's slow paths on a CPU.

On a CPU, ``torch.nn.LSTM`` runs padded input through oneDNN's fused LSTM kernel but a
``PackedSequence`` through a generic loop of small matrix products, one per time step: the EWT
tagger recipe's training step is 1.6× faster on the fused kernel (``benchmarks/bench_by_lengths.py``).
GRUs and vanilla RNNs have no fused kernel, but their packed loop slices each step's rows out of the
input projection computed for all steps, and the backward pass of every slice adds a gradient the
size of the whole projection: quadratic in the number of steps. Padded, the projection is unbound
once: a GRU tagger on EWT trains 1.15× faster (``bench_by_lengths.py --set model.cell=gru``), the
Multi30k attention recipe, whose encoder is a bidirectional GRU, 1.04–1.07× in float32 and up to
1.2× under bfloat16 autocast. Without gradients packing is faster, as it skips the padding.
``run_by_lengths`` gets packing's results from the padded kernel:

* the forward direction reads each sequence from its first token, so its outputs at valid
  positions never depend on the padding after them;
* the backward direction reads each sequence reversed within its own length
  (``reverse_within_lengths``), so it too starts at the sequence's last token; its outputs are
  reversed back.

Outputs past a sequence's end are zero, as ``pad_packed_sequence`` gives them, and the final hidden
state of each direction is its output at the sequence's last token. The padding positions still
cost their products; batches of similar lengths (``train.bucket``) keep that small. CUDA's cuDNN
packs natively, so CUDA, rnnlab's scratch layers, and GRUs and RNNs that record no gradient take
the packed path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeGuard

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.nn.dropout import dropout
from rnnlab.nn.masking import length_mask

_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_PADDED_CELLS = (nn.LSTM, nn.GRU, nn.RNN)


def reverse_within_lengths(x: Tensor, lengths: Tensor) -> Tensor:
    """``x`` (B, T, ...) with each row's first ``lengths[b]`` items reversed; padding stays put.

    Its own inverse: applying it twice gives ``x`` back.
    """
    return _gather_steps(x, _mirrored_steps(lengths.to(x.device), x.size(1)))


def _mirrored_steps(lengths: Tensor, steps: int) -> Tensor:
    """(B, T) source step of each step when each row's first ``lengths[b]`` steps are reversed."""
    positions = torch.arange(steps, device=lengths.device).unsqueeze(0)  # (1, T)
    mirrored = lengths.unsqueeze(1) - 1 - positions  # (B, T)
    return torch.where(mirrored >= 0, mirrored, positions.expand_as(mirrored))


def _gather_steps(x: Tensor, source: Tensor) -> Tensor:
    """``x`` (B, T, ...) with step t of row b taken from step ``source[b, t]``."""
    return x.gather(1, source.view(*source.shape, *([1] * (x.dim() - 2))).expand_as(x))


def runs_padded(rnn: nn.Module, inputs: Tensor) -> TypeGuard[nn.RNNBase]:
    """Whether ``run_by_lengths`` runs ``rnn`` on ``inputs`` padded (else packed).

    An LSTM always (the fused kernel is faster with or without gradients); a GRU or RNN only while
    autograd records, where packing's backward pass is quadratic in the number of steps.
    """
    if not isinstance(rnn, _PADDED_CELLS) or not rnn.batch_first or inputs.device.type != "cpu":
        return False
    if isinstance(rnn, nn.LSTM):
        return rnn.proj_size == 0
    return torch.is_grad_enabled() and (
        inputs.requires_grad or any(weight.requires_grad for weight in rnn.parameters())
    )


def run_by_lengths(rnn: nn.Module, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Run ``rnn`` (batch-first, from a zero state) over ``inputs`` (B, T, I) by ``lengths`` (B,) ≥ 1.

    Returns ``outputs`` (B, T, D·H), zero past each length, and the final hidden state
    ``h_n`` (L·D, B, H) after each sequence's last token: the results of packing the batch.
    """
    if runs_padded(rnn, inputs):
        outputs, final = _padded(rnn, inputs, lengths)
        mask = length_mask(lengths.to(inputs.device), inputs.size(1)).unsqueeze(2)  # (B, T, 1)
        return outputs.masked_fill(~mask, 0.0), final
    packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
    packed_outputs, state = rnn(packed)
    outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=inputs.size(1))
    final = state[0] if isinstance(state, tuple) else state
    return outputs, final


def final_states_by_lengths(
    rnn: nn.Module, inputs: Tensor, lengths: Tensor, *, length_groups: int = 1
) -> Tensor:
    """``run_by_lengths``'s final hidden state ``h_n`` (L·D, B, H) alone.

    ``length_groups`` > 1 runs the padded kernel on that many groups of rows of similar lengths,
    each cut to its own longest row, for batches whose lengths spread widely (the distinct words of
    a sentence batch, 1 to 30 characters): the padding then costs less than the extra calls. Only
    the final states are gathered back into the batch's order, not the outputs nobody reads.
    """
    if not runs_padded(rnn, inputs):
        return run_by_lengths(rnn, inputs, lengths)[1]
    if length_groups <= 1 or inputs.size(0) < 2 * length_groups:
        return _padded(rnn, inputs, lengths)[1]
    lengths = lengths.to(inputs.device)
    order = torch.argsort(lengths)
    finals = []
    for rows in order.tensor_split(length_groups):
        group_lengths = lengths[rows]
        longest = int(group_lengths.max())
        finals.append(_padded(rnn, inputs[rows, :longest], group_lengths)[1])
    back = torch.argsort(order)  # row b of the batch is row back[b] of the groups in order
    return torch.cat(finals, dim=1)[:, back]


def _padded(rnn: nn.RNNBase, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Outputs (B, T, D·H), arbitrary past each length, and ``h_n`` (L·D, B, H)."""
    lengths = lengths.to(inputs.device)
    last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, rnn.hidden_size)  # (B, 1, H)
    mirrored = _mirrored_steps(lengths, inputs.size(1))  # one reversal serves every layer
    suffixes = ["", "_reverse"] if rnn.bidirectional else [""]
    layer_input = inputs
    finals: list[Tensor] = []
    for layer in range(rnn.num_layers):
        if layer > 0:
            layer_input = dropout(layer_input, rnn.dropout, training=rnn.training)
        directions = []
        for suffix in suffixes:
            weights = {
                f"{name}_l0": getattr(rnn, f"{name}_l{layer}{suffix}")
                for name in _WEIGHTS
                if hasattr(rnn, f"{name}_l{layer}{suffix}")
            }
            one_way = _one_way_shell(rnn, layer_input.size(2))
            if suffix:
                reversed_outputs = functional_call(
                    one_way, weights, (_gather_steps(layer_input, mirrored),)
                )[0]
                finals.append(reversed_outputs.gather(1, last).squeeze(1))
                directions.append(_gather_steps(reversed_outputs, mirrored))
            else:
                outputs = functional_call(one_way, weights, (layer_input,))[0]
                finals.append(outputs.gather(1, last).squeeze(1))
                directions.append(outputs)
        layer_input = torch.cat(directions, dim=2) if len(directions) > 1 else directions[0]
    return layer_input, torch.stack(finals)


_SHELLS = threading.local()


def _one_way_shell(rnn: nn.RNNBase, input_size: int) -> nn.RNNBase:
    """A one-layer, one-direction shell of ``rnn``'s kind whose weights ``functional_call`` supplies.

    Made on the meta device, it holds no memory and never joins a model's parameters. One per thread:
    ``functional_call`` swaps weights into the shell for the call, so two threads serving requests
    must not share one.
    """
    shells: dict[tuple[object, ...], nn.RNNBase] = _SHELLS.__dict__.setdefault("shells", {})
    nonlinearity = getattr(rnn, "nonlinearity", None)  # tanh or relu, vanilla RNNs only
    key = (type(rnn), input_size, rnn.hidden_size, rnn.bias, nonlinearity)
    if key not in shells:
        extra = {"nonlinearity": nonlinearity} if nonlinearity is not None else {}
        make_shell: Callable[..., nn.RNNBase] = type(rnn)  # an LSTM, GRU or RNN of torch.nn
        shells[key] = make_shell(
            input_size, rnn.hidden_size, bias=rnn.bias, batch_first=True, device="meta", **extra
        )
    return shells[key]
