"""PostgresStore: the scale-out store, for workers on many hosts.

psycopg 3 in async mode over a bounded ``psycopg_pool.AsyncConnectionPool`` of
autocommit connections. Each operation costs one round trip: a single statement (with
data-modifying CTEs where it must do several things), or a pipeline that sends BEGIN,
its statements and COMMIT with one Sync. Journal appends of every run in the process
share transactions (``_group_commit``). Writes that make work available or end a run
notify the schema's channel in the same transaction; ``_listener`` turns that into
wake-ups.

Connections the server dropped (a restart, a terminated backend) are found on checkout
without a round trip: an idle connection whose socket is readable has been told to go
away, so it is discarded and another taken. A connection that fails during an operation
raises ``StoreUnavailable`` and is discarded by the pool, which reconnects by itself.
Every operation has a deadline on its connection (``query_timeout``, see ``_deadline``):
a server that never answers costs the operation its connection and StoreUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg_pool
from psycopg.pq import ConnStatus, PipelineStatus, TransactionStatus
from psycopg.pq.abc import PGresult

from tether._types import (
    ENDED,
    ClaimedRun,
    EntryStatus,
    JournalEntry,
    Lease,
    OperationKind,
    RunRecord,
    RunStatus,
)
from tether.errors import (
    ConfigError,
    LeaseLost,
    RunNotFound,
    SignalError,
    StoreError,
    StoreUnavailable,
    TetherError,
)
from tether.store._backup import check_target, partial_file
from tether.store._inline import LoopTurns, loop_quiet
from tether.store._lifecycle import (
    ArchivedJournal,
    AttemptRecord,
    PurgeReport,
    RetryReport,
    ScheduleRecord,
    child_id_taken,
    not_resumable,
    refuse_erased,
)
from tether.store._port import (
    FAIL_FAST,
    REQUEST_TIMEOUT,
    HeartbeatResult,
    SignalSent,
    StoreCapabilities,
    Wait,
    WorkerInfo,
    every_caller_context,
)
from tether.store._restore import RestoreResult
from tether.store._sql import (
    entry_from_row,
    entry_params,
    final_conflict,
    lease_params,
    load_queries,
    run_from_row,
    run_params,
    same_entry,
)
from tether.store._values import (
    check_event,
    check_metrics,
    check_queue_limit,
    check_rate,
)
from tether.store.postgres import _migrate
from tether.store.postgres._arrays import Float8Array, Int4Array, Int8Array, TextArray
from tether.store.postgres._config import (
    DEFAULT_QUERY_TIMEOUT,
    NoAnswer,
    PgConfig,
    Unanswered,
    busy,
    connect_reason,
    full,
    may_read_back,
    parse_url,
    pick,
    refused,
    role_of,
    translate_errors,
    unanswered_backend,
    unavailable,
)
from tether.store.postgres._deadline import LONG_FACTOR, Watch, sever, within
from tether.store.postgres._events import EventListener, channel_of, split_event
from tether.store.postgres._group_commit import (
    Append,
    AppendWriter,
    Blobs,
    Finish,
    Insert,
    Item,
    Metrics,
    Release,
)
from tether.store.postgres._lifecycle import Lifecycle
from tether.store.postgres._listener import Listener
from tether.store.postgres._outage import (
    Outage,
    ReconnectingPool,
    quiet_pool_log,
    tracked_connection,
)
from tether.store.postgres._presence import Presence
from tether.store.postgres._raw import Held, Prepared, answer_reader, wait_answer
from tether.store.postgres._serve import SERVE_QUERIES, PostgresServeQueries

if TYPE_CHECKING:
    from tether.store._port import Store

log = logging.getLogger("tether.store.postgres")

_QUERIES = load_queries("tether.store.postgres")
_FINAL = tuple(s.value for s in ENDED)
_SETTLED = tuple(sorted(s.value for s in RunStatus if s.is_settled))
#: Deadlocks and serialization failures roll a transaction back; it is safe to rerun.
_TXN_RETRIES = 3
#: An inline append (``_append_inline``) blocks the event loop for its answer at most
#: this long (seconds); a later answer is awaited (and the writer waits for it before it
#: uses or returns the connection).
_INLINE_WAIT = 0.005
#: The writer keeps its connection this long after the last inline append (seconds)
#: before returning it to the pool, so that a sequential run's next step finds it.
_HELD_LINGER = 0.25
#: A store left open when its event loop ends closes once the loop's other tasks have
#: ended, or after this many seconds (``_close_pool_on_cancel``).
_GUARD_WAIT = 10.0
#: Inline appends wait with poll(2), which not every platform has.
_CAN_POLL = hasattr(select, "poll")

#: The parameters of ``journal_append_one``, by their columns' types.
_APPEND_ONE_TYPES = {
    "run_id": "text", "fencing_token": "bigint", "position": "integer", "kind": "text",
    "name": "text", "status": "text", "result": "text", "error": "text",
    "attempts": "integer", "started_at": "float8", "finished_at": "float8",
    "next_attempt_at": "float8", "args": "text"}
#: ``journal_append_one_metered``'s: the same and the run's metrics.
_APPEND_METERED_TYPES = {**_APPEND_ONE_TYPES, "metrics": "text", "now": "float8"}
#: ``journal_append``'s (a batch of appends): one array of each.
_APPEND_MANY_TYPES = {name: f"{t}[]" for name, t in _APPEND_ONE_TYPES.items()}

Conn = psycopg.AsyncConnection[Any]
Params = Mapping[str, Any] | None


def _auto_migrate_env() -> bool:
    return os.environ.get("TETHER_AUTO_MIGRATE", "1").strip().lower() not in (
        "0", "false", "no", "off")


def _store_or_pool_task(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` is one of a PostgreSQL store's own (its writer, listeners,
    guard) or of psycopg_pool's (its workers and scheduler)."""
    if task.get_name().startswith("tether-pg-"):
        return True
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and "psycopg_pool" in code.co_filename


async def _others_ended(limit: float) -> None:
    """Wait until every task of the loop but this one, the stores' own and the pools'
    has ended, at most ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    deadline = loop.time() + limit
    while True:  # (again: the tasks waited for may have made new ones as they ended)
        others = {t for t in asyncio.all_tasks()
                  if t is not me and not t.done() and not _store_or_pool_task(t)}
        left = deadline - loop.time()
        if not others or left <= 0:
            return
        await asyncio.wait(others, timeout=left)


def _returns_at_once(pool: psycopg_pool.AsyncConnectionPool[Conn], conn: Conn) -> bool:
    """Whether giving ``conn`` back to ``pool`` completes without suspending: no client
    waits for a connection, the pool's lock can be taken at once (``_takes_at_once``),
    the connection is idle (nothing to roll back) and the pool open. Read from
    psycopg_pool 3's internals; when they are not there, the answer is no (and the
    return takes the safe, slower way)."""
    waiting = getattr(pool, "_waiting", None)
    lock = getattr(pool, "_lock", None)
    if waiting is None or lock is None or waiting or pool.closed or not _takes_at_once(lock):
        return False
    return bool(conn.pgconn.transaction_status == TransactionStatus.IDLE)


def _takes_at_once(lock: asyncio.Lock) -> bool:
    """Whether ``lock.acquire()`` returns without suspending: the lock is not held and no
    task waits for it (asyncio's own test, CPython 3.11 to 3.14). Not held is not
    enough: a release hands the lock to the first waiting task, which takes it only
    when it runs; until then ``locked()`` is false, and another ``acquire`` queues
    behind that task. A return that took that for free ran in its caller's task,
    suspended on the lock, and a cancellation there lost the connection: the pool
    still counted it, and never had it again (one slot fewer for good, a worker slowly
    starved). ``_waiters`` not there (another asyncio): no."""
    if lock.locked() or not hasattr(lock, "_waiters"):
        return False
    waiters = lock._waiters
    return waiters is None or all(w.cancelled() for w in waiters)


def _has_idle(pool: psycopg_pool.AsyncConnectionPool[Conn]) -> bool:
    """Whether ``pool`` holds an idle connection (psycopg_pool 3's internals; when they
    are not there, the answer is no)."""
    return bool(getattr(pool, "_pool", None))


def _unfit_to_reuse(conn: Conn) -> bool:
    """Whether a connection given back must be closed rather than reused: still in
    pipeline mode, or busy (a statement in flight, a cancelled task's).

    psycopg (3.3) leaves a connection in pipeline mode when the task is cancelled as
    ``conn.pipeline()`` enters (the pipeline is on, but its exit never runs: psycopg
    yields to the event loop once the loop has been busy for a few milliseconds, and a
    cancellation can land there). Reused, such a connection queues every statement in
    the forgotten pipeline and answers before the server has: a read finds no rows (a
    run that exists read as not found). A busy one the pool would close all the same,
    with a warning ("closing returned connection").
    """
    if conn.closed:
        return False
    pgconn = conn.pgconn
    return (pgconn.pipeline_status != PipelineStatus.OFF
            or pgconn.transaction_status == TransactionStatus.ACTIVE)


def _first_error(exc: BaseException) -> BaseException:
    """The error that ended a pipeline, rather than one its exit met after it.

    psycopg (3.3) exits a pipeline, even one an error ended, by reading what the server
    still owes it and then leaving libpq's pipeline mode; an error of that exit raised
    while the first was being handled replaces it. A server that ends the session
    mid-pipeline (a fast shutdown, ``pg_terminate_backend``) sends its FATAL message
    ("terminating connection due to administrator command"), which fails the exit, and
    libpq, which has not read the connection's end yet, then refuses to leave pipeline
    mode: "cannot exit pipeline mode while busy" was the outage's reason in the
    workers' log and the attempts' errors. So the first psycopg error of the chain is
    the one raised (a later one only follows from it)."""
    first = exc
    seen = {id(exc)}
    context = exc.__context__
    while (isinstance(first, psycopg.Error) and isinstance(context, psycopg.Error)
           and not first.__suppress_context__ and id(context) not in seen):
        first = context
        seen.add(id(context))
        context = context.__context__
    return first


class _ServerSaid:
    """The first error the server sent in a pipeline, and what it answered.

    psycopg (3.3.9) drops it when the session then ends: a FATAL ("terminating
    connection due to administrator command", SQLSTATE 57P01) that answers a statement
    in the middle of a pipeline is taken from the connection with the end of its stream
    behind it; psycopg's exit of the pipeline keeps it to raise, goes on to fetch the
    results of the statements after it (the COMMIT's), meets the end of the stream, and
    raises that instead ("consuming input failed: server closed the connection
    unexpectedly"): the server's message, its SQLSTATE, and that it answered a
    statement before the COMMIT were lost (``conn.pgconn.error_message`` has only the
    closed connection's text, the error's ``diag`` nothing). So the pipeline's
    processing of each result is watched (``BasePipeline._process_results``, psycopg's
    own; without it, as before: nothing kept)."""

    __slots__ = ("answered", "error")

    def __init__(self) -> None:
        self.error: psycopg.Error | None = None
        #: The cursor whose statement the error answered (None: the pipeline's Sync).
        self.answered: object = None

    def watch(self, pipeline: Any) -> None:
        process = getattr(pipeline, "_process_results", None)
        if process is None:
            return

        def keeping(*args: Any, **kwargs: Any) -> Any:
            # (any signature passes through: a psycopg whose method takes other arguments
            # keeps working, and an answer not recognised is None, as without the watch)
            try:
                return process(*args, **kwargs)
            except psycopg.Error as exc:
                if self.error is None and exc.sqlstate:  # (the server's, not libpq's)
                    queued = args[0] if args else kwargs.get("queued")
                    self.error = exc
                    self.answered = (queued[0] if isinstance(queued, tuple) and queued
                                     else None)
                raise

        pipeline._process_results = keeping

    def before(self, commit: object) -> bool:
        """Whether the server's error answered a statement sent before ``commit`` (the
        COMMIT's cursor): the server ended the transaction there, and never ran it."""
        return self.error is not None and self.answered not in (None, commit)


def _connection_lost(conn: Conn, exc: BaseException) -> bool:
    """Whether ``exc``, met on ``conn``, lost the connection rather than being the
    server's answer to a statement (which rolls its transaction back): the connection
    broke (a reset, a severed socket, the server gone), or the server ended the session
    (SQLSTATE class 57P: a shutdown, a terminated backend; it may have committed
    first)."""
    if not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return conn.broken or conn.closed or sqlstate.startswith("57P")


def _looks_dead(conn: Conn) -> bool:
    """Whether an idle connection was told by the server to go away (no round trip).

    An idle connection that is not listening receives nothing unless the server is
    closing it (shutdown, restart, terminated backend): the FATAL message and the end
    of the stream make its socket readable.
    """
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


class PostgresStore(PostgresServeQueries):
    """The PostgreSQL store: ``postgresql://user@host:5432/db[?schema=NAME]``.

    ``schema``, ``query_timeout``, ``pool_min``, ``pool_max``, ``pool_timeout`` and
    ``pool_max_idle`` may also be given in the URL's query (``?pool_max=20``; removed
    before connecting), so that a command that takes only a URL (``tether worker --db``)
    can set them. An option given both ways must have the same value in both, else
    ConfigError: neither can be known to be the one meant.

    Args:
        url: a libpq URL; ``?schema=NAME`` (removed before connecting) picks the schema.
        schema: the schema holding Tether's tables (default ``tether``); the same as
            ``?schema=`` in the URL.
        migrate: create and migrate the tables on ``open()`` (also off when the
            environment has ``TETHER_AUTO_MIGRATE=0``). When off, ``open()`` raises
            ConfigError if the schema is behind; ``tether db migrate`` brings it up.
        pool_min, pool_max: bounds of the connection pool (default 1 and 10; the
            listener's connection is extra).
        connect_timeout: seconds to wait for a new connection.
        pool_timeout: seconds an operation waits for a pooled connection before
            raising StoreUnavailable (default 10).
        pool_max_idle: seconds a connection above ``pool_min`` may sit unused before
            the pool closes it (one per period), so that an idle worker gives back the
            connections a burst made it open (default 60).
        max_batch: most journal appends written in one transaction.
        query_timeout: seconds an operation waits on its connection for the server's
            answer (default 30) before the
            connection is dropped and the operation raises StoreUnavailable: a server
            that accepts connections but never answers is found in that time.
            Purges, erasures and moving runs between versions get ten times as long,
            a heartbeat half its lease (at least 1 s, at most this); applying
            migrations has no deadline.
    """

    capabilities = StoreCapabilities(notifications=True, multi_host=True)

    def __init__(self, url: str, *, schema: str | None = None, migrate: bool = True,
                 pool_min: int | None = None, pool_max: int | None = None,
                 connect_timeout: float = 5.0, pool_timeout: float | None = None,
                 pool_max_idle: float | None = None, max_batch: int = 1000,
                 query_timeout: float | None = None) -> None:
        self.url = url
        self.cfg: PgConfig = parse_url(url, schema=schema, connect_timeout=connect_timeout)
        cfg = self.cfg
        #: The deadline of an operation on its connection (seconds).
        self.query_timeout: float = pick("query_timeout", query_timeout, cfg,
                                         DEFAULT_QUERY_TIMEOUT)
        self.pool_min = int(pick("pool_min", pool_min, cfg, 1))
        self.pool_max = int(pick("pool_max", pool_max, cfg, 10))
        if self.pool_min > self.pool_max:
            raise ConfigError(f"bad pool bounds: pool_min={self.pool_min}, "
                              f"pool_max={self.pool_max}")
        self.pool_timeout = pick("pool_timeout", pool_timeout, cfg, 10.0)
        # (positive: 0 would make the pool's shrink task spin)
        self.pool_max_idle = pick("pool_max_idle", pool_max_idle, cfg, 60.0)
        self.schema = self.cfg.schema
        self.auto_migrate = migrate and _auto_migrate_env()
        self.connect_timeout = connect_timeout
        self._q = {name: sql.replace("{schema}", self.schema)
                   for name, sql in {**_QUERIES, **SERVE_QUERIES}.items()}
        self._channel = self.cfg.channel
        #: The lone append (a sequential step) through libpq directly (see _raw).
        self._append_one = Prepared("tether_append_one",
                                    self._q["journal_append_one"], _APPEND_ONE_TYPES)
        if self._append_one.order != _APPEND_ONE_ORDER:  # queries.sql and the encoder
            raise AssertionError(f"journal_append_one: {self._append_one.order}")
        self._append_metered = Prepared("tether_append_metered",
                                        self._q["journal_append_one_metered"],
                                        _APPEND_METERED_TYPES)
        if self._append_metered.order != _APPEND_METERED_ORDER:
            raise AssertionError(f"journal_append_one_metered: {self._append_metered.order}")
        #: A batch of appends in one statement (the group-commit writer's), the same way.
        self._append_many = Prepared("tether_append_many", self._q["journal_append"],
                                     _APPEND_MANY_TYPES)
        self._pool: psycopg_pool.AsyncConnectionPool[Conn] | None = None
        self._writer = AppendWriter(self._flush, max_batch=max_batch,
                                    idle=self._writer_idle)
        self._held = Held()
        #: An inline append whose answer came late, awaited by its task (the writer
        #: waits for it before it uses or returns the held connection).
        self._inline_late: asyncio.Future[PGresult] | None = None
        self._inline_rtt = 0.001  # seconds, a running mean of inline round trips
        self._inline_sent = 0.0   # time.perf_counter() when a late one was sent
        #: time.monotonic() when an inline append or a batch last used the held connection
        self._held_used = 0.0
        self._turns = LoopTurns()  # when an inline append last yielded to the loop
        self._linger: asyncio.TimerHandle | None = None
        #: Journal appends written inline (tests and benchmarks).
        self.inline_appends = 0
        # (A silent listener is asked to answer every query_timeout, at most 30 s.)
        self._listener = Listener(self.cfg, check_interval=min(30.0, self.query_timeout),
                                  query_timeout=self.query_timeout)
        self._events = EventListener(self.cfg, self._kick,
                                     check_interval=min(30.0, self.query_timeout),
                                     query_timeout=self.query_timeout)
        self._closed = False
        #: The kind of long-lived process this store serves (``serve``, ``mcp``; set
        #: before ``open``): it holds the schema's presence lock while open, for
        #: ``tether db copy`` and ``restore`` to see it (``_presence``). None: no lock.
        self.process_kind: str | None = None
        self._presence: Presence | None = None
        self._lifecycle = Lifecycle(self.schema, self._channel)
        self._guard: asyncio.Task[None] | None = None
        #: Connections on their way back to the pool in tasks of their own (_put_back).
        self._returns: set[asyncio.Task[None]] = set()
        #: The pool's drain after a deadline passed (``_no_answer``).
        self._drain: asyncio.Future[None] | None = None
        #: The closing, once begun (it outlives a cancelled ``close``).
        self._shutdown: asyncio.Future[None] | None = None
        #: Whether the pool's last connection attempt failed (``FAIL_FAST`` callers).
        self._outage = Outage(self.cfg.where)

    def __repr__(self) -> str:
        return f"PostgresStore({self.cfg.where}, schema={self.schema!r})"

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, check (or apply) migrations and start the pool and the writer.

        Raises:
            StoreUnavailable: the server cannot be reached (the message names it).
            ConfigError: ``migrate`` is off and the schema is behind.
        """
        if self._pool is not None:
            return
        async with self._direct() as conn:
            with translate_errors(self.cfg):
                # The read of the schema's version has a deadline (a server that never
                # answers must not hold open() for ever); applying migrations has none.
                behind = await within(conn, self.query_timeout,
                                      _migrate.pending(conn, self.schema))
                if self.auto_migrate and behind:
                    try:
                        applied = await _migrate.migrate(conn, self.schema)
                    except psycopg.errors.InsufficientPrivilege as exc:
                        raise ConfigError(self._cannot_migrate(exc, ", then start again"
                                                               )) from None
                    if applied:
                        log.info("migrated PostgreSQL schema %s at %s: %s", self.schema,
                                 self.cfg.where, ", ".join(applied))
                elif not self.auto_migrate:
                    if behind and len(behind) == len(_migrate.migrations(self.schema)):
                        raise ConfigError(
                            f"no Tether store in PostgreSQL schema {self.schema!r} at "
                            f"{self.cfg.where}: run `tether db migrate --db URL` with this "
                            "store's URL to create it (or start a worker, where "
                            "auto-migration is on)")
                    if behind:
                        raise ConfigError(
                            f"PostgreSQL schema {self.schema!r} at {self.cfg.where} is behind "
                            f"(pending: {', '.join(behind)}) and auto-migration is off; "
                            "run `tether db migrate --db URL` with this store's URL")
        # A connection that fails to connect tries again every RETRY_EVERY (0.5 s)
        # while a caller waits for one (ReconnectingPool), and is given up after
        # reconnect_timeout when none does; the next caller starts a new one.
        self._outage.reset()  # (what a closed store knew is stale)
        quiet_pool_log()
        pool: psycopg_pool.AsyncConnectionPool[Conn] = ReconnectingPool(
            self.cfg.conninfo, kwargs={"autocommit": True}, min_size=self.pool_min,
            max_size=self.pool_max, open=False, timeout=self.pool_timeout,
            max_idle=self.pool_max_idle, reconnect_timeout=self.connect_timeout,
            name=f"tether-{self.schema}", connection_class=tracked_connection(self._outage),
        )
        await pool.open(wait=False)
        self._pool = pool
        self._closed = False
        self._shutdown = None
        self._guard = asyncio.create_task(self._close_pool_on_cancel(pool),
                                          name="tether-pg-pool-guard",
                                          context=every_caller_context())
        self._writer.start()
        if self.process_kind is not None:
            self._presence = Presence(self.cfg, self.schema, self.process_kind,
                                      check_interval=min(30.0, self.query_timeout),
                                      query_timeout=self.query_timeout)
            self._presence.start()

    async def close(self) -> None:
        """Write pending journal appends, stop listening and close the pool.

        A caller cancelled meanwhile (a timeout around ``close``) is cancelled at once,
        and the closing goes on by itself to the pool's end; calling ``close`` again
        waits for it."""
        if self._shutdown is None:
            if self._pool is None or self._closed:
                return
            self._closed = True
            self._shutdown = asyncio.ensure_future(self._shut_down())
        await asyncio.shield(self._shutdown)

    async def _shut_down(self) -> None:
        await self._writer.close()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        await self._release_held()
        presence, self._presence = self._presence, None
        if presence is not None:
            await presence.close()
        await self._listener.close()
        await self._events.close()
        await self._outage.close()
        if self._returns:  # (a rollback on a dead server must not hold the close)
            await asyncio.wait(set(self._returns), timeout=self.connect_timeout)
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.cancel()
            await asyncio.wait({drain})
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await guard

    async def _close_pool_on_cancel(self, pool: psycopg_pool.AsyncConnectionPool[Conn],
                                    ) -> None:
        """Wait until cancelled; then, unless the store was closed, close it once the
        loop's other tasks have ended.

        An event loop that ends with the store still open (``asyncio.run`` after an
        uncaught exception, pytest-asyncio's teardown) cancels every task once and waits
        for all of them. psycopg_pool's task that is opening a connection at that
        moment takes the cancellation for a failed connect and schedules another try,
        so it never ends, and neither does the process: closing the pool stops it. But
        the tasks ending in the same sweep may still write (a worker's stop hands its
        runs back), so the group-commit writer serves on through the sweep, and the
        store closes (writing what is queued) only when every task but the store's own
        and the pool's has ended, or after ``_GUARD_WAIT`` seconds.
        """
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            if self._pool is pool and not self._closed:
                log.warning("PostgreSQL store %s was not closed before its event loop "
                            "ended; closing it", self.cfg.where)
                self._guard = None  # (close() would otherwise wait for this task)
                # (It raises the cancellation of its own tasks it waits for.)
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await _others_ended(_GUARD_WAIT)
                    await self.close()
            raise

    async def server_time(self) -> float:
        """The server's clock in epoch seconds (``clock_timestamp()``).

        Raises: StoreUnavailable.
        """
        rows, _ = await self._one("server_time", {})
        return float(rows[0][0])

    async def migrate(self) -> list[str]:
        """Apply pending migrations (open or not); return the names applied. Finding
        which are pending has the store's query timeout; applying them (long work, and
        waiting for another process that applies them) has no deadline.

        Raises: StoreUnavailable; ConfigError (the role may not create or change the
        schema: the message says what to do).
        """
        async with self._direct() as conn:
            with translate_errors(self.cfg):
                if not await within(conn, self.query_timeout,
                                    _migrate.pending(conn, self.schema)):
                    return []
                try:
                    return await _migrate.migrate(conn, self.schema)
                except psycopg.errors.InsufficientPrivilege as exc:
                    raise ConfigError(self._cannot_migrate(
                        exc, f", or grant role {role_of(self.cfg)!r} CREATE on the "
                        "database (a new schema) or ownership of the schema")) from None

    def _cannot_migrate(self, exc: BaseException, then: str) -> str:
        """Why the URL's role could not apply a migration, and what to do."""
        return (f"the PostgreSQL role {role_of(self.cfg)!r} cannot create or change "
                f"schema {self.schema!r} at {self.cfg.where} "
                f"({str(exc).splitlines()[0]}): run `tether db migrate --db URL` as a "
                f"role that can (the database's or the schema's owner){then}")

    async def backup(self, target: str) -> int:
        """Write the store's schema (its tables, sequences and rows, as one snapshot:
        workers go on writing meanwhile) to the new file ``target`` (mode 0600) with
        ``pg_dump --format=custom --schema=SCHEMA``; restore it with ``pg_restore
        --dbname URL target`` into a database without that schema. Needs PostgreSQL's
        ``pg_dump`` on the PATH, of the server's major version or newer. The password
        of the URL goes to ``pg_dump`` by its environment, not its command line.
        Returns the copy's size in bytes.

        Raises: ConfigError (no ``pg_dump``, ``target`` exists), StoreUnavailable,
        StoreError (no store in the schema; ``pg_dump`` failed: its first error).
        """
        import shutil

        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        pg_dump = shutil.which("pg_dump")
        if pg_dump is None:
            raise ConfigError(
                "pg_dump is not on the PATH: install PostgreSQL's client programs (the "
                "server's major version or newer), or back the database up with "
                "pg_basebackup or your provider's snapshots (docs/operations.md, Backup "
                "and restore)")
        check_target(target)
        # Asked first the way every command asks, so that a server that is down or
        # refuses, a role without privileges and a schema with no store are told as
        # they are elsewhere, not as pg_dump's last line ("\x09Is the server running on
        # that host...", "no matching schemas were found").
        if not any(applied for _, _, applied in await self.migration_status()):
            raise StoreError(f"no Tether store in PostgreSQL schema {self.schema!r} at "
                             f"{self.cfg.where}: nothing to back up (is the URL's "
                             "?schema= the store's?)")
        params = conninfo_to_dict(self.cfg.conninfo)
        env = dict(os.environ)
        password = params.pop("password", None)
        if password is not None:
            env["PGPASSWORD"] = str(password)
        with partial_file(target) as partial:
            proc = await asyncio.create_subprocess_exec(
                pg_dump, "--format=custom", f"--schema={self.schema}",
                f"--file={partial}", f"--dbname={make_conninfo('', **params)}", env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            _, err = await proc.communicate()
            if proc.returncode != 0:
                lines = err.decode(errors="replace").strip().splitlines()
                errors = [ln.split("error: ", 1)[1] for ln in lines if "error: " in ln]
                said = (errors or lines or ["no message"])[0].strip()
                raise StoreError(f"pg_dump failed (exit {proc.returncode}) on "
                                 f"{self.cfg.where}: {said}")
            return await asyncio.to_thread(os.path.getsize, partial)

    async def restore(self, backup: str, *, force: bool = False) -> RestoreResult:
        """Restore the dump ``backup`` (``tether db backup`` of a PostgreSQL store: pg_dump's
        custom format) into this store's schema, in one transaction (``pg_restore``'s
        script through ``psql --single-transaction``; both must be on the PATH). With
        ``force``, a store that holds runs is replaced: Tether's own tables and
        functions are dropped first, nothing else. A backup of an older schema is
        migrated after, unless auto-migration is off (then ``pending`` names what
        ``tether db migrate`` will apply). See ``tether.store.postgres._restore``.

        Raises: RestoreRefused (nothing changed: not a Tether dump of this schema, a
        newer schema, a store that holds runs or schedules without ``force``, one in use
        by a worker or server), ConfigError (no pg_restore or psql), StoreError (the
        restore failed and was rolled back), StoreUnavailable.
        """
        from tether.store.postgres._restore import restore

        return await restore(self, backup, force=force)

    async def migration_status(self) -> list[tuple[int, str, bool]]:
        """(version, name, applied?) for every migration this code knows.

        Raises: StoreUnavailable.
        """
        async with self._direct() as conn:
            with translate_errors(self.cfg):
                return await within(conn, self.query_timeout,
                                    _migrate.status(conn, self.schema))

    async def cannot_migrate(self) -> str | None:
        """Why the URL's role may not apply this store's migrations (``tether db
        migrate``, a worker's start), as what to run or grant, or None when it may.
        Read from the server's catalogs (privileges, owners); nothing is tried.

        Raises: StoreUnavailable.
        """
        async with self._direct() as conn:
            with translate_errors(self.cfg):
                lacks = await within(conn, self.query_timeout,
                                     _migrate.lacking(conn, self.schema))
        if lacks is None:
            return None
        what, grant = lacks
        return (f"role {role_of(self.cfg)!r} lacks {what}: run `tether db migrate --db "
                "URL` as a role that has it (the database's or the schema's owner), or "
                f"grant it: {grant};")

    @contextlib.asynccontextmanager
    async def _direct(self) -> AsyncIterator[Conn]:
        """A connection of its own (not pooled), for migrations. A server with no free
        connection slot (``max_connections`` or a role's limit reached) is asked again
        with backoff for up to the connect timeout: a one-shot command such as
        ``tether cancel`` should not fail because the server was full for a moment."""
        deadline = time.monotonic() + self.connect_timeout
        delay = 0.05
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.cfg.conninfo,
                                                             autocommit=True)
                break
            except (psycopg.Error, OSError) as exc:
                if not busy(exc):
                    raise unavailable(self.cfg, exc) from None
                if time.monotonic() + delay > deadline:
                    raise full(self.cfg, exc, self.connect_timeout) from None
                # Told once; each try at debug level (a one-shot command's stderr
                # carried a line per try, a dozen for the 5 s default).
                log.log(logging.INFO if delay == 0.05 else logging.DEBUG,
                        "PostgreSQL at %s has no free connection slot (%s); asking again "
                        "for up to %g s", self.cfg.where, connect_reason(exc),
                        self.connect_timeout)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    # -- connections and transactions ---------------------------------------------------

    async def _checkout(self) -> tuple[psycopg_pool.AsyncConnectionPool[Conn], Conn]:
        """A live pooled connection and the pool it goes back to (which is no longer
        ``self._pool`` if the store is closed while the connection is out)."""
        pool = self._pool
        if pool is None or self._closed:
            raise StoreError("store is not open")
        # A server restart leaves every idle connection dead; skip those without a
        # round trip. Bounded: past pool_max dead ones, take what comes and let it fail.
        for _ in range(self.pool_max + 1):
            if FAIL_FAST.get() and not _has_idle(pool):
                conn = await self._getconn_unless_down(pool)
            else:
                conn = await self._getconn(pool)
            if not _looks_dead(conn):
                break
            with contextlib.suppress(Exception):
                await conn.close()
            await self._put_back(pool, conn)
        return pool, conn

    async def _getconn(self, pool: psycopg_pool.AsyncConnectionPool[Conn]) -> Conn:
        """``pool.getconn()``, which raises the caller's cancellation.

        psycopg_pool (3.3) waits for a connection with ``asyncio.wait_for``, which on
        Python 3.11 returns as if nothing happened when the waiting task is cancelled in
        the turn of the loop the pool hands it a connection: the caller went on, its
        cancellation lost (an event stream's subscriber, cancelled so as it asked the
        events connection to LISTEN, then waited for events for ever). A cancellation
        that came during the wait and was not raised is raised here, the connection
        given back."""
        task = asyncio.current_task()
        before = task.cancelling() if task is not None else 0
        conn = await pool.getconn()
        if task is not None and task.cancelling() > before:
            await self._put_back(pool, conn)
            raise asyncio.CancelledError
        return conn

    async def _getconn_unless_down(self, pool: psycopg_pool.AsyncConnectionPool[Conn],
                                   ) -> Conn:
        """A connection from ``pool`` for a ``FAIL_FAST`` caller, which finds no idle one:
        ``StoreUnavailable`` at once if the pool's last connection attempt failed (a probe
        starts in the background), or as soon as the attempt it waits for fails."""
        await self._fail_fast_if_down()
        outage = self._outage
        failure = outage.next_failure()
        get = asyncio.ensure_future(pool.getconn())
        try:
            await asyncio.wait((get, failure), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self._abandon(pool, get)
            raise
        finally:
            outage.forget(failure)
            failure.cancel()
        if get.done():
            return get.result()
        self._abandon(pool, get)
        raise self._down()

    async def _fail_fast_if_down(self) -> None:
        """``StoreUnavailable`` at once for a ``FAIL_FAST`` caller while the server is
        known to be down (a probe starts in the background): before it waits for a
        connection, and before a write that goes through the group commit (its writer
        serves every caller, so it waits for the pool as a worker does, and would hold a
        request for the pool's whole timeout).

        Known means from an attempt made lately (``Outage.stale``): probes run only
        while refused callers keep coming, so after a quiet spell the server may have
        been back for minutes, unseen. Then the caller waits for a probe (its attempt
        to connect, at most ``connect_timeout``): served if it connects, refused as
        soon as it fails. Until 2026-12-06 the first request after a quiet spell was
        refused on the outage's old word, and a readiness probe failed once more
        (``test_after_a_quiet_spell_a_fail_fast_caller_asks_the_server_again``)."""
        pool = self._pool
        outage = self._outage
        if not (FAIL_FAST.get() and pool is not None and outage.down):
            return
        if outage.stale():
            failure = outage.next_failure()
            probe = outage.probe(partial(self._probe, pool), now_if_idle=True)
            try:
                if probe is not None:
                    await asyncio.wait((probe, failure), timeout=self.connect_timeout + 1.0,
                                       return_when=asyncio.FIRST_COMPLETED)
            finally:
                outage.forget(failure)
                failure.cancel()
            if not outage.down:
                return
        outage.probe(partial(self._probe, pool))
        raise self._down()

    def _abandon(self, pool: psycopg_pool.AsyncConnectionPool[Conn],
                 get: asyncio.Future[Conn]) -> None:
        """Cancel ``get``; a connection it obtained all the same goes back to ``pool``."""
        def give_back(done: asyncio.Future[Conn]) -> None:
            if not done.cancelled() and done.exception() is None:
                # (nobody awaits this return: a pool closed meanwhile closes the
                # connection, and its error is dropped)
                self._return_in_task(pool, done.result()).add_done_callback(
                    lambda t: t.cancelled() or t.exception())

        get.cancel()
        get.add_done_callback(give_back)

    def _down(self) -> StoreUnavailable:
        outage = self._outage
        since = time.monotonic() - outage.since if outage.since is not None else 0.0
        refusal = refused(f"{self.cfg.host}:{self.cfg.port}", outage.reason)
        if refusal is not None:  # (a database dropped, a password changed: said so)
            return refusal
        return StoreUnavailable(
            f"PostgreSQL at {self.cfg.host}:{self.cfg.port} is unavailable: "
            f"{outage.reason or 'cannot connect'} (no new connection for {since:.0f} s)")

    async def _probe(self, pool: psycopg_pool.AsyncConnectionPool[Conn]) -> None:
        """Ask the pool for a connection, so that it tries to connect; the attempt
        tells ``self._outage`` how it went, and the connection goes back to the pool.
        An outage told by a deadline alone (``Outage.no_answer``) may leave connections
        in the pool that do not need a connection attempt: one of those is asked for an
        answer (``SELECT 1``, under the deadline), which ends the outage if it comes."""
        try:
            conn = await pool.getconn(timeout=self.connect_timeout + 1.0)
        except Exception:
            return
        try:
            if self._outage.unanswered and not _looks_dead(conn):
                with contextlib.suppress(Exception):
                    await self._within(conn, _select_one, self.query_timeout)
        finally:
            await self._put_back(pool, conn)

    async def _put_back(self, pool: psycopg_pool.AsyncConnectionPool[Conn],
                        conn: Conn) -> None:
        """Give ``conn`` back to ``pool``, out of reach of a cancellation of the caller.

        psycopg_pool (3.3) hands a returned connection to the first waiting client: it
        takes the client off its queue, then takes the client's lock to give it the
        connection. That lock is held for a moment after the client queued; a return
        that meets it suspends, and a cancellation there (a draining worker cancels its
        claim loop, a stop its loops, a timeout its operation) dropped the connection
        and the client's wake-up both: the client failed after ``pool_timeout`` while
        the pool had idle connections. So a return that may suspend runs in a task of
        its own (about 10 µs more); the usual one, with nobody waiting and the pool's
        lock free to take at once (``_returns_at_once``), completes in this call, where
        nothing can interrupt it.

        A connection unfit to be used again (``_unfit_to_reuse``) is closed first: the
        pool discards it and makes a new one."""
        if _unfit_to_reuse(conn):
            log.debug("PostgreSQL at %s: a connection given back %s is closed",
                      self.cfg.where, "in pipeline mode" if conn.pgconn.pipeline_status
                      else "busy")
            await conn.close()
        if _returns_at_once(pool, conn):
            await pool.putconn(conn)
            return
        await asyncio.shield(self._return_in_task(pool, conn))

    def _return_in_task(self, pool: psycopg_pool.AsyncConnectionPool[Conn],
                        conn: Conn) -> asyncio.Task[None]:
        """``pool.putconn(conn)`` in a task of its own, which ``close`` waits for."""
        task = asyncio.ensure_future(pool.putconn(conn))
        self._returns.add(task)
        task.add_done_callback(self._returns.discard)
        return task

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        pool, conn = await self._checkout()
        try:
            yield conn
        finally:
            await self._put_back(pool, conn)

    async def _run_op(self, fn: Callable[[Conn], Awaitable[Any]], *, hold: bool = False,
                      timeout: float | None = None) -> Any:
        """Run ``fn`` on a pooled connection, translating errors; rerun it when the
        server rolled its transaction back for a deadlock or serialization failure.
        ``hold``: on the connection the writer keeps (``_on_held``). ``timeout``: the
        deadline of ``fn`` on its connection (default: ``_deadline()``), after which
        the connection is dropped and StoreUnavailable raised."""
        if timeout is None:
            timeout = self._deadline()
        for attempt in range(_TXN_RETRIES + 1):
            try:
                with translate_errors(self.cfg):
                    if hold and self.pool_max > 1:
                        return await self._on_held(fn, timeout)
                    async with self._connection() as conn:
                        return await self._within(conn, fn, timeout)
            except psycopg.errors.TransactionRollback as exc:
                if attempt == _TXN_RETRIES:
                    raise StoreUnavailable(
                        f"PostgreSQL store {self.cfg.where}: transaction kept conflicting "
                        f"({exc.sqlstate})") from exc
                await asyncio.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    def _deadline(self, factor: float = 1.0) -> float:
        """The deadline of an operation on its connection: ``factor`` times
        ``query_timeout``, or the caller's ``REQUEST_TIMEOUT`` if that is shorter (an
        HTTP request's operations: a hung server costs the request its deadline, not the
        store's, while a worker's operations wait out a slow moment)."""
        limit = REQUEST_TIMEOUT.get()
        base = self.query_timeout if limit is None else min(limit, self.query_timeout)
        return base * factor

    async def _within(self, conn: Conn, fn: Callable[[Conn], Awaitable[Any]],
                      timeout: float) -> Any:
        """``fn(conn)`` under a deadline of ``timeout`` seconds (see ``_deadline``): one
        timer, cancelled when the answer is in. Raises: NoAnswer (the connection is
        severed: the pool discards it when it is returned), or what ``fn`` raises."""
        result = await within(conn, timeout, fn(conn), self._no_answer)
        if self._outage.watching:
            self._outage.answered()
        return result

    def _no_answer(self, watch: Watch) -> None:
        """An operation's deadline passed (its connection is severed): the server is
        taken for down (``FAIL_FAST`` callers are told at once) until a connection is
        made or an answer comes, and the pool is drained: its other connections, made
        before and likely as dead, are closed (those in use when they come back), so
        that the next operations do not each wait out a deadline of their own on one,
        and new ones are made (which tells the outage's course: a server that hangs
        does not finish a connection's start-up within ``connect_timeout``)."""
        log.debug("PostgreSQL at %s: no answer within %g s; connection dropped",
                  self.cfg.where, watch.seconds)
        self._outage.no_answer(watch.seconds, watch.started)
        pool = self._pool
        drain = getattr(pool, "drain", None)  # (psycopg_pool 3.3 has it; older may not)
        if drain is None:
            for conn in list(getattr(pool, "_pool", ())):  # idle: _looks_dead drops them
                sever(conn)
        elif self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_task(
                drain(), context=every_caller_context())
            self._drain.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _on_held(self, fn: Callable[[Conn], Awaitable[Any]], timeout: float) -> Any:
        """Run ``fn`` on the connection the group-commit writer keeps between consecutive
        lone appends (a sequential run's steps), checked out when there is none; it goes
        back to the pool when the writer has nothing queued (``_release_held``), when
        ``fn`` fails, and when the server is closing it. Only with ``pool_max`` above 1:
        with a single connection, heartbeats and reads would wait behind a long
        sequential run."""
        await self._inline_settled()
        held = self._held
        conn = held.conn
        if conn is None or held.broken:
            await self._release_held()
            pool, conn = await self._checkout()
            try:
                held.attach(conn)
            except BaseException:  # e.g. a closed connection has no socket
                await self._put_back(pool, conn)
                raise
        try:
            return await self._within(conn, fn, timeout)
        except BaseException:
            await self._release_held()
            raise

    async def _release_held(self) -> None:
        await self._inline_settled()
        conn = self._held.detach()
        if conn is not None and self._pool is not None:
            await self._put_back(self._pool, conn)

    async def _one(self, name: str, params: Params, *, prepare: bool | None = None,
                   timeout: float | None = None, commits: bool = False) -> Any:
        """Run one named query (one round trip); return its cursor's rows and rowcount.
        ``timeout``: its deadline (default ``query_timeout``). ``commits``: the query
        writes (its own transaction): a connection lost once it went out raises
        ``Unanswered`` (it may have committed)."""
        async def go(conn: Conn) -> tuple[list[Any], int]:
            backend = conn.pgconn.backend_pid if commits else 0
            try:
                cur = await conn.execute(self._q[name], params, prepare=prepare)
            except psycopg.Error as exc:
                if commits and _connection_lost(conn, exc):
                    raise Unanswered(exc, backend) from exc
                raise
            rows = await cur.fetchall() if cur.description is not None else []
            return rows, cur.rowcount

        return await self._run_op(go, timeout=timeout)

    async def _pipeline(self, conn: Conn, steps: Sequence[tuple[str, Params]], *,
                        prepare: bool | None = None,
                        unprepared: int = 0) -> list[psycopg.AsyncCursor[Any]]:
        """Run named queries in one transaction and one round trip: BEGIN, the
        statements and COMMIT go out in one pipeline with a single Sync. The first
        ``unprepared`` statements are never prepared, the others as ``prepare`` says.

        A pipeline the server cut (its session ended: a shutdown, a terminated
        backend) raises the server's reason (``_first_error``, or the error the server
        sent that psycopg dropped: ``_ServerSaid``), and its connection, left in
        pipeline mode, is closed: nothing may run on it again. Cut once its COMMIT may
        have gone out, it raises ``Unanswered`` for that reason: the transaction may
        have committed (``StoreError.outcome_unknown``). Not when the server's error
        answered BEGIN or a statement before the COMMIT (a session ended while a
        statement waited on a lock): the server never ran the COMMIT."""
        cursors: list[psycopg.AsyncCursor[Any]] = []
        committing = False
        backend = conn.pgconn.backend_pid  # (0 once the connection is lost: read now)
        said = _ServerSaid()
        commit = conn.cursor()

        async def send() -> None:
            nonlocal committing
            await conn.execute("BEGIN")
            for i, (name, params) in enumerate(steps):
                cur = conn.cursor()
                await cur.execute(self._q[name], params,
                                  prepare=False if i < unprepared else prepare)
                cursors.append(cur)
            committing = True
            await commit.execute("COMMIT")

        try:
            await self._in_pipeline(conn, send, said)
        except BaseException as exc:
            first = _first_error(exc)
            if said.error is not None and first is not said.error and not getattr(
                    first, "sqlstate", None):
                log.debug("PostgreSQL at %s: a pipeline failed with %r after the server "
                          "said %r", self.cfg.where, str(first), str(said.error))
                first = said.error  # (not psycopg's "server closed the connection")
            lost = (committing and not said.before(commit)
                    and _connection_lost(conn, first))
            if not conn.closed and conn.pgconn.pipeline_status != PipelineStatus.OFF:
                # (a ROLLBACK would be queued in the pipeline and wait out the deadline)
                log.debug("PostgreSQL at %s: a connection left in pipeline mode is "
                          "closed (%s)", self.cfg.where, type(exc).__name__)
                await conn.close()
            elif not conn.closed and conn.info.transaction_status in (
                    TransactionStatus.INTRANS, TransactionStatus.INERROR):
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
            if first is not exc:
                log.debug("PostgreSQL at %s: a pipeline's exit failed too (%s) after %s",
                          self.cfg.where, exc, first)
            if lost:
                raise Unanswered(first, backend) from first
            if first is not exc:
                raise first from None
            raise
        return cursors

    async def _in_pipeline(self, conn: Conn, send: Callable[[], Awaitable[None]],
                           said: _ServerSaid | None = None) -> None:
        """``send()`` in a pipeline on ``conn``; raises the first error met.

        psycopg (3.3) exits a pipeline whose block raised by syncing it all the same,
        and an error of that exit, which it cannot raise over the block's, it logs as a
        WARNING ("error ignored terminating <AsyncPipeline>"): on a connection the
        server ended while the statements went out (a restart, a terminated backend),
        the Sync fails too ("the connection is lost"), and every such outage wrote
        that line in the worker's log beside its own. So the block's error is held
        while the pipeline exits, the exit's error then raised by psycopg rather than
        logged, and dropped here (it only follows from the first), the first raised.
        ``said``: keeps the first error the server sent (``_ServerSaid``)."""
        failed: BaseException | None = None
        try:
            async with conn.pipeline() as pipeline:
                if said is not None:
                    said.watch(pipeline)
                try:
                    await send()
                except BaseException as exc:
                    failed = exc
        except BaseException as exc:
            if failed is None:
                raise
            log.debug("PostgreSQL at %s: a pipeline's exit failed too (%s) after %s",
                      self.cfg.where, exc, failed)
        if failed is not None:
            raise failed

    async def _txn(self, steps: Sequence[tuple[str, Params]], *,
                   prepare: bool | None = None) -> list[list[Any]]:
        """``_pipeline`` on a pooled connection; the rows of each statement."""
        async def go(conn: Conn) -> list[list[Any]]:
            cursors = await self._pipeline(conn, steps, prepare=prepare)
            return [await c.fetchall() if c.description is not None else [] for c in cursors]

        return await self._run_op(go)  # type: ignore[no-any-return]

    # -- notifications ----------------------------------------------------------------

    @property
    def outages(self) -> int:
        """Outages met: the pool's (connection attempts failing, or no answer) and the
        listener's (its connection lost), each counted once at its start."""
        return self._outage.count + self._listener.lost

    async def subscribe(self, callback: Callable[[], None], *,
                        on_cancel: Callable[[str], None] | None = None,
                        ) -> Callable[[], Awaitable[None]]:
        """Call ``callback`` on this event loop whenever the schema's channel is notified
        (and ``on_cancel(run_id)`` for a cancel of a running run).

        One listener connection per store, reconnecting by itself."""
        return await self._listener.subscribe(callback, on_cancel)

    # -- runs -------------------------------------------------------------------------

    async def run_insert(self, *, run: RunRecord) -> tuple[RunRecord, bool]:
        """Insert a run unless its id exists, in a transaction shared with the other
        starts of the process at the same time (group commit). Raises:
        StoreUnavailable (at once for a ``FAIL_FAST`` caller while the server is known
        to be down)."""
        await self._fail_fast_if_down()
        return await self._writer.submit_insert(run)

    async def _insert_one(self, run: RunRecord) -> tuple[RunRecord, bool]:
        """One statement, its own transaction: cheaper for the client than a pipeline
        (BEGIN, insert, read, COMMIT)."""
        try:
            rows, _ = await self._one("run_insert_get", {**run_params(run),
                                                         "channel": self._channel},
                                      commits=True)
        except StoreUnavailable as exc:
            if not exc.outcome_unknown:
                raise
            return (await self._starts_read_back([run], exc))[0]
        if not rows:  # the run with this id committed after the statement's snapshot
            stored = await self.run_get(run.run_id)
            if stored is None:
                raise StoreError(f"run {run.run_id!r}: not created, and not found")
            return stored, False
        return run_from_row(rows[0][1:]), bool(rows[0][0])

    async def _flush_inserts(self, batch: list[Insert]) -> None:
        """Start one batch of runs in one transaction (one round trip); resolve every
        caller. A lone start keeps its prepared statements."""
        if len(batch) > 1:
            try:
                results = await self.run_insert_many(runs=[i.run for i in batch])
            except StoreUnavailable as exc:
                cause = exc.__cause__
                for i in batch:  # (each caller's error names its own run)
                    _settle(i.future, _start_unknown(cause, [i.run.run_id])
                            if exc.outcome_unknown and isinstance(cause, StoreUnavailable)
                            else exc)
                return
            except TetherError:
                pass  # one run the server refused must not fail the others: one by one
            else:
                for i, result in zip(batch, results, strict=True):
                    _settle(i.future, None, result)
                return
        for i in batch:
            try:
                result = await self._insert_one(i.run)
            except TetherError as exc:
                _settle(i.future, exc)
            else:
                _settle(i.future, None, result)

    async def run_get(self, run_id: str) -> RunRecord | None:
        rows, _ = await self._one("run_get", {"run_id": run_id})
        return run_from_row(rows[0]) if rows else None

    async def run_get_many(self, run_ids: list[str], *,
                           settled_only: bool = False) -> list[RunRecord]:
        if not run_ids:
            return []
        # Statements over arrays are never prepared (see _flush_appends).
        rows, _ = await self._one("run_get_many", {
            "run_ids": TextArray(run_ids),
            "statuses": TextArray(_SETTLED) if settled_only else None},
            prepare=False)
        return [run_from_row(r) for r in rows]

    async def run_insert_many(self, *, runs: list[RunRecord]) -> list[tuple[RunRecord, bool]]:
        """One transaction, two statements, one round trip for the lot."""
        if not runs:
            return []
        unique = list({r.run_id: r for r in reversed(runs)}.values())[::-1]  # first wins
        rows = [run_params(r) for r in unique]
        cols: dict[str, list[Any]] = {key: wrap([p[key] for p in rows]) for key, wrap in (
            ("run_id", TextArray), ("workflow", TextArray), ("queue", TextArray),
            ("status", TextArray), ("input", TextArray), ("created_at", Float8Array),
            ("updated_at", Float8Array), ("available_at", Float8Array),
            ("parent_run_id", TextArray), ("parent_position", Int4Array),
            ("on_parent_cancel", TextArray), ("version", TextArray),
            ("forked_from", TextArray), ("forked_at", Int4Array))}
        ids = cols["run_id"]
        try:
            created_rows, stored_rows = await self._txn([
                ("run_insert_many", {**cols, "channel": self._channel}),
                ("run_get_ids", {"run_ids": ids})], prepare=False)
        except StoreUnavailable as exc:
            if not exc.outcome_unknown:
                raise
            found = dict(zip((r.run_id for r in unique),
                             await self._starts_read_back(unique, exc), strict=True))
            return [found[r.run_id] for r in runs]  # (a repeated id: created once)
        created = {r[0] for r in created_rows}
        # A run created here is stored as given (tests/store/test_many.py); the read
        # returns only those that existed before.
        stored = {r[0]: run_from_row(r) for r in stored_rows}
        stored.update((r.run_id, r) for r in unique if r.run_id in created)
        out: list[tuple[RunRecord, bool]] = []
        for r in runs:
            out.append((stored[r.run_id], r.run_id in created))
            created.discard(r.run_id)  # a repeated id is created once
        return out

    async def _starts_read_back(self, runs: list[RunRecord], exc: StoreUnavailable
                                ) -> list[tuple[RunRecord, bool]]:
        """The outcome of a transaction starting ``runs`` (distinct ids) whose commit
        went unanswered (``exc``: the connection was lost once its COMMIT may have gone
        out), read back by run id on a new connection: a start does not fail when its
        runs are stored, and the caller's retry (a new run id) does not start them
        twice. A run stored as given (its input and creation time) was created by it;
        one stored otherwise existed before (not created, as an answered start says).

        Raises: ``exc`` when a run is not there (the transaction did not commit, and
        will not: the session it was sent on has ended, ended here if a network cut
        left it alive: ``_session_ended``), or a StoreUnavailable with
        ``outcome_unknown`` naming the runs and how to check when they cannot be read
        back: the read failed too, that session did not end, or the commit's deadline
        passed (a server that did not answer is not asked again: that would cost
        another deadline, and it may not have ended that session yet)."""
        ids = [r.run_id for r in runs]
        stored: dict[str, RunRecord] | None = None
        if may_read_back(exc) and await self._session_ended(exc):
            with contextlib.suppress(StoreError):
                stored = {r.run_id: r for r in await self.run_get_many(ids)}
        if stored is None:
            raise _start_unknown(exc, ids) from exc
        if len(stored) < len(ids):
            log.debug("PostgreSQL at %s: a start whose commit went unanswered did not "
                      "commit (run %s not found)", self.cfg.where, ids[0])
            exc.outcome_unknown = False
            raise exc
        log.debug("PostgreSQL at %s: a start whose commit went unanswered committed "
                  "(read back: run %s)", self.cfg.where, ids[0])
        return [(stored[r.run_id], _same_start(stored[r.run_id], r)) for r in runs]

    async def _session_ended(self, exc: StoreUnavailable) -> bool:
        """Whether the session that was sent the commit that went unanswered (``exc``)
        has ended, so that a read-back that does not find the write may say it did not
        commit. A network cut (not the server ending the session) leaves that session
        alive on the server, the COMMIT perhaps still on its way or unread in its
        socket, to commit later: it is ended (``pg_terminate_backend``, allowed on the
        store's own role's sessions) and waited for, up to an operation's deadline.
        False when that cannot be established (its pid unknown, still there then, or
        the server not answering): the outcome stays unknown."""
        backend = unanswered_backend(exc)
        if not backend:
            return False
        give_up = time.monotonic() + self._deadline()
        pause = 0.005
        try:
            while True:
                rows, _ = await self._one("session_end", {"pid": backend}, prepare=False)
                if not rows:
                    return True
                if time.monotonic() + pause > give_up:
                    break
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.1)
        except StoreError:
            return False
        log.debug("PostgreSQL at %s: the session of a commit that went unanswered (server "
                  "process %d) did not end", self.cfg.where, backend)
        return False

    async def run_list(self, *, status: str | None = None, limit: int = 100) -> list[RunRecord]:
        if status is None:
            rows, _ = await self._one("run_list", {"limit": limit})
        else:
            rows, _ = await self._one("run_list_status", {"status": status, "limit": limit})
        return [run_from_row(r) for r in rows]

    async def run_list_unsettled(self, *, limit: int = 100) -> list[RunRecord]:
        rows, _ = await self._one("run_list_unsettled", {"limit": limit})
        return [run_from_row(r) for r in rows]

    async def journal_read(self, run_id: str) -> list[JournalEntry]:
        rows, _ = await self._one("journal_read", {"run_id": run_id})
        return [entry_from_row(r) for r in rows]

    async def run_claim(self, *, worker_id: str, queues: list[str], limit: int, now: float,
                        lease_seconds: float, workflows: list[str] | None = None,
                        version: str | None = None,
                        exclude: Collection[str] = (),
                        takeover_before: float | None = None) -> list[ClaimedRun]:
        if limit <= 0 or not queues or workflows == []:
            return []
        params = {"worker_id": worker_id, "queues": list(queues), "limit": limit, "now": now,
                  "lease_expires": now + lease_seconds, "version": version,
                  "workflows": None if workflows is None else sorted(workflows),
                  "exclude": TextArray(exclude) if exclude else None,
                  "takeover_before": takeover_before}
        _, _, runs, entries = await self._txn([
            ("ordered_plan", {}), ("run_claim_lock", params), ("run_claim", params),
            ("run_claim_journals", params)])
        journals: dict[str, list[JournalEntry]] = {}
        for row in entries:
            journals.setdefault(row[0], []).append(entry_from_row(row[1:]))
        # (each row's last column: when the run became due, its available_at before)
        claimed = sorted(((run_from_row(r[:-1]), r[-1]) for r in runs),
                         key=lambda c: (c[0].created_at, c[0].run_id))
        return [ClaimedRun(run=r, lease=Lease(r.run_id, worker_id, r.fencing_token),
                           journal=journals.get(r.run_id, []), due_at=due)
                for r, due in claimed]

    async def journal_append(self, *, lease: Lease, entry: JournalEntry,
                             metrics: str | None = None, now: float = 0.0,
                             blobs: Mapping[str, str] | None = None) -> None:
        """Record one operation's outcome, in a transaction shared with the appends of
        other runs (group commit), or inline when nothing else is going on (see
        ``_append_inline``); with ``metrics``, the run's metrics first in the same
        transaction; with ``blobs``, the texts and the run's references to them before
        those (always the writer's path). Raises: LeaseLost, StoreUnavailable."""
        if metrics is not None:
            check_metrics(lease.run_id, metrics)
        if blobs:
            await self._writer.submit(lease, entry, metrics, now, blobs)
            return
        sent = self._append_inline(lease, entry, metrics, now)
        if sent is True:
            if self._turns.due():  # let the loop poll its sockets now and then
                await asyncio.sleep(0)
            return
        if sent is not False and await self._inline_late_answer(*sent):
            return
        await self._writer.submit(lease, entry, metrics, now)

    def _append_inline(self, lease: Lease, entry: JournalEntry, metrics: str | None = None,
                       now: float = 0.0) -> bool | tuple[Conn, str, list[PGresult]]:
        """Write a lone journal append from the calling task, on the writer's held
        connection, when the group-commit queue is empty, no statement is in flight on
        that connection, the event loop has nothing else ready and no timer falls due
        within a round trip: the statement (``journal_append_one``, the writer's own)
        is sent and its answer awaited by blocking in ``poll`` for up to
        ``_INLINE_WAIT``, so a sequential run's step costs no hop to the writer's task,
        no future and no pass of the event loop (``bench/pg_wait.py``).

        True: written (durable). False: not written here, nothing written (not
        attempted; an error answer, after which the statement had rolled back; no row
        written: a lost lease or a final entry, which the writer's path tells apart):
        submit it to the writer. A tuple: sent, its answer late: await it with
        ``_inline_late_answer``. Raises: StoreUnavailable (the connection failed; the
        statement may or may not have committed, as on the writer's path). With
        ``metrics``, the statement is ``journal_append_one_metered``."""
        held = self._held
        conn = held.conn
        loop = held._loop
        if (conn is None or loop is None or held.broken or held._on_readable is not None
                or self._inline_late is not None or self._writer.queued
                or self.pool_max <= 1 or self._closed
                or getattr(loop, "_thread_id", None) != threading.get_ident()):
            return False
        # Ready: nothing, or only the writer's own wake-up after the answer to the
        # previous lone append (that statement is over; what the writer has left to do
        # does not use the connection, or waits for this one: _inline_settled). A timer
        # falling due during the round trip: the writer's path.
        if not _CAN_POLL or not loop_quiet(loop, self._inline_rtt, own=self._writer.task):
            return False
        if self._inline_rtt > _INLINE_WAIT / 2:
            # Answers take too long to block for (a distant server): the writer's path,
            # trying again now and then (the mean decays while it is not measured).
            self._inline_rtt *= 0.99
            return False
        pgconn = conn.pgconn
        if pgconn.transaction_status != TransactionStatus.IDLE or _long(entry, metrics):
            return False
        t0 = time.perf_counter()
        results: list[PGresult] = []
        try:
            statement, values = self._lone_append(lease, entry, metrics, now)
            encoding = statement.send(conn, values)
            if encoding is None:
                return False  # not prepared on this connection yet: the writer prepares it
            if not wait_answer(pgconn, results, encoding, _INLINE_WAIT):
                self._inline_sent = t0
                return conn, encoding, results
        except (psycopg.Error, OSError) as exc:
            return self._inline_failed(conn, exc)
        return self._inline_answered(results[0], t0)

    def _lone_append(self, lease: Lease, entry: JournalEntry, metrics: str | None,
                     now: float) -> tuple[Prepared, Callable[[str], list[bytes | None]]]:
        """The prepared statement of one append alone, and its parameters' encoder."""
        if metrics is None:
            return self._append_one, partial(_append_one_values, lease, entry)
        return self._append_metered, partial(_append_metered_values, lease, entry, metrics,
                                             now)

    def _inline_failed(self, conn: Conn, exc: BaseException) -> bool:
        """An inline append's send or answer failed. An error answer (the connection
        idle again) rolled the statement back: False, the writer's path runs it again
        (and reports the error if it is one). A failed connection: raise as the
        writer's path would."""
        pgconn = conn.pgconn
        if (isinstance(exc, psycopg.Error) and pgconn.status == ConnStatus.OK
                and pgconn.transaction_status == TransactionStatus.IDLE):
            return False
        self._held.broken = True  # the writer returns it (woken now) and takes another
        self._held.pause()
        self._writer.poke()
        if isinstance(exc, OSError):
            err = psycopg.OperationalError("connection socket closed")
            err.__cause__ = exc
            exc = err
        raise unavailable(self.cfg, exc) from exc

    async def _inline_late_answer(self, conn: Conn, encoding: str,
                                  results: list[PGresult]) -> bool:
        """Await the answer of an inline append that came late, from the event loop
        (the held connection's reader); the writer waits for it before it uses or
        returns the connection. True: written; False: nothing written (see
        ``_append_inline``). Raises: StoreUnavailable."""
        held = self._held
        fut: asyncio.Future[PGresult] = asyncio.get_running_loop().create_future()
        reader = held._on_readable = answer_reader(conn.pgconn, encoding, fut,
                                                   results=results)
        self._inline_late = fut
        watch = Watch(conn, self.query_timeout, self._no_answer)
        try:
            res = await fut
        except (psycopg.Error, OSError) as exc:
            return self._inline_failed(conn, NoAnswer(watch.seconds) if watch.fired else exc)
        finally:
            watch.cancel()
            if held._on_readable is reader:
                held._on_readable = None
            self._inline_late = None
            if not fut.done():  # cancelled with the statement in flight
                fut.cancel()
                held.broken = True  # busy: the writer returns it and takes another
                held.pause()
        # (The whole round trip counts, so that slow answers turn inline appends off.)
        return self._inline_answered(res, self._inline_sent)

    def _inline_answered(self, res: PGresult, sent_at: float) -> bool:
        """An inline append's answer is in (sent at ``sent_at``, ``perf_counter``):
        True if it wrote its row; False if it was refused (a lost lease or a final entry:
        the writer's path says which)."""
        self._inline_rtt += (time.perf_counter() - sent_at - self._inline_rtt) / 8
        self._held_used = time.monotonic()
        if not res.ntuples:
            return False
        self.inline_appends += 1
        return True

    async def _inline_settled(self) -> None:
        """Wait until no inline append's answer is outstanding on the held connection."""
        late = self._inline_late
        if late is not None:
            await asyncio.wait({late})

    async def _writer_idle(self) -> None:
        """The writer found its queue empty: return the held connection to the pool,
        unless an inline append or a batch of appends used it within ``_HELD_LINGER``
        (then look again once that has passed): the runs a batch wakes append again
        after the writer found its queue empty."""
        if self._held.conn is None:
            return
        left = self._held_used + _HELD_LINGER - time.monotonic()
        if left > 0 and not self._closed and not self._held.broken:
            if self._linger is None:
                self._linger = asyncio.get_running_loop().call_later(left, self._linger_over)
            return
        await self._release_held()

    def _linger_over(self) -> None:
        self._linger = None
        self._writer.poke()

    async def _flush(self, batch: list[Item]) -> None:
        """Write one batch of the group-commit queue: its starts, its appends, then its
        releases and ends of runs (each submitted after the run's last append was
        written)."""
        if len(batch) == 1 and type(batch[0]) is Append:  # a sequential run's step
            await self._flush_appends(batch)  # type: ignore[arg-type]
            return
        inserts = [i for i in batch if isinstance(i, Insert)]
        blobs = [i for i in batch if isinstance(i, Blobs)]
        metrics = [i for i in batch if isinstance(i, Metrics)]
        appends = [i for i in batch if isinstance(i, Append)]
        releases = [i for i in batch if isinstance(i, Release)]
        finishes = [i for i in batch if isinstance(i, Finish)]
        if inserts:  # no append, release or end of a batch is about a run started in it
            await self._flush_inserts(inserts)
        # A run has one write in flight at a time (each awaited before the next), so the
        # kinds of one batch are about different runs' writes, in any order.
        if blobs:
            await self._flush_blobs(blobs)
        if metrics:
            await self._flush_metrics(metrics)
        if appends:
            await self._flush_appends(appends)
        if releases:
            await self._flush_releases(releases)
        if finishes:
            await self._flush_finishes(finishes)

    async def _flush_appends(self, batch: list[Append]) -> None:
        """Write one batch of appends in one transaction; resolve every caller."""
        waves = _waves(batch) if len(batch) > 1 else [batch]
        metered = _metered(batch)

        # A batch is a prepared statement (parsed and planned once per connection: a
        # 16-entry batch took 781 µs unprepared, 457 prepared, bench/pg_batch.py). Its
        # entries look their runs up one by one by primary key (LATERAL): an earlier
        # form joined the arrays with runs, and its generic plan, made while runs was
        # tiny, scanned runs for every batch (a batch of 1,000 took a second until
        # autovacuum's ANALYZE replanned it).
        # Metrics written with appends (durable LLM calls): their runs' rows locked in
        # run order, their metrics set, then the appends, in one transaction; a run
        # whose lease is lost writes neither (both statements are fenced).
        # Texts the entries reference (durable LLM calls' prompts) go first, with their
        # references, in one order for every writer (key, then run: see _flush_blobs).
        first: list[tuple[str, dict[str, Any]]] = []
        texts = [(a.blobs, a.lease.run_id) for a in batch if a.blobs]
        if texts:
            params = _blob_params(texts)
            first += [("blob_ref_put_many", params), ("blob_put", params)]
        if (len(batch) > 1 or texts) and metered:
            cols = _metrics_columns(metered)
            if len(metered) > 1:
                first.append(("run_lock_many", cols))
            first.append(("run_metrics_set_many", cols))
        lone = len(batch) == 1 and not first
        # One statement (no texts or metrics first, no entry twice): sent through libpq
        # on the writer's held connection like a lone append (_raw); psycopg's execute
        # cost the event loop more per batch (the query's conversion, a cursor, a pool
        # checkout and return, a reader registered and removed). Its callers are
        # resolved below, by the writer, as before: the writer then sends the next batch
        # (the appends queued meanwhile) before the callers' tasks run. Resolved in the
        # reader callback instead, they ran first, each run's next step before the next
        # send, and the appends queued behind waited for all of them (alternated round
        # by round with the psycopg path: no faster; docs/performance-log.md, h141).
        one = not first and len(waves) == 1

        async def go(conn: Conn) -> list[set[tuple[str, int]]]:
            if lone:
                a = batch[0]
                statement, values = self._lone_append(a.lease, a.entry, a.metrics, a.now)
                res = await statement.execute(conn, values, on_result=_written(a.future),
                                              held=self._held)
                return [{(a.lease.run_id, a.entry.position)} if res.ntuples else set()]
            if one:
                res = await self._append_many.execute(conn, _columns(batch),
                                                      held=self._held)
                self._held_used = time.monotonic()
                return [_written_keys(res, conn.info.encoding)]
            steps = [*first, *(("journal_append", _columns(wave)) for wave in waves)]
            if len(steps) == 1:  # one statement: its own transaction, no BEGIN/COMMIT
                cursors = [await conn.execute(self._q[steps[0][0]], steps[0][1],
                                              prepare=True)]
            else:
                cursors = await self._pipeline(conn, steps, prepare=True,
                                               unprepared=len(first))
            return [{(r[0], r[1]) for r in await cur.fetchall()}
                    for cur in cursors[len(first):]]

        try:
            per_wave: list[set[tuple[str, int]]] = await self._run_op(go, hold=one)
        except TetherError as exc:
            await _failed_batch(batch, exc, self._flush_appends)
            return
        refused = [a for wave, written in zip(waves, per_wave, strict=True) for a in wave
                   if (a.lease.run_id, a.entry.position) not in written]
        current: dict[str, int] = {}
        if refused:
            try:
                rows, _ = await self._one(
                    "lease_tokens", {"run_ids": sorted({a.lease.run_id for a in refused})})
                current = {r[0]: r[1] for r in rows}
            except TetherError as exc:
                for a in refused:
                    _settle(a.future, exc)
                refused = []
        if refused:
            refused = await self._not_retries(refused, current)
        for a in refused:
            if current.get(a.lease.run_id) != a.lease.fencing_token:
                # A stalled worker (paused, partitioned) tried to write into a run
                # another worker has taken over since. DEBUG: the worker says the loss
                # once, as a WARNING, with the step whose result this was (its attempt
                # ``superseded``) and who holds the run now.
                log.debug("run %s: journal append at position %d refused by fencing: "
                          "token %d is stale (current: %s)", a.lease.run_id,
                          a.entry.position, a.lease.fencing_token,
                          current.get(a.lease.run_id, "run not running"),
                          extra={"run_id": a.lease.run_id, "position": a.entry.position})
                _settle(a.future, LeaseLost(a.lease.run_id, a.lease.fencing_token))
            else:
                _settle(a.future, final_conflict(a.lease.run_id, a.entry.position))
        for a in batch:
            _settle(a.future, None)

    async def _not_retries(self, refused: list[Append], current: dict[str, int]
                           ) -> list[Append]:
        """Of appends refused under a current lease (a final entry holds the position),
        resolve those whose entry is the one there, written under the same lease: a
        retry of an append whose first attempt committed, its answer lost with its
        connection (``same_entry``). The others, and those whose lease is stale, are
        returned."""
        own = [a for a in refused if current.get(a.lease.run_id) == a.lease.fencing_token]
        if not own:
            return refused
        try:
            rows, _ = await self._one("journal_written", {
                "run_ids": [a.lease.run_id for a in own],
                "positions": [a.entry.position for a in own],
                "tokens": [a.lease.fencing_token for a in own]})
        except TetherError as exc:
            for a in own:
                _settle(a.future, exc)
            return [a for a in refused
                    if current.get(a.lease.run_id) != a.lease.fencing_token]
        stored = {(r[0], r[1]): entry_from_row(r[1:]) for r in rows}
        left = []
        for a in refused:
            mine = stored.get((a.lease.run_id, a.entry.position))
            if (mine is not None and current.get(a.lease.run_id) == a.lease.fencing_token
                    and same_entry(mine, a.entry)):
                log.info("run %s: journal append at position %d was already written by "
                         "its first attempt (its answer was lost); taken as written",
                         a.lease.run_id, a.entry.position,
                         extra={"run_id": a.lease.run_id, "position": a.entry.position})
                _settle(a.future, None)
            else:
                left.append(a)
        return left

    async def run_finish(self, *, lease: Lease, status: str, result: str | None,
                         error: str | None, now: float) -> str:
        """End a run under its lease, in a transaction shared with the other runs of the
        process ending at the same time (group commit); the status it ended with: the
        one asked, but for a blocked end (``_end_blocked``). Raises: LeaseLost,
        StoreUnavailable."""
        if status == _BLOCKED:
            return await self._end_blocked(lease, result, error, now)
        await self._writer.submit_finish(lease, status, result, error, now)
        return status

    async def _end_blocked(self, lease: Lease, error_result: str | None,
                           error: str | None, now: float) -> str:
        """A run's end as blocked (rare), in a transaction of its own rather than the
        batch, so that every other end keeps the statements it always had: the end
        (``run_finish_blocked``: cancelled instead if its cancel was pending), the
        wake-ups of a run that ended with this token (as either: one of the two pairs
        finds it), and the cancel of its children, which ``if_cancelled`` makes a no-op
        unless it ended cancelled; then the children of those that ended at once (as
        ``run_cancel``). Its appends were all written before (the worker flushes them
        first), so leaving the writer's queue keeps its order."""
        params = {**lease_params(lease), "result": error_result, "error": error,
                  "now": now, "channel": self._channel}
        blocked = {**params, "status": _BLOCKED}
        cancelled = {**params, "status": RunStatus.CANCELLED.value}
        children = {"parent_run_id": lease.run_id, "now": now, "channel": self._channel,
                    "if_cancelled": True}
        try:
            rows = await self._txn([
                ("run_finish_blocked", params),
                ("run_wake_waiters", blocked), ("run_wake_listed", blocked),
                ("run_wake_waiters", cancelled), ("run_wake_listed", cancelled),
                ("run_children_end", children), ("run_children_wake_waiters", children),
                ("run_children_cancel", children)])
        except StoreUnavailable as exc:
            status = await self._blocked_read_back(lease, now, exc)
            if status is None:
                raise
            if status == RunStatus.CANCELLED.value:  # (its children's children next)
                await self.run_children_cancel(parent_run_id=lease.run_id, now=now)
            return status
        finished, ended = rows[0], rows[5]
        if not finished[0][0]:
            raise LeaseLost(lease.run_id, lease.fencing_token)
        for child_id in ended[0][0] or []:
            await self.run_children_cancel(parent_run_id=child_id, now=now)
        return str(finished[0][1])

    async def _blocked_read_back(self, lease: Lease, now: float,
                                 exc: StoreUnavailable) -> str | None:
        """The status a blocked end whose commit went unanswered (``exc``) stored, read
        back on a new connection (blocked, or cancelled if its cancel was pending: with
        the lease's fencing token and ``now`` as its end); None when it is not stored
        as such or cannot be read (see ``_finishes_read_back``). The worker's retry of
        the end was refused as a lost lease: the run had ended."""
        if not may_read_back(exc) or not await self._session_ended(exc):
            return None
        try:
            run = await self.run_get(lease.run_id)
        except StoreError:
            return None
        if run is None or (run.fencing_token, run.finished_at) != (lease.fencing_token, now):
            return None
        status = run.status.value
        return status if status in (_BLOCKED, RunStatus.CANCELLED.value) else None

    async def _finish_one(self, f: Finish) -> None:
        params = {**lease_params(f.lease), "status": f.status, "result": f.result,
                  "error": f.error, "now": f.now, "channel": self._channel}
        try:
            finished, _, _ = await self._txn([("run_finish", params),
                                              ("run_wake_waiters", params),
                                              ("run_wake_listed", params)])
        except StoreUnavailable as exc:
            if exc.outcome_unknown and await self._finishes_read_back([f], exc):
                return
            raise
        if not finished[0][0]:
            raise LeaseLost(f.lease.run_id, f.lease.fencing_token)

    async def _flush_finishes(self, batch: list[Finish]) -> None:
        """End many runs in one transaction (one round trip); resolve every caller."""
        def columns(ordered: list[Finish]) -> dict[str, Any]:
            return {
                **_lease_columns(ordered),
                "status": TextArray([f.status for f in ordered]),
                "result": TextArray([f.result for f in ordered]),
                "error": TextArray([f.error for f in ordered]),
                "now": Float8Array([f.now for f in ordered]),
                "channel": self._channel,
            }

        await self._write_together(batch, self._finish_one, columns, (
            "run_lock_many", "run_finish_many", "run_wake_waiters_many",
            "run_wake_listed_many"), returns=1, read_back=self._finishes_read_back)

    async def _finishes_read_back(self, batch: Sequence[Finish],
                                  exc: StoreUnavailable) -> set[str]:
        """The runs of ``batch`` whose ends, in a transaction whose commit went
        unanswered (``exc``), are stored as asked (status, fencing token, time), read
        back on a new connection once the session the commit was sent on has ended
        (``_session_ended``); none when they cannot be read (that session did not end,
        or the commit's deadline passed: see ``_starts_read_back``). Their worker would make the end
        again, which the store refuses once the run has ended: a lost lease, logged as
        such, for a run that ended as its worker said."""
        if not may_read_back(exc) or not await self._session_ended(exc):
            return set()
        try:
            runs = await self.run_get_many([f.lease.run_id for f in batch])
        except StoreError:
            return set()
        asked = {f.lease.run_id: f for f in batch}
        return {r.run_id for r in runs if (f := asked.get(r.run_id)) is not None
                and (r.status.value, r.fencing_token, r.finished_at) == (
                    f.status, f.lease.fencing_token, f.now)}

    async def _write_together(self, batch: Sequence[Finish | Release | Metrics],
                              one: Callable[[Any], Awaitable[None]],
                              columns: Callable[[Any], dict[str, Any]],
                              steps: Sequence[str], *, returns: int,
                              read_back: Callable[[Any, StoreUnavailable],
                                                  Awaitable[set[str]]] | None = None) -> None:
        """Write a batch of runs' ends or releases in one transaction: the statements
        ``steps`` on the arrays ``columns`` builds from the batch in run_id order; the
        statement at ``returns`` gives the ids it wrote (a run missing there lost its
        lease). A batch of one, or naming a run twice, goes through ``one`` per item, and
        a batch the server refused is written item by item (bad data fails only its own
        run). ``read_back``: of a batch whose commit went unanswered, the runs stored as
        written (their callers succeed). Resolves every caller's future."""
        ids = [i.lease.run_id for i in batch]
        if len(batch) == 1 or len(set(ids)) != len(ids):
            for i in batch:
                try:
                    await one(i)
                except TetherError as exc:
                    _settle(i.future, exc)
                else:
                    _settle(i.future, None)
            return
        cols = columns(sorted(batch, key=lambda i: i.lease.run_id))
        try:
            rows = await self._txn([(step, cols) for step in steps], prepare=False)
        except StoreUnavailable as exc:
            done = (await read_back(batch, exc) if read_back is not None
                    and exc.outcome_unknown else set())
            for i in batch:
                _settle(i.future, None if i.lease.run_id in done else exc)
            return
        except TetherError:
            for i in batch:
                await self._write_together([i], one, columns, steps, returns=returns)
            return
        written = {row[0] for row in rows[returns]}
        for i in batch:
            _settle(i.future, None if i.lease.run_id in written
                    else LeaseLost(i.lease.run_id, i.lease.fencing_token))

    async def run_release(self, *, lease: Lease, wait: Wait, now: float) -> None:
        """Hand a run back to wait, in a transaction shared with the other runs of the
        process released at the same time (group commit). Raises: LeaseLost,
        StoreUnavailable."""
        await self._writer.submit_release(lease, wait, now)

    async def _release_one(self, r: Release) -> None:
        params = {**lease_params(r.lease), "available_at": r.wait.available_at,
                  "description": r.wait.description, "signal": r.wait.signal,
                  "child": r.wait.child, "now": r.now, "channel": self._channel}

        # A wait for several signals or children (the list form of ``wait_names``, rare)
        # has statements of its own: those of a wait for one are as they always were.
        listed = r.wait.listed

        async def go(conn: Conn) -> int:
            cursors = await self._pipeline(conn, [
                ("lease_lock", params),
                ("child_lock_listed" if listed else "child_lock", params),
                ("run_release_listed" if listed else "run_release", params),
                ("run_release_wake", params)])
            return cursors[2].rowcount

        try:
            released = await self._run_op(go)
        except StoreUnavailable as exc:
            if exc.outcome_unknown and await self._releases_read_back([r], exc):
                return
            raise
        if released != 1:
            raise LeaseLost(r.lease.run_id, r.lease.fencing_token)

    async def _releases_read_back(self, batch: Sequence[Release],
                                  exc: StoreUnavailable) -> set[str]:
        """The runs of ``batch`` whose releases, in a transaction whose commit went
        unanswered (``exc``), are stored (waiting for what the release said, under the
        lease's fencing token: no other writer leaves a run waiting with it), read back
        on a new connection; none when they cannot be read (see
        ``_finishes_read_back``). Their worker would release the run again, which the
        store refuses once it waits: a lost lease, logged as a takeover that never
        happened."""
        if not may_read_back(exc) or not await self._session_ended(exc):
            return set()
        try:
            runs = await self.run_get_many([r.lease.run_id for r in batch])
        except StoreError:
            return set()
        asked = {r.lease.run_id: r for r in batch}
        return {run.run_id for run in runs if (r := asked.get(run.run_id)) is not None
                and (run.status, run.fencing_token, run.waiting_for) == (
                    RunStatus.WAITING, r.lease.fencing_token, r.wait.description)}

    async def _flush_releases(self, batch: list[Release]) -> None:
        """Release many runs in one transaction (one round trip); resolve every caller."""
        def columns(ordered: list[Release]) -> dict[str, Any]:
            return {
                **_lease_columns(ordered),
                "description": TextArray([r.wait.description for r in ordered]),
                "signal": TextArray([r.wait.signal for r in ordered]),
                "child": TextArray([r.wait.child for r in ordered]),
                "available_at": Float8Array([r.wait.available_at for r in ordered]),
                "now": Float8Array([r.now for r in ordered]),
                "channel": self._channel,
            }

        listed = [r for r in batch
                  if r.wait.listed]
        if listed:  # (rare: each alone, see ``_release_one``)
            for r in listed:
                await self._write_together([r], self._release_one, columns, (), returns=0)
            batch = [r for r in batch if r not in listed]
            if not batch:
                return
        await self._write_together(batch, self._release_one, columns, (
            "run_lock_many", "child_lock_many", "run_release_many"), returns=2,
            read_back=self._releases_read_back)

    async def run_resume(self, *, run_id: str, now: float) -> RunRecord:
        params = {"run_id": run_id, "now": now, "channel": self._channel}
        before, _, after = await self._txn([
            ("run_lock", params), ("run_resume", params), ("run_get", params)])
        if not before:
            raise RunNotFound(run_id)
        if before[0][0] != "blocked":
            raise not_resumable(run_id, str(before[0][0]), erased=before[0][1] is not None)
        refuse_erased(run_id, before[0][1], "resume it")
        return run_from_row(after[0])

    async def run_set_status_info(self, *, lease: Lease, info: str | None, now: float) -> None:
        _, count = await self._one("run_set_status_info",
                                   {**lease_params(lease), "info": info, "now": now})
        if count != 1:
            raise LeaseLost(lease.run_id, lease.fencing_token)

    async def signal_send(self, *, run_id: str, name: str, payload: str | None,
                          idempotency_key: str | None, now: float) -> SignalSent:
        params = {"run_id": run_id, "name": name, "payload": payload, "key": idempotency_key,
                  "now": now, "channel": self._channel}
        try:
            status, inserted, found, _ = await self._txn([
                ("run_lock", params), ("signal_insert", params), ("signal_find_key", params),
                ("signal_wake", params)])
        except StoreUnavailable as exc:
            if not exc.outcome_unknown:
                raise
            return await self._signal_read_back(run_id, name, payload, idempotency_key, exc)
        if not status:
            raise RunNotFound(run_id)
        if status[0][0] in _FINAL:
            if found and idempotency_key is not None:
                # A retried send of a signal the run already got is not an error.
                return _signal_found(found[0])
            raise SignalError(
                f"run {run_id!r} has ended ({status[0][0]}); signal {name!r} not sent")
        if inserted:
            return SignalSent(signal_id=int(inserted[0][0]), created=True)
        return _signal_found(found[0])

    async def _signal_read_back(self, run_id: str, name: str, payload: str | None,
                                key: str | None, exc: StoreUnavailable) -> SignalSent:
        """The outcome of a signal's send whose commit went unanswered (``exc``), read
        back by its idempotency key on a new connection: a send whose signal is stored
        does not fail. Without a key nothing tells this send's signal from another of
        the same name: ``exc`` is raised with a message saying that it may have been
        delivered and how to check (a retry would deliver it twice).

        Raises: ``exc`` when the key's signal is not there (the send did not commit, and
        will not: its session has ended), or a StoreUnavailable with
        ``outcome_unknown`` (no key, the read failed too, that session did not end, or
        the commit's deadline passed: see ``_starts_read_back``)."""
        found: SignalSent | None = None
        read = False
        if key is not None and may_read_back(exc) and await self._session_ended(exc):
            with contextlib.suppress(StoreError):
                found = await self.signal_find(run_id=run_id, idempotency_key=key)
                read = True
        if read and found is None:
            exc.outcome_unknown = False
            raise exc
        if found is None:
            raise StoreUnavailable(
                f"{exc}; signal {name!r} to run {run_id!r} may have been delivered (the "
                "connection was lost before its answer): sending it again could deliver "
                f"it twice (once the run takes it, tether show {run_id} lists it); a send "
                "with an idempotency key can be retried safely",
                outcome_unknown=True) from exc
        if (found.name, found.payload) == (name, payload):
            return SignalSent(signal_id=found.signal_id, created=True)
        return found

    async def signal_find(self, *, run_id: str, idempotency_key: str) -> SignalSent | None:
        rows, _ = await self._one("signal_find_key", {"run_id": run_id,
                                                       "key": idempotency_key})
        return _signal_found(rows[0]) if rows else None

    async def signal_pending(self, *, run_id: str, name: str) -> bool:
        rows, _ = await self._one("signal_pending", {"run_id": run_id, "name": name})
        return bool(rows[0][0])

    async def signal_take(self, *, lease: Lease, name: str, position: int,
                          deadline: float | None, now: float,
                          timeout_error: str, sent_by: float | None = None,
                          clock_now: float | None = None) -> JournalEntry | None:
        params = {**lease_params(lease), "name": name, "position": position,
                  "deadline": deadline, "now": now, "timeout_error": timeout_error,
                  "sent_by": deadline if sent_by is None else sent_by,
                  "clock_now": now if clock_now is None else clock_now}
        rows, _ = await self._one("signal_take", params)
        leased, due, status, result, error, next_attempt_at = rows[0]
        if not leased:
            raise LeaseLost(lease.run_id, lease.fencing_token)
        if status is not None:
            return JournalEntry(position, OperationKind.SIGNAL, name, EntryStatus(status),
                                result=result, error=error,
                                attempts=1, finished_at=now, next_attempt_at=next_attempt_at)
        if due:
            raise final_conflict(lease.run_id, position)
        return None

    async def child_start(self, *, lease: Lease, child: RunRecord,
                          entry: JournalEntry) -> RunRecord:
        params = {**entry_params(lease, entry), **run_params(child, "c_"),
                  "channel": self._channel}
        leased, started, stored = await self._txn([
            ("lease_lock", params), ("child_start", params),
            ("run_get", {"run_id": child.run_id})])
        if not leased:
            raise LeaseLost(lease.run_id, lease.fencing_token)
        if not started[0][0]:
            if stored:
                other = run_from_row(stored[0])
                if other.parent_run_id != lease.run_id:
                    raise child_id_taken(child.run_id, lease.run_id, other.workflow)
            raise final_conflict(lease.run_id, entry.position)
        return run_from_row(stored[0])

    async def run_children_cancel(self, *, parent_run_id: str, now: float) -> list[str]:
        """Cancel a cancelled run's children whose policy is cancel, then the children
        of those that ended at once (no worker ends them, so none cancels their
        children), each level in a transaction of its own, as a worker's cancel of its
        run's children follows the run's end."""
        params = {"parent_run_id": parent_run_id, "now": now, "channel": self._channel,
                  "if_cancelled": False}
        ended, _, asked = await self._txn([("run_children_end", params),
                                           ("run_children_wake_waiters", params),
                                           ("run_children_cancel", params)])
        found = [*(ended[0][0] or []), *(asked[0][0] or [])]
        for child_id in ended[0][0] or []:
            found += await self.run_children_cancel(parent_run_id=child_id, now=now)
        return sorted(found)

    async def run_cancel(self, *, run_id: str, now: float,
                         reason: str | None = None) -> RunRecord:
        params = {"run_id": run_id, "now": now, "channel": self._channel,
                  "status": "cancelled", "fencing_token": None, "reason": reason}
        children = {"parent_run_id": run_id, "now": now, "channel": self._channel,
                    "if_cancelled": True}
        # A cancelled blocked run has ended: wake a parent waiting for it, like a finish,
        # and cancel its children, as a worker ending it would (run_children_*: only
        # if it ended here, cancelled); the children of those that end at once next.
        steps = [
            ("run_cancel_blocked", params), ("run_wake_waiters", params),
            ("run_wake_listed", params),
            ("run_cancel", params), ("run_cancel_notify", params),
            ("run_children_end", children), ("run_children_wake_waiters", children),
            ("run_children_cancel", children), ("run_get", params)]
        try:
            _, _, _, _, _, ended, _, _, stored = await self._txn(steps)
        except StoreUnavailable as exc:
            # A cancel whose commit went unanswered may have committed: asked again (it
            # changes nothing the second time) it answers as the first would have (it
            # raised, and ``tether cancel`` said the database was unavailable). Not
            # after a deadline: a hung server would cost another; nor before the session
            # it was sent on has ended (``_session_ended``): left alive by a network
            # cut, that session could commit it later, after a retry of the run.
            if not may_read_back(exc) or not await self._session_ended(exc):
                raise
            _, _, _, _, _, ended, _, _, stored = await self._txn(steps)
            if stored and run_from_row(stored[0]).status == RunStatus.CANCELLED:
                # (children that the first commit ended are not in ``ended`` now)
                await self.run_children_cancel(parent_run_id=run_id, now=now)
        if not stored:
            raise RunNotFound(run_id)
        for child_id in ended[0][0] or []:
            await self.run_children_cancel(parent_run_id=child_id, now=now)
        return run_from_row(stored[0])

    # -- leases and workers -------------------------------------------------------------

    async def lease_heartbeat(self, *, worker_id: str, now: float,
                              lease_seconds: float) -> HeartbeatResult:
        """Renew the worker's leases. Its deadline is half a lease (at least 1 s, at
        most ``query_timeout``): a heartbeat on a connection that no longer answers
        fails in time for the worker's next one, on another connection, to renew the
        leases before they run out."""
        rows, _ = await self._one("lease_heartbeat", {
            "worker_id": worker_id, "now": now, "lease_expires": now + lease_seconds},
            timeout=min(self.query_timeout, max(lease_seconds / 2, 1.0)))
        result = HeartbeatResult()
        for run_id, cancel in rows:
            result.owned.add(run_id)
            if cancel:
                result.cancel_requested.add(run_id)
        return result

    async def lease_expire_owner(self, *, worker_id: str, now: float) -> list[str]:
        rows, _ = await self._one("lease_expire_owner", {
            "worker_id": worker_id, "now": now, "channel": self._channel})
        return list(rows[0][1])

    async def worker_register(self, *, info: WorkerInfo) -> None:
        await self._one("worker_register", {
            "worker_id": info.worker_id, "hostname": info.hostname, "pid": info.pid,
            "pid_start": info.pid_start, "queues": info.queues,
            "started_at": info.started_at, "heartbeat_at": info.heartbeat_at})

    async def worker_unregister(self, *, worker_id: str, now: float) -> None:
        await self._one("worker_unregister", {
            "worker_id": worker_id, "now": now, "channel": self._channel})

    async def worker_list(self) -> list[WorkerInfo]:
        rows, _ = await self._one("worker_list", None)
        return [WorkerInfo(*row) for row in rows]

    async def worker_runs_held(self) -> dict[str, int]:
        rows, _ = await self._one("worker_runs_held", None)
        return {owner: int(n) for owner, n in rows}

    async def workflow_register(self, *, workflows: dict[str, str], now: float) -> None:
        if not workflows:
            return
        names = sorted(workflows)
        await self._one("workflow_register", {
            "names": names, "queues": [workflows[n] for n in names], "now": now})

    async def workflow_list(self) -> dict[str, str]:
        rows, _ = await self._one("workflow_list", None)
        return {name: queue for name, queue in rows}

    async def next_available_at(self, *, queues: list[str], workflows: list[str] | None = None,
                                version: str | None = None,
                                exclude: Collection[str] = ()) -> float | None:
        if not queues or workflows == []:
            return None
        _, rows = await self._txn([("ordered_plan", {}), ("next_available_at", {
            "queues": list(queues), "version": version,
            "workflows": None if workflows is None else sorted(workflows),
            "exclude": TextArray(exclude) if exclude else None})])
        value = rows[0][0]
        return None if value is None else float(value)

    async def run_activity(self, *, queues: list[str], now: float
                           ) -> tuple[bool, float | None]:
        _, rows = await self._txn([("ordered_plan", {}), ("run_activity", {
            "queues": list(queues), "now": now})])
        busy, wake = rows[0]
        return bool(busy), None if wake is None else float(wake)

    # -- shared state for the AI layer and limits (migration 0002) ---------------------

    async def run_metrics_set(self, *, lease: Lease, metrics: str, now: float) -> None:
        """Replace the run's metrics under its lease, in a transaction shared with the
        other runs' metrics of the moment (group commit: a durable LLM call writes them
        once per call). Raises: LeaseLost, StoreUnavailable."""
        check_metrics(lease.run_id, metrics)
        await self._writer.submit_metrics(lease, metrics, now)

    async def _metrics_one(self, m: Metrics) -> None:
        _, count = await self._one("run_metrics_set",
                                   {**lease_params(m.lease), "metrics": m.metrics,
                                    "now": m.now})
        if count != 1:
            raise LeaseLost(m.lease.run_id, m.lease.fencing_token)

    async def _flush_metrics(self, batch: list[Metrics]) -> None:
        """Write many runs' metrics in one transaction; resolve every caller."""
        await self._write_together(batch, self._metrics_one, _metrics_columns, (
            "run_lock_many", "run_metrics_set_many"), returns=1)

    async def blob_put(self, *, blobs: dict[str, str], run_id: str | None = None) -> None:
        """Store texts (and that ``run_id`` references them), in a transaction shared
        with the other texts stored at the moment (group commit: a durable LLM call
        stores its prompt's new messages once per call). Raises: StoreUnavailable (at
        once for a ``FAIL_FAST`` caller while the server is known to be down)."""
        if blobs:
            await self._fail_fast_if_down()
            await self._writer.submit_blobs(blobs, run_id)

    async def _flush_blobs(self, batch: list[Blobs]) -> None:
        """Store the texts of many calls in one transaction, their references first
        (see Lifecycle._sweep_blobs), each in one order for every writer (key, then run)
        so that overlapping writes never deadlock; resolve every caller. A batch the
        server refused is written call by call (bad data fails only its own call)."""
        params = _blob_params([(b.blobs, b.run_id) for b in batch])
        try:
            if params["ref_keys"]:
                await self._txn([("blob_ref_put_many", params), ("blob_put", params)],
                                prepare=False)
            else:  # texts no run references (stored from outside a run)
                await self._one("blob_put", params, prepare=False)
        except TetherError as exc:
            await _failed_batch(batch, exc, self._flush_blobs)
            return
        for b in batch:
            _settle(b.future, None)

    async def blob_get(self, *, keys: list[str]) -> dict[str, str]:
        if not keys:
            return {}
        rows, _ = await self._one("blob_get", {"keys": list(keys)})
        return {k: v for k, v in rows}

    async def kv_get(self, *, key: str) -> tuple[str, int] | None:
        rows, _ = await self._one("kv_get", {"key": key})
        return (rows[0][0], int(rows[0][1])) if rows else None

    async def kv_cas(self, *, key: str, value: str, version: int | None, now: float) -> bool:
        params = {"key": key, "value": value, "version": version, "now": now}
        rows, _ = await self._one("kv_insert" if version is None else "kv_update", params)
        return bool(rows)

    async def rate_acquire(self, *, key: str, limit: float, period: float, amount: float,
                           now: float) -> float:
        check_rate(key, limit, period, amount)
        rows, _ = await self._one("rate_acquire", {
            "key": key, "limit": float(limit), "period": float(period),
            "amount": float(amount), "now": float(now)})
        return float(rows[0][0])

    async def queue_limit_set(self, *, queue: str, limit: int | None, now: float) -> None:
        check_queue_limit(queue, limit)
        params = {"queue": queue, "limit": limit, "now": now, "channel": self._channel}
        await self._one("queue_limit_delete" if limit is None else "queue_limit_set", params)

    async def queue_limits(self) -> dict[str, int]:
        rows, _ = await self._one("queue_limits", None)
        return {q: int(n) for q, n in rows}

    async def queue_resume(self, *, queue: str, now: float) -> tuple[bool, int | None]:
        check_queue_limit(queue, None)
        rows, _ = await self._one("queue_resume", {"queue": queue, "now": now,
                                                   "channel": self._channel})
        paused, limit = rows[0][0], rows[0][1]
        return bool(paused), None if limit is None else int(limit)

    async def queue_pauses(self) -> dict[str, int | None]:
        rows, _ = await self._one("queue_pauses", None)
        return {q: None if n is None else int(n) for q, n in rows}

    async def run_publish(self, *, run_id: str, data: str) -> None:
        """Store the event (for ``run_events_read``) and NOTIFY the run's channel (in
        parts under PostgreSQL's 8000-byte payload limit), in one transaction."""
        parts = split_event(check_event(run_id, data))
        await self._one("run_publish_stored", {"run_id": run_id, "data": data,
                                               "channel": channel_of(self.schema, run_id),
                                               "parts": parts})

    async def run_events(self, run_id: str, *,
                         ready: Callable[[], None] | None = None) -> AsyncIterator[str]:
        async for event in self._events.subscribe(channel_of(self.schema, run_id),
                                                  ready=ready):
            yield event

    async def _kick(self, channel: str) -> None:
        """An empty notification on ``channel`` (the events connection's control)."""
        async def go(conn: Conn) -> None:
            await conn.execute("SELECT pg_notify(%s, '')", (channel,))

        await self._run_op(go)


    # -- runs over their whole life (migration 0003; see store/_lifecycle.py) ----------

    def _life(self, method: str, *args: Any, long: bool = False) -> Awaitable[Any]:
        """``Lifecycle.<method>(conn, *args)`` on a pooled connection; ``long``: with
        ``LONG_FACTOR`` times the query timeout (it may touch many runs)."""
        fn = getattr(self._lifecycle, method)
        return self._run_op(lambda conn: fn(conn, *args),
                            timeout=self._deadline(LONG_FACTOR) if long else None)

    async def attempt_record(self, *, attempts: list[AttemptRecord]) -> None:
        if attempts:
            await self._life("attempt_record", list(attempts))

    async def attempt_list(self, run_id: str) -> list[AttemptRecord]:
        return await self._life("attempt_list", run_id)  # type: ignore[no-any-return]

    async def run_retry(self, *, run_id: str, version: str | None, now: float) -> RetryReport:
        return await self._life("run_retry", run_id, version, now)  # type: ignore[no-any-return]

    async def run_fork(self, *, source_run_id: str, run: RunRecord, at: int,
                       entries: Sequence[JournalEntry] | None = None) -> RunRecord:
        return await self._life(  # type: ignore[no-any-return]
            "run_fork", source_run_id, run, at, None if entries is None else list(entries))

    async def run_continue(self, *, lease: Lease, input: str, now: float) -> None:
        await self._life("run_continue", lease, input, now)

    async def run_crash_mark(self, *, lease: Lease, crashes: int, progress: int) -> None:
        await self._life("run_crash_mark", lease, crashes, progress)

    async def journal_archive_read(self, run_id: str) -> list[ArchivedJournal]:
        return await self._life("journal_archive_read", run_id)  # type: ignore[no-any-return]

    async def run_versions(self) -> list[tuple[str | None, str, int]]:
        return await self._life("run_versions", long=True)  # type: ignore[no-any-return]

    async def run_version_candidates(self, *, version: str) -> list[tuple[str, str]]:
        return await self._life(  # type: ignore[no-any-return]
            "run_version_candidates", version, long=True)

    async def run_version_set(self, *, run_ids: list[str], from_version: str,
                              to_version: str, now: float) -> list[str]:
        return await self._life(  # type: ignore[no-any-return]
            "run_version_set", list(run_ids), from_version, to_version, now, long=True)

    async def schedule_upsert(self, *, schedule: ScheduleRecord) -> None:
        await self._life("schedule_upsert", schedule)

    async def schedule_list(self) -> list[ScheduleRecord]:
        return await self._life("schedule_list")  # type: ignore[no-any-return]

    async def schedule_get(self, name: str) -> ScheduleRecord | None:
        return await self._life("schedule_get", name)  # type: ignore[no-any-return]

    async def schedule_pause(self, *, name: str, paused: bool, next_tick: float | None,
                             now: float) -> bool:
        return await self._life("schedule_pause", name, paused, next_tick, now)  # type: ignore[no-any-return]

    async def schedule_delete(self, name: str) -> bool:
        return await self._life("schedule_delete", name)  # type: ignore[no-any-return]

    async def schedule_advance(self, *, name: str, expected: float | None,
                               next_tick: float | None, last_tick: float | None,
                               last_run_id: str | None, now: float) -> bool:
        return await self._life(  # type: ignore[no-any-return]
            "schedule_advance", name, expected, next_tick, last_tick, last_run_id, now)

    async def run_purge(self, *, finished_before: float, statuses: list[str],
                        limit: int = 1000, workflows: list[str] | None = None,
                        exclude_workflows: list[str] | None = None) -> PurgeReport:
        if workflows is not None and not workflows:
            return PurgeReport()
        return await self._life(  # type: ignore[no-any-return]
            "run_purge", finished_before, list(statuses), limit,
            None if workflows is None else list(workflows),
            list(exclude_workflows or ()), long=True)

    async def run_erase(self, *, run_id: str, now: float) -> PurgeReport:
        return await self._life("run_erase", run_id, now, long=True)  # type: ignore[no-any-return]


def _waves(batch: list[Append]) -> list[list[Append]]:
    """Split a batch into statements with each (run_id, position) at most once, in order:
    a pending entry and its final one, made in that order, land in that order."""
    waves: list[list[Append]] = []
    last: dict[tuple[str, int], int] = {}
    for a in batch:
        key = (a.lease.run_id, a.entry.position)
        i = last.get(key, -1) + 1
        if i == len(waves):
            waves.append([])
        waves[i].append(a)
        last[key] = i
    return waves


def _metered(batch: list[Append]) -> list[Append]:
    """The appends of a batch that carry their run's metrics, one per run (the latest:
    metrics are totals), in run order."""
    latest: dict[str, Append] = {}
    for a in batch:
        if a.metrics is not None:
            latest[a.lease.run_id] = a
    return [latest[run_id] for run_id in sorted(latest)]


#: (A plain string: compared once per end, where an enum's ``.value`` costs a lookup.)
_BLOCKED = RunStatus.BLOCKED.value


def _lease_columns(items: Sequence[Append | Finish | Release | Metrics]) -> dict[str, Any]:
    """``run_id`` and ``fencing_token`` as arrays: the fenced writes of a batch
    (``lease_params`` for one)."""
    return {"run_id": TextArray([i.lease.run_id for i in items]),
            "fencing_token": Int8Array([i.lease.fencing_token for i in items])}


def _metrics_columns(items: Sequence[Metrics | Append]) -> dict[str, Any]:
    """Runs' metrics as arrays (``run_metrics_set_many``): those of ``Metrics`` items, or
    those appends carry."""
    return {**_lease_columns(items),
            "metrics": TextArray([i.metrics for i in items]),
            "now": Float8Array([i.now for i in items])}


def _columns(wave: list[Append]) -> dict[str, list[Any]]:
    """The appends of one statement as one array per column."""
    return {
        **_lease_columns(wave),
        "position": Int4Array([a.entry.position for a in wave]),
        "kind": TextArray([a.entry.kind for a in wave]),
        "name": TextArray([a.entry.name for a in wave]),
        "status": TextArray([a.entry.status for a in wave]),
        "result": TextArray([a.entry.result for a in wave]),
        "error": TextArray([a.entry.error for a in wave]),
        "attempts": Int4Array([a.entry.attempts for a in wave]),
        "started_at": Float8Array([a.entry.started_at for a in wave]),
        "finished_at": Float8Array([a.entry.finished_at for a in wave]),
        "next_attempt_at": Float8Array([a.entry.next_attempt_at for a in wave]),
        "args": TextArray([a.entry.args for a in wave]),
    }


_FLOAT8 = struct.Struct("!d").pack


def _append_one_values(lease: Lease, e: JournalEntry, enc: str) -> list[bytes | None]:
    """``journal_append_one``'s parameters encoded as ``Prepared.values`` would encode
    ``entry_params`` (order: ``_APPEND_ONE_ORDER``), without a dict and 13 calls."""
    return [
        b"%d" % e.position, e.kind.encode(enc), e.name.encode(enc), e.status.encode(enc),
        None if e.result is None else e.result.encode(enc),
        None if e.error is None else e.error.encode(enc),
        b"%d" % e.attempts,
        None if e.started_at is None else _FLOAT8(e.started_at),
        None if e.finished_at is None else _FLOAT8(e.finished_at),
        None if e.next_attempt_at is None else _FLOAT8(e.next_attempt_at),
        None if e.args is None else e.args.encode(enc),
        lease.run_id.encode(enc), b"%d" % lease.fencing_token,
    ]


_APPEND_ONE_ORDER = ("position", "kind", "name", "status", "result", "error", "attempts",
                     "started_at", "finished_at", "next_attempt_at", "args", "run_id",
                     "fencing_token")


def _append_metered_values(lease: Lease, e: JournalEntry, metrics: str, now: float,
                           enc: str) -> list[bytes | None]:
    """``journal_append_one_metered``'s parameters (order: ``_APPEND_METERED_ORDER``)."""
    values = _append_one_values(lease, e, enc)
    return [metrics.encode(enc), _FLOAT8(now), *values[-2:], *values[:-2]]


_APPEND_METERED_ORDER = ("metrics", "now", "run_id", "fencing_token", *_APPEND_ONE_ORDER[:-2])


#: An append whose texts are longer than this (characters) is not written inline: its
#: statement may not fit the socket's buffer at once, and an inline append does not
#: wait for the socket to take the rest (the writer's path does: ``_raw._flushed``).
_INLINE_MAX_TEXT = 32_768


def _long(e: JournalEntry, metrics: str | None) -> bool:
    """Whether an append is too long to be written inline (``_INLINE_MAX_TEXT``)."""
    return (len(e.result or "") + len(e.error or "") + len(e.args or "")
            + len(metrics or "")) > _INLINE_MAX_TEXT


async def _select_one(conn: Conn) -> None:
    await conn.execute("SELECT 1")


def _written(fut: asyncio.Future[None]) -> Callable[[PGresult], None]:
    """Resolve a lone append's caller as soon as its statement's answer is read (in the
    reader callback): a written entry returns its row."""
    def done(res: PGresult) -> None:
        if res.ntuples and not fut.done():
            fut.set_result(None)
    return done


def _written_keys(res: PGresult, encoding: str) -> set[tuple[str, int]]:
    """The run ids and positions a batch of appends returned: the entries it wrote."""
    keys: set[tuple[str, int]] = set()
    for i in range(res.ntuples):
        run_id, position = res.get_value(i, 0), res.get_value(i, 1)
        if run_id is not None and position is not None:
            keys.add((run_id.decode(encoding), int(position)))
    return keys


def _blob_params(items: Sequence[tuple[Mapping[str, str], str | None]]) -> dict[str, Any]:
    """The parameters of ``blob_ref_put_many`` and ``blob_put`` for texts stored by
    several calls (texts, and the run that references them if any): texts by key, and
    references by key then run, each sorted (one lock order for every writer)."""
    texts: dict[str, str] = {}
    refs: set[tuple[str, str]] = set()
    for blobs, run_id in items:
        texts.update(blobs)
        if run_id is not None:
            refs.update((k, run_id) for k in blobs)
    keys = sorted(texts)
    pairs = sorted(refs)
    return {"keys": TextArray(keys), "values": TextArray([texts[k] for k in keys]),
            "ref_keys": TextArray([k for k, _ in pairs]),
            "ref_runs": TextArray([r for _, r in pairs])}


async def _failed_batch(batch: Sequence[Append | Blobs], exc: TetherError,
                        write: Callable[[list[Any]], Awaitable[None]]) -> None:
    """A batch's one statement failed: in an outage every caller gets the error; else
    (the server refused some item's data) each item is written again alone, so that only
    the bad one fails."""
    if isinstance(exc, StoreUnavailable) or len(batch) == 1:
        for item in batch:
            _settle(item.future, exc)
        return
    for item in batch:
        await write([item])


def _settle(fut: asyncio.Future[Any], exc: BaseException | None, result: Any = None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


if TYPE_CHECKING:

    def _conforms(s: PostgresStore) -> Store:
        return s


def _start_unknown(exc: StoreUnavailable, ids: list[str]) -> StoreUnavailable:
    """The error of starts of runs ``ids`` whose commit went unanswered (``exc``) and
    that could not be read back."""
    first = repr(ids[0]) + (f" and {len(ids) - 1} more" if len(ids) > 1 else "")
    return StoreUnavailable(
        f"{exc}; the start of run {first} may have committed (the connection was lost "
        f"before its answer, and the runs could not be read back): look it up (tether "
        f"show {ids[0]}), or start again with the same run id, which starts nothing for "
        "a run that exists", outcome_unknown=True)


def _same_start(stored: RunRecord, run: RunRecord) -> bool:
    """Whether ``stored`` is the run ``run``'s start created (not one with its id that
    existed before): its workflow, input and creation time (the starting client's
    clock, to the microsecond) are the start's."""
    return (stored.workflow, stored.input, stored.created_at) == (
        run.workflow, run.input, run.created_at)


def _signal_found(row: Any) -> SignalSent:
    """The signal already stored under a send's idempotency key (``signal_find_key``)."""
    return SignalSent(signal_id=int(row[0]), created=False, name=row[1], payload=row[2])
