"""Stored run events (for Server-Sent Events) on every backend: a run's events come back
once each, in order, after any cursor; on SQLite they survive migration 0010 (ids per
run) and a run purged and started again under its id gets ids above the old ones."""

from __future__ import annotations

from pathlib import Path

import apsw

from tests.engine.helpers import wait_for
from tether._types import Lease
from tether.store import Store, open_store
from tether.store._sql import load_migrations

from .conftest import T0, entry, start_and_claim


async def events_of(store: Store, run_id: str, after: str | None = None) -> list[tuple[str, str]]:
    return [(e.kind, e.event_id) for e in await store.run_events_read(run_id=run_id,
                                                                      after=after)]


async def test_each_event_once_in_order_after_any_cursor(store: Store) -> None:
    a = await start_and_claim(store, "a", queue="qa")
    b = await start_and_claim(store, "b", queue="qb")
    for pos in range(3):
        await store.journal_append(lease=a.lease, entry=entry(pos))
        await store.journal_append(lease=b.lease, entry=entry(pos))
    await store.run_publish(run_id="a", data='{"type": "llm.chunk", "text": "hi"}')
    await store.run_finish(lease=a.lease, status="completed", result="1", error=None,
                           now=T0 + 1)
    # PostgreSQL shows events once every older transaction of the server has ended.
    await wait_for(lambda: _count(store, "a", 6), timeout=30, what="the events")
    got = await store.run_events_read(run_id="a", after=None)
    assert [e.kind for e in got] == ["status", "op", "op", "op", "chunk", "status"]
    assert [e.data for e in got if e.kind == "chunk"] == ['{"type": "llm.chunk", "text": "hi"}']
    for i, ev in enumerate(got):
        assert [e.event_id for e in await store.run_events_read(
            run_id="a", after=ev.event_id)] == [e.event_id for e in got[i + 1:]]
    await wait_for(lambda: _count(store, "b", 4), timeout=30, what="the events of b")
    assert [k for k, _ in await events_of(store, "b")] == ["status", "op", "op", "op"]


async def _count(store: Store, run_id: str, n: int) -> bool:
    return len(await store.run_events_read(run_id=run_id, after=None)) >= n


def _store_at_0004(path: Path) -> None:
    """A SQLite store as migrations 0001 to 0004 left it, with a run that has events."""
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE tether_schema_version (version INTEGER PRIMARY KEY, "
                 "name TEXT NOT NULL, applied_at REAL NOT NULL)")
    for version, name, sql in load_migrations("tether.store.sqlite"):
        if version <= 4:
            conn.execute(sql)
            conn.execute("INSERT INTO tether_schema_version VALUES (?, ?, 0)", (version, name))
    for run_id in ("filler", "old"):
        conn.execute("INSERT INTO tether_runs (run_id, workflow, queue, status, input, "
                     "created_at, updated_at, available_at, fencing_token) VALUES "
                     "(?, 'wf', 'q', 'running', '[[], {}]', ?, ?, NULL, 1)", (run_id, T0, T0))
        for pos in range(2):
            conn.execute("INSERT INTO tether_journal (run_id, position, kind, name, status, "
                         "result, attempts, fencing_token) VALUES "
                         "(?, ?, 'step', 's', 'ok', '1', 1, 1)", (run_id, pos))
    conn.close()


async def test_migration_0010_keeps_old_events_and_continues_above_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    _store_at_0004(path)
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        before = await events_of(store, "old")
        assert before == [("op", "3"), ("op", "4")]  # global ids under migration 0004
        lease = Lease("old", "w", 1)
        await store.journal_append(lease=lease, entry=entry(2))
        await store.run_finish(lease=lease, status="completed", result="1", error=None,
                               now=T0 + 1)
        after = await events_of(store, "old", after="4")
        assert [k for k, _ in after] == ["op", "status"]
        assert [int(i) for _, i in after] == [5, 6]
    finally:
        await store.close()


async def test_a_run_purged_and_started_again_gets_ids_above_the_old_ones(
    sqlite_url: str,
) -> None:
    store = open_store(sqlite_url)
    await store.open()
    try:
        old = await start_and_claim(store, "r")
        await store.journal_append(lease=old.lease, entry=entry(0))
        await store.run_finish(lease=old.lease, status="completed", result="1", error=None,
                               now=T0 + 1)
        last = (await events_of(store, "r"))[-1][1]
        report = await store.run_purge(finished_before=T0 + 2, statuses=["completed"])
        assert report.runs == 1 and await events_of(store, "r") == []
        again = await start_and_claim(store, "r", now=T0 + 3)
        await store.journal_append(lease=again.lease, entry=entry(0, now=T0 + 3))
        assert [k for k, _ in await events_of(store, "r", after=last)] == ["status", "op"]
    finally:
        await store.close()
