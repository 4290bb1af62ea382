"""A PostgreSQL server that accepts connections and never answers: every store
operation has a deadline on its connection (``query_timeout``), after which the
connection is dropped and the operation raises StoreUnavailable; the listener's health
check has one too. The server is a proxy that goes silent on cue (``blackhole.py``):
connections held through the silence stay silent for ever, as after a partition, so a
store that reused one, or waited on one, never recovers.

Bounds are generous (three deadlines and more): the machine is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest

from tether.errors import ConfigError, StoreUnavailable
from tether.store import FAIL_FAST
from tether.store._lifecycle import PurgeReport
from tether.store.postgres import PostgresStore, _migrate
from tether.store.postgres._config import DEFAULT_QUERY_TIMEOUT

from .blackhole import BlackHoleProxy
from .conftest import T0, entry, run_record, start_and_claim

pytestmark = pytest.mark.postgres

DEADLINE = 0.5


@pytest.fixture
async def silent(pg_url: str) -> AsyncIterator[tuple[BlackHoleProxy, PostgresStore]]:
    """A store behind a black-hole proxy, with a deadline of ``DEADLINE`` s."""
    proxy = await BlackHoleProxy().start()
    store = PostgresStore(proxy.url(pg_url), query_timeout=DEADLINE, connect_timeout=1.0,
                          pool_timeout=3.0)
    await store.open()
    try:
        yield proxy, store
    finally:
        await store.close()
        await proxy.close()


async def _takes(call: Awaitable[Any], limit: float) -> float:
    """Seconds ``call`` took to raise StoreUnavailable (naming the deadline if
    ``named``); fails the test past ``limit`` instead of waiting for ever."""
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await asyncio.wait_for(call, limit)
    took = time.monotonic() - t0
    assert "unavailable" in str(info.value), info.value
    return took


async def _pool_settled(store: PostgresStore) -> None:
    """Wait until the store's pool makes no connection and lends none: a connection
    the pool was still making as the proxy went silent (its start-up answered just
    before) is made *after* the operation under test began, and an operation begun
    before the last connection was made rightly tells the outage nothing
    (``Outage.no_answer``); the test would then find the server not marked down."""
    for _ in range(500):
        assert store._pool is not None
        stats = store._pool.get_stats()
        if stats["pool_size"] == stats["pool_available"] and not stats.get(
                "requests_waiting"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the pool never settled: {stats}")


Operation = Callable[[PostgresStore], Awaitable[Any]]

_OPERATIONS: dict[str, Operation] = {
    "read": lambda s: s.run_get("r1"),
    "start-group-commit": lambda s: s.run_insert(run=run_record("r9")),
    "claim": lambda s: s.run_claim(worker_id="w1", queues=["q"], limit=5, now=T0 + 100,
                                   lease_seconds=30.0),
    "heartbeat": lambda s: s.lease_heartbeat(worker_id="w1", now=T0, lease_seconds=1.0),
}


@pytest.mark.parametrize("name", sorted(_OPERATIONS))
async def test_an_operation_the_server_never_answers_fails_within_its_deadline(
        silent: tuple[BlackHoleProxy, PostgresStore], name: str) -> None:
    """The server goes silent under idle pooled connections: the operation takes one,
    gets no answer, and raises StoreUnavailable ("no answer within 0.5 s") once its
    deadline has passed, not never. The silent connection is dropped, never reused:
    once the network is back the store answers on new connections."""
    proxy, store = silent
    await store.run_insert(run=run_record("r1"))
    await asyncio.gather(*(store.run_get("r1") for _ in range(3)))  # idle connections
    await _pool_settled(store)
    proxy.silence()
    took = await _takes(_OPERATIONS[name](store), 10 * DEADLINE)
    assert took < 3 * DEADLINE + 1.0, took
    assert store._outage.down  # (FAIL_FAST callers are told at once meanwhile)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(_fail_fast(lambda: store.run_get("r1")), 10 * DEADLINE)
    assert time.monotonic() - t0 < 0.5
    proxy.heal()  # the connections held through the silence stay silent for ever
    await _answers_again(store)
    for _ in range(5):  # none of them is used again
        assert await asyncio.wait_for(store.run_get("r1"), 10 * DEADLINE) is not None
    assert not store._outage.down


async def test_a_journal_append_the_server_never_answers_fails_within_its_deadline(
        silent: tuple[BlackHoleProxy, PostgresStore]) -> None:
    """A sequential run's append (inline on the writer's kept connection, or through the
    writer) and a batch of appends: StoreUnavailable within the deadline."""
    proxy, store = silent
    a = await start_and_claim(store, "a")
    b = await start_and_claim(store, "b")
    await store.journal_append(lease=a.lease, entry=entry(0))
    proxy.silence()
    took = await _takes(store.journal_append(lease=a.lease, entry=entry(1)), 10 * DEADLINE)
    assert took < 3 * DEADLINE + 1.0, took
    proxy.heal()
    await _answers_again(store)
    proxy.silence()
    batch = asyncio.gather(store.journal_append(lease=a.lease, entry=entry(1)),
                           store.journal_append(lease=b.lease, entry=entry(0)))
    took = await _takes(batch, 10 * DEADLINE)
    assert took < 3 * DEADLINE + 1.0, took
    proxy.heal()
    await _answers_again(store)
    await store.journal_append(lease=a.lease, entry=entry(1))
    assert [e.position for e in await store.journal_read("a")] == [0, 1]


async def test_the_listener_finds_its_silent_connection_and_listens_again(
        pg_url: str) -> None:
    """The wake-up listener's connection goes silent: its health check (every
    ``query_timeout`` here) gets no answer within the deadline, the connection is
    dropped and made again once the network is back, and wake-ups flow again."""
    proxy = await BlackHoleProxy().start()
    store = PostgresStore(proxy.url(pg_url), query_timeout=DEADLINE, connect_timeout=1.0)
    other = PostgresStore(pg_url)
    await store.open()
    await other.open()
    try:
        woken = asyncio.Event()
        unsubscribe = await store.subscribe(woken.set)
        assert store._listener.connects == 1
        proxy.silence()
        await asyncio.sleep(4 * DEADLINE)  # a check, and its deadline, have passed
        proxy.heal()
        deadline = time.monotonic() + 10
        while store._listener.connects < 2:
            assert time.monotonic() < deadline, "the listener did not listen again"
            await asyncio.sleep(0.05)
        woken.clear()
        await other.run_insert(run=run_record("r1"))  # notifies the channel
        await asyncio.wait_for(woken.wait(), 5)
        await unsubscribe()
    finally:
        await other.close()
        await store.close()
        await proxy.close()


async def test_long_operations_get_ten_deadlines_and_migrations_none(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A query that runs longer than the deadline on a healthy server is cut (that is
    the deadline); a purge (which may delete many runs) gets ten deadlines, and applying
    a migration has none (``tether db migrate`` on a big table)."""
    store = PostgresStore(pg_url, query_timeout=DEADLINE)
    await store.open()
    try:
        async def slow(conn: psycopg.AsyncConnection[Any], *args: Any) -> PurgeReport:
            await conn.execute("SELECT pg_sleep(%s)", (3 * DEADLINE,))
            return PurgeReport()

        with pytest.raises(StoreUnavailable, match=f"no answer within {DEADLINE:g} s"):
            await store._run_op(slow)
        monkeypatch.setattr(store._lifecycle, "run_purge", slow)
        report = await store.run_purge(finished_before=T0, statuses=["completed"])
        assert report.runs == 0
        assert await store.run_get("nope") is None  # (the store answers again)
    finally:
        await store.close()
    known = _migrate.migrations
    monkeypatch.setattr(_migrate, "migrations", lambda schema: [
        *known(schema), (9999, "slow", f"SELECT pg_sleep({3 * DEADLINE})")])
    store = PostgresStore(pg_url, query_timeout=DEADLINE, migrate=False)
    assert await store.migrate() == ["9999_slow"]


def test_the_deadline_is_an_option_and_a_url_parameter() -> None:
    """``query_timeout``: 30 s unless the option or ``?query_timeout=`` says otherwise;
    never passed on to libpq; a positive, finite number of seconds; the URL and the
    option may not disagree."""
    url = "postgresql://u@db.example:5432/app"
    assert PostgresStore(url).query_timeout == DEFAULT_QUERY_TIMEOUT == 30.0
    assert PostgresStore(url, query_timeout=2.5).query_timeout == 2.5
    store = PostgresStore(f"{url}?query_timeout=7.5&schema=s1")
    assert store.query_timeout == 7.5 and store.schema == "s1"
    assert "query_timeout" not in store.cfg.conninfo
    assert PostgresStore(f"{url}?query_timeout=7.5", query_timeout=7.5).query_timeout == 7.5
    with pytest.raises(ConfigError, match="pick one"):
        PostgresStore(f"{url}?query_timeout=7.5", query_timeout=3)
    for bad in ("0", "-1", "inf", "nan", "soon", ""):
        with pytest.raises(ConfigError, match="query_timeout must be a positive"):
            PostgresStore(f"{url}?query_timeout={bad}")
    with pytest.raises(ConfigError, match="query_timeout must be a positive"):
        PostgresStore(url, query_timeout=0)
    # Given twice and differently, the URL said two things (the last one used to win).
    for twice in ("schema=a&schema=b", "query_timeout=1&query_timeout=2"):
        with pytest.raises(ConfigError, match=r"2 times .*; give it once"):
            PostgresStore(f"{url}?{twice}")
    assert PostgresStore(f"{url}?schema=a&schema=a").schema == "a"


async def _fail_fast(call: Callable[[], Awaitable[Any]]) -> Any:
    token = FAIL_FAST.set(True)
    try:
        return await call()
    finally:
        FAIL_FAST.reset(token)


async def _answers_again(store: PostgresStore, within: float = 15.0) -> None:
    """Wait until the store answers (on a new connection) again."""
    deadline = time.monotonic() + within
    while True:
        try:
            await asyncio.wait_for(store.run_get("r1"), 10 * DEADLINE)
            return
        except (StoreUnavailable, TimeoutError):
            assert time.monotonic() < deadline, "the store did not answer again"
            await asyncio.sleep(0.1)


# -- a worker, and callers of the App ---------------------------------------------------


async def test_a_fail_fast_caller_is_told_within_the_deadline(pg_url: str) -> None:
    """With the server silent, a request's ``handle.result()`` and ``app.start()`` (a
    ``FAIL_FAST`` caller: ``tether serve``, the MCP face) raise StoreUnavailable within
    the deadline instead of waiting for ever; once the network is back they succeed."""
    from tether import App

    proxy = await BlackHoleProxy().start()
    app = App(store=PostgresStore(proxy.url(pg_url), query_timeout=1.0,
                                  connect_timeout=1.0, pool_timeout=2.0))

    @app.workflow
    async def idle() -> int:
        return 1

    token = FAIL_FAST.set(True)
    try:
        handle = await app.start(idle, run_id="q1")  # (no worker: it stays queued)
        await asyncio.gather(*(app.store.run_get("q1") for _ in range(3)))
        proxy.silence()
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="is unavailable: no answer within 1 s"):
            await asyncio.wait_for(handle.result(), 10)
        assert time.monotonic() - t0 < 3.0
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="is unavailable"):
            await asyncio.wait_for(app.start(idle, run_id="q2"), 10)
        assert time.monotonic() - t0 < 3.0
        proxy.heal()
        deadline = time.monotonic() + 15
        while True:
            try:
                await asyncio.wait_for(app.start(idle, run_id="q2"), 10)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not answer again"
                await asyncio.sleep(0.1)
        with pytest.raises(TimeoutError):
            await handle.result(timeout=0.2)  # read, and still queued
    finally:
        FAIL_FAST.reset(token)
        await app.close()
        await proxy.close()


@pytest.mark.parametrize("name", ["read", "start-group-commit"])
async def test_a_request_timeout_shortens_its_callers_deadline_only(
        pg_url: str, name: str) -> None:
    """``REQUEST_TIMEOUT`` (``tether serve`` sets it for its requests) gives a caller's
    operations a shorter deadline than the store's ``query_timeout`` (30 s here): with
    the server silent, the caller's read fails within it, and so does its start, though
    the group-commit writer, a task that serves every caller, writes it: a batch takes
    the shortest deadline among its callers'. Other callers keep the store's."""
    from tether.store import REQUEST_TIMEOUT

    proxy = await BlackHoleProxy().start()
    store = PostgresStore(proxy.url(pg_url), connect_timeout=1.0)
    await store.open()
    try:
        await store.run_insert(run=run_record("r1"))
        await asyncio.gather(*(store.run_get("r1") for _ in range(3)))  # idle connections
        await _pool_settled(store)
        assert store._deadline() == DEFAULT_QUERY_TIMEOUT
        token = REQUEST_TIMEOUT.set(DEADLINE)
        try:
            assert store._deadline() == DEADLINE
            assert store._deadline(10) == 10 * DEADLINE
            proxy.silence()
            took = await _takes(_OPERATIONS[name](store), 20)  # (not 30 s)
        finally:
            REQUEST_TIMEOUT.reset(token)
        assert took < 3 * DEADLINE + 2.0, took
        assert store._deadline() == DEFAULT_QUERY_TIMEOUT  # (other callers: the store's)
        proxy.heal()
        await _answers_again(store)
    finally:
        await store.close()
        await proxy.close()


async def test_a_step_running_while_the_server_hangs_is_not_run_again(pg_url: str) -> None:
    """The server goes silent while a step runs (a long model call) for twice the
    lease. The worker's heartbeats fail at their deadlines; it neither stops the run nor
    claims it back, and once the server answers the step's result is written under the
    first claim: the step ran once. (A worker that dropped runs whose leases ran out
    unrenewed made every step in flight run, and be paid for, again.)"""
    from tether import App, RunStatus

    proxy = await BlackHoleProxy().start()
    app = App(store=PostgresStore(proxy.url(pg_url), query_timeout=0.5,
                                  connect_timeout=1.0, pool_timeout=2.0))
    calls: list[str] = []
    started, gate = asyncio.Event(), asyncio.Event()

    @app.step
    async def paid_call(prompt: str) -> str:
        calls.append(prompt)
        started.set()
        await gate.wait()
        return prompt.upper()

    @app.workflow
    async def agent(prompt: str) -> str:
        return await paid_call(prompt)

    direct = PostgresStore(pg_url)
    await direct.open()
    try:
        async with app.worker(lease_seconds=1.5):
            handle = await app.start(agent, "hello", run_id="h1")
            await asyncio.wait_for(started.wait(), 20)
            proxy.silence()
            await asyncio.sleep(3.0)  # twice the lease, heartbeats failing
            gate.set()  # the step ends while the server is still silent
            await asyncio.sleep(0.5)
            proxy.heal()
            # (Read on the server directly: the App's own pool may take a few seconds to
            # connect again, and what matters is what the worker writes.)
            deadline = time.monotonic() + 60
            while (run := await direct.run_get("h1")) is None or not run.status.is_ended:
                assert time.monotonic() < deadline, "the run did not end"
                await asyncio.sleep(0.1)
        assert handle.run_id == "h1"
    finally:
        await app.close()
        await direct.close()
        await proxy.close()
    assert calls == ["hello"], calls
    assert run.status is RunStatus.COMPLETED and run.fencing_token == 1
    assert run.result is not None and "HELLO" in run.result


async def test_a_statement_waiting_on_another_sessions_lock_is_told_as_maybe_a_lock(
        pg_migrated_url: str) -> None:
    """An operator's session holds a lock on the runs table past the deadline: the
    error says the statement may have waited on a lock (it said only "no answer within
    1 s (connection dropped)", as for a dead network), and once an operation is answered
    again the log says the server accepted connections throughout (it said "reachable
    again after 0.0 s (1 connection attempts failed)", though none had failed)."""
    import logging

    # (a handler of the store's own logger, not pytest's at the root: a command run in
    # process by an earlier test of this worker sets the root's handlers anew)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(logging.WARNING)
    logger = logging.getLogger("tether.store.postgres")
    level = logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.WARNING)
    store = PostgresStore(pg_migrated_url, query_timeout=1.0)
    await store.open()
    # (the pool's connections made first: one made while the read waits on the lock,
    # as the pool fills in the background of a loaded machine, is the server accepting
    # connections, and the read's missed deadline then rightly begins no outage)
    assert store._pool is not None
    await store._pool.wait(timeout=30)
    assert await store.run_get("r0") is None
    locker = await psycopg.AsyncConnection.connect(pg_migrated_url)
    try:
        await locker.execute("LOCK TABLE tether.runs IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(StoreUnavailable) as info:
            await asyncio.wait_for(store.run_get("r1"), 30)
        message = str(info.value)
        assert "no answer within 1 s" in message, message
        assert "waited that long (on a lock another session holds" in message, message
        assert "raise query_timeout" in message and "\n" not in message, message
        await locker.rollback()
        assert await asyncio.wait_for(store.run_get("r1"), 30) is None
    finally:
        await locker.close()
        await store.close()
        logger.removeHandler(keep)
        logger.setLevel(level)
    lines = [r.getMessage() for r in records]
    assert any("a statement got no answer within its 1 s deadline (query_timeout): it "
               "waits on a lock another session holds" in m for m in lines), lines
    assert not any("connection attempts failed" in m or "unreachable" in m
                   for m in lines), lines


async def test_the_servers_statement_timeout_is_named_as_the_cause(
        pg_migrated_url: str) -> None:
    """A role or database with a ``statement_timeout`` shorter than a wait on a lock:
    the error names the server's setting (it read "is unavailable: canceling statement
    due to statement timeout", as if the server were gone)."""
    sep = "&" if "?" in pg_migrated_url else "?"
    store = PostgresStore(f"{pg_migrated_url}{sep}options=-c%20statement_timeout%3D200")
    await store.open()
    locker = await psycopg.AsyncConnection.connect(pg_migrated_url)
    try:
        await locker.execute("LOCK TABLE tether.runs IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(StoreUnavailable) as info:
            await asyncio.wait_for(store.run_get("r1"), 30)
        message = str(info.value)
        assert "canceling statement due to statement timeout" in message, message
        assert "the server's statement_timeout or lock_timeout" in message, message
        assert "Tether needs neither" in message, message
    finally:
        await locker.close()
        await store.close()


def test_a_full_disk_on_the_server_is_named_as_such() -> None:
    """SQLSTATE 53100 (seen with a tablespace on a 12 MB tmpfs of a private cluster: a
    worker logged "is unavailable: could not extend file ...: No space left on device"
    and retried): the message says the server's disk is full and where to free space.
    Built here from the error psycopg raises; the full disk itself was walked by hand."""
    from tether.store.postgres._config import parse_url, unavailable

    cfg = parse_url("postgresql://u@db:5432/agents", schema=None, connect_timeout=5.0)
    err = unavailable(cfg, psycopg.errors.DiskFull(
        'could not extend file "pg_tblspc/24577/PG_15/24578/24606": No space left on device'))
    assert str(err) == (
        'PostgreSQL at db:5432 is unavailable: could not extend file "pg_tblspc/24577/'
        'PG_15/24578/24606": No space left on device (the server\'s disk is full where '
        "this database or its WAL lives: free space there; workers try again meanwhile)")


async def test_a_long_lock_is_one_episode_in_the_log(tmp_path: Any) -> None:
    """A session holds ``LOCK TABLE tether.runs IN ACCESS EXCLUSIVE MODE`` for several
    deadlines while operations go on, some on the runs table (held up: each misses its
    deadline and is tried again), some on another (answered), as a worker's claims and
    heartbeats do. The log said "unreachable (no answer within 1 s ...)" at each missed
    deadline after a connection made or an answer, and "answers again after 0.0 s" at
    each connection made: an alternation for as long as the lock held. Now two lines:
    one at the first missed deadline, naming the lock wait, and one once operations are
    answered within their deadline again, saying for how long statements waited and how
    many missed. On a private cluster."""
    import logging

    from tests.chaos.pgcluster import PrivateCluster, missing_privilege

    reason = missing_privilege()
    if reason:
        pytest.skip(f"private PostgreSQL cluster: {reason}")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(logging.WARNING)
    logger = logging.getLogger("tether.store.postgres")
    level = logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.WARNING)
    cluster = PrivateCluster()
    await asyncio.to_thread(cluster.start)
    store = PostgresStore(cluster.url(), query_timeout=1.0, pool_min=4, pool_max=4)
    held_up = 0
    try:
        await store.migrate()
        await store.open()
        assert store._pool is not None
        await store._pool.wait(timeout=30)
        locker = await psycopg.AsyncConnection.connect(cluster.url())
        stop = asyncio.Event()

        async def claims() -> None:  # (the runs table: held up while the lock holds)
            nonlocal held_up
            while not stop.is_set():
                try:
                    await store.run_get("r1")
                except StoreUnavailable:
                    held_up += 1

        async def heartbeats() -> None:  # (another table: answered throughout)
            while not stop.is_set():
                with contextlib.suppress(StoreUnavailable):
                    await store.kv_get(key="k")
                await asyncio.sleep(0.05)

        try:
            await locker.execute("LOCK TABLE tether.runs IN ACCESS EXCLUSIVE MODE")
            tasks = [asyncio.create_task(claims()), asyncio.create_task(claims()),
                     asyncio.create_task(heartbeats())]
            while held_up < 6:  # (six deadlines missed, and more: the lock holds on)
                await asyncio.sleep(0.1)
            await locker.rollback()

            def told(text: str) -> list[str]:
                return [r.getMessage() for r in records if text in r.getMessage()]

            for _ in range(600):  # (the end is told with an answer a deadline later)
                if told("answers within the deadline again"):
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            await locker.close()
    finally:
        await store.close()
        await asyncio.to_thread(cluster.stop)
        logger.removeHandler(keep)
        logger.setLevel(level)
    lines = [r.getMessage() for r in records]
    began = told("a statement got no answer within its 1 s deadline (query_timeout): it "
                 "waits on a lock another session holds")
    ended = told("answers within the deadline again: statements waited past their 1 s "
                 "deadline for ")
    assert len(began) == 1 and len(ended) == 1, "\n".join(lines)
    assert "operations got no answer in time, and the server accepted connections " \
           "throughout: a lock another session held" in ended[0], ended
    assert int(ended[0].split("s (", 1)[1].split(" operations", 1)[0]) >= held_up, ended
    assert not any("unreachable" in m or "reachable again" in m or "answers again" in m
                   for m in lines), lines
