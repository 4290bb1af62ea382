"""A long-lived process of a PostgreSQL store that is no worker (``tether serve``,
``tether mcp``) says it is there: one connection of its own holds a shared advisory
lock whose key is made from the schema's name, for as long as the process runs.

``tether db copy`` and ``tether db restore`` look the lock up in ``pg_locks``: the
session holding it names the process (``application_name`` ``tether-KIND PID@HOST``),
and the refusal names its kind, pid and host, as a worker's does. The pool's sessions
alone did not tell: an idle server's last statement (a ``COMMIT``) names no schema, so
where the database held other Tether schemas it was not seen at all.

The lock lives as long as the session: a process killed with ``-9`` (its socket closed
by its kernel) releases it at once; a host that is gone, within the connection's TCP
keepalives (``TCP_DEFAULTS``: about a minute, the workers' heartbeat window). The
connection is checked every ``check_interval`` seconds and made again after an outage."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket

import psycopg

from tether.store._port import every_caller_context
from tether.store.postgres._config import PgConfig, connect_reason
from tether.store.postgres._deadline import within

log = logging.getLogger("tether.store.postgres")

#: The first key of the two-key advisory lock (``pg_advisory_lock_shared(int, int)``):
#: the one class of Tether's presence locks, apart from the migrations' one-key lock.
PRESENCE_CLASS = 0x7E7E
#: ``application_name`` of a presence session: ``tether-KIND PID@HOST``.
APP_PREFIX = "tether-"


def presence_key(schema: str) -> int:
    """The second key of the schema's presence lock (0 to 2**31 - 1)."""
    digest = hashlib.sha256(f"tether.presence:{schema}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def presence_name(kind: str, pid: int, host: str) -> str:
    """The ``application_name`` of a presence session (PostgreSQL keeps 63 bytes)."""
    return f"{APP_PREFIX}{kind} {pid}@{host}".encode()[:63].decode(errors="ignore")


def parse_name(name: str) -> tuple[str, int, str] | None:
    """(kind, pid, host) of a presence session's ``application_name``, if it is one."""
    if not name.startswith(APP_PREFIX) or " " not in name or "@" not in name:
        return None
    kind, _, rest = name[len(APP_PREFIX):].partition(" ")
    pid, _, host = rest.partition("@")
    return (kind, int(pid), host) if pid.isdigit() and kind else None


#: Who holds a schema's presence lock: (backend pid, application_name, client,
#: backend_start) of each session, this one's left out.
HOLDERS_SQL = (
    "SELECT l.pid, a.application_name, coalesce(host(a.client_addr), 'local'), "
    "a.backend_start::text FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.pid <> pg_backend_pid() "
    "ORDER BY a.backend_start")


class Presence:
    """The presence session of one process (``kind``: ``serve``, ``mcp``) on one
    schema: ``start`` it once the store is open, ``close`` it with the store."""

    def __init__(self, cfg: PgConfig, schema: str, kind: str, *,
                 check_interval: float = 30.0, query_timeout: float = 30.0) -> None:
        self.cfg = cfg
        self.schema = schema
        self.kind = kind
        self.check_interval = check_interval
        self.query_timeout = query_timeout
        #: Set while the lock is held.
        self.holding = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[object] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tether-pg-presence",
                                             context=every_caller_context())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()

    async def _disconnect(self) -> None:
        self.holding.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _run(self) -> None:
        name = presence_name(self.kind, os.getpid(), socket.gethostname())
        backoff = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.cfg.conninfo, autocommit=True, application_name=name)
                self._conn = conn
                await within(conn, self.query_timeout, conn.execute(
                    "SELECT pg_advisory_lock_shared(%s, %s)",
                    (PRESENCE_CLASS, presence_key(self.schema))))
                self.holding.set()
                backoff = 0.5
                while True:  # (a server that stopped answering fails the check)
                    await asyncio.sleep(self.check_interval)
                    await within(conn, self.query_timeout, conn.execute("SELECT 1"))
            except asyncio.CancelledError:
                raise
            except psycopg.Error as exc:
                # (a debug line: the pool's and the listener's lines tell an outage)
                log.debug("presence connection to PostgreSQL at %s:%s lost (%s); "
                          "reconnecting in %.1f s", self.cfg.host, self.cfg.port,
                          connect_reason(exc), backoff)
            await self._disconnect()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 8.0)
