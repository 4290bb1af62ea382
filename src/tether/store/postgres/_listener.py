"""LISTEN/NOTIFY wake-ups: one dedicated connection per store, outside the pool.

Writes that make work available or end a run call ``pg_notify`` on the schema's channel
in their own transaction, so a wake-up is sent exactly when the write commits. The
listener holds one connection with ``LISTEN`` on it and calls every subscriber for each
notification (and, for a ``cancel:<run id>`` notification, first their cancel
callback). If that connection drops (server restart, network, a terminated backend)
it reconnects with backoff and then calls every subscriber once: notifications sent
while it was away are lost, and a spurious wake-up only costs a claim query. A
connection that went silent without closing is found by a cheap query every
``check_interval`` seconds, which has ``query_timeout`` to answer (as has the
``LISTEN``): a connection to a server that no longer answers is dropped then, and made
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import sql

from tether._clock import wait_event
from tether.store._port import every_caller_context
from tether.store.postgres._config import (
    CONNECTION_ERRORS,
    DEFAULT_QUERY_TIMEOUT,
    PgConfig,
    connect_reason,
)
from tether.store.postgres._deadline import within

log = logging.getLogger("tether.store.postgres")

#: A notification ``cancel:<run id>``: that running run was asked to cancel.
CANCEL_PREFIX = "cancel:"


class Listener:
    """Calls subscribers (each on its own event loop) when the channel is notified."""

    def __init__(self, cfg: PgConfig, *, check_interval: float = 30.0,
                 max_backoff: float = 5.0,
                 query_timeout: float = DEFAULT_QUERY_TIMEOUT) -> None:
        self.cfg = cfg
        self.check_interval = check_interval
        self.query_timeout = query_timeout
        self.max_backoff = max_backoff
        self._subscribers: dict[int, tuple[asyncio.AbstractEventLoop, Callable[[], None],
                                           Callable[[str], None] | None]] = {}
        self._next_id = 0
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[object] | None = None
        #: Set while a LISTEN is in place; tests and callers may wait for it.
        self.listening = asyncio.Event()
        #: How many times the connection was (re)established.
        self.connects = 0
        #: How many times it was lost (the first failure of each outage).
        self.lost = 0

    async def subscribe(self, callback: Callable[[], None],
                        on_cancel: Callable[[str], None] | None = None,
                        ) -> Callable[[], Awaitable[None]]:
        loop = asyncio.get_running_loop()
        key = self._next_id
        self._next_id += 1
        self._subscribers[key] = (loop, callback, on_cancel)
        if self._task is None or self._task.done():
            self.listening.clear()
            self._task = asyncio.create_task(self._run(), name="tether-pg-listener",
                                             context=every_caller_context())
        # Callers expect wake-ups from the moment subscribe() returns; the first LISTEN
        # normally takes one round trip. If the server is down, go on: we retry.
        await wait_event(self.listening, 5.0)  # (not wait_for: see wait_event)

        async def unsubscribe() -> None:
            self._subscribers.pop(key, None)
            if not self._subscribers:
                await self.close()

        return unsubscribe

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()
        self.listening.clear()

    def _fire(self, cancelled: str | None = None) -> None:
        """Call every subscriber; with ``cancelled``, first their ``on_cancel``."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, callback, on_cancel in list(self._subscribers.values()):
            calls: list[Callable[[], None]] = [callback]
            if cancelled is not None and on_cancel is not None:
                calls.insert(0, functools.partial(on_cancel, cancelled))
            for call in calls:
                try:
                    if loop is running:
                        loop.call_soon(call)
                    else:
                        loop.call_soon_threadsafe(call)
                except RuntimeError:
                    pass  # that subscriber's loop is closed

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.cfg.conninfo, autocommit=True, application_name="tether-listener")
                self._conn = conn
                await within(conn, self.query_timeout, conn.execute(
                    sql.SQL("LISTEN {}").format(sql.Identifier(self.cfg.channel))))
                self.connects += 1
                self.listening.set()
                if self.connects > 1:
                    log.info("listener reconnected to %s", self.cfg.where)
                    self._fire()  # whatever was notified while we were away
                backoff = 0.1
                while True:
                    async for note in conn.notifies(timeout=self.check_interval):
                        payload = note.payload
                        self._fire(payload[len(CANCEL_PREFIX):]
                                   if payload.startswith(CANCEL_PREFIX) else None)
                    # Still there? (A server that stopped answering fails the check
                    # within the deadline: the connection is dropped and made again.)
                    await within(conn, self.query_timeout, conn.execute("SELECT 1"))
            except asyncio.CancelledError:
                raise
            except CONNECTION_ERRORS as exc:
                self.listening.clear()
                if backoff == 0.1:
                    self.lost += 1
                # The first failure of an outage is a warning; the retries, every
                # max_backoff seconds while it lasts, are debug lines (the store's pool
                # tells the outage's course and end).
                log.log(logging.WARNING if backoff == 0.1 else logging.DEBUG,
                        "listener connection to PostgreSQL at %s:%s lost (%s); "
                        "reconnecting in %.1f s", self.cfg.host, self.cfg.port,
                        connect_reason(exc), backoff)
            except psycopg.Error as exc:
                self.listening.clear()
                if backoff == 0.1:
                    self.lost += 1
                log.error("listener failed (%s); reconnecting in %.1f s", exc, backoff)
            await self._disconnect()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
