"""The SQLite writer's batches: journal appends queued together are written by one
statement per chunk, and each still gets its own outcome, in queue order."""

from __future__ import annotations

import asyncio
import glob
import json
import pathlib
import threading
from typing import Any

import apsw
import pytest

from tether._types import JournalEntry, Lease
from tether.errors import LeaseLost, StoreError
from tether.store import Wait
from tether.store.sqlite import SqliteStore
from tether.store.sqlite import _store as sqlite_store

from .conftest import T0, entry, run_record, start_and_claim


@pytest.fixture
def store_url(sqlite_url: str) -> str:
    """SQLite only: ``store`` (tests/store/conftest.py) opens a ``SqliteStore`` here."""
    return sqlite_url


async def _in_one_batch(store: SqliteStore, calls: list[tuple[Lease, JournalEntry] | str],
                        leases: dict[str, Lease] | None = None) -> list[Any]:
    """Queue ``calls`` while the writer thread is held, so they form one batch; a
    string ``finish:<run id>`` queues that run's end (``blocked:<run id>``: its end as
    blocked). Returns each outcome (None, an end's status, or the exception)."""
    release = threading.Event()
    held = store._write(lambda conn: release.wait(10))
    await asyncio.sleep(0.05)  # the writer is now inside the holding operation
    futures: list[asyncio.Future[Any]] = []
    for call in calls:
        if isinstance(call, str):
            kind, run_id = call.split(":", 1)
            status = "blocked" if kind == "blocked" else "completed"
            futures.append(store._write_wake(sqlite_store._run_finish,
                                             (leases or {})[run_id], status, "1", None,
                                             T0 + 1))
        else:
            lease, e = call
            futures.append(store.journal_append_nowait(lease=lease, entry=e))
    release.set()
    await held
    return list(await asyncio.gather(*futures, return_exceptions=True))


async def test_appends_in_one_batch_each_get_their_own_outcome(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    statements: list[int] = []
    real = sqlite_store._appends

    def counted(conn: apsw.Connection, ops: list[Any], foreign: Any) -> Any:
        statements.append(len(ops))
        return real(conn, ops, foreign)

    monkeypatch.setattr(sqlite_store, "_appends", counted)
    a = (await start_and_claim(store, "a", queue="qa")).lease
    b = (await start_and_claim(store, "b", queue="qb")).lease
    c = (await start_and_claim(store, "c", queue="qc")).lease
    stale = Lease(c.run_id, c.worker_id, c.fencing_token + 1)
    await store.journal_append(lease=a, entry=entry(5))

    outcomes = await _in_one_batch(store, [
        (a, entry(0)), (b, entry(0, "pending")), (stale, entry(0)),
        (a, entry(5, result="2")),  # a final entry is never overwritten
        (b, entry(1)), (a, entry(1)),
        "finish:a",
        (a, entry(2)),  # after its end, in queue order: refused
        (c, entry(0)),
    ], {"a": a})
    assert outcomes[:3] == [None, None, outcomes[2]]
    assert isinstance(outcomes[2], LeaseLost)
    assert isinstance(outcomes[3], StoreError) and "final journal entry" in str(outcomes[3])
    assert outcomes[4:7] == [None, None, "completed"]  # (an end: its status)
    assert isinstance(outcomes[7], LeaseLost)
    assert outcomes[8] is None
    # the 6 appends before the end: one statement (of 8 rows, two of them padding)
    assert statements[0] == 6

    journal_a = await store.journal_read("a")
    assert [(e.position, e.status, e.result) for e in journal_a] == [
        (0, "ok", "1"), (1, "ok", "1"), (5, "ok", "1")]
    assert [(e.position, e.status) for e in await store.journal_read("b")] == [
        (0, "pending"), (1, "ok")]
    assert [(e.position, e.status) for e in await store.journal_read("c")] == [(0, "ok")]


async def test_two_appends_of_one_position_in_a_batch_apply_in_order(
        store: SqliteStore) -> None:
    b = (await start_and_claim(store, "b", queue="qb")).lease
    outcomes = await _in_one_batch(store, [
        (b, entry(0, "pending")), (b, entry(0, result="7")), (b, entry(0, result="8")),
        (b, entry(1)),
    ])
    assert outcomes[:2] == [None, None] and outcomes[3] is None
    assert isinstance(outcomes[2], StoreError)  # the second final entry is refused
    assert [(e.position, e.status, e.result) for e in await store.journal_read("b")] == [
        (0, "ok", "7"), (1, "ok", "1")]


async def test_a_batch_is_written_whole_or_undone_and_its_events_once(
        store: SqliteStore) -> None:
    """One statement writes a chunk, all or none: a batch that turns pending entries
    final writes each once with one op event; a batch one of whose appends is refused
    is undone by SQLite (the statement that was its own transaction, then the same in a
    transaction) and each append runs alone, so the others' rows and events are written
    once, not twice, and the refused one's not at all."""
    a = (await start_and_claim(store, "a", queue="qa")).lease
    b = (await start_and_claim(store, "b", queue="qb")).lease
    assert await _in_one_batch(store, [(a, entry(0, "pending")), (b, entry(0, "pending"))]) \
        == [None, None]
    assert await _in_one_batch(store, [(a, entry(0, result="3")), (b, entry(0, result="4"))]) \
        == [None, None]  # the upsert's update path: pending -> final
    stale = Lease(b.run_id, b.worker_id, b.fencing_token + 1)
    outcomes = await _in_one_batch(store, [(a, entry(1)), (stale, entry(1)), (a, entry(2))])
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], LeaseLost)
    assert [(e.position, e.status, e.result) for e in await store.journal_read("a")] == [
        (0, "ok", "3"), (1, "ok", "1"), (2, "ok", "1")]
    assert [(e.position, e.result) for e in await store.journal_read("b")] == [(0, "4")]

    def ops(run_id: str) -> list[tuple[int, str]]:
        return [(json.loads(e.data)["position"], json.loads(e.data)["status"])
            for e in events[run_id]
                if e.kind == "op"]

    events = {r: await store.run_events_read(run_id=r, after=None) for r in ("a", "b")}
    assert ops("a") == [(0, "ok"), (1, "ok"), (2, "ok")]
    assert ops("b") == [(0, "ok")]


async def test_a_batch_of_appends_alone_is_one_statement_and_its_own_transaction(
        store: SqliteStore) -> None:
    """Appends alone in a batch (concurrent runs' steps) are one call into SQLite: no
    BEGIN or COMMIT of their own (each call lets the busy event loop take the GIL)."""
    a = (await start_and_claim(store, "a", queue="qa")).lease
    b = (await start_and_claim(store, "b", queue="qb")).lease
    seen: list[str] = []

    def trace(cursor: Any, sql: str, bindings: Any) -> bool:
        seen.append(sql.split()[0])
        return True

    assert store._conn is not None
    store._conn.exec_trace = trace
    try:
        outcomes = await _in_one_batch(store, [(a, entry(0)), (b, entry(0)), (a, entry(1))])
    finally:
        store._conn.exec_trace = None
    assert outcomes == [None, None, None]
    assert seen == ["BEGIN", "COMMIT", "INSERT"]  # the batch holding the writer, then it
    assert [e.position for e in await store.journal_read("a")] == [0, 1]
    assert [e.position for e in await store.journal_read("b")] == [0]


async def test_more_appends_than_one_statement_takes(store: SqliteStore) -> None:
    leases = [(await start_and_claim(store, f"r{i}", queue=f"q{i}")).lease
              for i in range(3)]
    calls: list[tuple[Lease, JournalEntry] | str] = [
        (leases[i % 3], entry(i // 3, result=str(i)))
        for i in range(3 * sqlite_store._APPEND_CHUNK + 5)]
    outcomes = await _in_one_batch(store, calls)
    assert outcomes == [None] * len(calls)
    for i in range(3):
        journal = await store.journal_read(f"r{i}")
        assert [e.result for e in journal] == [
            str(p * 3 + i) for p in range(len(journal))]
        assert len(journal) == sqlite_store._APPEND_CHUNK + (2 if i < 2 else 1)


async def test_attempts_recorded_in_chunks_keep_the_last_state_of_each(
        store: SqliteStore) -> None:
    from tether.store._lifecycle import AttemptRecord

    def attempt(i: int, status: str, finished: float | None = None) -> AttemptRecord:
        return AttemptRecord(f"a{i:03}", "r", 0, i, "step", 1, "w1", status, T0 + i,
                             finished)

    n = 2 * _attempt_chunk() + 7
    batch = [attempt(i, "running") for i in range(n)]
    batch += [attempt(i, "ok", T0 + i + 0.5) for i in range(0, n, 2)]  # later states
    await store.attempt_record(attempts=batch)
    got = await store.attempt_list("r")
    assert [(a.attempt_id, a.status, a.finished_at) for a in got] == [
        (f"a{i:03}", "ok" if i % 2 == 0 else "running",
         T0 + i + 0.5 if i % 2 == 0 else None) for i in range(n)]


def _attempt_chunk() -> int:
    from tether.store.sqlite import _lifecycle

    return _lifecycle.ATTEMPT_CHUNK


async def test_each_loop_is_answered_on_its_own(store: SqliteStore) -> None:
    """The store remembers the loop of its last caller (``_running_loop``, to skip
    ``get_running_loop``'s ``getpid``); a call from another thread's loop, and the
    first call back on this one, must each still get a future of their own loop."""
    assert await store.worker_list() == []
    assert store._last_loop is asyncio.get_running_loop()

    def elsewhere() -> list[Any]:
        async def call() -> list[Any]:
            loop = asyncio.get_running_loop()
            first = await store.worker_list()
            assert store._last_loop is loop
            return first

        return asyncio.run(call())  # a new loop in another thread

    assert await asyncio.to_thread(elsewhere) == []
    assert await asyncio.to_thread(elsewhere) == []  # another loop again: not the stale one
    assert await store.worker_list() == []
    assert store._last_loop is asyncio.get_running_loop()



async def _two_waiting_parents(store: SqliteStore) -> dict[str, Lease]:
    """Parents p1 and p2 waiting for children c1 and c2, which are claimed: their
    leases by run id."""
    leases: dict[str, Lease] = {}
    for k in ("1", "2"):
        parent = (await start_and_claim(store, f"p{k}", queue=f"q{k}")).lease
        await store.child_start(
            lease=parent, child=run_record(f"c{k}", queue="kids", parent=f"p{k}",
                                           parent_position=0),
            entry=entry(0, kind="child_start", name=f"c{k}", result=f'"c{k}"'))
        await store.run_release(lease=parent, wait=Wait(None, f"child c{k}", child=f"c{k}"),
                                now=T0 + 1)
        child = (await store.run_claim(worker_id="w2", queues=["kids"], limit=1, now=T0,
                                       lease_seconds=60))[0].lease
        leases[child.run_id] = child
    return leases


async def test_ends_in_one_batch_are_three_statements_and_wake_their_parents(
        store: SqliteStore) -> None:
    """Runs' ends queued together are written by one statement (the runs waiting for
    them woken by a second, and parents waiting for one of several children by a
    third), not four statements each; each run's status event once."""
    leases = await _two_waiting_parents(store)
    leases["r"] = (await start_and_claim(store, "r", queue="qr")).lease
    seen: list[str] = []

    def trace(cursor: Any, sql: str, bindings: Any) -> bool:
        seen.append(" ".join(sql.split()[:2]))
        return True

    assert store._conn is not None
    store._conn.exec_trace = trace
    try:
        outcomes = await _in_one_batch(store, ["finish:c1", "finish:r", "finish:c2"], leases)
    finally:
        store._conn.exec_trace = None
    assert outcomes == ["completed"] * 3
    # the batch holding the writer, then the ends' batch
    assert seen == ["BEGIN IMMEDIATE", "COMMIT", "BEGIN IMMEDIATE", "SAVEPOINT ends",
                    "UPDATE tether_runs", "UPDATE tether_runs", "UPDATE tether_runs",
                    "RELEASE ends", "COMMIT"]
    for run_id in ("c1", "c2", "r"):
        run = await store.run_get(run_id)
        assert run is not None and run.status == "completed" and run.finished_at == T0 + 1
        assert run.owner is None and run.result == "1"
        statuses = [json.loads(e.data)["status"]
                    for e in await store.run_events_read(run_id=run_id, after=None)
                    if e.kind == "status"]
        assert statuses.count("completed") == 1
    for parent in ("p1", "p2"):
        run = await store.run_get(parent)
        assert run is not None and run.status == "waiting" and run.available_at == T0 + 1


async def test_a_stale_lease_among_ends_fails_alone_and_nothing_is_written_twice(
        store: SqliteStore) -> None:
    leases = await _two_waiting_parents(store)
    c2 = leases["c2"]
    leases["c2"] = Lease(c2.run_id, c2.worker_id, c2.fencing_token + 1)  # not current
    leases["r"] = (await start_and_claim(store, "r", queue="qr")).lease
    outcomes = await _in_one_batch(store, ["finish:c1", "finish:c2", "finish:r"], leases)
    assert outcomes[0] == "completed" and outcomes[2] == "completed"
    assert isinstance(outcomes[1], LeaseLost)
    for run_id, status in (("c1", "completed"), ("c2", "running"), ("r", "completed")):
        run = await store.run_get(run_id)
        assert run is not None and run.status == status
        events = [json.loads(e.data)["status"]
                  for e in await store.run_events_read(run_id=run_id, after=None)
                  if e.kind == "status"]
        assert events.count("completed") == (status == "completed")
    woken = await store.run_get("p1")
    asleep = await store.run_get("p2")  # its child did not end: still waiting for it
    assert woken is not None and woken.available_at == T0 + 1
    assert asleep is not None and asleep.available_at is None


async def test_a_blocked_end_among_ends_whose_cancel_is_pending_ends_cancelled(
        store: SqliteStore) -> None:
    """Ends in one batch, one of them ``blocked`` with a cancel pending (asked after its
    worker last heard of cancels): that one ends ``cancelled`` and its child is
    cancelled in the batch's transaction; a blocked end without a cancel stays blocked,
    and the others end as asked. Each caller hears its run's status."""
    leases = await _two_waiting_parents(store)
    leases["r"] = (await start_and_claim(store, "r", queue="qr")).lease
    leases["b"] = (await start_and_claim(store, "b", queue="qb")).lease
    await store.child_start(lease=leases["r"], child=run_record("rc", queue="rk", parent="r",
                                                                parent_position=0),
                            entry=entry(0, kind="child_start", name="rc", result='"rc"'))
    await store.run_cancel(run_id="r", now=T0)
    outcomes = await _in_one_batch(store, ["finish:c1", "blocked:r", "blocked:b"], leases)
    assert outcomes == ["completed", "cancelled", "blocked"]
    for run_id, status in (("c1", "completed"), ("r", "cancelled"), ("b", "blocked"),
                           ("rc", "cancelled")):  # (rc never started: ended at once)
        run = await store.run_get(run_id)
        assert run is not None and run.status == status, (run_id, run)
    statuses = [json.loads(e.data)["status"]
                for e in await store.run_events_read(run_id="r", after=None)
                if e.kind == "status"]
    assert statuses[-1] == "cancelled" and "blocked" not in statuses


def test_the_ends_statements_look_each_run_up_by_its_index() -> None:
    """Named indexes: whatever the statistics, each row of the list finds its run by
    key, and the runs waiting for it by ``wait_child``, never by a scan of a status."""
    conn = apsw.Connection(":memory:")
    folder = pathlib.Path(sqlite_store.__file__).parent / "migrations"
    for path in sorted(glob.glob(str(folder / "*.sql"))):
        conn.execute(pathlib.Path(path).read_text())
    for sql, index in ((sqlite_store._finish_many_sql(4), "sqlite_autoindex_tether_runs_1"),
                       (sqlite_store._finish_many_sql(4, True),
                        "sqlite_autoindex_tether_runs_1"),
                       (sqlite_store._wake_many_sql(4), "tether_runs_wait_child")):
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql,
                                               [None] * sql.count("?"))]
        assert plan[0].startswith("SCAN") and "VALUES" in plan[0]
        assert plan[1].startswith(f"SEARCH tether_runs USING INDEX {index}")
