"""Dynamic batching: requests that arrive within `max_wait_s` of each other share forward passes.

One worker thread runs the engine; the event loop keeps accepting requests meanwhile. A batch starts
when `max_batch` requests wait or the first of them has waited `max_wait_s`; tokens stream back to
each request's queue as they are decoded. `max_batch=1` turns batching off.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import AsyncIterator

from dstutor.serve.engine import Engine, Generation


@dataclass
class BatcherStats:
    """Counters the /metrics endpoint reports."""

    batches: int = 0
    requests: int = 0
    batch_sizes: list[int] = field(default_factory=list)

    def mean_batch(self) -> float:
        return sum(self.batch_sizes) / len(self.batch_sizes) if self.batch_sizes else 0.0


class Batcher:
    """Collects concurrent requests into batches for one engine."""

    def __init__(self, engine: Engine, max_batch: int = 8, max_wait_s: float = 0.01):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"need max_batch ≥ 1 and max_wait_s ≥ 0, got {max_batch} and {max_wait_s}")
        self.engine, self.max_batch, self.max_wait_s = engine, max_batch, max_wait_s
        self.stats = BatcherStats()
        self._pending: asyncio.Queue | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._pending = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def submit(self, request: Generation) -> AsyncIterator[tuple[int | None, str | None]]:
        """Yields (token_id, None) per new token, then (None, finish_reason)."""
        events: asyncio.Queue = asyncio.Queue()
        await self._pending.put((request, events))
        while True:
            token, finish = await events.get()
            if isinstance(finish, BaseException):
                raise finish
            yield token, finish
            if finish is not None:
                return

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._pending.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(await asyncio.wait_for(self._pending.get(), max(0.0, deadline - time.monotonic())))
                except asyncio.TimeoutError:
                    break
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.batch_sizes.append(len(batch))
            queues = [events for _, events in batch]

            def emit(row: int, token: int | None, finish: str | None) -> None:
                loop.call_soon_threadsafe(queues[row].put_nowait, (token, finish))

            try:
                await loop.run_in_executor(self._worker, self.engine.generate, [r for r, _ in batch], emit)
            except Exception as error:  # every waiting request learns of it, none hangs
                for events in queues:
                    events.put_nowait((None, error))
