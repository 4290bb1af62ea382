"""Store fixtures and record builders for the contract suite."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import apsw
import pytest

from tether._types import ClaimedRun, JournalEntry, RunRecord
from tether.store import Store, open_store
from tether.store._sql import load_queries

#: A fixed "now" for the store's clock: tests move time by passing later values.
T0 = 1_000_000.0
LEASE = 30.0


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An open store of one backend of the matrix."""
    s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def sqlite_plans(tmp_path: Path, query: str) -> Callable[[dict[str, Any]], list[str]]:
    """The plan of serve.sql's ``query`` on a SQLite store just migrated (in
    ``tmp_path``): a function of the query's parameters giving ``EXPLAIN QUERY PLAN``'s
    lines (``SEARCH tether_runs USING INDEX ...``), for the tests that a listing reads
    indexes, not every run."""
    url = f"sqlite:///{tmp_path / 'plan.db'}"

    async def migrate() -> None:
        s = open_store(url)
        await s.open()
        await s.close()

    asyncio.run(migrate())
    conn = apsw.Connection(str(tmp_path / "plan.db"))
    sql = load_queries("tether.store.sqlite", "serve.sql")[query]
    return lambda params: [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql,
                                                          params)]

def run_record(run_id: str, *, queue: str = "q", now: float = T0, workflow: str = "wf",
               status: str = "queued", parent: str | None = None,
               parent_position: int | None = None, on_parent_cancel: str = "cancel",
               available_at: float | None = None) -> RunRecord:
    return RunRecord(
        run_id=run_id, workflow=workflow, queue=queue, status=status, input="[[], {}]",
        created_at=now, updated_at=now,
        available_at=now if available_at is None and status == "queued" else available_at,
        parent_run_id=parent, parent_position=parent_position,
        on_parent_cancel=on_parent_cancel,
    )


def entry(position: int, status: str = "ok", *, name: str = "step", kind: str = "step",
          result: str | None = "1", now: float = T0) -> JournalEntry:
    return JournalEntry(position=position, kind=kind, name=name, status=status,
                        result=result if status == "ok" else None, attempts=1,
                        started_at=now, finished_at=now if status != "pending" else None)


async def start_and_claim(store: Store, run_id: str, *, now: float = T0,
                          worker: str = "w1", **kw: object) -> ClaimedRun:
    """Insert a run and claim it (it must be the only claimable one on its queue)."""
    await store.run_insert(run=run_record(run_id, now=now, **kw))  # type: ignore[arg-type]
    queue = str(kw.get("queue", "q"))
    claimed = await store.run_claim(worker_id=worker, queues=[queue], limit=1, now=now,
                                    lease_seconds=LEASE)
    assert [c.run.run_id for c in claimed] == [run_id]
    return claimed[0]


@contextlib.asynccontextmanager
async def subscriber(store: Store) -> AsyncIterator[asyncio.Event]:
    """Another store object on ``store``'s URL, subscribed to its wake-ups: the event is
    set when one arrives (as a worker of another process would be woken)."""
    other = open_store(store.url)
    await other.open()
    try:
        woken = asyncio.Event()
        unsubscribe = await other.subscribe(woken.set)
        try:
            yield woken
        finally:
            await unsubscribe()
    finally:
        await other.close()


async def cancel_close(store: Store) -> None:
    """Call ``store.close()`` from a task and cancel that task while the closing is held
    up: the task must end cancelled at once (a swallowed cancellation would keep it
    waiting for whatever holds the closing up)."""
    closing = asyncio.create_task(store.close())
    await asyncio.sleep(0.05)
    closing.cancel()
    done, _ = await asyncio.wait({closing}, timeout=10)
    assert done and closing.cancelled()


@pytest.fixture
def bare_role(pg_url: str) -> Iterator[tuple[str, str]]:
    """A PostgreSQL role that may log in and nothing more (no CREATE on the database),
    and ``pg_url`` as that role; dropped, with what it came to own, after the test."""
    import psycopg

    role = f"tether_bare_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        parts = urlsplit(pg_url)
        yield role, urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
