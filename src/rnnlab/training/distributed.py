"""Data-parallel training over several processes (``torchrun`` or ``rnnlab train --nproc N``).

Every process builds the same model and the same *global* batches (a pure function of the seed and
the epoch) and trains on its shard of each one, so the global batch size stays ``train.batch_size``
whatever the number of processes::

    global batch b (rows sorted by length within a bucket)
        rows 0 2 4 …  → rank 0          (strided, so both shards get similar lengths)
        rows 1 3 5 …  → rank 1

The loss is normalised by the *global* number of valid target tokens (one all-reduce of the count per
step), and DistributedDataParallel averages gradients over the W processes, so multiplying each
process's loss by W gives exactly the single-process gradient of the per-token mean:

    Σ_r ∇ (W · loss_sum_r / N_global) / W  =  ∇ (Σ_r loss_sum_r) / N_global

Only rank 0 writes checkpoints, metrics and logs and runs validation; the others wait at a barrier and
then receive its decisions (stop, learning rate). Checkpoints count global batches, so a run resumes
with the same or a different number of processes. Backends: gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.nn.precision import bf16_speedup, settle_bf16_speedup
from rnnlab.nn.state import RecurrentState, hidden_of, map_state


class FailedElsewhere(RnnlabError):
    """Another rank's setup failed: rank 0 reports it in one line, this rank stops quietly."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly one-process) training job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (no-ops in a single process) ----------------------------------------------
    def all_reduce_sum(self, values: Tensor) -> Tensor:
        if self.enabled:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def all_reduce_max(self, values: Tensor) -> Tensor:
        if self.enabled:
            dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return values

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @contextmanager
    def agreement(self) -> Iterator[None]:
        """A setup phase that every rank runs to its end: a user error (``RnnlabError``) on any
        rank stops every rank there, before the next collective could hang or fail with a
        traceback. Rank 0 raises the error (its own first), the others ``FailedElsewhere``."""
        error: RnnlabError | None = None
        try:
            yield
        except RnnlabError as exc:
            error = exc
        if not self.enabled:
            if error is not None:
                raise error
            return
        messages: list[str | None] = [None] * self.world_size
        dist.all_gather_object(messages, None if error is None else str(error))
        first = next((m for m in messages if m is not None), None)
        if first is None:
            return
        if not self.is_main:
            raise FailedElsewhere(first)
        raise error if error is not None else RnnlabError(first)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # -- data --------------------------------------------------------------------------------------
    def shard(self, batch: Any) -> tuple[Any, bool]:
        """This rank's rows of a global batch, and whether it has any.

        A batch smaller than the world leaves some ranks without rows; they still run a step (DDP
        needs every rank in every all-reduce) on row 0 with their loss weighted by zero.
        """
        if not self.enabled:
            return batch, True
        rows = _batch_rows(batch)
        if self.rank >= rows:
            return _take_rows(batch, slice(0, 1)), False
        return _take_rows(batch, slice(self.rank, None, self.world_size)), True

    # -- recurrent state carried across batches (batch on dim 1) ------------------------------
    def gather_state(self, state: RecurrentState, has_rows: bool) -> RecurrentState:
        """The whole global batch's state from every rank's shard of it (the inverse of
        ``shard``), so a checkpoint holds the same carry whatever the number of processes."""
        if not self.enabled:
            return state
        parts: list[Any] = [None] * self.world_size
        mine = map_state(state, lambda t: t.detach().cpu())
        dist.all_gather_object(parts, (mine, has_rows))
        shards = [s for s, rows in parts if rows]  # ranks 0..k-1: global row j is on rank j % k

        def interleave(index: int) -> Tensor:
            pieces = [s[index] if isinstance(s, tuple) else s for s in shards]
            rows = sum(p.size(1) for p in pieces)
            order = [pieces[j % len(pieces)][:, j // len(pieces)] for j in range(rows)]
            return torch.stack(order, dim=1).to(hidden_of(state).device)

        if isinstance(state, tuple):
            return (interleave(0), interleave(1))
        return interleave(0)

    def local_state(self, state: RecurrentState) -> RecurrentState:
        """This rank's rows of a global batch's state, as ``shard`` takes its rows of a batch."""
        if not self.enabled:
            return state
        rows = hidden_of(state).size(1)
        take = slice(0, 1) if self.rank >= rows else slice(self.rank, None, self.world_size)
        return map_state(state, lambda t: t[:, take].contiguous())


SINGLE = DistributedContext()


def _batch_rows(batch: Any) -> int:
    for f in fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.size(0))
    raise ValueError(f"{type(batch).__name__} has no batch-major tensor to shard")


def _take_rows(batch: Any, rows: slice) -> Any:
    """Slice dim 0 of every tensor field (every rnnlab batch is batch-major)."""
    if hasattr(batch, "shard_rows"):
        return batch.shard_rows(rows)
    values = {}
    for f in fields(batch):
        value = getattr(batch, f.name)
        values[f.name] = value[rows] if isinstance(value, Tensor) and value.dim() > 0 else value
    return type(batch)(**values)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


COLLECTIVE_TIMEOUT = timedelta(hours=1)
"""How long a rank waits in a collective. The other ranks wait at a barrier while rank 0 validates
(decoding the whole validation set for BLEU can take many minutes), and NCCL's own default is 10
minutes, gloo's 30."""


def check_processes_fit(device_type: str, processes: int) -> None:
    """Refuse more CUDA processes on this machine than it has GPUs: NCCL runs one process per GPU,
    and a process without a GPU of its own would fail inside torch with "invalid device ordinal"."""
    if device_type != "cuda":
        return
    count = torch.cuda.device_count()
    if processes > count:
        raise ConfigError(
            f"train.device: {processes} processes on CUDA, but this machine has {count} CUDA "
            f"device(s); use --nproc {count}, or --set train.device=cpu to train on the CPU"
        )


def init_from_env(device_type: str) -> DistributedContext:
    """Join the process group described by torchrun's environment (a no-op without one)."""
    if not launched_by_torchrun():
        return SINGLE
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            # Every process on this machine makes the same check, so none is left waiting.
            check_processes_fit("cuda", int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1)))
            torch.cuda.set_device(local_rank)
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT
        )
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def agree_on_bf16_speedup() -> None:
    """Give every rank the smallest of the ranks' timed bfloat16 speedups (``precision: auto``).

    Every rank calls it at the same point of the setup, after the run's thread count applies and
    before any rank uses or reports the choice; it is a collective, so a no-op would hang the others.

    Each rank times the products itself, and on a shared machine the ranks can measure different
    ratios; one rank training in bfloat16 beside another in float32 would average gradients of two
    different computations. With the minimum, the ranks use bfloat16 only where all of them gain.
    """
    speedup = torch.tensor([bf16_speedup("cpu")], dtype=torch.float64)
    dist.all_reduce(speedup, op=dist.ReduceOp.MIN)
    settle_bf16_speedup("cpu", float(speedup.item()))


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


class TaskLoss(nn.Module):
    """``task.batch_loss`` as a module, so that DDP's forward covers the whole loss computation.

    Tasks call model methods other than ``forward`` (``project``); wrapping the model itself in DDP
    would hide them, wrapping the loss keeps every task unchanged.
    """

    def __init__(self, task: Any, model: nn.Module) -> None:
        super().__init__()
        self.task = task
        self.model = model

    def forward(self, batch: Any, carry: Any = None) -> Any:
        return self.task.batch_loss(self.model, batch, carry)


def wrap_loss(task: Any, model: nn.Module, context: DistributedContext, device: torch.device):
    """A callable ``(batch, carry) → LossOutput`` that synchronises gradients across ranks."""
    loss = TaskLoss(task, model)
    if not context.enabled:
        return loss
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(loss, device_ids=device_ids)
