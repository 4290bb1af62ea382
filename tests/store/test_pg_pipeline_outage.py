"""A transaction sent as one pipeline (BEGIN, statements, COMMIT, then a Sync) whose
connection the server ends before the Sync reaches it (a fast shutdown,
``pg_terminate_backend``): the error the store raises, and a worker logs as its
outage's reason, is the server's ("terminating connection due to administrator
command"), and the connection is discarded.

psycopg (3.3) fails the pipeline's exit with the server's FATAL message; the exit's
last step (libpq's ``PQexitPipelineMode``) then fails as well, "cannot exit pipeline
mode while busy" (libpq has not read the connection's end yet), and that second error
replaced the first: soaks that restart PostgreSQL read it as the outage's reason about
once in twelve restarts. Here the server ends the session at that moment every time: a
proxy between the store and the server keeps the client's Sync back.
"""

from __future__ import annotations

import asyncio
import logging
import select
from collections.abc import Iterator

import psycopg
import pytest

from tests.faults.cutproxy import SyncHoldingProxy, terminate_after_commit, wait_for
from tether.errors import StoreUnavailable
from tether.store.postgres import PostgresStore

from .conftest import T0, run_record

pytestmark = pytest.mark.postgres

@pytest.fixture
def proxy(pg_url: str) -> Iterator[SyncHoldingProxy]:
    p = SyncHoldingProxy(pg_url).start()
    try:
        yield p
    finally:
        p.close()


async def test_a_pipeline_cut_by_the_servers_shutdown_says_so_and_drops_its_connection(
        pg_url: str, proxy: SyncHoldingProxy) -> None:
    store = PostgresStore(proxy.url(), pool_min=1, pool_max=1)
    await store.open()
    try:
        await store.run_insert(run=run_record("before"))
        assert store._pool is not None
        conn = await store._pool.getconn()
        pid = conn.info.backend_pid
        await store._pool.putconn(conn)
        proxy.arm()
        op = asyncio.ensure_future(store.run_claim(worker_id="w", queues=["q"], limit=1,
                                                   now=T0, lease_seconds=30))
        await wait_for(proxy.held, "the pipeline's Sync")
        await asyncio.to_thread(terminate_after_commit, pg_url, pid)
        with pytest.raises(StoreUnavailable) as caught:
            await op
        message = str(caught.value)
        assert "terminating connection due to administrator command" in message, message
        assert "pipeline" not in message, message
        assert caught.value.outcome_unknown
        # The connection is not used again: the next operation is served by a new one,
        # and reads the transaction, committed before the session ended (its COMMIT
        # reached the server; the Sync after it did not).
        assert conn.closed
        stored = await store.run_get("before")
        assert stored is not None and stored.status == "running"
    finally:
        await store.close()


async def test_a_pipeline_on_a_connection_the_server_ended_logs_no_psycopg_warning(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The server ends the session between the connection's checkout and the pipeline's
    statements (a restart at that moment): the statements fail in the pipeline's block,
    and psycopg's exit of the pipeline, whose Sync fails as well, must not log "error
    ignored terminating <AsyncPipeline>" (a WARNING in the worker's log at every
    restart). Here the connection is taken past the checkout's check of it, so that the
    moment is hit every time."""
    store = PostgresStore(pg_url, pool_min=1, pool_max=1)
    await store.open()
    try:
        assert store._pool is not None
        conn = await store._pool.getconn()
        try:
            with psycopg.connect(pg_url, autocommit=True) as admin:
                assert admin.execute("SELECT pg_terminate_backend(%s, 10000)",
                                     (conn.info.backend_pid,)).fetchone() == (True,)
            await asyncio.to_thread(select.select, [conn.fileno()], [], [], 30)
            caplog.set_level(logging.DEBUG)
            with pytest.raises(psycopg.OperationalError):
                await store._pipeline(conn, [("run_get", {"run_id": "a"})])
        finally:
            await store._pool.putconn(conn)
        assert conn.closed
        ignored = [r.getMessage() for r in caplog.records
                   if r.name == "psycopg" and r.levelno >= logging.WARNING]
        assert ignored == []
        # (the exit's error is kept, at DEBUG, in the store's log)
        assert any("a pipeline's exit failed too" in r.getMessage()
                   for r in caplog.records if r.name == "tether.store.postgres")
        assert await store.run_get("a") is None  # the next operation has a new connection
    finally:
        await store.close()


async def test_a_pipeline_whose_session_ends_before_its_commit_runs_says_so(
        pg_url: str) -> None:
    """The server ends the session while a statement of the pipeline waits on a lock
    (its COMMIT sent, not run): the error is the server's ("terminating connection due
    to administrator command", SQLSTATE 57P01), and the outcome is known: nothing was
    committed. psycopg drops that FATAL when the connection's end follows it (it raises
    "server closed the connection unexpectedly"), and the write was reported as one
    whose commit may have gone through (``outcome_unknown``)."""
    store = PostgresStore(pg_url, pool_min=1, pool_max=1)
    await store.open()
    try:
        await store.run_insert(run=run_record("r"))
        assert store._pool is not None
        conn = await store._pool.getconn()
        pid = conn.info.backend_pid
        await store._pool.putconn(conn)
        with psycopg.connect(pg_url) as locker:  # (a transaction holding the run's row)
            locker.execute("SELECT 1 FROM tether.runs WHERE run_id = 'r' FOR UPDATE")
            op = asyncio.ensure_future(store.run_resume(run_id="r", now=T0 + 1))
            with psycopg.connect(pg_url, autocommit=True) as admin:
                for _ in range(3000):
                    row = admin.execute("SELECT wait_event_type FROM pg_stat_activity"
                                        " WHERE pid = %s", (pid,)).fetchone()
                    if row == ("Lock",) or op.done():
                        break
                    await asyncio.sleep(0.01)
                assert not op.done() and row == ("Lock",), row
                assert admin.execute("SELECT pg_terminate_backend(%s, 10000)",
                                     (pid,)).fetchone() == (True,)
            with pytest.raises(StoreUnavailable) as caught:
                await op
        message = str(caught.value)
        assert "terminating connection due to administrator command" in message, message
        assert caught.value.sqlstate == "57P01"
        assert not caught.value.outcome_unknown
    finally:
        await store.close()
