"""Dynamic batching: merge the sentences of concurrent requests into batches, one worker per model.

Each request puts its sentences in the model's queue as items with a *batch key* (the decoding
settings) and awaits their futures. One asyncio task per model takes the oldest item, waits at most
``max_wait`` (counted from when that item arrived) for up to ``max_batch`` items with the same key,
and runs the batch on the model's own thread, so the event loop keeps answering health checks and
accepting requests while a long batch decodes::

    request A: [a1 a2] ─┐                          ┌─ a1 a2 → A
    request B: [b1]    ─┼─ queue ─ batch (key k) ──┼─ b1    → B       (model thread)
    request C: [c1 c2] ─┘   (FIFO, ≤ max_batch)    └─ c1 c2 → C

Items of another key stay queued, in order, for a later batch. The items of a request that went
away (cancelled) leave the queue at once, freeing their places.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

RunBatch = Callable[[Hashable, list[Any]], Sequence[Any]]
"""Runs one batch on the model thread: (key, payloads) → one result (or Exception) per payload."""


class QueueFull(Exception):
    """The model already has ``max_queue`` sentences waiting."""


@dataclass
class _Item:
    key: Hashable
    payload: Any
    future: asyncio.Future[Any]
    alone: bool = False
    """Its key is its own: no other item can join its batch, so the worker does not wait."""
    arrived: float = field(default_factory=time.monotonic)


class BatchQueue:
    """The queue and worker of one model."""

    def __init__(
        self,
        *,
        run_batch: RunBatch,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] = lambda size: None,
        on_depth: Callable[[int], None] = lambda depth: None,
        thread_name: str = "rnnlab-model",
    ) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.on_depth = on_depth
        self._items: deque[_Item] = deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._worker: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Sentences waiting (not counting the batch being decoded)."""
        return len(self._items)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker (after in-flight requests finished) and its thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

    async def submit(self, key: Hashable, payloads: list[Any], *, alone: bool = False) -> list[Any]:
        """Results for ``payloads`` in order, decoded in whatever batches the worker forms.

        ``alone``: ``key`` is this submission's own, so its batch starts without waiting for
        company that cannot come.
        """
        if self.depth + len(payloads) > self.max_queue:
            raise QueueFull
        loop = asyncio.get_running_loop()
        items = [_Item(key, payload, loop.create_future(), alone) for payload in payloads]
        self._items.extend(items)
        self.on_depth(self.depth)
        self._arrived.set()
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        except asyncio.CancelledError:
            # Withdrawn at once: the places free up for the next request, the depth gauge drops,
            # and a worker waiting for company for one of these items stops waiting.
            for item in items:
                item.future.cancel()
            mine = {id(item) for item in items}
            self._items = deque(item for item in self._items if id(item) not in mine)
            self.on_depth(self.depth)
            self._arrived.set()
            raise

    def _take(self, key: Hashable) -> list[_Item]:
        """Up to ``max_batch`` live items of ``key``, oldest first, removed from the queue."""
        taken: list[_Item] = []
        kept: deque[_Item] = deque()
        while self._items:
            item = self._items.popleft()
            if item.future.done():
                continue  # its request went away
            if item.key == key and len(taken) < self.max_batch:
                taken.append(item)
            else:
                kept.append(item)
        self._items = kept
        return taken

    def _count(self, key: Hashable) -> int:
        return sum(1 for item in self._items if item.key == key and not item.future.done())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._items:
                self._arrived.clear()
                await self._arrived.wait()
            first = self._items[0]
            if first.future.done():
                self._items.popleft()
                continue
            deadline = first.arrived + self.max_wait_s
            while (
                not first.alone
                and not first.future.done()  # withdrawn while it waited: take the next head
                and self._count(first.key) < self.max_batch
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take(first.key)
            self.on_depth(self.depth)
            if not batch:
                continue
            self.on_batch(len(batch))
            payloads = [item.payload for item in batch]
            try:
                results = await loop.run_in_executor(
                    self._executor, self.run_batch, first.key, payloads
                )
            except Exception as exc:  # the whole batch failed: every request in it hears why
                results = [exc] * len(batch)
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
