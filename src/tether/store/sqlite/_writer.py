"""The callers' side of the SQLite store's writer thread.

An operation is a plain function ``fn(conn, *args)`` that runs on the writer thread inside
its transaction. Callers on an event loop queue it with ``_read``, ``_write`` or
``_write_wake`` and await the future, which resolves (on the caller's loop) once the
transaction that ran it committed or rolled back. The three are typed with the
operation's own signature, so mypy checks the arguments and the result of every call.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import apsw

from tether.errors import StoreError
from tether.store._port import REQUEST_TIMEOUT

P = ParamSpec("P")
T = TypeVar("T")

#: (future, result, exception) of each operation of a batch, delivered on its loop.
Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]


class Op:
    """One queued operation: what to call, on which loop to answer, whether it writes
    (a batch with a write begins ``IMMEDIATE``) or wakes the workers once committed,
    whether it is atomic by itself (it needs no savepoint of its own in a batch), and
    until when (``time.monotonic()``) its caller waits for another process's write lock
    (``REQUEST_TIMEOUT``: a request to ``tether serve``; None: the store's
    ``busy_timeout``)."""

    __slots__ = ("args", "atomic", "deadline", "fn", "future", "loop", "wake", "write")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], write: bool,
                 loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any],
                 wake: bool, atomic: bool = False, deadline: float | None = None) -> None:
        self.fn = fn
        self.args = args
        self.write = write
        self.loop = loop
        self.future = future
        self.wake = wake
        self.atomic = atomic
        self.deadline = deadline


def deliver(results: list[Outcome]) -> None:
    """Resolve the futures of one loop (called on that loop); a cancelled caller's
    future is left alone."""
    for fut, value, exc in results:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)


class WriterClient:
    """Queues operations for the writer thread (mixed into ``SqliteStore``)."""

    _queue: queue.SimpleQueue[Op | None]
    _thread: threading.Thread | None
    _closed: bool
    #: Operations queued and not yet run by the writer thread (changed under ``_count``).
    _pending: int
    _count: threading.Lock
    #: Operations each event loop gathered for its next pass (``SqliteStore._grouped``).
    _groups: dict[asyncio.AbstractEventLoop, list[Op]]
    #: The running loop of the last call (see ``_running_loop``).
    _last_loop: asyncio.AbstractEventLoop | None = None

    def _read(self, fn: Callable[Concatenate[apsw.Connection, P], T], /,
              *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        """Run a read-only operation (it may share a deferred transaction)."""
        return self._enqueue(functools.partial(fn, **kwargs) if kwargs else fn, args,
                             write=False, wake=False)

    def _write(self, fn: Callable[Concatenate[apsw.Connection, P], T], /,
               *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        """Run an operation that writes, in its own savepoint of the batch."""
        return self._enqueue(functools.partial(fn, **kwargs) if kwargs else fn, args,
                             write=True, wake=False)

    def _write_atomic(self, fn: Callable[Concatenate[apsw.Connection, P], T], /,
                      *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        """``_write`` for an operation that leaves nothing written when it fails: one
        statement (SQLite undoes a failed statement's changes, its triggers' included),
        or reads after its only write failed to change anything. It runs without a
        savepoint of its own in a batch (two fewer statements per operation)."""
        return self._enqueue(functools.partial(fn, **kwargs) if kwargs else fn, args,
                             write=True, wake=False, atomic=True)

    def _write_wake(self, fn: Callable[Concatenate[apsw.Connection, P], T], /,
                    *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        """``_write``, then tell the workers (of every process) once it committed: it
        may have made a run claimable."""
        return self._enqueue(functools.partial(fn, **kwargs) if kwargs else fn, args,
                             write=True, wake=True)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """``asyncio.get_running_loop()``, without its ``getpid()`` system call (made on
        every call to detect a fork) when the loop of the last call runs in this thread:
        a thread runs one loop at a time. Loops without ``_thread_id`` (not asyncio's
        own) are always looked up."""
        loop = self._last_loop
        if loop is not None and getattr(loop, "_thread_id", None) == threading.get_ident():
            return loop
        loop = self._last_loop = asyncio.get_running_loop()
        return loop

    def _enqueue(self, fn: Callable[..., T], args: tuple[Any, ...], *, write: bool,
                 wake: bool, atomic: bool = False) -> asyncio.Future[T]:
        op = self._op(fn, args, write=write, wake=wake, atomic=atomic)
        # A write goes behind what this loop gathered and has not committed yet: a
        # loop's writes commit in the order it issued them (``ordered_writes``).
        group = self._groups.pop(op.loop, None) if write else None
        if group:
            group.append(op)
            self._hand_over(group)
        else:
            self._hand_over([op])
        return op.future

    def _op(self, fn: Callable[..., Any], args: tuple[Any, ...], *, write: bool,
            wake: bool, atomic: bool) -> Op:
        """An operation of the running loop, its future not yet resolved."""
        if self._thread is None or self._closed:
            raise StoreError("store is not open")
        loop = self._running_loop()
        timeout = REQUEST_TIMEOUT.get()
        return Op(fn, args, write, loop, loop.create_future(), wake, atomic,
                  None if timeout is None else time.monotonic() + timeout)

    def _hand_over(self, ops: list[Op]) -> None:
        """Queue operations for the writer thread, in order."""
        if not ops:
            return
        with self._count:
            self._pending += len(ops)
        for op in ops:
            self._queue.put(op)
