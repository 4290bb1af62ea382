"""SqliteStore: the embedded default.

One writer thread owns one connection (apsw, which bundles a current SQLite). Callers
on the event loop hand it operations through a queue; the thread takes everything that
is pending, runs it in one ``BEGIN IMMEDIATE`` transaction (a savepoint per operation,
so one failing operation does not undo the others), commits once and resolves every
caller's future. That is group commit: concurrent runs share one fsync.

Durability: WAL mode with ``synchronous=FULL`` by default (a committed operation
survives power loss); ``synchronous=NORMAL`` is opt-in (``?synchronous=normal`` in the
URL) for users who accept losing the last commits on power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

import apsw

from tether._types import ClaimedRun, JournalEntry, Lease, RunRecord
from tether.errors import (
    ConfigError,
    LeaseLost,
    RunNotFound,
    SignalError,
    StoreError,
    StoreUnavailable,
    TetherError,
)
from tether.store._port import HeartbeatResult, SignalSent, StoreCapabilities, Wait, WorkerInfo
from tether.store._sql import load_migrations, load_queries
from tether.store.sqlite._notify import Notifier

if TYPE_CHECKING:
    from tether.store._port import Store

Q = load_queries("tether.store.sqlite")

#: SQLite releases before this one can corrupt a WAL database when several
#: connections write at once and the WAL is reset (fixed in 3.51.3).
SAFE_MULTIPROCESS_VERSION = (3, 51, 3)

_RUN_COLS = (
    "run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner, "
    "fencing_token, available_at, cancel_requested, waiting_for, status_info, parent_run_id, "
    "finished_at, parent_position, on_parent_cancel"
)
_MAX_BATCH = 512


def _run(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        run_id=row[0], workflow=row[1], queue=row[2], status=row[3], input=row[4],
        created_at=row[5], updated_at=row[6], result=row[7], error=row[8], owner=row[9],
        fencing_token=row[10], available_at=row[11], cancel_requested=bool(row[12]),
        waiting_for=row[13], status_info=row[14], parent_run_id=row[15], finished_at=row[16],
        parent_position=row[17], on_parent_cancel=row[18],
    )


def _entry(row: Sequence[Any]) -> JournalEntry:
    return JournalEntry(
        position=row[0], kind=row[1], name=row[2], status=row[3], result=row[4],
        error=row[5], attempts=row[6], started_at=row[7], finished_at=row[8],
        next_attempt_at=row[9], args=row[10],
    )


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


class _Op:
    __slots__ = ("args", "fn", "future", "loop", "wake", "write")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], write: bool,
                 loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any],
                 wake: bool) -> None:
        self.fn = fn
        self.args = args
        self.write = write
        self.loop = loop
        self.future = future
        self.wake = wake


def _deliver(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, value, exc in results:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)


class SqliteStore:
    """Embedded store on one SQLite file; several processes on one host may share it."""

    capabilities = StoreCapabilities(notifications=True, multi_host=False)

    def __init__(self, url: str, *, synchronous: str | None = None,
                 busy_timeout: float = 30.0) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "sqlite":
            raise ConfigError(f"not a sqlite URL: {url!r}")
        path = parsed.path
        if parsed.netloc:  # sqlite://relative/path.db
            path = parsed.netloc + path
        elif path.startswith("/./") or path.startswith("/../"):
            path = path[1:]
        if not path or path == "/":
            raise ConfigError(f"sqlite URL names no file: {url!r}")
        opts = parse_qs(parsed.query)
        sync = (synchronous or opts.get("synchronous", ["full"])[0]).upper()
        if sync not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError(f"synchronous must be full, normal or extra, not {sync!r}")
        self.url = url
        self.path = path
        self.synchronous = sync
        self.busy_timeout = busy_timeout
        self.sqlite_version = apsw.sqlite_lib_version()
        self.safe_multiprocess = (
            tuple(int(p) for p in self.sqlite_version.split(".")) >= SAFE_MULTIPROCESS_VERSION
        )
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._notifier = Notifier(os.path.abspath(path))
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        if self._thread is not None:
            return
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._serve, args=(loop, ready), name="tether-sqlite", daemon=True
        )
        self._thread.start()
        await ready

    async def close(self) -> None:
        if self._thread is None or self._closed:
            return
        self._closed = True
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._notifier.close()

    def _connect(self) -> apsw.Connection:
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise StoreUnavailable(f"cannot open SQLite store {self.path!r}: no folder {folder}")
        try:
            conn = apsw.Connection(self.path)
        except apsw.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store {self.path!r}: {exc}") from None
        conn.setbusytimeout(int(self.busy_timeout * 1000))
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
        if str(mode).lower() != "wal":
            raise StoreUnavailable(f"SQLite store {self.path!r} cannot use WAL mode ({mode})")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA temp_store=MEMORY")
        self._migrate(conn)
        return conn

    def _migrate(self, conn: apsw.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS tether_schema_version "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM tether_schema_version")}
            for version, name, sql in load_migrations("tether.store.sqlite"):
                if version in done:
                    continue
                conn.execute(sql)
                conn.execute(
                    "INSERT INTO tether_schema_version VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- the writer thread ------------------------------------------------------------

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            err = exc if isinstance(exc, StoreError) else StoreUnavailable(
                f"cannot open SQLite store {self.path!r}: {exc}")
            failed: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = [
                (ready, None, err)]
            loop.call_soon_threadsafe(_deliver, failed)
            self._thread = None
            return
        ok: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = [(ready, None, None)]
        loop.call_soon_threadsafe(_deliver, ok)
        q = self._queue
        try:
            while True:
                op = q.get()
                if op is None:
                    break
                batch = [op]
                stop = False
                while len(batch) < _MAX_BATCH:
                    try:
                        nxt = q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                self._execute(conn, batch)
                if stop:
                    break
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _execute(self, conn: apsw.Connection, batch: list[_Op]) -> None:
        write = any(op.write for op in batch)
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            results: list[tuple[_Op, Any, BaseException | None]] = []
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                single = len(batch) == 1
                for op in batch:
                    if single or not op.write:
                        try:
                            results.append((op, op.fn(conn, *op.args), None))
                        except apsw.BusyError:
                            raise
                        except Exception as exc:
                            results.append((op, None, exc))
                        continue
                    conn.execute("SAVEPOINT op")
                    try:
                        value = op.fn(conn, *op.args)
                    except apsw.BusyError:
                        raise
                    except Exception as exc:
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                        results.append((op, None, exc))
                    else:
                        conn.execute("RELEASE op")
                        results.append((op, value, None))
                if single and results[0][2] is not None:
                    conn.execute("ROLLBACK")
                else:
                    conn.execute("COMMIT")
                break
            except apsw.BusyError:
                with contextlib.suppress(apsw.Error):
                    if not conn.getautocommit():
                        conn.execute("ROLLBACK")
                if time.monotonic() > deadline:
                    err = StoreUnavailable(f"SQLite store {self.path!r} stayed locked")
                    results = [(op, None, err) for op in batch]
                    break
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            except apsw.Error as db_exc:
                with contextlib.suppress(apsw.Error):
                    if not conn.getautocommit():
                        conn.execute("ROLLBACK")
                err = StoreUnavailable(f"SQLite store {self.path!r} failed: {db_exc}")
                results = [(op, None, err) for op in batch]
                break
        if any(op.wake for op, _, failure in results if failure is None):
            self._notifier.publish()
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for op, value, failure in results:
            by_loop.setdefault(op.loop, []).append((op.future, value, failure))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(_deliver, items)

    def _submit(self, fn: Callable[..., Any], *args: Any, write: bool = True,
                wake: bool = False) -> Any:
        if self._thread is None or self._closed:
            raise StoreError("store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Op(fn, args, write, loop, fut, wake))
        return fut

    async def subscribe(self, callback: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        return self._notifier.subscribe(asyncio.get_running_loop(), callback)

    # -- runs -------------------------------------------------------------------------

    async def run_insert(self, *, run: RunRecord) -> tuple[RunRecord, bool]:
        return await self._submit(_run_insert, run, wake=True)  # type: ignore[no-any-return]

    async def run_get(self, run_id: str) -> RunRecord | None:
        return await self._submit(_run_get, run_id, write=False)  # type: ignore[no-any-return]

    async def run_list(self, *, status: str | None = None, limit: int = 100) -> list[RunRecord]:
        return await self._submit(_run_list, status, limit, write=False)  # type: ignore[no-any-return]

    async def journal_read(self, run_id: str) -> list[JournalEntry]:
        return await self._submit(_journal_read, run_id, write=False)  # type: ignore[no-any-return]

    async def run_claim(self, *, worker_id: str, queues: list[str], limit: int, now: float,
                        lease_seconds: float) -> list[ClaimedRun]:
        if limit <= 0 or not queues:
            return []
        return await self._submit(  # type: ignore[no-any-return]
            _run_claim, worker_id, tuple(queues), limit, now, now + lease_seconds
        )

    async def journal_append(self, *, lease: Lease, entry: JournalEntry) -> None:
        await self._submit(_journal_append, lease, entry)

    def journal_append_nowait(self, *, lease: Lease, entry: JournalEntry) -> asyncio.Future[None]:
        """Queue a journal write without waiting; the future reports its outcome."""
        return self._submit(_journal_append, lease, entry)  # type: ignore[no-any-return]

    async def run_finish(self, *, lease: Lease, status: str, result: str | None,
                         error: str | None, now: float) -> None:
        await self._submit(_run_finish, lease, status, result, error, now, wake=True)

    async def run_release(self, *, lease: Lease, wait: Wait, now: float) -> None:
        await self._submit(_run_release, lease, wait, now)

    async def run_cancel(self, *, run_id: str, now: float) -> RunRecord:
        return await self._submit(_run_cancel, run_id, now, wake=True)  # type: ignore[no-any-return]

    async def run_resume(self, *, run_id: str, now: float) -> RunRecord:
        return await self._submit(_run_resume, run_id, now, wake=True)  # type: ignore[no-any-return]

    async def run_set_status_info(self, *, lease: Lease, info: str | None, now: float) -> None:
        await self._submit(_run_set_status_info, lease, info, now)

    async def signal_send(self, *, run_id: str, name: str, payload: str | None,
                          idempotency_key: str | None, now: float) -> SignalSent:
        return await self._submit(  # type: ignore[no-any-return]
            _signal_send, run_id, name, payload, idempotency_key, now, wake=True
        )

    async def signal_take(self, *, lease: Lease, name: str, position: int,
                          deadline: float | None, now: float,
                          timeout_error: str) -> JournalEntry | None:
        return await self._submit(  # type: ignore[no-any-return]
            _signal_take, lease, name, position, deadline, now, timeout_error
        )

    async def child_start(self, *, lease: Lease, child: RunRecord,
                          entry: JournalEntry) -> RunRecord:
        return await self._submit(_child_start, lease, child, entry, wake=True)  # type: ignore[no-any-return]

    async def run_children_cancel(self, *, parent_run_id: str, now: float) -> list[str]:
        return await self._submit(  # type: ignore[no-any-return]
            _run_children_cancel, parent_run_id, now, wake=True
        )

    # -- leases and workers -------------------------------------------------------------

    async def lease_heartbeat(self, *, worker_id: str, now: float,
                              lease_seconds: float) -> HeartbeatResult:
        return await self._submit(  # type: ignore[no-any-return]
            _lease_heartbeat, worker_id, now, now + lease_seconds
        )

    async def lease_expire_owner(self, *, worker_id: str, now: float) -> int:
        return await self._submit(_lease_expire_owner, worker_id, now, wake=True)  # type: ignore[no-any-return]

    async def worker_register(self, *, info: WorkerInfo) -> None:
        await self._submit(_worker_register, info)

    async def worker_unregister(self, *, worker_id: str, now: float) -> None:
        await self._submit(_worker_unregister, worker_id, now, wake=True)

    async def worker_list(self) -> list[WorkerInfo]:
        return await self._submit(_worker_list, write=False)  # type: ignore[no-any-return]

    async def workflow_register(self, *, workflows: dict[str, str], now: float) -> None:
        await self._submit(_workflow_register, dict(workflows), now)

    async def workflow_list(self) -> dict[str, str]:
        return await self._submit(_workflow_list, write=False)  # type: ignore[no-any-return]

    async def next_available_at(self, *, queues: list[str]) -> float | None:
        return await self._submit(_next_available_at, tuple(queues), write=False)  # type: ignore[no-any-return]


# -- operations, run on the writer thread inside a transaction ---------------------------


def _run_insert(conn: apsw.Connection, run: RunRecord) -> tuple[RunRecord, bool]:
    conn.execute(Q["run_insert"], (
        run.run_id, run.workflow, run.queue, run.status, run.input, run.created_at,
        run.updated_at, run.available_at, run.parent_run_id, run.parent_position,
        run.on_parent_cancel,
    ))
    created = conn.changes() == 1
    stored = _run_get(conn, run.run_id)
    assert stored is not None
    return stored, created


def _run_get(conn: apsw.Connection, run_id: str) -> RunRecord | None:
    for row in conn.execute(Q["run_get"], (run_id,)):
        return _run(row)
    return None


def _run_list(conn: apsw.Connection, status: str | None, limit: int) -> list[RunRecord]:
    return [_run(r) for r in conn.execute(Q["run_list"], (status, limit))]


def _journal_read(conn: apsw.Connection, run_id: str) -> list[JournalEntry]:
    return [_entry(r) for r in conn.execute(Q["journal_read"], (run_id,))]


_claim_sql: dict[int, str] = {}


def _run_claim(conn: apsw.Connection, worker_id: str, queues: tuple[str, ...], limit: int,
               now: float, lease_expires: float) -> list[ClaimedRun]:
    sql = _claim_sql.get(len(queues))
    if sql is None:
        sql = (
            "UPDATE tether_runs SET status = 'running', owner = ?, "
            "fencing_token = fencing_token + 1, available_at = ?, updated_at = ? "
            "WHERE run_id IN (SELECT run_id FROM tether_runs "
            f"WHERE queue IN ({_placeholders(len(queues))}) AND available_at <= ? "
            f"ORDER BY available_at LIMIT ?) RETURNING {_RUN_COLS}"
        )
        _claim_sql[len(queues)] = sql
    rows = list(conn.execute(sql, (worker_id, lease_expires, now, *queues, now, limit)))
    claimed = []
    for row in rows:
        run = _run(row)
        claimed.append(ClaimedRun(
            run=run,
            lease=Lease(run.run_id, worker_id, run.fencing_token),
            journal=_journal_read(conn, run.run_id),
        ))
    return claimed


def _check_lease(conn: apsw.Connection, lease: Lease) -> None:
    for _ in conn.execute(Q["lease_check"], (lease.run_id, lease.fencing_token)):
        return
    raise LeaseLost(lease.run_id, lease.fencing_token)


def _journal_append(conn: apsw.Connection, lease: Lease, e: JournalEntry) -> None:
    conn.execute(Q["journal_append"], (
        lease.run_id, e.position, e.kind, e.name, e.status, e.result, e.error, e.attempts,
        e.started_at, e.finished_at, e.next_attempt_at, e.args, lease.fencing_token,
    ))
    if conn.changes() == 1:
        return
    _check_lease(conn, lease)
    raise StoreError(
        f"run {lease.run_id!r}: position {e.position} already holds a final journal entry"
    )


def _run_finish(conn: apsw.Connection, lease: Lease, status: str, result: str | None,
                error: str | None, now: float) -> None:
    conn.execute(Q["run_finish"], (
        status, result, error, now, now, lease.run_id, lease.fencing_token,
    ))
    if conn.changes() != 1:
        raise LeaseLost(lease.run_id, lease.fencing_token)
    conn.execute(Q["run_wake_waiters"], (now, lease.run_id))


def _run_release(conn: apsw.Connection, lease: Lease, wait: Wait, now: float) -> None:
    conn.execute(Q["run_release"], (
        None, wait.available_at, wait.description, now, lease.run_id, lease.fencing_token,
        wait.signal, wait.child,
    ))
    if conn.changes() != 1:
        raise LeaseLost(lease.run_id, lease.fencing_token)


def _run_resume(conn: apsw.Connection, run_id: str, now: float) -> RunRecord:
    run = _run_get(conn, run_id)
    if run is None:
        raise RunNotFound(run_id)
    if run.status != "blocked":
        raise TetherError(f"run {run_id!r} is {run.status}, not blocked")
    conn.execute(Q["run_resume"], (run_id, now))
    return _run_get(conn, run_id)  # type: ignore[return-value]


def _run_set_status_info(conn: apsw.Connection, lease: Lease, info: str | None,
                         now: float) -> None:
    conn.execute(Q["run_set_status_info"], (info, now, lease.run_id, lease.fencing_token))
    if conn.changes() != 1:
        raise LeaseLost(lease.run_id, lease.fencing_token)


def _signal_send(conn: apsw.Connection, run_id: str, name: str, payload: str | None,
                 key: str | None, now: float) -> SignalSent:
    run = _run_get(conn, run_id)
    if run is None:
        raise RunNotFound(run_id)
    if run.status in ("completed", "failed", "cancelled"):
        # A retried send of a signal the run already got is not an error.
        known = conn.execute(Q["signal_find_key"], (run_id, key)).fetchall() if key else []
        if known:
            return SignalSent(signal_id=int(known[0][0]), created=False)
        raise SignalError(f"run {run_id!r} has ended ({run.status}); signal {name!r} not sent")
    conn.execute(Q["signal_insert"], (run_id, name, payload, key, now))
    if conn.changes() == 1:
        signal_id = conn.last_insert_rowid()
        created = True
    else:
        row: Any = conn.execute(Q["signal_find_key"], (run_id, key)).fetchall()[0]
        signal_id = int(row[0])
        created = False
    conn.execute(Q["signal_wake"], (run_id, name, now))
    return SignalSent(signal_id=signal_id, created=created)


def _signal_take(conn: apsw.Connection, lease: Lease, name: str, position: int,
                 deadline: float | None, now: float, timeout_error: str) -> JournalEntry | None:
    _check_lease(conn, lease)
    rows: list[Any] = conn.execute(Q["signal_oldest"], (lease.run_id, name)).fetchall()
    if rows:
        signal_id, payload = int(rows[0][0]), rows[0][1]
        conn.execute(Q["signal_consume"], (position, signal_id))
        entry = JournalEntry(position, "signal", name, "ok", result=payload, attempts=1,
                             finished_at=now)
    elif deadline is not None and now >= deadline:
        entry = JournalEntry(position, "signal", name, "error", error=timeout_error,
                             attempts=1, finished_at=now, next_attempt_at=deadline)
    else:
        return None
    _journal_append(conn, lease, entry)
    return entry


def _child_start(conn: apsw.Connection, lease: Lease, child: RunRecord,
                 entry: JournalEntry) -> RunRecord:
    _check_lease(conn, lease)
    stored, _ = _run_insert(conn, child)
    _journal_append(conn, lease, entry)
    return stored


def _run_children_cancel(conn: apsw.Connection, parent_run_id: str, now: float) -> list[str]:
    return [r[0] for r in conn.execute(Q["run_children_cancel"], (parent_run_id, now))]


def _run_cancel(conn: apsw.Connection, run_id: str, now: float) -> RunRecord:
    conn.execute(Q["run_cancel_blocked"], (run_id, now))
    conn.execute(Q["run_cancel"], (run_id, now))
    run = _run_get(conn, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def _lease_heartbeat(conn: apsw.Connection, worker_id: str, now: float,
                     lease_expires: float) -> HeartbeatResult:
    result = HeartbeatResult()
    for run_id, cancel in conn.execute(Q["lease_heartbeat"], (lease_expires, worker_id)):
        result.owned.add(run_id)
        if cancel:
            result.cancel_requested.add(run_id)
    conn.execute(Q["worker_touch"], (now, worker_id))
    return result


def _lease_expire_owner(conn: apsw.Connection, worker_id: str, now: float) -> int:
    conn.execute(Q["lease_expire_owner"], (now, worker_id))
    n: int = conn.changes()
    conn.execute(Q["worker_delete"], (worker_id,))
    return n


def _worker_register(conn: apsw.Connection, info: WorkerInfo) -> None:
    conn.execute(Q["worker_register"], (
        info.worker_id, info.hostname, info.pid, info.pid_start, info.queues,
        info.started_at, info.heartbeat_at,
    ))


def _worker_unregister(conn: apsw.Connection, worker_id: str, now: float) -> None:
    conn.execute(Q["worker_release_runs"], (now, now, worker_id))
    conn.execute(Q["worker_delete"], (worker_id,))


def _worker_list(conn: apsw.Connection) -> list[WorkerInfo]:
    return [WorkerInfo(*row) for row in conn.execute(Q["worker_list"])]


def _workflow_register(conn: apsw.Connection, workflows: dict[str, str], now: float) -> None:
    for name, queue_name in workflows.items():
        conn.execute(Q["workflow_register"], (name, queue_name, now))


def _workflow_list(conn: apsw.Connection) -> dict[str, str]:
    return {name: q for name, q in conn.execute(Q["workflow_list"])}


def _next_available_at(conn: apsw.Connection, queues: tuple[str, ...]) -> float | None:
    sql = (
        "SELECT MIN(available_at) FROM tether_runs "
        f"WHERE queue IN ({_placeholders(len(queues))}) AND available_at IS NOT NULL"
    )
    for (value,) in conn.execute(sql, queues):
        return value  # type: ignore[no-any-return]
    return None


if TYPE_CHECKING:

    def _conforms(s: SqliteStore) -> Store:
        return s
