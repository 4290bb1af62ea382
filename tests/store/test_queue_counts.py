"""``Store.queue_counts``: each queue's unfinished runs by status (``tether queues``),
on both backends, read through the status indexes rather than every run."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tether.store import Store, Wait
from tether.store._port import QueueCounts
from tether.store.postgres import PostgresStore

from .conftest import T0, run_record, sqlite_plans, start_and_claim


async def test_counts_each_queues_unfinished_runs_by_status(store: Store) -> None:
    """Queued runs (due now, and a delayed one), running, waiting per queue; ended runs
    and queues with no unfinished run are not counted."""
    assert await store.queue_counts(now=T0) == {}
    parked = await start_and_claim(store, "parked", queue="a", worker="w2")
    await store.run_release(lease=parked.lease, wait=Wait(T0 + 600, "timer"), now=T0)
    await store.run_insert(run=run_record("due-1", queue="a"))
    await store.run_insert(run=run_record("due-2", queue="a"))
    await store.run_insert(run=run_record("later", queue="a", available_at=T0 + 3600))
    held = await start_and_claim(store, "busy", queue="b")
    done = await start_and_claim(store, "done", queue="c", worker="w3")
    await store.run_finish(lease=done.lease, status="completed", result="1", error=None,
                           now=T0)
    counts = await store.queue_counts(now=T0 + 1)
    assert counts == {"a": QueueCounts(queued=3, due=2, running=0, waiting=1),
                      "b": QueueCounts(queued=0, due=0, running=1, waiting=0)}
    # The delayed start comes due; the running run ends.
    await store.run_finish(lease=held.lease, status="completed", result="1", error=None,
                           now=T0 + 2)
    assert await store.queue_counts(now=T0 + 3600) == {
        "a": QueueCounts(queued=3, due=3, running=0, waiting=1)}


def test_sqlite_reads_the_status_indexes(tmp_path: Path) -> None:
    """Each status's branch searches an index (no ``SCAN tether_runs``)."""
    plan = sqlite_plans(tmp_path, "queue_counts")({"now": T0})
    searches = [line for line in plan if "tether_runs" in line]
    assert len(searches) == 3, plan
    assert all(line.startswith("SEARCH tether_runs USING") for line in searches), plan


@pytest.mark.postgres
async def test_postgres_reads_indexes_not_every_run(pg_url: str) -> None:
    """On a store of 20,000 ended runs and a few unfinished ones, the plan reads
    runs_status (queued, waiting) and runs_held (running): no sequential scan."""
    store = PostgresStore(pg_url)
    await store.open()
    try:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as raw:
            await raw.execute("""
                INSERT INTO tether.runs (run_id, workflow, queue, status, input,
                                         created_at, updated_at, available_at)
                SELECT 'r' || i, 'wf', 'q' || (i % 4),
                       CASE WHEN i > 19990 THEN 'queued' WHEN i > 19980 THEN 'waiting'
                            WHEN i > 19970 THEN 'running' ELSE 'completed' END, '[]', i, i,
                       CASE WHEN i > 19970 THEN i END
                FROM generate_series(1, 20000) AS i;
                ANALYZE tether.runs;
            """)
            cur = await raw.execute("EXPLAIN " + store._q["queue_counts"], {"now": T0})
            plan = "\n".join(str(r[0]) for r in await cur.fetchall())
        assert "Seq Scan" not in plan, plan
        assert "runs_status" in plan and "runs_held" in plan, plan
        counts = await store.queue_counts(now=19995.5)
        assert sum(c.queued for c in counts.values()) == 10
        assert sum(c.due for c in counts.values()) == 5
        assert sum(c.waiting for c in counts.values()) == 10
        assert sum(c.running for c in counts.values()) == 10
    finally:
        await store.close()
