"""Group commit for journal appends.

Every ``journal_append`` of the process goes into one queue. A single writer task takes
everything queued, writes it in one transaction (one pipeline: BEGIN, one fenced INSERT
per entry, COMMIT, one Sync: one round trip and one WAL flush for the lot), and resolves
each caller's future. While a batch is in flight the next one gathers, so under load
batches grow by themselves and throughput approaches the commit rate times the batch
size, with no timer and no added latency when the process is idle.

One writer, not several, so that two appends to one run are written in the order they
were made (a pending entry, then its final one), as the SQLite store's single writer
thread does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tether._types import JournalEntry, Lease
from tether.errors import StoreError


@dataclass(slots=True)
class Append:
    lease: Lease
    entry: JournalEntry
    future: asyncio.Future[None]


class AppendWriter:
    """Queues appends and writes them in shared transactions with ``flush``."""

    def __init__(self, flush: Callable[[list[Append]], Awaitable[None]], *,
                 max_batch: int = 1000) -> None:
        self._flush = flush
        self.max_batch = max_batch
        self._queue: list[Append] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: Batches written and entries in them, for benchmarks and tests.
        self.batches = 0
        self.entries = 0

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="tether-pg-group-commit")

    def submit(self, lease: Lease, entry: JournalEntry) -> asyncio.Future[None]:
        if self._task is None or self._closing:
            raise StoreError("store is not open")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(Append(lease, entry, fut))
        self._ready.set()
        return fut

    async def close(self) -> None:
        """Write what is queued, then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        self._ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            batch = self._queue[:self.max_batch]
            del self._queue[:self.max_batch]
            self.batches += 1
            self.entries += len(batch)
            try:
                await self._flush(batch)
            except BaseException as exc:  # never leave a caller waiting
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(
                            exc if isinstance(exc, Exception) else StoreError("store closed"))
                if not isinstance(exc, Exception):
                    raise
