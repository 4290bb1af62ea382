"""Live events of runs over LISTEN/NOTIFY (``run_publish`` / ``run_events``).

Each observed run has a channel of its own (a digest of the schema and the run id), so a
process receives only the events of the runs it observes, and workers that observe
nothing receive none. One connection per store, outside the pool and apart from the
wake-up listener, holds a ``LISTEN`` per observed run; it exists only while someone
observes.

A NOTIFY payload must be shorter than 8000 bytes, so an event is sent as parts of at
most ``PART_BYTES`` (cut between UTF-8 characters), each headed ``i,n:``. The parts of
one event go out in one transaction, and PostgreSQL delivers a transaction's
notifications together and in order, so the receiver joins them back. Events are best
effort: while the connection is down (a restart) they are lost.

Changing the set of channels means running LISTEN on the connection, which is busy
waiting for notifications; a subscriber therefore notifies the connection's private
control channel, which makes it stop waiting, apply the change and wait again. A
subscriber's iteration starts once its LISTEN is in place, so it misses nothing
published after that.

A connection that went silent without closing is found as the wake-up listener's is:
after ``check_interval`` seconds without a notification a cheap query must answer
within ``query_timeout`` (as must every LISTEN), or the connection is dropped and made
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
from psycopg import sql

from tether.store._port import every_caller_context
from tether.store.postgres._config import (
    CONNECTION_ERRORS,
    DEFAULT_QUERY_TIMEOUT,
    PgConfig,
    connect_reason,
)
from tether.store.postgres._deadline import within

log = logging.getLogger("tether.store.postgres")

#: Bytes of event text per notification (PostgreSQL's limit is 8000 with the header).
PART_BYTES = 7900


def channel_of(schema: str, run_id: str) -> str:
    """The notification channel of a run's events (a short identifier)."""
    digest = hashlib.sha256(f"{schema}\0{run_id}".encode()).hexdigest()[:40]
    return f"tev_{digest}"


def split_event(raw: bytes, size: int = PART_BYTES) -> list[str]:
    """The event's notification payloads: parts of at most ``size`` bytes, never
    cutting a UTF-8 character, each headed ``i,n:``."""
    pieces: list[str] = []
    start = 0
    while start < len(raw):
        end = min(start + size, len(raw))
        while end < len(raw) and (raw[end] & 0xC0) == 0x80:
            end -= 1
        pieces.append(raw[start:end].decode())
        start = end
    if not pieces:
        pieces.append("")
    n = len(pieces)
    return [f"{i},{n}:{p}" for i, p in enumerate(pieces)]


class EventListener:
    """Delivers the events of observed runs to their subscribers' queues."""

    def __init__(self, cfg: PgConfig, kick: Callable[[str], Awaitable[None]], *,
                 max_backoff: float = 5.0, check_interval: float = 30.0,
                 query_timeout: float = DEFAULT_QUERY_TIMEOUT) -> None:
        self.cfg = cfg
        self.check_interval = check_interval
        self.query_timeout = query_timeout
        #: Sends a notification on a channel (through the store's pool).
        self._kick = kick
        self.max_backoff = max_backoff
        self._control = f"tev_ctl_{uuid.uuid4().hex[:24]}"
        self._subs: dict[str, set[asyncio.Queue[str]]] = {}
        self._parts: dict[str, list[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wanted = 0  #: bumped on every change of the channel set
        self._applied = 0  #: the change the connection has put in place
        self._changed = asyncio.Condition()

    async def subscribe(self, channel: str, *,
                        ready: Callable[[], None] | None = None) -> AsyncIterator[str]:
        """Events of ``channel`` from the moment its LISTEN is in place; ``ready`` is
        called then (or after ``_apply``'s 5 s, the server unreachable)."""
        received: asyncio.Queue[str] = asyncio.Queue()
        self._subs.setdefault(channel, set()).add(received)
        try:
            await self._apply()
            if ready is not None:
                ready()
            while True:
                yield await received.get()
        finally:
            subs = self._subs.get(channel)
            if subs is not None:
                subs.discard(received)
                if not subs:
                    del self._subs[channel]
                    self._parts.pop(channel, None)
            if not self._subs:
                await self.close()
            else:
                self._wanted += 1
                with contextlib.suppress(Exception):
                    await self._kick(self._control)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _apply(self) -> None:
        """Have the connection listen to the current channels; wait until it does (at
        most 5 s: if the server is down, the subscriber goes on and gets events once the
        connection is back)."""
        self._wanted += 1
        target = self._wanted
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="tether-pg-events",
                                             context=every_caller_context())
        else:
            with contextlib.suppress(Exception):
                await self._kick(self._control)
        # asyncio.timeout, not asyncio.wait_for: on Python 3.11 the latter returns as if
        # nothing happened when the subscriber is cancelled just as the LISTEN lands, and
        # the subscriber then waits for events for ever (a stream whose client had gone).
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._changed.wait_for(lambda: self._applied >= target)

    def _dispatch(self, channel: str, payload: str) -> None:
        head, _, text = payload.partition(":")
        try:
            i, n = (int(x) for x in head.split(","))
        except ValueError:
            return  # not ours
        parts = self._parts.setdefault(channel, [])
        if i == 0:
            parts.clear()
        if i != len(parts):
            parts.clear()  # a part went missing (reconnect): drop the event
            return
        parts.append(text)
        if i == n - 1:
            event = "".join(parts)
            parts.clear()
            for q in self._subs.get(channel, ()):
                q.put_nowait(event)

    async def _execute(self, conn: psycopg.AsyncConnection[object],
                       statement: sql.Composed | sql.SQL) -> None:
        await within(conn, self.query_timeout, conn.execute(statement))

    async def _receive(self, conn: psycopg.AsyncConnection[object], target: int) -> bool:
        """Dispatch notifications for up to ``check_interval`` seconds; True as soon as
        the channel set changed since ``target`` (the control channel says so)."""
        gen = conn.notifies(timeout=self.check_interval)
        try:
            async for note in gen:
                if note.channel == self._control:
                    if self._wanted != target:
                        return True
                    continue
                self._dispatch(note.channel, note.payload)
        finally:
            await gen.aclose()
        return False

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            conn: psycopg.AsyncConnection[object] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.cfg.conninfo, autocommit=True, application_name="tether-events")
                await self._execute(conn, sql.SQL("LISTEN {}").format(
                    sql.Identifier(self._control)))
                listening: set[str] = set()
                backoff = 0.1
                while True:
                    target = self._wanted
                    wanted = set(self._subs)
                    for ch in sorted(wanted - listening):
                        await self._execute(conn, sql.SQL("LISTEN {}").format(
                            sql.Identifier(ch)))
                    for ch in sorted(listening - wanted):
                        await self._execute(conn, sql.SQL("UNLISTEN {}").format(
                            sql.Identifier(ch)))
                    listening = wanted
                    async with self._changed:
                        self._applied = max(self._applied, target)
                        self._changed.notify_all()
                    while not await self._receive(conn, target):
                        await self._execute(conn, sql.SQL("SELECT 1"))  # still there?
                        if self._wanted != target:
                            break  # a change whose kick never came (it failed): apply it
            except asyncio.CancelledError:
                raise
            except CONNECTION_ERRORS as exc:
                log.warning("events connection to PostgreSQL at %s:%s lost (%s); "
                            "reconnecting in %.1f s", self.cfg.host, self.cfg.port,
                            connect_reason(exc), backoff)
            except psycopg.Error as exc:
                log.error("events listener failed (%s); reconnecting in %.1f s", exc, backoff)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            self._parts.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
