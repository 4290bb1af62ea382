"""What only the PostgreSQL store has: migrations, schemas, query plans, round trips,
row locks that keep fencing and wake-ups exact, and recovery from dropped connections.

Faults here are real: backends terminated with ``pg_terminate_backend``, a TCP proxy
that goes away and comes back, row locks held by a second connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.engine.helpers import wait_for
from tether._types import EntryStatus, JournalEntry, Lease, OperationKind
from tether.errors import ConfigError, LeaseLost, StoreError, StoreUnavailable
from tether.store import FAIL_FAST, Wait, open_store
from tether.store._port import ChildrenFigures
from tether.store._sql import load_migrations
from tether.store.postgres import PostgresStore, _outage
from tether.store.postgres import _store as pg_store
from tether.store.postgres._config import TCP_DEFAULTS

from .conftest import LEASE, T0, cancel_close, entry, run_record, start_and_claim
from .rtproxy import RoundTripProxy

#: Every migration this code knows (other branches add theirs).
ALL_MIGRATIONS = load_migrations("tether.store.postgres")
NAMES = [f"{v:04d}_{n}" for v, n, _ in ALL_MIGRATIONS]

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(pg_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def raw(pg_url: str) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    """A second connection, outside the store, to hold locks and look at the tables."""
    conn = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


async def _blocked(task: asyncio.Task[object], seconds: float = 0.3) -> bool:
    await asyncio.sleep(seconds)
    return not task.done()


# -- binary array parameters ------------------------------------------------------------


@pytest.mark.parametrize(("wrap", "sql_type", "items"), [
    ("TextArray", "text[]", ["a", None, "h\u00e9llo \U0001f600", "", "x" * 70000]),
    ("TextArray", "text[]", []),
    ("TextArray", "text[]", [None, None]),
    ("Int4Array", "integer[]", [0, -1, 2**31 - 1, -(2**31)]),
    ("Int4Array", "integer[]", [7, None]),
    ("Int4Array", "integer[]", []),
    ("Int8Array", "bigint[]", [1, -(2**63), 2**63 - 1]),
    ("Float8Array", "float8[]", [1.5, -0.0, 1e300, 3, float("inf")]),
    ("Float8Array", "float8[]", [None, 2.5, None]),
])
async def test_array_parameters_reach_the_server_unchanged(
        raw: psycopg.AsyncConnection[object], wrap: str, sql_type: str,
        items: list[object]) -> None:
    """The store's own binary array dumpers (appends, ends, attempts) send what
    PostgreSQL reads back as the same values, NULLs and empty arrays included."""
    from tether.store.postgres import _arrays

    cur = await raw.execute(f"SELECT %b::{sql_type}", [getattr(_arrays, wrap)(items)])
    row = await cur.fetchone()
    assert row is not None and row[0] == items


async def test_an_array_value_out_of_range_is_a_data_error(
        raw: psycopg.AsyncConnection[object]) -> None:
    from tether.store.postgres._arrays import Int4Array

    with pytest.raises(psycopg.DataError):
        await raw.execute("SELECT %b::integer[]", [Int4Array([2**31])])


# -- connecting and migrating ----------------------------------------------------------


async def test_unreachable_server_raises_store_unavailable_naming_host_and_port() -> None:
    """Opening a store on a port nobody listens on fails at once with a one-line message:
    a refused connection is not waited on or retried up to the connect timeout (an hour
    here, so a wait would show as this test's own 60 s limit, never as a slow pass)."""
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/tether", connect_timeout=3600)
    with pytest.raises(StoreUnavailable) as err:
        async with asyncio.timeout(60):
            await store.open()
    message = str(err.value)
    assert "127.0.0.1:1" in message and "\n" not in message


@pytest.fixture
def limited_url(pg_url: str) -> Iterator[str]:
    """``pg_url`` as a role allowed one connection at a time (the server's answer is then
    the one a full server gives: SQLSTATE 53300, "too many connections")."""
    role = f"tether_one_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
        conn.execute(f'GRANT ALL ON DATABASE "{conninfo_to_dict(pg_url)["dbname"]}" TO {role}')
    try:
        parts = urlsplit(pg_url)
        host = parts.netloc.rsplit("@", 1)[-1]  # whoever the admin URL logs in as
        yield urlunsplit(parts._replace(netloc=f"{role}@{host}"))
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE usename = %s", [role])
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


async def test_open_waits_for_a_free_connection_slot(limited_url: str) -> None:
    """A server with no free connection slot is asked again (a one-shot command such as
    `tether cancel` does not fail because the server was full for a moment): the slot
    frees after 0.5 s and the store opens."""
    held = await psycopg.AsyncConnection.connect(limited_url)
    store = PostgresStore(limited_url, pool_min=0, connect_timeout=30)
    opening = asyncio.create_task(store.open())
    try:
        await asyncio.sleep(0.5)
        assert not opening.done()
        await held.close()
        async with asyncio.timeout(20):
            await opening
    finally:
        await held.close()
        await store.close()


async def test_a_server_full_for_longer_than_the_connect_timeout_is_unavailable(
        limited_url: str) -> None:
    """The wait for a slot ends at the connect timeout with a one-line StoreUnavailable
    that says why."""
    held = await psycopg.AsyncConnection.connect(limited_url)
    try:
        store = PostgresStore(limited_url, connect_timeout=1)
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="too many connections") as err:
            async with asyncio.timeout(30):
                await store.open()
        assert time.monotonic() - t0 >= 0.5  # it asked again before giving up
        assert "\n" not in str(err.value)
    finally:
        await held.close()


async def test_a_full_server_is_told_as_full_with_the_limit_to_look_at(
        limited_url: str) -> None:
    """An operator's one-shot command against a server at its connection limit: the
    message says there is no free slot and which limits to look at, without libpq's
    "FATAL:" (it said "is unavailable: FATAL:  sorry, too many clients already", as
    for a server that is down)."""
    held = await psycopg.AsyncConnection.connect(limited_url)
    try:
        store = PostgresStore(limited_url, connect_timeout=1)
        with pytest.raises(StoreUnavailable) as err:
            async with asyncio.timeout(30):
                await store.migration_status()
        message = str(err.value)
        assert "has no free connection slot after 1 s" in message, message
        assert "max_connections" in message and "pool_max" in message, message
        assert "FATAL" not in message and "unavailable" not in message, message
    finally:
        await held.close()


async def test_an_idle_pool_gives_back_the_connections_a_burst_opened(pg_url: str) -> None:
    """Two operations at once grow the pool to two connections; once one has stayed
    unused for a whole ``pool_max_idle`` period the pool closes it, and the server sees
    one pooled session again (an idle worker holds no more than it needs)."""
    store = PostgresStore(pg_url, pool_min=1, pool_max_idle=0.5)
    await store.open()
    try:
        pool = store._pool
        assert pool is not None
        await pool.wait()  # its first connection (a request before it would grow it too)
        async with pool.connection(), pool.connection():
            assert pool.get_stats()["pool_size"] >= 2

        async def pooled_sessions() -> int:
            async with await psycopg.AsyncConnection.connect(pg_url) as conn:
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND application_name = 'tether' "
                    "AND pid <> pg_backend_pid()")
                row = await cur.fetchone()
            assert row is not None
            return int(row[0])

        assert await pooled_sessions() >= 2
        await wait_for(lambda: pool.get_stats()["pool_size"] == 1, timeout=20,
                       what="pool shrunk")

        async def one_session() -> bool:
            return await pooled_sessions() == 1

        await wait_for(one_session, timeout=20, interval=0.1, what="session closed")
        assert await store.run_get("nope") is None  # the one left still serves
    finally:
        await store.close()


async def test_a_task_cancelled_while_it_gives_its_connection_back_loses_nothing(
        pg_url: str) -> None:
    """A task cancelled while its connection goes back to the pool (a draining worker
    cancels its claim loop; a stop cancels every loop) neither loses the connection nor
    the wake-up of the operation that waits for it. psycopg_pool hands a returned
    connection to the first waiting client under that client's lock; when the lock is
    taken (the client has just queued), the return suspends there, having taken the
    client off the queue: a cancellation then dropped both, and the waiting operation
    failed after ``pool_timeout`` although the pool had idle connections."""
    store = PostgresStore(pg_url, pool_min=1, pool_max=1, pool_timeout=3.0)
    await store.open()
    try:
        gate = asyncio.Event()

        async def holder() -> None:
            async with store._connection():
                await gate.wait()

        held = asyncio.create_task(holder())
        await asyncio.sleep(0.1)  # it holds the pool's one connection
        # In one pass: the waiter queues (its lock taken until its wait starts), then
        # the holder gives the connection back and suspends on that lock ...
        waiter = asyncio.create_task(store.run_get("nope"))
        gate.set()
        await asyncio.sleep(0)
        assert not held.done()
        held.cancel()  # ... and is cancelled there
        with contextlib.suppress(asyncio.CancelledError):
            await held
        assert await asyncio.wait_for(waiter, 10) is None  # served, not a PoolTimeout
        assert await store.run_get("nope") is None  # and the connection is still there
    finally:
        await store.close()


async def test_a_return_cancelled_behind_a_woken_pool_lock_waiter_loses_nothing(
        pg_url: str) -> None:
    """A connection given back while the pool's lock has just been released to a task
    not yet run (free, but handed over: asyncio's lock queues any other taker behind
    that task), its giver cancelled there, is not lost. The return was taken for one
    that cannot suspend (nobody waits for a connection, the lock not held) and ran in
    the giver's task: it suspended on the lock, the cancellation ended it, and the pool
    counted a connection it no longer had. A storm of cancelled operations lost one so
    about once in 30 (``test_a_storm_of_cancelled_operations_...``); a worker would
    lose a slot at each, until it starved."""
    store = PostgresStore(pg_url, pool_min=1, pool_max=1, pool_timeout=3.0)
    await store.open()
    try:
        pool, conn = await store._checkout()  # the pool's one connection, held
        lock = pool._lock
        await lock.acquire()  # (taken as psycopg_pool takes it: getconn, a return)

        async def next_taker() -> None:
            async with lock:
                pass

        taker = asyncio.create_task(next_taker())
        await asyncio.sleep(0)  # it waits for the lock
        giver = asyncio.create_task(store._put_back(pool, conn))
        lock.release()  # the lock is the taker's, which runs after the giver's first step
        await asyncio.sleep(0)
        assert not giver.done()  # the return waits behind the taker ...
        giver.cancel()  # ... and its task is cancelled there
        with contextlib.suppress(asyncio.CancelledError):
            await giver
        await taker

        def back() -> bool:
            stats = pool.get_stats()
            return bool(stats["pool_available"] == stats["pool_size"] == 1)

        await wait_for(back, timeout=10, what=f"connection back: {pool.get_stats()}")
        assert await asyncio.wait_for(store.run_get("nope"), 10) is None
    finally:
        await store.close()


async def test_a_storm_of_cancelled_operations_leaves_every_connection_in_the_pool(
        pg_url: str) -> None:
    """Operations started in bursts on a pool of two, a third of them cancelled at once,
    for 3 s: those not cancelled all succeed, every connection is back in the pool, and
    the next operation gets one at once. (Before connections went back out of the
    cancellation's reach, such a storm lost both within a second, and every operation
    after it failed after ``pool_timeout``.)"""
    store = PostgresStore(pg_url, pool_min=1, pool_max=2, pool_timeout=3.0)
    await store.open()
    try:
        rng = random.Random(7)
        failures: list[BaseException] = []
        tasks: set[asyncio.Task[None]] = set()

        async def op() -> None:
            try:
                await store.run_get("nope")
            except Exception as exc:  # (a cancellation is not an Exception)
                failures.append(exc)

        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            for _ in range(rng.randint(1, 6)):
                t = asyncio.create_task(op())
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            await asyncio.sleep(0)
            for t in list(tasks):
                if rng.random() < 0.3:
                    t.cancel()
            await asyncio.sleep(rng.choice([0, 0, 0.0005, 0.001]))
        await asyncio.gather(*tasks, return_exceptions=True)
        assert failures == []
        pool = store._pool
        assert pool is not None

        def all_back() -> bool:  # (one cancelled mid-query is replaced by a new one)
            stats = pool.get_stats()
            return bool(stats["pool_available"] == stats["pool_size"] >= 1)

        await wait_for(all_back, timeout=15, what=f"connections back: {pool.get_stats()}")
        assert await store.run_get("nope") is None
    finally:
        await store.close()



async def test_an_operation_cancelled_as_its_pipeline_starts_leaves_no_connection_in_it(
        pg_url: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction (BEGIN, statements, COMMIT in one pipeline) cancelled at each turn
    of the event loop from its start, on a pool of one: after each, the run it touches
    is read as it is, and psycopg_pool never finds a busy connection given back.

    psycopg yields to the loop after a wait that did not block once the loop has been
    busy for a few milliseconds (``MAX_BUSY_TIME``, set to 0 here: so every time), and
    a cancellation landing on the yield inside ``conn.pipeline()``'s entry left the
    connection in pipeline mode, its exit never run. The pool took it back (idle), and
    the next read on it was queued in the forgotten pipeline and answered before the
    server had: no rows, a run that exists read as not found (``RunNotFound`` just after
    a worker's stop, on a loaded machine); the pool then closed it, busy, with a
    warning ("closing returned connection ... pipeline=ON")."""
    import logging

    from psycopg import waiting

    monkeypatch.setattr(waiting, "MAX_BUSY_TIME", 0.0)
    caplog.set_level(logging.DEBUG, logger="tether.store.postgres")
    caplog.set_level(logging.DEBUG, logger="psycopg.pool")
    store = PostgresStore(pg_url, pool_min=1, pool_max=1, pool_timeout=10.0)
    await store.open()
    try:
        await store.run_insert(run=run_record("r"))
        for turns in range(12):
            op = asyncio.create_task(store.run_insert_many(runs=[run_record("r")]))
            for _ in range(turns):
                await asyncio.sleep(0)
            op.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await op
            for _ in range(2):  # (the first read of a forgotten pipeline answered no rows)
                stored = await store.run_get("r")
                assert stored is not None and stored.run_id == "r", f"cut at turn {turns}"
    finally:
        await store.close()
    cut = [r for r in caplog.records if r.name == "tether.store.postgres"
           and "in pipeline mode is closed" in r.getMessage()]
    assert cut, "no cancellation landed as a pipeline started"  # (the case is met)
    busy = [r.getMessage() for r in caplog.records if r.name == "psycopg.pool"
            and "closing returned connection" in r.getMessage()]
    assert busy == []


async def test_operations_cancelled_at_each_turn_leave_no_session_behind(
        pg_url: str, raw: psycopg.AsyncConnection[object],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg's defect (3.3: a task cancelled on the event-loop yield inside
    ``conn.pipeline()``'s entry leaves the connection in pipeline mode, its exit never
    run) is worked around where connections go back (``_unfit_to_reuse``): checked on
    the server. Transactions of each kind (a start, a claim, a signal: BEGIN, statements
    and COMMIT in one pipeline) cancelled at each turn of the event loop, psycopg
    yielding at every wait: afterwards the server holds no session of the store idle in
    a transaction or running a statement, and no more than the pool's connections; once
    the store is closed, none."""
    from psycopg import waiting

    monkeypatch.setattr(waiting, "MAX_BUSY_TIME", 0.0)
    store = PostgresStore(pg_url, pool_min=1, pool_max=2, pool_timeout=10.0)
    await store.open()

    async def sessions() -> dict[str, int]:
        cur = await raw.execute(
            "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' GROUP BY 1")
        return {str(k): int(n) for k, n in await cur.fetchall()}

    try:
        lease = (await start_and_claim(store, "held")).lease
        for n in range(40):
            await store.run_insert(run=run_record(f"w{n}", status="waiting"))
        ops: list[Callable[[int], Awaitable[object]]] = [
            lambda i: store.run_insert_many(runs=[run_record(f"m{i}")]),
            lambda i: store.run_claim(worker_id="w", queues=["q"], limit=1,
                                      now=T0 + 100, lease_seconds=30.0),
            lambda i: store.signal_send(run_id=f"w{i % 40}", name="go", payload="1",
                                        idempotency_key=f"k{i}", now=T0),
        ]
        cut = 0
        for turns in range(30):
            for i, make in enumerate(ops):
                op = asyncio.ensure_future(make(turns * 10 + i))
                for _ in range(turns):
                    await asyncio.sleep(0)
                if not op.done():
                    cut += 1
                op.cancel()
                with contextlib.suppress(asyncio.CancelledError, StoreError):
                    await op
        assert cut >= 30, cut  # (most were cut somewhere)
        assert store._pool is not None
        pool = store._pool

        def settled() -> bool:
            stats = pool.get_stats()
            return bool(stats["pool_available"] == stats["pool_size"] >= 1)

        await wait_for(settled, timeout=15, what=f"connections back: {pool.get_stats()}")
        assert (await store.run_get("held")) is not None and lease.fencing_token == 1
        found = await sessions()
        assert found.get("idle in transaction", 0) == 0, found
        assert found.get("idle in transaction (aborted)", 0) == 0, found
        assert found.get("active", 0) == 0, found
        assert sum(found.values()) <= 2, found
    finally:
        await store.close()
    for _ in range(200):  # (a backend ends a moment after its client closed)
        if not await sessions():
            break
        await asyncio.sleep(0.05)
    assert await sessions() == {}


_LEFT_OPEN = """
import asyncio, sys
from tether import App

async def main() -> None:
    app = App(sys.argv[1])
    # Eight reads at once grow the pool; the first one's RunNotFound ends main while
    # the pool is still opening connections, and nothing closes the app.
    await asyncio.gather(*(app.get_run(f"missing-{i}") for i in range(8)))

asyncio.run(main())
"""


def test_a_process_that_ends_with_the_store_open_exits(pg_url: str) -> None:
    """An uncaught exception ends ``asyncio.run`` with the store still open and its pool
    opening connections: the process exits with the error (psycopg_pool's connecting
    task, cancelled by the loop's shutdown, would otherwise try again forever)."""
    for _ in range(3):  # the hang needed a connect in flight; three chances to catch one
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", _LEFT_OPEN, pg_url], timeout=60,
                              capture_output=True, text=True)
        assert proc.returncode == 1, proc.stderr
        assert "RunNotFound: no run with id 'missing-" in proc.stderr
        assert time.monotonic() - t0 < 30


async def test_close_leaves_no_task_behind(pg_url: str) -> None:
    """A closed store leaves none of its tasks (the pool's guard included) running."""
    before = asyncio.all_tasks()
    store = PostgresStore(pg_url)
    await store.open()
    assert await store.run_get("nope") is None
    await store.close()
    await asyncio.sleep(0)
    left = {t.get_name() for t in asyncio.all_tasks() - before if not t.done()}
    assert not left


async def test_a_cancelled_close_is_cancelled_at_once_and_the_pool_still_closes(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A timeout around ``close`` cancels the caller at once (its cancellation is not
    swallowed); the closing goes on to the pool's end, and a second ``close`` waits for
    it instead of returning with the pool still open."""
    store = PostgresStore(pg_url)
    await store.open()
    assert await store.run_get("nope") is None
    pool = store._pool
    assert pool is not None
    released = store._release_held
    gate = asyncio.Event()

    async def held_up_release() -> None:
        await gate.wait()
        await released()

    monkeypatch.setattr(store, "_release_held", held_up_release)
    await cancel_close(store)
    assert not pool.closed  # still closing
    gate.set()
    await store.close()
    assert pool.closed and store._pool is None
    await store.close()  # and again: nothing left to do


async def test_open_migrates_a_fresh_database_and_is_idempotent(
        pg_url: str, raw: psycopg.AsyncConnection[object]) -> None:
    """Five stores opening at once against a fresh database migrate it exactly once."""
    stores = [PostgresStore(pg_url) for _ in range(5)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        cur = await raw.execute("SELECT version, name FROM tether.schema_version")
        assert await cur.fetchall() == [(v, n) for v, n, _ in ALL_MIGRATIONS]
        assert await stores[0].migration_status() == [(v, n, True)
                                                      for v, n, _ in ALL_MIGRATIONS]
        assert await stores[0].migrate() == []
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_without_auto_migration_open_refuses_a_schema_that_is_behind(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``migrate=False`` (or TETHER_AUTO_MIGRATE=0) makes ``open()`` name the fix;
    ``migrate()`` applies what is pending and reports it."""
    store = open_store(pg_url, migrate=False)
    assert isinstance(store, PostgresStore)
    with pytest.raises(ConfigError, match="tether db migrate"):
        await store.open()
    assert await store.migration_status() == [(v, n, False) for v, n, _ in ALL_MIGRATIONS]
    monkeypatch.setenv("TETHER_AUTO_MIGRATE", "0")
    with pytest.raises(ConfigError, match="no Tether store in PostgreSQL schema 'tether'"):
        await PostgresStore(pg_url).open()  # (an empty database: nothing applied yet)
    assert await store.migrate() == NAMES
    assert await store.migration_status() == [(v, n, True) for v, n, _ in ALL_MIGRATIONS]
    await store.open()
    await store.close()


async def test_migration_0008_on_runs_in_every_state_keeps_claims_and_listings(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 0008 rebuilds runs_claim and runs_status without running runs: on a
    populated store, the queued run, the timer that came due and the run whose lease
    expired are all claimed, oldest first, and every status still lists its runs."""
    from tether.store.postgres import _migrate

    every = _migrate.migrations
    monkeypatch.setattr(_migrate, "migrations",
                        lambda schema: [m for m in every(schema) if m[0] <= 7])
    old = PostgresStore(pg_url)
    await old.open()
    try:
        for run_id, at in (("expired", T0), ("timer", T0 + 1), ("done", T0 + 2),
                           ("running", T0 + 3)):
            await old.run_insert(run=run_record(run_id, now=at))
            claimed = await old.run_claim(worker_id="w1", queues=["q"], limit=1, now=at,
                                          lease_seconds=LEASE)
            if run_id == "timer":
                await old.run_release(lease=claimed[0].lease, wait=Wait(T0 + 5, "timer"),
                                      now=at)
            elif run_id == "done":
                await old.run_finish(lease=claimed[0].lease, status="completed",
                                     result="1", error=None, now=at)
        await old.run_insert(run=run_record("queued", now=T0 + 4))
    finally:
        await old.close()
    monkeypatch.setattr(_migrate, "migrations", every)
    new = PostgresStore(pg_url)
    await new.open()
    try:
        assert [r.run_id for r in await new.run_list(status="running")] == [
            "running", "expired"]
        assert [r.run_id for r in await new.run_list(status="waiting")] == ["timer"]
        assert [r.run_id for r in await new.run_list(status="queued")] == ["queued"]
        assert await new.next_available_at(queues=["q"]) == T0 + 4
        now = T0 + LEASE + 1  # "expired" lost its lease, "running" holds its own
        got = await new.run_claim(worker_id="w2", queues=["q"], limit=2, now=now,
                                  lease_seconds=LEASE)
        assert sorted(c.run.run_id for c in got) == ["queued", "timer"]
        got = await new.run_claim(worker_id="w2", queues=["q"], limit=10, now=now,
                                  lease_seconds=LEASE)
        assert [(c.run.run_id, c.run.fencing_token) for c in got] == [("expired", 2)]
        assert sorted(r.run_id for r in await new.run_list(status="running")) == [
            "expired", "queued", "running", "timer"]
        assert [r.run_id for r in await new.run_list(status="completed")] == ["done"]
    finally:
        await new.close()


async def test_schemas_are_isolated_tables_and_notifications(pg_url: str) -> None:
    """Two schemas in one database share nothing: not runs, not wake-ups."""
    a = open_store(f"{pg_url}?schema=team_a")
    b = PostgresStore(pg_url, schema="team_b")
    await a.open()
    await b.open()
    try:
        woken = asyncio.Event()
        unsubscribe = await b.subscribe(woken.set)
        await a.run_insert(run=run_record("r1"))
        assert await b.run_get("r1") is None and await a.run_get("r1") is not None
        await asyncio.sleep(0.3)
        assert not woken.is_set()
        await b.run_insert(run=run_record("r1"))
        await asyncio.wait_for(woken.wait(), 5)
        await unsubscribe()
    finally:
        await a.close()
        await b.close()


def test_bad_pool_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="pool bounds"):
        PostgresStore("postgresql://h/db", pool_min=3, pool_max=2)
    for idle in (0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="pool_max_idle"):
            PostgresStore("postgresql://h/db", pool_max_idle=idle)


def test_pool_options_are_url_parameters_too() -> None:
    """``tether worker --db URL`` takes no store options, so the pool's are URL query
    parameters as well (removed before connecting), read as the arguments are; a value
    given twice in the URL, or in the URL and as an argument, must be the same."""
    url = "postgresql://u@db.example:5432/app"
    store = PostgresStore(f"{url}?pool_min=2&pool_max=20&pool_timeout=2.5"
                          "&pool_max_idle=30&sslmode=disable")
    assert (store.pool_min, store.pool_max, store.pool_timeout, store.pool_max_idle) \
        == (2, 20, 2.5, 30.0)
    assert "pool" not in store.cfg.conninfo and "sslmode=disable" in store.cfg.conninfo
    default = PostgresStore(url)
    assert (default.pool_min, default.pool_max, default.pool_timeout,
            default.pool_max_idle) == (1, 10, 10.0, 60.0)
    # An argument equal to its default is still given: it must agree with the URL.
    assert PostgresStore(f"{url}?pool_max=20", pool_max=20).pool_max == 20
    assert PostgresStore(f"{url}?pool_max=20", pool_min=3).pool_min == 3
    for query, option in (("pool_max=20", {"pool_max": 10}),
                          ("pool_timeout=3", {"pool_timeout": 10.0}),
                          ("pool_max_idle=5", {"pool_max_idle": 60})):
        with pytest.raises(ConfigError, match=r"the URL says .*; pick one"):
            PostgresStore(f"{url}?{query}", **option)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="pool bounds: pool_min=5, pool_max=2"):
        PostgresStore(f"{url}?pool_min=5", pool_max=2)
    for query, message in (
            ("pool_max=0", "pool_max must be a whole number of at least 1, not '0'"),
            ("pool_max=2.5", "pool_max must be a whole number"),
            ("pool_max=", "pool_max must be a whole number"),
            ("pool_min=-1", "pool_min must be a whole number of at least 0"),
            ("pool_min=many", "pool_min must be a whole number"),
            ("pool_timeout=0", "pool_timeout must be a positive, finite number"),
            ("pool_max_idle=inf", "pool_max_idle must be a positive, finite number"),
            ("pool_max=3&pool_max=4", r"gives pool_max 2 times \('3', '4'\); give it once"),
            ("pool_maxx=3", r'invalid URI query parameter: "pool_maxx" \(neither a libpq '
             r"connection parameter nor a store option: schema, query_timeout, pool_min")):
        with pytest.raises(ConfigError, match=message):
            PostgresStore(f"{url}?{query}")
    with pytest.raises(ConfigError, match="pool_max must be a whole number"):
        PostgresStore(url, pool_max=True)
    assert PostgresStore(f"{url}?pool_max=3&pool_max=3").pool_max == 3


async def test_the_pool_is_sized_by_the_url(pg_url: str) -> None:
    """A store opened on a URL with pool options opens a pool of that size."""
    store = PostgresStore(f"{pg_url}?pool_min=3&pool_max=4&pool_timeout=1.5")
    await store.open()
    try:
        pool = store._pool
        assert pool is not None
        assert (pool.min_size, pool.max_size, pool.timeout) == (3, 4, 1.5)
        await pool.wait(5)  # (pool_min connections made at open)
        assert pool.get_stats()["pool_size"] == 3
    finally:
        await store.close()


def test_bad_schema_names_and_conflicts_are_config_errors() -> None:
    """The schema comes from the option or the URL, once, and must be a plain name."""
    with pytest.raises(ConfigError):
        PostgresStore("postgresql://h/db?schema=a", schema="b")
    with pytest.raises(ConfigError):
        PostgresStore("postgresql://h/db?schema=Robert'); DROP TABLE x;--")
    store = PostgresStore("postgresql://u@h:6543/db?schema=s1&sslmode=disable")
    assert store.schema == "s1" and "schema" not in store.cfg.conninfo
    assert "sslmode" in store.cfg.conninfo and store.cfg.where == "h:6543/db"
    # Spaces in libpq options survive (libpq decodes %20, not "+").
    spaced = PostgresStore("postgresql://h/db?options=-c%20work_mem%3D8MB&schema=s2")
    assert "-c work_mem=8MB" in spaced.cfg.conninfo


def test_tcp_keepalive_defaults_are_added_unless_the_url_sets_them() -> None:
    """Every connection gets keepalives and a TCP user timeout; a URL's own value wins."""
    info = conninfo_to_dict(PostgresStore("postgresql://h/db").cfg.conninfo)
    assert {k: info[k] for k in TCP_DEFAULTS} == {k: str(v) for k, v in TCP_DEFAULTS.items()}
    own = conninfo_to_dict(PostgresStore(
        "postgresql://h/db?keepalives=0&tcp_user_timeout=0&schema=s").cfg.conninfo)
    assert own["keepalives"] == "0" and own["tcp_user_timeout"] == "0"
    assert own["keepalives_idle"] == str(TCP_DEFAULTS["keepalives_idle"])


def _tcp_settings(conn: psycopg.AsyncConnection[object]) -> tuple[int, ...]:
    """(SO_KEEPALIVE, idle s, interval s, count, user timeout ms) of the live socket."""
    sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                *(sock.getsockopt(socket.IPPROTO_TCP, opt) for opt in (
                    socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT,
                    socket.TCP_USER_TIMEOUT)))
    finally:
        sock.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket options")
async def test_store_connections_carry_the_tcp_settings_on_their_sockets(pg_url: str) -> None:
    """Pooled, direct and listener connections have the defaults set on the socket by
    libpq; a value in the URL replaces only that setting."""
    if not conninfo_to_dict(pg_url).get("host", "").startswith(("127.", "localhost", "::1")):
        pytest.skip("needs a TCP connection")
    d = TCP_DEFAULTS
    default = (1, d["keepalives_idle"], d["keepalives_interval"], d["keepalives_count"],
               d["tcp_user_timeout"])
    store = PostgresStore(pg_url)
    await store.open()
    try:
        async with store._connection() as conn:
            assert _tcp_settings(conn) == default
        async with store._direct() as conn:
            assert _tcp_settings(conn) == default
        unsubscribe = await store.subscribe(lambda: None)
        await asyncio.wait_for(store._listener.listening.wait(), 10)
        assert store._listener._conn is not None
        assert _tcp_settings(store._listener._conn) == default
        await unsubscribe()
    finally:
        await store.close()
    own = PostgresStore(f"{pg_url}?keepalives_idle=7&tcp_user_timeout=5000")
    await own.open()
    try:
        async with own._connection() as conn:
            assert _tcp_settings(conn) == (1, 7, d["keepalives_interval"],
                                           d["keepalives_count"], 5000)
            params = conn.info.get_parameters()
            assert params["keepalives_idle"] == "7" and params["tcp_user_timeout"] == "5000"
            assert params["keepalives_count"] == str(d["keepalives_count"])
    finally:
        await own.close()


# -- query plans -------------------------------------------------------------------------


async def test_claim_and_journal_queries_use_indexes(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object]) -> None:
    """On a table of finished runs with a few runnable ones, claiming, loading the
    journals, taking a signal and listing the runs that have not settled never scan a
    whole table."""
    await raw.execute("""
        INSERT INTO tether.runs (run_id, workflow, queue, status, input, created_at,
                                 updated_at, available_at)
        SELECT 'r' || i, 'wf', 'q' || (i % 4), CASE WHEN i % 50 = 0 THEN 'queued'
               ELSE 'completed' END, '[]', i, i, CASE WHEN i % 50 = 0 THEN i END
        FROM generate_series(1, 20000) AS i;
        INSERT INTO tether.journal (run_id, position, kind, name, status, fencing_token)
        SELECT 'r' || i, p, 'step', 's', 'ok', 0
        FROM generate_series(1, 20000, 7) AS i, generate_series(0, 4) AS p;
        INSERT INTO tether.signals (run_id, name, created_at)
        SELECT 'r' || i, 'go', i FROM generate_series(1, 20000, 3) AS i;
        ANALYZE tether.runs; ANALYZE tether.journal; ANALYZE tether.signals;
    """)
    params = {"worker_id": "w", "queues": ["q1", "q2"], "limit": 10, "now": 1e9,
              "lease_expires": 1e9 + 30, "run_id": "r700", "fencing_token": 1, "name": "go",
              "position": 0, "deadline": None, "sent_by": None, "clock_now": 1e9,
              "timeout_error": "{}",
              "version": None, "workflows": ["wf"], "exclude": ["r7"],
              "takeover_before": 1e9 - 5}
    for name in ("run_claim", "run_claim_journals", "journal_read", "signal_take",
                 "next_available_at", "run_activity", "run_list_unsettled"):
        cur = await raw.execute("EXPLAIN " + pg._q[name], params)
        plan = "\n".join(r[0] for r in await cur.fetchall())
        assert "Seq Scan" not in plan, f"{name}:\n{plan}"
        assert "Index" in plan, f"{name}:\n{plan}"
    # A wait for several signals or children (the list form of wait_names): its release,
    # the wake-ups by a signal and by a child's end (run_wake_listed runs at every end).
    listed = {**params, "status": "completed", "description": "d", "available_at": None,
              "signal": "\x1fgo\x1fstop\x1f", "child": "\x1fr1\x1fr2\x1f",
              "channel": "c"}
    for name in ("run_release_listed", "child_lock_listed", "signal_wake",
                 "run_wake_listed"):
        cur = await raw.execute("EXPLAIN " + pg._q[name], listed)
        plan = "\n".join(r[0] for r in await cur.fetchall())
        assert "Seq Scan" not in plan, f"{name}:\n{plan}"
        assert "Index" in plan, f"{name}:\n{plan}"
    # With a limit on one of the queues: still no scan of the whole table (the held
    # count uses runs_held, the limited queue's pick runs_claim).
    await raw.execute("INSERT INTO tether.queue_limits VALUES ('q1', 3, 0); "
                      "ANALYZE tether.queue_limits")
    for name in ("run_claim_lock", "run_claim", "next_available_at"):
        cur = await raw.execute("EXPLAIN " + pg._q[name], params)
        plan = "\n".join(r[0] for r in await cur.fetchall())
        assert "Seq Scan on runs" not in plan, f"{name} with a limit:\n{plan}"


async def test_runs_list_by_workflow_and_a_later_page_by_status_use_indexes(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object]) -> None:
    """The runs list filtered by a workflow (run_search_workflow) reads runs_workflow
    (migration 0015) for every status but ``queued``, ``running`` and ``waiting``
    (runs_status, runs_held), with a cursor or not,
    a status too or not (none of these plans scans the table), and a page of one status
    from the middle of the store (run_search's cursor) is a range of runs_status:
    before, the first scanned every run (1.1 M runs: 0.25-0.85 s) and the second read
    every newer run of the status (0.33-0.52 s)."""
    await raw.execute("""
        INSERT INTO tether.runs (run_id, workflow, queue, status, input, created_at,
                                 updated_at)
        SELECT 'r' || i, CASE WHEN i % 100 = 0 THEN 'rare' ELSE 'wf' || (i % 3) END, 'q',
               CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'completed' END, '[]', i, i
        FROM generate_series(1, 20000) AS i;
        ANALYZE tether.runs;
    """)
    base = {"status": None, "queue": None, "parent": None, "text": None, "limit": 51,
            "before_at": None, "before_id": None}
    cursor = {"before_at": 10000.0, "before_id": "r10000"}
    for workflow in ("wf1", "rare"):
        for extra in ({}, cursor, {"status": "failed"}, {"status": "completed", **cursor},
                      {"status": "queued"}, {"status": "waiting"}):
            params = {**base, "workflow": workflow, **extra}
            cur = await raw.execute("EXPLAIN " + pg._q["run_search_workflow"], params)
            plan = "\n".join(str(r[0]) for r in await cur.fetchall())
            assert "Seq Scan" not in plan, f"{workflow} {extra}:\n{plan}"
            # (With a status too the planner may pick runs_status for a common workflow:
            # a range of one status, as good.)
            assert "runs_workflow" in plan or extra.get("status") in ("queued", "waiting") or (
                "status" in extra and workflow != "rare"), f"{workflow} {extra}:\n{plan}"
    params = {**base, "workflow": None, "status": "completed", **cursor}
    cur = await raw.execute("EXPLAIN " + pg._q["run_search"], params)
    plan = "\n".join(str(r[0]) for r in await cur.fetchall())
    assert re.search(r"Index Cond: .*created_at <=", plan), plan


async def test_the_children_of_many_runs_are_read_through_the_parent_index(
        pg_url: str, raw: psycopg.AsyncConnection[object]) -> None:
    """run_children_many (a run page's tree: the children of all the runs it draws at a
    level, in one round trip) reads runs_parent: the parents' children only, never every
    run; the runs drawn again by their key. Never a prepared statement (planned with its
    parents every time, as run_search with a filter): a generic plan guesses the
    children of any ten parents, and a store of a few large families would make that a
    scan of every run. One connection, so every call goes through it."""
    store = PostgresStore(pg_url, pool_min=1, pool_max=1)
    await store.open()
    try:
        await raw.execute("""
            INSERT INTO tether.runs (run_id, workflow, queue, status, input, created_at,
                                     updated_at, parent_run_id, metrics)
            SELECT 'r' || i, 'wf', 'q',
                   CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'completed' END,
                   '[]', i, i, CASE WHEN i % 20 = 0 THEN 'p' || (i % 300) END,
                   '{"cost.usd": 0.5, "tokens.input": 10}'
            FROM generate_series(1, 20000) AS i;
            ANALYZE tether.runs;
        """)
        cur = await raw.execute("EXPLAIN " + store._q["run_children_many"],
                                {"parents": [f"p{i}" for i in range(0, 300, 3)], "limit": 2})
        plan = "\n".join(str(r[0]) for r in await cur.fetchall())
        assert "Seq Scan" not in plan and "runs_parent" in plan and "runs_pkey" in plan, plan
        for _ in range(12):
            got = await store.run_children_many(parents=["p20", "p0"], limit=2)
        assert store._pool is not None
        async with store._pool.connection() as conn:
            cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
            prepared = [str(r[0]) for r in await cur.fetchall()]
    finally:
        await store.close()
    assert not [p for p in prepared if "parent_run_id = ANY" in p], prepared
    assert [r.run_id for r in got["p20"].runs] == ["r19820", "r19520"]
    assert got["p20"].rest == {"completed": ChildrenFigures(65, 32.5, 650.0)}
    assert got["p0"].rest == {"failed": ChildrenFigures(64, 32.0, 640.0)}


async def test_the_workflow_listing_is_planned_with_its_values_every_time(
        pg_url: str) -> None:
    """run_search with a workflow is never a prepared statement: after five executions
    psycopg prepares one, and PostgreSQL may then plan it once for any workflow (a
    generic plan), guessing one run per workflow and status and so reading and sorting
    them all: a common workflow's page after a few of a rare one's took 90-135 ms
    instead of 3-4 on 1.1 M runs. One connection, so every call goes through it."""
    store = PostgresStore(pg_url, pool_min=1, pool_max=1)
    await store.open()
    try:
        for i in range(12):
            await store.run_search(workflow="wf", status="completed" if i % 2 else None,
                                   limit=5)
        assert store._pool is not None
        async with store._pool.connection() as conn:
            cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
            prepared = [str(r[0]) for r in await cur.fetchall()]
    finally:
        await store.close()
    assert not [p for p in prepared if "workflow = $" in p], prepared


async def test_the_filtered_listings_are_planned_with_their_values_every_time(
        pg_url: str) -> None:
    """run_search with any filter (a status, a queue, a parent, ``q``) is never a
    prepared statement, as with a workflow: run_search's generic plan, with its
    ``%(x)s IS NULL OR col = %(x)s`` filters, is a scan of every run whatever the filter
    (1.1 M runs: a status or parent page 0.24-0.42 s instead of 0.5-1.7 ms), and
    PostgreSQL takes it once a filter's own plans are estimated to cost more (a page of
    the common queue did). A dashboard polling on one pooled connection repeats exactly
    these calls. One connection, so every call goes through it."""
    store = PostgresStore(pg_url, pool_min=1, pool_max=1)
    await store.open()
    try:
        await store.run_insert(run=run_record("kid", parent="p", parent_position=0))
        for i in range(12):
            cursor = (T0 + i, "") if i % 2 else None
            await store.run_search(status="completed", limit=5, before=cursor)
            await store.run_search(parent="p", limit=5, before=cursor)
            await store.run_search(queue="q", limit=5, before=cursor)
            await store.run_search(queue="q", status="queued", limit=5)
            await store.run_search(text="ki", limit=5, before=cursor)
        assert store._pool is not None
        async with store._pool.connection() as conn:
            cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
            prepared = [str(r[0]) for r in await cur.fetchall()]
    finally:
        await store.close()
    assert not [p for p in prepared if re.search(r"(status|queue|parent_run_id) = \$", p)
                or "strpos" in p], prepared


async def test_runs_list_by_queue_reads_indexes_not_every_run(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs list filtered by a queue alone (or with a status) is run_search_queue:
    the newest runs of the queue in each ended status through runs_queue (migration
    0017), of the queued and waiting ones through runs_status, read until the queue's
    are found, and runs_held for ``running``, merged, with a cursor or not; none of
    these plans scans the table. Before, run_search scanned every run for a queue (1.1 M
    runs: 0.24-0.99 s; ``queue=default`` 0.8-0.99 s, then 4-8 ms through runs_status);
    then a queue with no run read every run's entry of runs_status (0.38 s)."""
    await raw.execute("""
        INSERT INTO tether.runs (run_id, workflow, queue, status, input, created_at,
                                 updated_at, available_at)
        SELECT 'r' || i, 'wf', CASE WHEN i % 10 = 0 THEN 'bulk' ELSE 'q' END,
               CASE WHEN i % 50 = 3 THEN 'failed' WHEN i > 19900 THEN 'queued'
                    WHEN i > 19890 THEN 'running' ELSE 'completed' END, '[]', i, i,
               CASE WHEN i > 19890 THEN i END
        FROM generate_series(1, 20000) AS i;
        ANALYZE tether.runs;
    """)
    base = {"status": None, "workflow": None, "parent": None, "text": None, "limit": 51,
            "before_at": None, "before_id": None}
    cursor = {"before_at": 10000.0, "before_id": "r10000"}
    for queue in ("q", "bulk", "absent"):
        for extra in ({}, cursor, {"status": "completed"}, {"status": "failed", **cursor},
                      {"status": "running"}, {"status": "queued"}, {"status": "waiting"}):
            params = {**base, "queue": queue, **extra}
            cur = await raw.execute("EXPLAIN " + pg._q["run_search_queue"], params)
            plan = "\n".join(str(r[0]) for r in await cur.fetchall())
            assert "Seq Scan" not in plan, f"{queue} {extra}:\n{plan}"
            # (the queued and waiting runs of a queue: runs_status, or for a queue the
            # statistics say has few, runs_claim, which holds them too; the ended runs
            # of the common queue, 90 % of them, may be read through runs_status too,
            # a range of the status read in order that finds a page as soon)
            index = {"running": "runs_held", "queued": "runs_(status|claim)",
                     "waiting": "runs_(status|claim)"}.get(
                extra.get("status", ""), "runs_(queue|status)" if queue == "q" else
                "runs_queue")
            assert re.search(index, plan), f"{queue} {extra}:\n{plan}"
    # Through the store: a queue (and a status) is run_search_queue; with a parent or q
    # run_search serves it (runs_parent; a substring is no index range).
    used: list[str] = []
    one = pg._one

    async def spy(name: str, params: Any, **kw: Any) -> Any:
        used.append(name)
        return await one(name, params, **kw)

    monkeypatch.setattr(pg, "_one", spy)
    page = await pg.run_search(queue="bulk", limit=3)
    assert [r.run_id for r in page] == ["r20000", "r19990", "r19980"]
    await pg.run_search(queue="q", status="failed", limit=3)
    await pg.run_search(queue="q", parent="p", limit=3)
    await pg.run_search(queue="q", text="1", limit=3)
    assert used == ["run_search_queue", "run_search_queue", "run_search", "run_search"]


async def test_a_claim_reads_in_order_when_the_statistics_are_stale(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """20,000 runnable runs in a table never analyzed (the planner's estimate: about one
    row): the claim and next_available_at still read runs_claim in order and stop early,
    instead of a bitmap scan that fetches and sorts every one, because their
    transactions turn bitmap scans off first (ordered_plan); once analyzed,
    next_available_at does not read the whole table either. Through the store, a claim
    takes the oldest runs and the earliest time is found, each in such a transaction."""
    await raw.execute("""
        INSERT INTO tether.runs (run_id, workflow, queue, status, input, created_at,
                                 updated_at, available_at)
        SELECT 'r' || i, 'wf', 'q', 'queued', '[]', i, i, i
        FROM generate_series(1, 20000) AS i
    """)
    params = {"worker_id": "w", "queues": ["q"], "limit": 10, "now": 1e9,
              "lease_expires": 1e9 + 30, "version": None, "workflows": None,
              "exclude": None, "takeover_before": None}

    async def plan(name: str, ordered: bool = True) -> str:
        async with raw.transaction(force_rollback=True):  # the setting ends with it
            if ordered:
                await raw.execute(pg._q["ordered_plan"])
            cur = await raw.execute("EXPLAIN " + pg._q[name], params)
            return "\n".join(str(r[0]) for r in await cur.fetchall())

    for name in ("run_claim", "next_available_at"):
        text = await plan(name)
        assert "Bitmap" not in text and "Sort Key: r.available_at" not in text, text
        assert "Index Scan using runs_claim" in text, text
    await raw.execute("ANALYZE tether.runs")
    text = await plan("next_available_at", ordered=False)
    assert "Seq Scan" not in text and "Bitmap" not in text, text

    steps: list[list[str]] = []
    txn = pg._txn

    async def spy(todo: Any, **kw: Any) -> Any:
        steps.append([name for name, _ in todo])
        return await txn(todo, **kw)

    monkeypatch.setattr(pg, "_txn", spy)
    claimed = await pg.run_claim(worker_id="w", queues=["q"], limit=3, now=1e9,
                                 lease_seconds=LEASE)
    assert [c.run.run_id for c in claimed] == ["r1", "r2", "r3"]
    assert await pg.next_available_at(queues=["q"]) == 4.0
    assert steps == [["ordered_plan", "run_claim_lock", "run_claim", "run_claim_journals"],
                     ["ordered_plan", "next_available_at"]]


async def test_a_signal_wait_with_nothing_to_take_locks_and_writes_nothing(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object]) -> None:
    """signal_take with no signal sent and its deadline not passed locks nothing (the
    run's row keeps its xmax: a row lock would set it) and journals nothing, so its
    commit has nothing to flush; it still refuses a stale lease. With a signal sent it
    locks the row, journals the signal and consumes it."""
    lease = (await start_and_claim(pg, "s1")).lease

    async def xmax() -> object:
        cur = await raw.execute("SELECT xmax::text FROM tether.runs WHERE run_id = 's1'")
        row = await cur.fetchone()
        assert row is not None
        return row[0]

    def take(on: Lease, deadline: float | None = None) -> Any:
        return pg.signal_take(lease=on, name="go", position=0, deadline=deadline, now=T0,
                              timeout_error="{}")

    before = await xmax()
    assert await take(lease) is None
    assert await take(lease, deadline=T0 + 60) is None
    assert await xmax() == before
    assert await pg.journal_read("s1") == []
    with pytest.raises(LeaseLost):
        await take(Lease("s1", lease.worker_id, lease.fencing_token + 1))

    await pg.signal_send(run_id="s1", name="go", payload='"yes"', idempotency_key=None,
                         now=T0)
    taken = await take(lease)
    assert taken is not None and taken.status == EntryStatus.OK and taken.result == '"yes"'
    assert await xmax() != before
    assert [(e.position, e.status) for e in await pg.journal_read("s1")] == [
        (0, EntryStatus.OK)]
    assert await take(lease) is None  # consumed: nothing left to take


async def test_a_signal_take_waits_for_a_takeover_in_flight_and_refuses_its_stale_lease(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object]) -> None:
    """A signal waits and another transaction holds the run's row (a takeover in
    flight): signal_take waits for it, then finds the fencing token changed, raises
    LeaseLost and leaves the signal for the new owner, with nothing journaled."""
    lease = (await start_and_claim(pg, "s2")).lease
    await pg.signal_send(run_id="s2", name="go", payload='"yes"', idempotency_key=None,
                         now=T0)
    async with raw.transaction():
        await raw.execute("SELECT 1 FROM tether.runs WHERE run_id = 's2' FOR UPDATE")
        take = asyncio.create_task(pg.signal_take(
            lease=lease, name="go", position=0, deadline=None, now=T0, timeout_error="{}"))
        assert await _blocked(take)
        await raw.execute("UPDATE tether.runs SET fencing_token = fencing_token + 1 "
                          "WHERE run_id = 's2'")
    with pytest.raises(LeaseLost):
        await take
    assert await pg.journal_read("s2") == []
    cur = await raw.execute("SELECT count(*) FROM tether.signals "
                            "WHERE run_id = 's2' AND consumed_position IS NULL")
    assert await cur.fetchone() == (1,)


# -- round trips and group commit ---------------------------------------------------------


async def test_every_operation_costs_one_round_trip(pg_url: str) -> None:
    """Counted on the wire: each store operation sends one Sync (or one simple query)."""
    proxy = await RoundTripProxy().start()
    store = PostgresStore(proxy.url(pg_url), pool_max=1)
    await store.open()
    try:
        counts: dict[str, int] = {}

        async def measure(label: str, op: object) -> None:
            proxy.reset()
            await op  # type: ignore[misc]
            counts[label] = proxy.round_trips

        # Warm up: the pool's connection, and each statement prepared server-side.
        for i in range(7):
            lease = (await start_and_claim(store, f"warm{i}")).lease
            await store.journal_append(lease=lease, entry=entry(0))
            await store.run_get(f"warm{i}")
            await store.run_finish(lease=lease, status="completed", result="1", error=None,
                                   now=T0)
        await measure("run_insert", store.run_insert(run=run_record("r1")))
        claimed = await store.run_claim(worker_id="w", queues=["q"], limit=5, now=T0,
                                        lease_seconds=LEASE)
        lease = claimed[0].lease
        await measure("journal_append", store.journal_append(lease=lease, entry=entry(0)))
        await measure("run_get", store.run_get("r1"))
        await measure("journal_read", store.journal_read("r1"))
        await measure("signal_send", store.signal_send(run_id="r1", name="go", payload="1",
                                                       idempotency_key="k", now=T0))
        await measure("signal_take", store.signal_take(
            lease=lease, name="go", position=1, deadline=None, now=T0, timeout_error="{}"))
        await measure("child_start", store.child_start(
            lease=lease, child=run_record("c1", parent="r1", queue="kids"),
            entry=entry(2, kind="child_start", name="c1")))
        await measure("run_release", store.run_release(
            lease=lease, wait=Wait(T0 + 5, "timer"), now=T0))
        proxy.reset()
        claimed = await store.run_claim(worker_id="w", queues=["q"], limit=5, now=T0 + 5,
                                        lease_seconds=LEASE)
        counts["run_claim (with journal)"] = proxy.round_trips
        assert len(claimed[0].journal) == 3
        lease = claimed[0].lease
        await measure("lease_heartbeat", store.lease_heartbeat(worker_id="w", now=T0 + 6,
                                                               lease_seconds=LEASE))
        await measure("run_set_status_info", store.run_set_status_info(
            lease=lease, info="1", now=T0 + 6))
        await measure("run_finish", store.run_finish(lease=lease, status="completed",
                                                     result="1", error=None, now=T0 + 7))
        await measure("run_cancel", store.run_cancel(run_id="c1", now=T0 + 8))
        await measure("run_children_cancel", store.run_children_cancel(parent_run_id="r1",
                                                                       now=T0 + 8))
        # Migration 0002: shared state and limits.
        lease = (await start_and_claim(store, "m1", queue="m")).lease
        await measure("run_metrics_set", store.run_metrics_set(
            lease=lease, metrics='{"tokens": 3}', now=T0 + 9))
        await measure("blob_put", store.blob_put(blobs={f"k{i}": "x" for i in range(50)}))
        await measure("blob_get", store.blob_get(keys=[f"k{i}" for i in range(60)]))
        await measure("kv_cas", store.kv_cas(key="b", value="open", version=None, now=T0))
        await measure("kv_get", store.kv_get(key="b"))
        await measure("rate_acquire", store.rate_acquire(key="rpm", limit=5, period=60,
                                                         amount=1, now=T0))
        await measure("queue_limit_set", store.queue_limit_set(queue="lim", limit=2, now=T0))
        await measure("queue_limits", store.queue_limits())
        await measure("run_publish (3 parts)", store.run_publish(run_id="m1",
                                                                 data="y" * 20_000))
        for i in range(3):
            await store.run_insert(run=run_record(f"l{i}", queue="lim"))
        proxy.reset()
        limited = await store.run_claim(worker_id="w", queues=["lim", "q"], limit=5,
                                        now=T0 + 10, lease_seconds=LEASE)
        counts["run_claim (limited queue)"] = proxy.round_trips
        assert len(limited) == 2
        await measure("next_available_at", store.next_available_at(queues=["lim", "q"]))
        assert counts == dict.fromkeys(counts, 1), counts
    finally:
        await store.close()
        await proxy.close()


async def test_concurrent_appends_share_transactions(pg_url: str) -> None:
    """200 runs appending at once are written in a handful of transactions."""
    proxy = await RoundTripProxy().start()
    store = PostgresStore(proxy.url(pg_url))
    await store.open()
    try:
        for i in range(200):
            await store.run_insert(run=run_record(f"r{i}"))
        claimed = await store.run_claim(worker_id="w", queues=["q"], limit=200, now=T0,
                                        lease_seconds=LEASE)
        assert len(claimed) == 200
        batches_before = store._writer.batches
        proxy.reset()
        await asyncio.gather(*(store.journal_append(lease=c.lease, entry=entry(0))
                               for c in claimed))
        assert store._writer.batches - batches_before <= 3
        assert proxy.round_trips <= 3
    finally:
        await store.close()
        await proxy.close()


async def test_batches_of_appends_go_through_libpq_on_the_writers_kept_connection(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object]) -> None:
    """A batch of appends that is one statement (no texts or metrics before it, no entry
    twice) is sent as a lone append is: through libpq on the connection the writer keeps,
    not checked out of the pool for each batch. 20 runs appending 6 entries each, one
    after the other, all at once: batch after batch on that one connection; every entry
    and its op event written once; a stale lease among them is LeaseLost, an append over
    a final entry a StoreError, and neither holds up the others."""
    for i in range(20):
        await pg.run_insert(run=run_record(f"r{i:02}"))
    claimed = await pg.run_claim(worker_id="w", queues=["q"], limit=20, now=T0,
                                 lease_seconds=LEASE)
    assert len(claimed) == 20
    # (a final entry at 3 that the run's own append there does not match)
    await pg.journal_append(lease=claimed[1].lease, entry=entry(3, result="0"))
    stale = Lease(claimed[0].lease.run_id, "w", claimed[0].lease.fencing_token - 1)
    pool = pg._pool
    assert pool is not None
    requests = pool.get_stats().get("requests_num", 0)
    batches = pg._writer.batches

    async def steps(lease: Lease) -> None:
        for position in range(6):
            await pg.journal_append(lease=lease, entry=entry(position))

    got = await asyncio.gather(*(steps(stale if i == 0 else c.lease)
                                 for i, c in enumerate(claimed)), return_exceptions=True)
    assert isinstance(got[0], LeaseLost)
    assert isinstance(got[1], StoreError) and "final" in str(got[1]), got[1]
    assert got[2:] == [None] * 18
    batches = pg._writer.batches - batches
    requests = pool.get_stats().get("requests_num", 0) - requests
    assert batches >= 6
    # (the pool: the kept connection, and the reads that told the refusals apart)
    assert requests <= 4, (batches, requests)
    for c in claimed[2:]:
        assert [e.position for e in await pg.journal_read(run_id=c.run.run_id)] == [*range(6)]
    assert [e.position for e in await pg.journal_read(run_id=claimed[0].run.run_id)] == []
    cur = await raw.execute(
        f"SELECT run_id, count(*), count(DISTINCT data) FROM {pg.schema}.run_events "
        "WHERE kind = 'o' GROUP BY run_id ORDER BY run_id")
    events = await cur.fetchall()
    assert events[0] == (claimed[1].run.run_id, 4, 4)  # 0, 1, 2, then 3 refused
    assert events[1:] == [(c.run.run_id, 6, 6) for c in claimed[2:]]


async def test_an_entry_the_server_refuses_in_a_batch_fails_alone(pg: PostgresStore) -> None:
    """A batch sent through libpq whose statement the server refuses (a NUL byte in one
    entry's text) is written entry by entry: only that append fails, and the next batch
    goes out on the writer's connection as before."""
    for i in range(5):
        await pg.run_insert(run=run_record(f"r{i}"))
    claimed = await pg.run_claim(worker_id="w", queues=["q"], limit=5, now=T0,
                                 lease_seconds=LEASE)
    bad = entry(0, result="x\x00y")
    got = await asyncio.gather(*(pg.journal_append(lease=c.lease,
                                                   entry=bad if i == 2 else entry(0))
                                 for i, c in enumerate(claimed)), return_exceptions=True)
    assert isinstance(got[2], StoreError), got
    assert [g for i, g in enumerate(got) if i != 2] == [None] * 4
    assert await asyncio.gather(*(pg.journal_append(lease=c.lease, entry=entry(1))
                                  for c in claimed)) == [None] * 5
    assert [len(await pg.journal_read(c.run.run_id)) for c in claimed] == [2, 2, 1, 2, 2]


async def test_concurrent_metrics_and_texts_share_transactions(pg_url: str) -> None:
    """What durable LLM calls of many runs write besides their journal entries (each
    run's metrics, the texts of its prompt) is group-committed too: 100 runs writing at
    once take a few round trips. A stale lease among them loses only its own metrics;
    texts shared by runs are stored once, each run recorded as referencing them; a text
    the server refuses (a NUL byte) fails only its own call."""
    from tether.errors import TetherError

    proxy = await RoundTripProxy().start()
    store = PostgresStore(proxy.url(pg_url))
    await store.open()
    try:
        for i in range(100):
            await store.run_insert(run=run_record(f"r{i:03}"))
        claimed = await store.run_claim(worker_id="w", queues=["q"], limit=100, now=T0,
                                        lease_seconds=LEASE)
        assert len(claimed) == 100
        stale = Lease(claimed[7].lease.run_id, "w", claimed[7].lease.fencing_token - 1)
        leases = [stale if i == 7 else c.lease for i, c in enumerate(claimed)]
        proxy.reset()
        got = await asyncio.gather(
            *(store.run_metrics_set(lease=lease, metrics=f'{{"n": {i}}}', now=T0)
              for i, lease in enumerate(leases)), return_exceptions=True)
        assert proxy.round_trips <= 3
        assert isinstance(got[7], LeaseLost)
        assert [g for i, g in enumerate(got) if i != 7] == [None] * 99
        runs = {r.run_id: r for r in await store.run_get_many([c.run.run_id for c in claimed])}
        assert runs[claimed[3].run.run_id].metrics == {"n": 3}
        assert runs[claimed[7].run.run_id].metrics == {}

        proxy.reset()
        shared = {"sys": "the system prompt"}
        got = await asyncio.gather(
            *(store.blob_put(blobs={**shared, f"u{i}": f"user {i}"}, run_id=c.run.run_id)
              for i, c in enumerate(claimed)),
            store.blob_put(blobs={"bad": "x\x00y"}, run_id=claimed[0].run.run_id),
            return_exceptions=True)
        assert got[:100] == [None] * 100 and isinstance(got[100], TetherError)
        assert await store.blob_get(keys=["sys", "u0", "u99", "bad"]) == {
            "sys": "the system prompt", "u0": "user 0", "u99": "user 99"}
        async with store._connection() as conn:
            cur = await conn.execute(
                f"SELECT count(*) FROM {store.schema}.blob_refs WHERE key = 'sys'")
            assert (await cur.fetchone()) == (100,)
    finally:
        await store.close()
        await proxy.close()


async def test_a_batch_of_appends_is_prepared_and_its_generic_plan_looks_runs_up_by_key(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object]) -> None:
    """The batch statement is prepared (parsed and planned once per connection), so a
    generic plan made while runs is tiny may be the one used later at any size: it must
    look each entry's run up by primary key, never scan or hash every running run."""
    import re

    for i in range(3):
        await pg.run_insert(run=run_record(f"r{i}"))
    claimed = await pg.run_claim(worker_id="w", queues=["q"], limit=3, now=T0,
                                 lease_seconds=LEASE)
    # Entries out of run_id order (rows are locked in run_id order by the statement).
    await asyncio.gather(*(pg.journal_append(lease=c.lease, entry=entry(0))
                           for c in reversed(claimed)))
    for c in claimed:
        assert [e.position for e in await pg.journal_read(run_id=c.run.run_id)] == [0]
    # The generic plan, forced, on this near-empty table.
    numbered = iter(range(1, 100))
    sql, n = re.subn(r"%\(\w+\)b", lambda _: f"${next(numbered)}", pg._q["journal_append"])
    await raw.execute(f"PREPARE probe AS {sql}")
    await raw.execute("SET plan_cache_mode = force_generic_plan")
    cur = await raw.execute("EXPLAIN EXECUTE probe(" + ", ".join(["NULL"] * n) + ")")
    plan = "\n".join(str(r[0]) for r in await cur.fetchall())
    assert "Index Scan using runs_pkey" in plan, plan
    assert "Seq Scan on runs" not in plan and "Hash Join" not in plan, plan
    # The entries in run_id order feed the lookups: rows are locked in that order.
    assert "Nested Loop" in plan and "Sort Key: a.run_id" in plan, plan


async def test_concurrent_starts_share_transactions(pg_url: str) -> None:
    """200 runs started at once (``run_insert``, as concurrent ``App.start`` calls) are
    written in a handful of transactions, and each caller learns whether its insert
    created the run: an id started twice is created once, an existing id is not."""
    proxy = await RoundTripProxy().start()
    store = PostgresStore(proxy.url(pg_url))
    await store.open()
    try:
        await store.run_insert(run=run_record("old", workflow="a"))
        batches_before = store._writer.batches
        proxy.reset()
        records = [run_record(f"r{i}") for i in range(200)]
        records += [run_record("r7", workflow="b"), run_record("old", workflow="c")]
        got = await asyncio.gather(*(store.run_insert(run=r) for r in records))
        assert store._writer.batches - batches_before <= 3
        assert proxy.round_trips <= 3
        assert [(r.run_id, r.workflow, created) for r, created in got[:3]] == [
            ("r0", "wf", True), ("r1", "wf", True), ("r2", "wf", True)]
        assert all(created for _, created in got[:200])
        assert [(r.run_id, r.workflow, created) for r, created in got[200:]] == [
            ("r7", "wf", False), ("old", "a", False)]
        assert len(await store.run_list(limit=500)) == 201
    finally:
        await store.close()
        await proxy.close()


async def test_a_start_the_server_refuses_fails_alone(pg: PostgresStore) -> None:
    """A batch of starts with one the server refuses (a NUL byte in its input): the
    others are started, the refused one gets the error."""
    from tether.errors import TetherError

    bad = run_record("bad")
    bad.input = "x\x00y"
    batches_before = pg._writer.batches
    results = await asyncio.gather(
        *(pg.run_insert(run=r) for r in [run_record("a"), bad, run_record("b")]),
        return_exceptions=True)
    assert pg._writer.batches == batches_before + 1  # one batch, written one by one
    assert isinstance(results[1], TetherError)
    assert [r[0].run_id for r in (results[0], results[2])] == ["a", "b"]  # type: ignore[index]
    assert sorted(r.run_id for r in await pg.run_list()) == ["a", "b"]


# -- the lone append through libpq (store/postgres/_raw.py) ---------------------------------


def test_the_lone_appends_encoder_matches_the_generic_one() -> None:
    """The store's hand-written encoder of a lone append gives the bytes the generic
    encoder gives for the same parameters by name, NULLs included."""
    from tether._types import Lease
    from tether.store._sql import entry_params
    from tether.store.postgres._store import _append_one_values

    store = PostgresStore("postgresql://u@h/db")
    lease = Lease("r\u00e9", "w", 2**40)
    full = JournalEntry(position=7, kind=OperationKind.STEP, name="n", status=EntryStatus.OK,
                        result="1", error='{"e": 1}', attempts=3, started_at=1.25,
                        finished_at=-0.0, next_attempt_at=float("inf"), args="[]")
    bare = JournalEntry(position=0, kind=OperationKind.STEP, name="", status=EntryStatus.PENDING)
    for e in (full, bare):
        assert _append_one_values(lease, e, "utf-8") == store._append_one.values(
            entry_params(lease, e), "utf-8")


@pytest.mark.parametrize("pool_max", [1, 2])  # 2: the writer keeps its connection
async def test_a_lone_append_keeps_every_field_and_survives_deallocate_all(
        pg_url: str, pool_max: int) -> None:
    """The prepared lone append writes each field as given (texts, integers, floats,
    NULLs), and after the server forgot its prepared statements (DEALLOCATE ALL, which
    psycopg sends after a ROLLBACK) it prepares it again instead of failing. A
    connection the writer kept goes back to the pool once the writer is idle."""
    store = PostgresStore(pg_url, pool_min=1, pool_max=pool_max)
    await store.open()
    try:
        lease = (await start_and_claim(store, "r1")).lease
        first = JournalEntry(position=0, kind=OperationKind.STEP, name="h\u00e9 \U0001f600",
                             status=EntryStatus.OK,
                             result='{"x": 1}', error=None, attempts=2**31 - 1,
                             started_at=1.5e9 + 0.123456789, finished_at=-0.0,
                             next_attempt_at=None, args="[1]")
        await store.journal_append(lease=lease, entry=first)
        await asyncio.sleep(0.05)
        assert store._held.conn is None
        conns = [(await store._checkout())[1] for _ in range(pool_max)]  # every connection
        names: set[str] = set()
        for conn in conns:
            cur = await conn.execute("SELECT name FROM pg_prepared_statements")
            names.update(r[0] for r in await cur.fetchall())
            await conn.execute("DEALLOCATE ALL")
        assert "tether_append_one" in names
        for conn in conns:
            await store._pool.putconn(conn)  # type: ignore[union-attr]
        await store.journal_append(lease=lease, entry=entry(1))
        journal = await store.journal_read("r1")
        assert journal == [first, entry(1)]
        assert str(journal[0].finished_at) == "-0.0"
    finally:
        await store.close()


async def test_a_lone_append_the_server_refuses_is_a_store_error(pg: PostgresStore) -> None:
    """An entry the server refuses (a NUL byte in a text) fails that append with
    StoreError, not StoreUnavailable, and the connection serves the next one."""
    lease = (await start_and_claim(pg, "r1")).lease
    with pytest.raises(StoreError) as caught:
        await pg.journal_append(lease=lease, entry=entry(0, result="x\x00y"))
    assert not isinstance(caught.value, StoreUnavailable)
    await pg.journal_append(lease=lease, entry=entry(0))
    assert len(await pg.journal_read("r1")) == 1


async def test_a_lone_append_whose_commit_fails_is_an_error(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object]) -> None:
    """The statement succeeds and returns its row, then the implicit transaction's
    commit fails (a deferred constraint trigger): the append raises, as psycopg's own
    execute does, and nothing is stored."""
    await raw.execute("""
        CREATE FUNCTION tether.refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.result = '"refuse"' THEN RAISE EXCEPTION 'refused at commit'; END IF;
            RETURN NULL;
        END $$""")
    await raw.execute("""
        CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON tether.journal
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tether.refuse_at_commit()""")
    lease = (await start_and_claim(pg, "r1")).lease
    with pytest.raises(StoreError, match="refused at commit"):
        await pg.journal_append(lease=lease, entry=entry(0, result='"refuse"'))
    assert await pg.journal_read("r1") == []
    await pg.journal_append(lease=lease, entry=entry(0))
    assert len(await pg.journal_read("r1")) == 1


async def test_a_kept_connection_the_server_closes_is_replaced_without_an_error(
        pg_url: str, raw: psycopg.AsyncConnection[object]) -> None:
    """The connection the writer keeps between lone appends is terminated while nothing
    is in flight: its reader sees the server's goodbye, and the next append runs on a
    fresh connection instead of failing (as a checkout skips a dead idle connection)."""
    store = PostgresStore(pg_url, pool_min=1, pool_max=2)
    await store.open()
    try:
        lease = (await start_and_claim(store, "r1")).lease
        _, conn = await store._checkout()
        store._held.attach(conn)  # as the writer keeps it in the middle of a run's steps
        await raw.execute("SELECT pg_terminate_backend(%s, 5000)", (conn.info.backend_pid,))
        deadline = time.monotonic() + 5
        while not store._held.broken:
            assert time.monotonic() < deadline, "the kept connection's reader saw nothing"
            await asyncio.sleep(0.01)
        await store.journal_append(lease=lease, entry=entry(0))
        assert [e.position for e in await store.journal_read("r1")] == [0]
    finally:
        await store.close()


async def _waits_on_a_lock(raw: psycopg.AsyncConnection[object], pid: int) -> None:
    for _ in range(500):
        cur = await raw.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                (pid,))
        row = await cur.fetchone()
        if row is not None and row[0] == "Lock":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited on the lock")


async def test_a_kept_connection_lost_while_preparing_raises_its_own_error(
        pg_url: str, raw: psycopg.AsyncConnection[object]) -> None:
    """The kept connection's backend is terminated while it prepares a statement (held
    up by a lock): the error is the connection's ("terminating connection due to
    administrator command"). libpq had closed the socket on the failed read, and the
    kept connection's reader, registered again on its number, raised "[Errno 9] Bad file
    descriptor" in its place: the reason a worker's log gave for a server restart."""
    from tether.store.postgres._raw import Held, Prepared

    await raw.execute("CREATE TABLE h_locked (x integer)")
    conn = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    held = Held()
    try:
        held.attach(conn)
        stmt = Prepared("h_count", "SELECT count(*) FROM h_locked WHERE x = %(x)s",
                        {"x": "integer"})
        async with raw.transaction():
            await raw.execute("LOCK TABLE h_locked IN ACCESS EXCLUSIVE MODE")
            task = asyncio.create_task(stmt.execute(conn, {"x": 1}, held=held))
            await _waits_on_a_lock(raw, conn.info.backend_pid)
            await raw.execute("SELECT pg_terminate_backend(%s, 5000)", (conn.info.backend_pid,))
            with pytest.raises(psycopg.OperationalError, match="terminating connection"):
                await task
        assert held.broken
        held.detach()
    finally:
        await conn.close()


async def test_a_kept_connection_lost_in_flight_leaves_no_reader_on_its_socket(
        pg_url: str, raw: psycopg.AsyncConnection[object]) -> None:
    """The kept connection's backend is terminated while a statement waits for its
    answer: libpq closes the socket as it reads the end, and the next connection made
    takes its number. Its reader stayed registered on that number until the writer let
    the connection go: a connection made meanwhile failed to ("connection socket
    closed", told as a failed connection attempt of a server that was up)."""
    from tether.store.postgres._raw import Held, Prepared

    await raw.execute("CREATE TABLE h_locked (x integer)")
    conn = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    held = Held()
    other: psycopg.AsyncConnection[Any] | None = None
    try:
        held.attach(conn)
        fd = conn.pgconn.socket
        stmt = Prepared("h_count", "SELECT count(*) FROM h_locked WHERE x = %(x)s",
                        {"x": "integer"})
        assert (await stmt.execute(conn, {"x": 1}, held=held)).get_value(0, 0) == b"0"
        async with raw.transaction():
            await raw.execute("LOCK TABLE h_locked IN ACCESS EXCLUSIVE MODE")
            task = asyncio.create_task(stmt.execute(conn, {"x": 1}, held=held))
            await _waits_on_a_lock(raw, conn.info.backend_pid)
            await raw.execute("SELECT pg_terminate_backend(%s, 5000)", (conn.info.backend_pid,))
            with pytest.raises(psycopg.OperationalError):
                await task
        other = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
        assert other.pgconn.socket == fd  # (the number reused: what the test is about)
        assert await (await other.execute("SELECT 1")).fetchone() == (1,)
        assert held.broken
        held.detach()  # (and letting the lost one go leaves the new one's reader alone)
        assert await (await other.execute("SELECT 2")).fetchone() == (2,)
    finally:
        if other is not None:
            await other.close()
        await conn.close()


@pytest.mark.parametrize("pool_max", [1, 2])
async def test_a_lone_append_whose_connection_dies_in_flight_is_store_unavailable(
        pg_url: str, raw: psycopg.AsyncConnection[object], pool_max: int) -> None:
    """The backend running an append (held up by a row lock) is terminated: the append
    raises StoreUnavailable, and the next one succeeds on a new connection."""
    store = PostgresStore(pg_url, pool_min=1, pool_max=pool_max)
    await store.open()
    try:
        lease = (await start_and_claim(store, "r1")).lease
        await store.journal_append(lease=lease, entry=entry(0))
        async with raw.transaction():
            await raw.execute("SELECT 1 FROM tether.runs WHERE run_id = 'r1' FOR UPDATE")
            append = asyncio.create_task(store.journal_append(lease=lease, entry=entry(1)))
            assert await _blocked(append)
            assert await _terminate(raw, "tether") >= 1
            with pytest.raises(StoreUnavailable):
                await append
        await store.journal_append(lease=lease, entry=entry(1))
        assert [e.position for e in await store.journal_read("r1")] == [0, 1]
    finally:
        await store.close()


# -- inline appends: a sequential run's step without the writer's task ------------------------


async def _inline_ready(store: PostgresStore, run_id: str) -> Lease:
    """A claimed run whose next lone append goes inline: the first one goes through the
    writer (which takes its connection), the caller resumes before the writer does and
    appends again at once, as a sequential run's next step does."""
    lease = (await start_and_claim(store, run_id)).lease
    await store.journal_append(lease=lease, entry=entry(0))
    before = store.inline_appends
    store._inline_rtt = min(store._inline_rtt, 0.001)  # (see the test below)
    await store.journal_append(lease=lease, entry=entry(1))
    assert store.inline_appends == before + 1
    return lease


async def test_a_sequential_runs_appends_go_inline_and_stay_durable(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object]) -> None:
    lease = await _inline_ready(pg, "r1")
    for pos in range(2, 10):
        # (On a loaded machine one slow answer can lift the running mean of round trips
        # past the point where appends leave the inline path, by design; that is tested
        # on its own below. Here every answer counts as quick.)
        pg._inline_rtt = min(pg._inline_rtt, 0.001)
        await pg.journal_append(lease=lease, entry=entry(pos))
    assert pg.inline_appends >= 9
    cur = await raw.execute("SELECT position FROM tether.journal WHERE run_id = 'r1' "
                            "ORDER BY position")  # another connection: committed rows
    assert [r[0] for r in await cur.fetchall()] == list(range(10))
    # The run's events were written by the same statement, readable once it committed.
    assert len(await pg.run_events_read(run_id="r1", after=None, limit=100)) >= 10


async def test_a_lone_append_longer_than_the_socket_takes_at_once_is_written(
        pg_url: str) -> None:
    """psycopg's connections are in libpq's non-blocking mode: the statement of a lone
    append (sent through libpq directly, ``_raw``) longer than the socket took at once
    was never sent whole, so the server waited for its end and the store for its answer
    (for ever; with a deadline, a failed write and a replay of the step, again and
    again). The writer's path writes the rest as the socket drains; such an append is
    not written inline, which would block the event loop for it."""
    store = PostgresStore(pg_url, query_timeout=20.0)
    await store.open()
    try:
        lease = await _inline_ready(store, "r1")
        inline = store.inline_appends
        size = 16 << 20
        for pos in (2, 3):
            store._inline_rtt = min(store._inline_rtt, 0.001)
            big = entry(pos, result='"' + "x" * size + '"')
            await asyncio.wait_for(store.journal_append(lease=lease, entry=big), 30)
        assert store.inline_appends == inline
        journal = await store.journal_read("r1")
        assert [len(e.result or "") for e in journal][2:] == [size + 2] * 2
    finally:
        await store.close()


async def test_answers_too_slow_to_block_for_turn_inline_appends_off(
        pg: PostgresStore) -> None:
    """A server whose answers take longer than half the inline wait (a distant one):
    appends go through the writer, and inline ones are tried again as the mean decays."""
    lease = await _inline_ready(pg, "r1")
    pg._inline_rtt = pg_store._INLINE_WAIT  # as if answers took that long
    before = pg.inline_appends
    for pos in range(2, 6):
        await pg.journal_append(lease=lease, entry=entry(pos))
    assert pg.inline_appends == before
    assert pg._inline_rtt < pg_store._INLINE_WAIT
    assert [e.position for e in await pg.journal_read("r1")] == list(range(6))


async def test_an_inline_append_refused_by_fencing_is_lease_lost(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object]) -> None:
    lease = await _inline_ready(pg, "r1")
    await raw.execute("UPDATE tether.runs SET fencing_token = fencing_token + 1 "
                      "WHERE run_id = 'r1'")
    with pytest.raises(LeaseLost):
        await pg.journal_append(lease=lease, entry=entry(2))
    assert [e.position for e in await pg.journal_read("r1")] == [0, 1]


@contextlib.asynccontextmanager
async def _held_up(pg: PostgresStore, raw: psycopg.AsyncConnection[object],
                   lease: Lease) -> AsyncIterator[asyncio.Task[None]]:
    """An inline append (position 2) whose answer a row lock on the run holds up past
    the inline wait, as a task; the lock goes when the block ends."""
    async with raw.transaction():
        await raw.execute("SELECT 1 FROM tether.runs WHERE run_id = %s FOR UPDATE",
                          (lease.run_id,))
        late = asyncio.create_task(pg.journal_append(lease=lease, entry=entry(2)))
        assert await _blocked(late)  # type: ignore[arg-type]
        assert pg._inline_late is not None  # sent inline, its answer awaited
        yield late


async def test_an_inline_append_answered_late_is_awaited_and_the_writer_waits_for_it(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer outlives the inline wait: the step waits for it without blocking the
    event loop, and the writer, which needs the same connection for another run's lone
    append, waits until it is in."""
    monkeypatch.setattr(pg_store, "_INLINE_WAIT", 0.02)
    lease = await _inline_ready(pg, "r1")
    other = (await start_and_claim(pg, "r2")).lease
    before = pg.inline_appends
    async with _held_up(pg, raw, lease) as late:
        queued = asyncio.create_task(pg.journal_append(lease=other, entry=entry(0)))
        assert await _blocked(queued, 0.2)  # type: ignore[arg-type]
    await asyncio.wait_for(asyncio.gather(late, queued), 10)
    assert pg.inline_appends == before + 1
    assert [e.position for e in await pg.journal_read("r1")] == [0, 1, 2]
    assert [e.position for e in await pg.journal_read("r2")] == [0]


async def test_an_inline_append_cancelled_while_late_leaves_a_working_store(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Cancelled with its statement in flight: the connection is replaced (the store
    closes it busy as it gives it back, so psycopg_pool has no busy connection to warn
    about: "closing returned connection", at each worker stop that cut a statement
    short), the statement's fate is the server's (it commits if it got the row before
    its connection closed), and the next append works."""
    import logging

    caplog.set_level(logging.DEBUG, logger="psycopg.pool")
    monkeypatch.setattr(pg_store, "_INLINE_WAIT", 0.02)
    lease = await _inline_ready(pg, "r1")
    async with _held_up(pg, raw, lease) as late:
        late.cancel()
        with pytest.raises(asyncio.CancelledError):
            await late
        assert pg._inline_late is None
    await pg.journal_append(lease=lease, entry=entry(3))
    assert [e.position for e in await pg.journal_read("r1")] in ([0, 1, 2, 3], [0, 1, 3])
    await pg.journal_append(lease=lease, entry=entry(4))
    assert [e.position for e in await pg.journal_read("r1")][-2:] == [3, 4]
    assert [r.getMessage() for r in caplog.records if r.name == "psycopg.pool"
            and r.levelno >= logging.WARNING] == []


async def test_an_inline_append_whose_connection_dies_late_is_store_unavailable(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_store, "_INLINE_WAIT", 0.02)
    lease = await _inline_ready(pg, "r1")
    async with _held_up(pg, raw, lease) as late:
        assert await _terminate(raw, "tether") >= 1
        with pytest.raises(StoreUnavailable):
            await late
    await pg.journal_append(lease=lease, entry=entry(2))
    assert [e.position for e in await pg.journal_read("r1")] == [0, 1, 2]


# -- row locks: fencing and wake-ups under concurrency -----------------------------------------


async def test_a_stale_append_waits_for_the_takeover_and_is_refused(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object]) -> None:
    """An append racing a takeover that has not committed yet waits for it, re-checks
    the fencing token and writes nothing."""
    lease = (await start_and_claim(pg, "r1")).lease
    async with raw.transaction():
        await raw.execute("UPDATE tether.runs SET fencing_token = fencing_token + 1 "
                          "WHERE run_id = 'r1'")
        append = asyncio.create_task(pg.journal_append(lease=lease, entry=entry(0)))
        assert await _blocked(append)  # type: ignore[arg-type]
    with pytest.raises(LeaseLost):
        await append
    assert await pg.journal_read("r1") == []


async def test_a_claim_skips_a_run_with_a_write_in_flight(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object]) -> None:
    """A takeover never waits for, and never overtakes, an uncommitted write: it skips
    the run until that write committed."""
    await start_and_claim(pg, "r1")
    expired = T0 + LEASE + 1
    async with raw.transaction():
        await raw.execute("SELECT 1 FROM tether.runs WHERE run_id = 'r1' FOR SHARE")
        assert await pg.run_claim(worker_id="w2", queues=["q"], limit=1, now=expired,
                                  lease_seconds=LEASE) == []
    claimed = await pg.run_claim(worker_id="w2", queues=["q"], limit=1, now=expired,
                                 lease_seconds=LEASE)
    assert [c.lease.fencing_token for c in claimed] == [2]


async def test_release_and_signal_at_once_lose_no_wake_up(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object]) -> None:
    """A release waiting for a signal and that signal, both queued behind one lock,
    leave the run claimable whichever goes first."""
    lease = (await start_and_claim(pg, "r1")).lease
    async with raw.transaction():
        await raw.execute("SELECT 1 FROM tether.runs WHERE run_id = 'r1' FOR NO KEY UPDATE")
        release = asyncio.create_task(pg.run_release(
            lease=lease, wait=Wait(None, "signal go", signal="go"), now=T0 + 1))
        send = asyncio.create_task(pg.signal_send(run_id="r1", name="go", payload=None,
                                                  idempotency_key=None, now=T0 + 1))
        assert await _blocked(release) and await _blocked(send)  # type: ignore[arg-type]
    await asyncio.gather(release, send)
    run = await pg.run_get("r1")
    assert run is not None and run.status == "waiting" and run.available_at == T0 + 1


async def test_release_and_child_end_at_once_lose_no_wake_up(
        pg: PostgresStore, raw: psycopg.AsyncConnection[object]) -> None:
    """A parent releasing to wait for a child while the child ends: the parent is
    claimable whichever commits first."""
    parent = (await start_and_claim(pg, "p")).lease
    await pg.child_start(lease=parent, child=run_record("c", queue="kids", parent="p"),
                         entry=entry(0, kind="child_start", name="c"))
    child = (await pg.run_claim(worker_id="w2", queues=["kids"], limit=1, now=T0,
                                lease_seconds=LEASE))[0].lease
    async with raw.transaction():
        await raw.execute("SELECT 1 FROM tether.runs WHERE run_id = 'c' FOR UPDATE")
        release = asyncio.create_task(pg.run_release(
            lease=parent, wait=Wait(None, "child c", child="c"), now=T0 + 1))
        finish = asyncio.create_task(pg.run_finish(lease=child, status="completed",
                                                   result="1", error=None, now=T0 + 1))
        assert await _blocked(release) and await _blocked(finish)  # type: ignore[arg-type]
    await asyncio.gather(release, finish)
    run = await pg.run_get("p")
    assert run is not None and run.status == "waiting" and run.available_at == T0 + 1


# -- dropped connections ----------------------------------------------------------------------


async def _terminate(raw: psycopg.AsyncConnection[object], application_name: str) -> int:
    cur = await raw.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = %s AND pid <> pg_backend_pid()", (application_name,))
    pids = [r[0] for r in await cur.fetchall()]
    for pid in pids:
        await raw.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    return len(pids)


async def test_pool_drops_terminated_connections_without_failing(
        pg_url: str, raw: psycopg.AsyncConnection[object]) -> None:
    """After the server closed every pooled connection (as on a restart), operations
    find out on checkout, without a round trip, and succeed on fresh connections."""
    store = PostgresStore(pg_url, pool_min=3, pool_max=3)
    await store.open()
    try:
        lease = (await start_and_claim(store, "r1")).lease
        await asyncio.gather(*(store.run_get("r1") for _ in range(6)))
        assert await _terminate(raw, "tether") >= 1
        await asyncio.sleep(0.1)
        await store.journal_append(lease=lease, entry=entry(0))
        assert (await store.run_get("r1")) is not None
        assert len(await store.journal_read("r1")) == 1
    finally:
        await store.close()


async def test_store_unavailable_while_the_server_is_gone_then_recovers(pg_url: str) -> None:
    """With the server unreachable, operations raise StoreUnavailable naming it; once it
    is back the pool reconnects by itself."""
    proxy = await RoundTripProxy().start()
    store = PostgresStore(proxy.url(pg_url), pool_timeout=1.0)
    await store.open()
    try:
        await store.run_insert(run=run_record("r1"))
        port = proxy.port
        await proxy.close()
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
            await store.run_get("r1")
        proxy = RoundTripProxy()
        proxy._server = await asyncio.start_server(proxy._serve, "127.0.0.1", port)
        proxy.port = port
        deadline = time.monotonic() + 20
        while True:
            try:
                assert await store.run_get("r1") is not None
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the pool did not reconnect"
                await asyncio.sleep(0.2)
    finally:
        await store.close()
        await proxy.close()


class _GoneServer:
    """A store behind a proxy to the server, holding run ``r1``; ``gone()`` stops the
    proxy listening and cuts its connections (the server went away), ``back()`` listens
    again on the same port."""

    def __init__(self, pg_url: str, **options: Any) -> None:
        self.pg_url = pg_url
        self.options = options
        self.proxy = RoundTripProxy()

    async def __aenter__(self) -> _GoneServer:
        await self.proxy.start()
        self.port = self.proxy.port
        self.store = PostgresStore(self.proxy.url(self.pg_url), **self.options)
        await self.store.open()
        await self.store.run_insert(run=run_record("r1"))
        return self

    async def gone(self) -> None:
        await self.proxy.close()

    async def back(self) -> None:
        self.proxy = await RoundTripProxy().start(self.port)

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()
        await self.proxy.close()


@pytest.mark.slow
async def test_after_a_long_outage_the_pool_reconnects_soon_after_the_server_is_back(
        pg_url: str) -> None:
    """psycopg_pool retries a failed connection with a backoff that doubles up to its
    ``reconnect_timeout`` (5 minutes by default): after 20 s of outage its next try was
    up to 16 s away, and the store answered ~10 s after the server was back. The store
    gives a try up after ``connect_timeout`` and the next operation starts a new one."""
    async with _GoneServer(pg_url, pool_timeout=1.0, connect_timeout=1.0) as server:
        store = server.store
        await server.gone()
        end = time.monotonic() + 20
        while time.monotonic() < end:  # operations go on failing, as a worker's would
            with pytest.raises(StoreUnavailable):
                await store.run_get("r1")
            await asyncio.sleep(0.5)
        await server.back()
        back = time.monotonic()
        while True:
            try:
                assert await store.run_get("r1") is not None
                break
            except StoreUnavailable:
                await asyncio.sleep(0.2)
        assert time.monotonic() - back < 5, time.monotonic() - back


async def test_callers_waiting_through_an_outage_are_served_soon_after_it_ends(
        pg_url: str) -> None:
    """Eight callers (a worker's calls) wait for a connection through an 8 s outage (a
    proxy that stops listening and cuts its connections, then listens again on the same
    port). psycopg_pool tried each broken connection again after 1, 2 and 2 s and then
    gave it up (``reconnect_timeout``: the store's ``connect_timeout``); a caller that
    was waiting then got nothing until its ``pool_timeout`` ended, since only a new
    caller makes the pool connect again (here: 30 s; in the measurements, 0.1 to 4.5 s
    after the server's return, with callers coming and going). Now each connection
    tries again every ``RETRY_EVERY`` (0.5 s) while a caller waits, and the attempts of
    all of them together are spaced (``ATTEMPT_SPACING``): about 2 a second, not 16."""
    async with _GoneServer(pg_url, pool_min=8, pool_max=8, pool_timeout=30.0,
                           connect_timeout=2.0) as server:
        store = server.store
        assert store._pool is not None
        await store._pool.wait(10)  # (none still connecting through the proxy as it goes)
        await asyncio.gather(*(store.run_get("r1") for _ in range(8)))
        await server.gone()

        async def call() -> Any:
            while True:
                try:
                    return await store.run_get("r1")
                except StoreUnavailable:  # (a pooled connection the proxy was closing)
                    await asyncio.sleep(0.1)

        waiting = [asyncio.ensure_future(call()) for _ in range(8)]
        await asyncio.sleep(1.0)
        failed_at_1s = store._outage.failures
        assert failed_at_1s >= 1
        await asyncio.sleep(7.0)
        rate = (store._outage.failures - failed_at_1s) / 7.0
        assert not any(w.done() for w in waiting), [w for w in waiting if w.done()]
        await server.back()
        # (About 0.5 s here; generous for a shared machine.)
        done, _ = await asyncio.wait(waiting, timeout=4.0)
        assert len(done) == 8, "callers waiting through the outage were not served"
        assert all(w.result() is not None for w in waiting)
        assert rate <= 3.5, f"{rate:.1f} connection attempts a second while down"


async def test_with_no_caller_waiting_the_pool_stops_trying_to_connect(
        pg_url: str) -> None:
    """A connection that failed to connect tries again only while a caller waits for
    one: once the last caller gave up (its ``pool_timeout``), the pool gives it up
    after ``connect_timeout`` and makes no more attempts until the next caller.
    (psycopg_pool keeps a caller that gave up in its queue, marked: it counts as gone.)"""
    async with _GoneServer(pg_url, pool_timeout=1.0, connect_timeout=2.0) as server:
        store = server.store
        await server.gone()
        for _ in range(3):  # (the first may take a pooled connection the proxy closes)
            with pytest.raises(StoreUnavailable):
                await store.run_get("r1")
        await asyncio.sleep(3.0)  # connect_timeout and a margin: given up
        failed = store._outage.failures
        await asyncio.sleep(2.0)
        assert store._outage.failures == failed, "the pool kept trying with nobody waiting"
        with pytest.raises(StoreUnavailable):  # the next caller starts a new try at once
            await store.run_get("r1")
        assert store._outage.failures > failed
        await server.back()
        assert await store.run_get("r1") is not None


async def _fail_fast(call: Any) -> Any:
    """``await call()`` as a request of ``tether serve`` makes it."""
    token = FAIL_FAST.set(True)
    try:
        return await call()
    finally:
        FAIL_FAST.reset(token)


async def test_while_the_server_is_down_a_fail_fast_caller_is_told_at_once(
        pg_url: str) -> None:
    """The server goes away (a proxy in front of it stops listening). A ``FAIL_FAST``
    caller (an HTTP request) gets ``StoreUnavailable`` as soon as the pool's attempt to
    connect fails, and at once after that, while probes try the server about once a
    second; any other caller (a worker) still waits for the pool, and so rides through
    an outage shorter than ``pool_timeout``. Back, the server serves both within a probe."""
    async with _GoneServer(pg_url, pool_timeout=3.0, connect_timeout=1.0) as server:
        store = server.store
        await server.gone()
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable) as first:
            await _fail_fast(lambda: store.run_get("r1"))
        # (It may take a pooled connection whose socket the proxy is still closing:
        # "server closed the connection unexpectedly"; else the refused attempt.)
        assert time.monotonic() - t0 < 1.5, f"the first call waited for the pool: {first}"
        t0 = time.monotonic()
        calls = 0
        while time.monotonic() - t0 < 2.5:  # a UI polling hard for 2.5 s
            with pytest.raises(StoreUnavailable) as info:
                await _fail_fast(lambda: store.run_get("r1"))
            calls += 1
            await asyncio.sleep(0.01)
        assert re.search(r"unavailable: Connection refused \(no new connection for \d+ s\)",
                         str(info.value)), info.value
        assert calls > 20, calls  # each answered without waiting (the pool's wait: 3 s)
        # Probes about once a second, each a connection attempt (the pool may retry
        # once within it): a handful, not one per call.
        assert 2 <= store._outage.failures <= 10, store._outage.failures
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="pool timeout"):
            await store.run_get("r1")  # a worker's call waits for the pool
        assert time.monotonic() - t0 > 2.0
        # A worker's call started during the outage succeeds when the server is back
        # within the pool's timeout.
        waiting = asyncio.ensure_future(store.run_get("r1"))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await server.back()
        assert (await waiting) is not None
        # (The worker's call brought a connection back: the outage is over at once.)
        assert not store._outage.down
        assert await _fail_fast(lambda: store.run_get("r1")) is not None


async def test_a_fail_fast_callers_group_committed_writes_fail_at_once_while_down(
        pg_url: str) -> None:
    """A start (``run_insert``) and texts (``blob_put``) go through the group commit,
    whose writer waits for the pool for everyone: a ``FAIL_FAST`` caller's (a request
    starting a run) fails at once instead while the server is known to be down."""
    async with _GoneServer(pg_url, pool_timeout=3.0, connect_timeout=1.0) as server:
        store = server.store
        await server.gone()
        with pytest.raises(StoreUnavailable):
            await _fail_fast(lambda: store.run_get("r1"))  # the outage is now known
        assert store._outage.down
        for call in (lambda: store.run_insert(run=run_record("r2")),
                     lambda: store.blob_put(blobs={"b" * 64: "text"}, run_id="r1")):
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable, match="unavailable"):
                await _fail_fast(call)
            assert time.monotonic() - t0 < 0.5  # (the pool's timeout: 3 s)
        await server.back()
        back = time.monotonic()
        while True:
            try:
                await _fail_fast(lambda: store.run_insert(run=run_record("r2")))
                break
            except StoreUnavailable:
                assert time.monotonic() - back < 5, "no probe found the server back"
                await asyncio.sleep(0.1)
        assert await store.run_get("r2") is not None


async def test_after_an_outage_fail_fast_callers_are_served_once_a_probe_connects(
        pg_url: str) -> None:
    """Only ``FAIL_FAST`` callers ask while the server is down, and none of them waits
    for a connection: the probes alone find the server back."""
    async with _GoneServer(pg_url, pool_timeout=3.0, connect_timeout=1.0) as server:
        store = server.store
        await server.gone()
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await _fail_fast(lambda: store.run_get("r1"))
            assert time.monotonic() - t0 < 1.5  # (the pool's timeout: 3 s)
            await asyncio.sleep(0.3)
        assert store._outage.down
        await server.back()
        back = time.monotonic()
        while True:
            try:
                assert await _fail_fast(lambda: store.run_get("r1")) is not None
                break
            except StoreUnavailable:
                assert time.monotonic() - back < 5, "no probe found the server back"
                await asyncio.sleep(0.1)
        assert not store._outage.down


async def test_after_a_quiet_spell_a_fail_fast_caller_asks_the_server_again(
        pg_url: str) -> None:
    """The probes run only while refused callers keep coming. A ``tether serve`` that
    saw the server go, then got no request until after it was back, answered the
    first request 503 on the outage's old word (a readiness probe failed once more).
    Now a ``FAIL_FAST`` caller whose outage is older than ``STALE_AFTER`` waits for
    one attempt: served when the server is back, refused as soon as it fails when not."""
    from tether.store.postgres._outage import STALE_AFTER

    # (A refused call's probe keeps the pool trying for connect_timeout + 1 s.)
    quiet = 1.0 + 1.0 + STALE_AFTER + 0.5
    async with _GoneServer(pg_url, pool_timeout=3.0, connect_timeout=1.0) as server:
        store = server.store
        await server.gone()
        with pytest.raises(StoreUnavailable):
            await _fail_fast(lambda: store.run_get("r1"))  # the outage is now known
        await asyncio.sleep(quiet)  # nobody asks
        assert store._outage.down
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Connection refused"):  # still gone
            await _fail_fast(lambda: store.run_get("r1"))
        assert time.monotonic() - t0 < 1.5  # one refused attempt (the pool's wait: 3 s)
        await asyncio.sleep(quiet)
        await server.back()
        await asyncio.sleep(0.5)  # back for a while, nobody asked
        assert store._outage.down
        assert await _fail_fast(lambda: store.run_get("r1")) is not None  # the first one
        assert not store._outage.down
        await server.gone()  # and the same for a start, through the group commit
        with pytest.raises(StoreUnavailable):
            await _fail_fast(lambda: store.run_get("r1"))
        await asyncio.sleep(quiet)
        await server.back()
        await _fail_fast(lambda: store.run_insert(run=run_record("r2")))
        assert await store.run_get("r2") is not None


async def test_an_outage_is_told_in_the_log_once_with_reminders_and_its_end(
        pg_url: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The server away for a few seconds, operations failing all along: the store warns
    once that it is unreachable, reminds at the pace it says, and says when it is back;
    psycopg_pool's warning for each failed attempt of the store's pool (three lines each)
    is a one-line debug record instead. A pool of somebody else's still warns."""
    import logging

    import psycopg_pool

    monkeypatch.setattr(_outage, "REMIND_EVERY", 1.5)
    caplog.set_level(logging.DEBUG, logger="tether.store.postgres")
    caplog.set_level(logging.DEBUG, logger="psycopg.pool")
    async with _GoneServer(pg_url, pool_timeout=0.5, connect_timeout=0.5) as server:
        store = server.store
        where = store.cfg.where
        await server.gone()
        end = time.monotonic() + 4
        while time.monotonic() < end:
            with pytest.raises(StoreUnavailable):
                await store.run_get("r1")
            await asyncio.sleep(0.1)
        await server.back()
        while True:
            try:
                assert await store.run_get("r1") is not None
                break
            except StoreUnavailable:
                assert time.monotonic() - end < 10, "the pool did not reconnect"
                await asyncio.sleep(0.1)
        assert not store._outage.down
        # Somebody else's pool, failing to connect to the same gone server, warns.
        gone = RoundTripProxy()
        await gone.start()
        url = gone.url(pg_url)
        await gone.close()
        other = psycopg_pool.AsyncConnectionPool(url, min_size=1, open=False,
                                                 timeout=0.3, name="theirs")
        await other.open(wait=False)
        with pytest.raises(psycopg_pool.PoolTimeout):
            await other.getconn()
        await other.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "tether.store.postgres"
             and r.levelno >= logging.WARNING and "reachable" in r.getMessage()]
    assert lines[0].startswith(f"PostgreSQL at {where} unreachable ("), lines
    reminders = [m for m in lines if "still unreachable after" in m]
    assert 1 <= len(reminders) <= 3, lines  # 4 s of outage, one reminder per 1.5 s
    assert re.fullmatch(rf"PostgreSQL at {re.escape(where)} reachable again after "
                        r"\d+\.\d s \(\d+ connection attempts failed\)", lines[-1]), lines
    assert len(lines) == 2 + len(reminders), lines
    pool_warnings = [r.getMessage() for r in caplog.records if r.name == "psycopg.pool"
                     and r.levelno >= logging.WARNING and "connecting" in r.getMessage()]
    assert pool_warnings and all("'theirs'" in m for m in pool_warnings), pool_warnings
    attempts = [r.getMessage() for r in caplog.records if r.name == "tether.store.postgres"
                and r.levelno == logging.DEBUG and "error connecting in 'tether-" in r.getMessage()]
    assert attempts and all("\n" not in m for m in attempts), attempts


async def test_a_fail_fast_caller_cancelled_while_it_waits_for_a_connection_loses_none(
        pg_url: str) -> None:
    """With the server up and every connection busy, a ``FAIL_FAST`` caller waits for
    one like any other (no connection attempt failed); cancelled while it waits, it
    leaves the connection it would have had in the pool."""
    store = PostgresStore(pg_url, pool_min=1, pool_max=1, pool_timeout=5.0)
    await store.open()
    try:
        await store.run_insert(run=run_record("r1"))
        pool, conn = await store._checkout()  # the only connection, held
        waiting = asyncio.ensure_future(_fail_fast(lambda: store.run_get("r1")))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        waiting.cancel()
        await pool.putconn(conn)  # given back while the cancelled wait unwinds
        with pytest.raises(asyncio.CancelledError):
            await waiting
        t0 = time.monotonic()
        assert await _fail_fast(lambda: store.run_get("r1")) is not None
        assert await store.run_get("r1") is not None
        assert time.monotonic() - t0 < 2.0  # (a lost connection: the pool's 5 s)
        another = asyncio.ensure_future(_fail_fast(lambda: store.run_get("r1")))
        assert (await another) is not None
    finally:
        await store.close()


def test_a_server_that_refuses_for_want_of_a_slot_is_not_down() -> None:
    """"Too many clients" comes from a server that is up: a fail-fast caller waits for a
    connection given back rather than failing."""
    outage = _outage.Outage()
    outage.failed(psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        "FATAL:  sorry, too many clients already"))
    assert not outage.down
    outage.failed(psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        "Connection refused"))
    assert outage.down and outage.reason == "Connection refused"
    outage.connected()
    assert not outage.down


@pytest.mark.slow
@pytest.mark.serial  # (a lease of 1 s: other tests' load delays the loop past it)
async def test_a_claim_that_waited_out_an_outage_keeps_the_runs_it_took(pg_url: str) -> None:
    """A claim counts its leases from the time it was called. One that waited for a
    connection while the server was gone took runs (whose leases expired meanwhile)
    under leases already expired when it returned, and the worker's next claim took them
    again from itself: their steps in flight ran once more, and the writes of the first
    takeover were refused by fencing (2 workers, 50 runs, a 15 s outage: 48 runs claimed
    twice by one worker within 0.2 s, fencing token 3, each of their steps in flight run
    three times). The worker renews the leases of such a claim before claiming again."""
    from tether import App
    from tether.worker import Worker

    proxy = await RoundTripProxy().start()
    port = proxy.port
    app = App(store=PostgresStore(proxy.url(pg_url), pool_timeout=3.0, connect_timeout=1.0))

    @app.step
    async def hop(i: int) -> int:
        await asyncio.sleep(3.0 if i == 1 else 0.01)  # step 1 is in flight when it goes
        return i

    @app.workflow
    async def hops() -> int:
        return sum([await hop(i) for i in range(3)])

    client = App(pg_url)
    ids = [f"o{n}" for n in range(5)]
    try:
        async with Worker(app, lease_seconds=1.0, poll_interval=0.2):
            for rid in ids:
                await client.start("hops", run_id=rid)
            await asyncio.sleep(0.5)
            await proxy.close()  # the server goes away: the leases expire, a claim
            await asyncio.sleep(5.0)  # fails after 3 s and the next one waits
            proxy = await RoundTripProxy().start(port)
            poke = asyncio.ensure_future(app.store.run_get("o0"))  # connects the pool
            for rid in ids:
                assert await client.handle(rid).result(timeout=30) == 3
            await poke
        runs = await client.store.run_get_many(ids)
        # 1: the first claim; 2: the claim back after the outage (unless the heartbeat,
        # waiting out the outage too, renewed the leases first); 3: that claim's runs
        # taken again by the worker's next claim.
        assert max(r.fencing_token for r in runs) <= 2, [r.fencing_token for r in runs]
    finally:
        await client.close()
        await app.close()
        await proxy.close()


async def test_listener_reconnects_after_its_connection_is_terminated(
        pg: PostgresStore, pg_url: str, raw: psycopg.AsyncConnection[object]) -> None:
    """The listener's connection is killed; it reconnects and wake-ups flow again."""
    woken = asyncio.Event()
    unsubscribe = await pg.subscribe(woken.set)
    try:
        assert await _terminate(raw, "tether-listener") == 1
        deadline = time.monotonic() + 10
        while pg._listener.connects < 2:
            assert time.monotonic() < deadline, "the listener did not reconnect"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        woken.clear()
        other = PostgresStore(pg_url)
        await other.open()
        try:
            await other.run_insert(run=run_record("r1"))
            await asyncio.wait_for(woken.wait(), 5)
        finally:
            await other.close()
    finally:
        await unsubscribe()


async def test_a_role_that_cannot_create_the_schema_is_told_how(pg_url: str) -> None:
    """A role without CREATE on the database, opening a store whose schema is missing:
    a ConfigError that says to run ``tether db migrate`` as a role that can (it was a
    bare "permission denied for database ..." StoreError)."""
    role = f"tether_ro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        parts = urlsplit(pg_url)
        url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
        store = PostgresStore(url)
        with pytest.raises(ConfigError, match=r"cannot create or change schema 'tether'.*"
                           r"permission denied.*run `tether db migrate --db URL` as a role"):
            await store.open()
        await store.close()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


async def test_tether_db_migrate_by_a_role_that_cannot_create_says_what_to_do(
        bare_role: tuple[str, str]) -> None:
    """``store.migrate()`` (``tether db migrate``) by a role without CREATE on the
    database: a ConfigError naming the role and the grant, not the bare "PostgreSQL
    store ... failed: permission denied for database ..." StoreError."""
    role, url = bare_role
    with pytest.raises(ConfigError, match=rf"role '{role}' cannot create or change schema "
                       r"'tether'.*permission denied for database.*as a role that can.*"
                       rf"grant role '{role}' CREATE on the database"):
        await PostgresStore(url).migrate()


async def test_a_role_without_privileges_on_the_schema_is_told_what_to_grant(
        pg_url: str, bare_role: tuple[str, str]) -> None:
    """A role that may use the schema but not its tables: a StoreError naming the role,
    the schema and the grants (it named neither: "... failed: permission denied for
    table schema_version"). With the grants docs/postgres.md lists, it works."""
    role, url = bare_role
    admin = PostgresStore(pg_url, schema="team_a")
    await admin.migrate()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"GRANT USAGE ON SCHEMA team_a TO {role}")
    store = PostgresStore(url, schema="team_a")
    with pytest.raises(StoreError, match=rf"role '{role}' may not use the Tether store in "
                       r"schema 'team_a'.*permission denied for table schema_version.*"
                       r"not an outage\): grant the role USAGE on the schema") as caught:
        await store.open()
    await store.close()
    assert caught.value.sqlstate == "42501"  # (the server's code, to test, not the text)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA team_a "
                     f"TO {role}")
        conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA team_a TO {role}")
    store = PostgresStore(url, schema="team_a")
    await store.open()
    try:
        await start_and_claim(store, "r1")
        assert (await store.run_get("r1")) is not None
    finally:
        await store.close()


def test_the_reconnecting_pools_hook_fits_the_installed_psycopg_pool() -> None:
    """``ReconnectingPool`` overrides a private method of psycopg_pool; on a version
    where it no longer fits, the store falls back to the plain pool (reconnecting after
    psycopg_pool's own backoff). This says so here rather than in an outage."""
    from tether.store.postgres._outage import RETRY_HOOK_FITS, ReconnectingPool

    assert RETRY_HOOK_FITS
    assert "_add_connection" in vars(ReconnectingPool)


async def test_store_tasks_do_not_keep_the_first_callers_request_context(
        pg_migrated_url: str) -> None:
    """The listener is created in whichever context subscribes first: in ``tether
    serve`` a request's, ``FAIL_FAST`` set and a short ``REQUEST_TIMEOUT``. It serves
    every subscriber for the life of the process, so it is created with both at their
    defaults: the wake-ups it schedules run in its context, and before they ran with
    the first request's deadline and fail-fast."""
    from tether.store import REQUEST_TIMEOUT

    store = open_store(pg_migrated_url)
    seen: list[tuple[bool, float | None]] = []
    woken = asyncio.Event()

    def wake() -> None:
        seen.append((FAIL_FAST.get(), REQUEST_TIMEOUT.get()))
        woken.set()

    async def as_a_request() -> Any:
        FAIL_FAST.set(True)
        REQUEST_TIMEOUT.set(0.5)
        await store.open()
        return await store.subscribe(wake)

    # (A task of its own: the request's context ends with it.)
    unsubscribe = await asyncio.create_task(as_a_request())
    try:
        assert (FAIL_FAST.get(), REQUEST_TIMEOUT.get()) == (False, None)
        await store.run_insert(run=run_record("woken"))
        await asyncio.wait_for(woken.wait(), 10)
        assert seen and all(s == (False, None) for s in seen), seen
        await unsubscribe()
    finally:
        await store.close()
