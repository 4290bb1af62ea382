"""Client-side deadlines on PostgreSQL connections.

A server that accepts connections but never answers (a stopped or hung process, a
half-open connection after a partition, a firewall that drops packets silently) leaves
an operation waiting on its socket for ever: the kernel acknowledges what was sent, so
neither TCP keepalives nor ``tcp_user_timeout`` fire. So every operation on a
connection runs under a deadline (:class:`Watch`): one timer on the event loop per
operation (a batch of journal appends, a transaction, a read), armed once the
connection is in hand and cancelled when the answer is in, not a ``wait_for`` around
each statement. When it passes, the timer shuts the connection's socket down
(:func:`sever`): whatever waits on it wakes at once with psycopg's "server closed the
connection unexpectedly", libpq marks the connection bad, and the pool discards it when
it is returned; the operation raises ``NoAnswer`` (a StoreUnavailable at the store's
boundary).

Not a cancellation of the waiting task: psycopg answers a cancelled query by sending
the server a cancel request over a new connection and waiting for the query to end
(up to 10 s more against a hung server), and a cancelled task's connection may be
handed back to the pool busy. A shut-down socket fails the wait itself, on the spot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg

from tether.store.postgres._config import NoAnswer

T = TypeVar("T")

#: Long operations (purges, erasures, moving runs between versions, reading every
#: run's version) are given this many times the store's query timeout.
LONG_FACTOR = 10


def sever(conn: psycopg.AsyncConnection[Any]) -> None:
    """Shut ``conn``'s socket down both ways, keeping its descriptor open (whoever
    waits on it has it registered with the event loop, and libpq closes it when the
    connection is closed): reads see the end of the stream, writes fail."""
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return  # closed already
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


class Watch:
    """A deadline on one connection: unless :meth:`cancel` comes first, ``seconds`` from
    now the connection is severed and ``on_fire(self)`` called."""

    __slots__ = ("_handle", "_on_fire", "conn", "fired", "seconds")

    def __init__(self, conn: psycopg.AsyncConnection[Any], seconds: float,
                 on_fire: Callable[[Watch], None] | None = None) -> None:
        self.conn = conn
        self.seconds = seconds
        self.fired = False
        self._on_fire = on_fire
        self._handle = asyncio.get_running_loop().call_later(seconds, self._fire)

    def _fire(self) -> None:
        self.fired = True
        sever(self.conn)
        if self._on_fire is not None:
            self._on_fire(self)

    @property
    def started(self) -> float:
        """When the watch began, on the event loop's clock (``time.monotonic()`` for
        asyncio's own loops)."""
        return self._handle.when() - self.seconds

    def cancel(self) -> None:
        self._handle.cancel()


async def within(conn: psycopg.AsyncConnection[Any], seconds: float,
                 work: Awaitable[T], on_fire: Callable[[Watch], None] | None = None) -> T:
    """``await work`` (an operation on ``conn``) under a deadline of ``seconds``.

    Raises: NoAnswer (the deadline passed: ``conn`` is severed), or what ``work`` raises.
    """
    watch = Watch(conn, seconds, on_fire)
    try:
        return await work
    except Exception as exc:
        if watch.fired:
            raise NoAnswer(seconds) from exc
        raise
    finally:
        watch.cancel()
