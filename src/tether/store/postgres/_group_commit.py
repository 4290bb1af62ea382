"""Group commit for run starts, journal appends, releases, the ends of runs, runs'
metrics and the texts runs store.

Every ``run_insert``, ``journal_append``, ``run_release``, ``run_finish``,
``run_metrics_set`` and ``blob_put`` of the process goes into one queue. A single writer
task takes everything queued, writes its starts in one transaction (``run_insert_many``:
one INSERT of arrays and one read), its texts in another (their references, then the
texts), its metrics in another, its appends in another (one fenced INSERT of arrays: one
round trip and one WAL flush for the lot), its releases and its ends of runs in one each
(BEGIN, lock, UPDATE of arrays, wake-ups, COMMIT in one pipeline), and resolves each
caller's future. While a batch is in flight the next one gathers, so under load batches
grow by themselves and throughput approaches the commit rate times the batch size, with
no timer and no added latency when the process is idle.

One writer, not several, so that two appends to one run are written in the order they
were made (a pending entry, then its final one), as the SQLite store's single writer
thread does. A run's release or end is submitted after its last append was written, so
writing a batch's appends before them keeps every run's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tether._types import JournalEntry, Lease, RunRecord
from tether.errors import StoreError
from tether.store._port import REQUEST_TIMEOUT, Wait, every_caller_context, serve_every_caller

log = logging.getLogger("tether.store.postgres")


@dataclass(slots=True)
class Append:
    """A journal append (``journal_append``) waiting for its batch; with ``metrics``,
    the run's metrics written in its transaction first; with ``blobs``, texts the entry
    references, stored (referenced by the run) in its transaction before it."""
    lease: Lease
    entry: JournalEntry
    future: asyncio.Future[None]
    metrics: str | None = None
    now: float = 0.0
    #: The caller's ``REQUEST_TIMEOUT`` (``AppendWriter._put``).
    limit: float | None = None
    blobs: Mapping[str, str] | None = None


@dataclass(slots=True)
class Finish:
    """A run's end (``run_finish``) waiting for its batch."""
    lease: Lease
    status: str
    result: str | None
    error: str | None
    now: float
    future: asyncio.Future[None]
    #: The caller's ``REQUEST_TIMEOUT`` (``AppendWriter._put``).
    limit: float | None = None


@dataclass(slots=True)
class Release:
    """A run handed back to wait (``run_release``) waiting for its batch."""
    lease: Lease
    wait: Wait
    now: float
    future: asyncio.Future[None]
    #: The caller's ``REQUEST_TIMEOUT`` (``AppendWriter._put``).
    limit: float | None = None


@dataclass(slots=True)
class Insert:
    """A run's start (``run_insert``) waiting for its batch: the stored run and whether
    this insert created it."""
    run: RunRecord
    future: asyncio.Future[tuple[RunRecord, bool]]
    #: The caller's ``REQUEST_TIMEOUT`` (``AppendWriter._put``).
    limit: float | None = None


@dataclass(slots=True)
class Metrics:
    """A run's metrics (``run_metrics_set``) waiting for their batch."""
    lease: Lease
    metrics: str
    now: float
    future: asyncio.Future[None]
    #: The caller's ``REQUEST_TIMEOUT`` (``AppendWriter._put``).
    limit: float | None = None


@dataclass(slots=True)
class Blobs:
    """Texts to store (``blob_put``), referenced by ``run_id`` if given, waiting for
    their batch."""
    blobs: dict[str, str]
    run_id: str | None
    future: asyncio.Future[None]
    #: The caller's ``REQUEST_TIMEOUT`` (``AppendWriter._put``).
    limit: float | None = None


Item = Append | Finish | Release | Insert | Metrics | Blobs


class AppendWriter:
    """Queues starts, appends and ends of runs and writes them in shared transactions with
    ``flush``."""

    def __init__(self, flush: Callable[[list[Item]], Awaitable[None]], *,
                 max_batch: int = 1000,
                 idle: Callable[[], Awaitable[None]] | None = None) -> None:
        self._flush = flush
        #: Called when the queue is found empty, before waiting for more.
        self._idle = idle
        self.max_batch = max_batch
        self._queue: list[Item] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: Batches written and entries in them, for benchmarks and tests.
        self.batches = 0
        self.entries = 0

    @property
    def queued(self) -> bool:
        """Whether anything waits in the queue for the next batch."""
        return bool(self._queue)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The writer's task, while it runs."""
        return self._task

    def poke(self) -> None:
        """Wake the writer: with nothing queued it runs its idle hook again."""
        self._ready.set()

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="tether-pg-group-commit",
                                         context=every_caller_context())

    def submit(self, lease: Lease, entry: JournalEntry, metrics: str | None = None,
               now: float = 0.0, blobs: Mapping[str, str] | None = None,
               ) -> asyncio.Future[None]:
        return self._put(Append(lease, entry, self._future(), metrics, now, blobs=blobs))

    def submit_finish(self, lease: Lease, status: str, result: str | None,
                      error: str | None, now: float) -> asyncio.Future[None]:
        return self._put(Finish(lease, status, result, error, now, self._future()))

    def submit_release(self, lease: Lease, wait: Wait, now: float) -> asyncio.Future[None]:
        return self._put(Release(lease, wait, now, self._future()))

    def submit_metrics(self, lease: Lease, metrics: str, now: float) -> asyncio.Future[None]:
        return self._put(Metrics(lease, metrics, now, self._future()))

    def submit_blobs(self, blobs: dict[str, str], run_id: str | None) -> asyncio.Future[None]:
        return self._put(Blobs(blobs, run_id, self._future()))

    def submit_insert(self, run: RunRecord) -> asyncio.Future[tuple[RunRecord, bool]]:
        return self._put(Insert(run, self._future()))

    def _put(self, item: Item) -> asyncio.Future[Any]:
        """Queue ``item`` for the next batch; its caller's future."""
        item.limit = REQUEST_TIMEOUT.get()
        self._queue.append(item)
        self._ready.set()
        return item.future

    def _future(self) -> asyncio.Future[Any]:
        if self._task is None or self._closing:
            raise StoreError("store is not open")
        return asyncio.get_running_loop().create_future()

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
        serve_every_caller()  # (started from a request's context)
        while True:
            try:
                await self._serve()
                return
            except asyncio.CancelledError:
                # Only the end of the event loop cancels this task (``close`` lets it
                # write what is queued and return): serve on, so that what the loop's
                # other tasks write while they end (a worker handing its runs back) is
                # written; the store's guard closes the store, and with it this writer,
                # once they have ended (PostgresStore._close_pool_on_cancel).
                task = asyncio.current_task()
                if self._closing or task is None:
                    raise
                task.uncancel()

    async def _serve(self) -> None:
        while True:
            if not self._queue:
                if self._idle is not None:
                    try:
                        await self._idle()
                    except Exception:  # the writer must keep serving
                        log.warning("group commit: idle hook failed", exc_info=True)
                    if self._queue:
                        continue
                if self._closing:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            batch = self._queue[:self.max_batch]
            del self._queue[:self.max_batch]
            self.batches += 1
            self.entries += len(batch)
            # A batch has the shortest deadline of its callers': a request's start waits
            # for the server's answer no longer than the request's other operations.
            limits = [item.limit for item in batch if item.limit is not None]
            token = REQUEST_TIMEOUT.set(min(limits) if limits else None)
            try:
                await self._flush(batch)
            except BaseException as exc:  # never leave a caller waiting
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(
                            exc if isinstance(exc, Exception) else StoreError("store closed"))
                if not isinstance(exc, Exception):
                    raise
            finally:
                REQUEST_TIMEOUT.reset(token)
