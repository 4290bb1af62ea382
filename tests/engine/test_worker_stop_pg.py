"""A worker stopped while its claim is in flight on PostgreSQL stops without psycopg's
WARNING "query cancellation interrupted (CancelledError): closing connection".

A drain cancels the claim loop; until 2026-12-07 the stop that follows cancelled it a
second time while psycopg was still cancelling the claim's query in the server, which
cut that off: a WARNING at every SIGTERM that met a claim (one right after a worker's
start always did), and a connection closed instead of given back."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

from tether import App


async def test_a_drain_that_meets_a_claim_in_flight_stops_quietly(
        pg_migrated_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    app = App(pg_migrated_url)

    @app.workflow
    async def flow() -> str:
        return "ok"

    async with app:
        async with await psycopg.AsyncConnection.connect(pg_migrated_url) as locker:
            # The claim's query waits on this lock in the server: in flight for sure.
            await locker.execute("LOCK TABLE tether.runs IN ACCESS EXCLUSIVE MODE")
            worker = app.worker(poll_interval=0.05)
            await worker.start()
            async with await psycopg.AsyncConnection.connect(
                    pg_migrated_url, autocommit=True) as watcher:
                for _ in range(400):  # until a session of the worker waits on the lock
                    cur = await watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                        "'Lock' AND query ILIKE '%tether.runs%'")
                    row = await cur.fetchone()
                    if row is not None and row[0] > 0:
                        break
                    await asyncio.sleep(0.025)
                else:
                    raise AssertionError("no claim waited on the lock")
            assert await worker.drain(5.0)
            await locker.rollback()  # (the stop's unregistration writes to the runs)
            await worker.stop()
    noisy = [r.getMessage() for r in caplog.records
             if r.name.startswith("psycopg") and r.levelno >= logging.WARNING]
    assert noisy == [], noisy
