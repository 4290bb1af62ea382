"""A lone journal append committed on the event loop's thread (the SQLite writer thread
idle, nothing else ready): durable when it returns, the same errors as the writer
thread's, and never ahead of queued work or waiting on another process's lock. Appends
made while other work is ready, grouped and committed there too, on the same terms. And
a small read of runs made there as well."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import apsw
import pytest

from tether._types import Lease
from tether.errors import LeaseLost, StoreError
from tether.store import Wait
from tether.store._lifecycle import AttemptRecord
from tether.store.sqlite import SqliteStore
from tether.store.sqlite import _store as sqlite_store

from .conftest import entry, run_record, start_and_claim, subscriber


@pytest.fixture
def store_url(sqlite_url: str) -> str:
    """SQLite only: ``store`` (tests/store/conftest.py) opens a ``SqliteStore`` here."""
    return sqlite_url


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of the thread each journal append ran on (one name per append, also
    for those a batch writes in one statement)."""
    seen: list[str] = []
    real = sqlite_store._journal_append
    real_many = sqlite_store._appends

    def recorded(conn: apsw.Connection, lease: Lease, e: Any) -> None:
        seen.append(threading.current_thread().name)
        real(conn, lease, e)

    def recorded_many(conn: apsw.Connection, ops: list[Any], *args: Any) -> Any:
        seen.extend([threading.current_thread().name] * len(ops))
        return real_many(conn, ops, *args)

    real_alone = sqlite_store._appends_alone

    def recorded_alone(conn: apsw.Connection, ops: list[Any]) -> Any:
        written = real_alone(conn, ops)
        if written is not None:  # (None: nothing written; they are written again)
            seen.extend([threading.current_thread().name] * len(ops))
        return written

    monkeypatch.setattr(sqlite_store, "_journal_append", recorded)
    monkeypatch.setattr(sqlite_store, "_appends", recorded_many)
    monkeypatch.setattr(sqlite_store, "_appends_alone", recorded_alone)
    yield seen


@pytest.fixture
def executed(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread each batch (``_execute``) ran on."""
    seen: list[str] = []
    real = store._execute

    def recorded(conn: apsw.Connection, batch: list[Any], **kw: Any) -> Any:
        seen.append(threading.current_thread().name)
        return real(conn, batch, **kw)

    monkeypatch.setattr(store, "_execute", recorded)
    return seen


def _rows(store: SqliteStore, run_id: str) -> list[tuple[int, str]]:
    """The run's journal as another connection sees it (committed rows only)."""
    conn = apsw.Connection(store.path)
    try:
        return [(int(p), str(s)) for p, s in conn.execute(
            "SELECT position, status FROM tether_journal WHERE run_id = ? ORDER BY position",
            (run_id,))]
    finally:
        conn.close()


async def _idle() -> None:
    """Let the loop run whatever is ready (the test's own start-up callbacks)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_an_idle_append_commits_on_the_loop_thread(
        store: SqliteStore, threads: list[str]) -> None:
    lease = (await start_and_claim(store, "a")).lease
    await _idle()
    assert store._append_inline(lease, entry(0))
    assert _rows(store, "a") == [(0, "ok")]  # committed before it returned
    await _idle()
    await store.journal_append(lease=lease, entry=entry(1))
    assert threads == [threading.current_thread().name] * 2
    assert _rows(store, "a") == [(0, "ok"), (1, "ok")]


async def test_with_other_work_ready_appends_are_grouped_on_the_loop_thread(
        store: SqliteStore, threads: list[str]) -> None:
    """Appends made while other work is ready are gathered for the rest of the loop's
    pass and committed together at the start of the next, on the loop's thread (the
    writer thread idle): none before the pass ends, all durable when awaited."""
    leases = [(await start_and_claim(store, rid)).lease for rid in ("a", "b", "c")]
    asyncio.get_running_loop().call_soon(lambda: None)
    tasks = [asyncio.ensure_future(store.journal_append(lease=lease, entry=entry(0)))
             for lease in leases]
    await asyncio.sleep(0)  # each task ran up to its await: gathered, not committed
    assert [_rows(store, rid) for rid in "abc"] == [[], [], []]
    assert not store._pending
    await asyncio.gather(*tasks)
    assert [_rows(store, rid) for rid in "abc"] == [[(0, "ok")]] * 3
    assert threads == [threading.current_thread().name] * 3
    assert not store._groups
    # A timer that falls due within an inline commit's time: no lone inline append.
    store._inline_cost = 3600.0
    handle = asyncio.get_running_loop().call_later(60, lambda: None)
    await _idle()
    try:
        assert not store._append_inline(leases[0], entry(1))
    finally:
        handle.cancel()
    assert _rows(store, "a") == [(0, "ok")]


async def test_a_group_goes_to_the_writer_thread_when_it_is_busy_or_too_large(
        store: SqliteStore, threads: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Queued work first: a group behind an operation the writer thread has not done
    yet is queued after it; a group above _GROUP_INLINE_MAX is the writer's too."""
    a, b = [(await start_and_claim(store, rid)).lease for rid in ("a", "b")]
    await _idle()
    threads.clear()
    store._conn_lock.acquire()  # the writer thread cannot finish what it has queued
    try:
        queued = store.journal_append_nowait(lease=a, entry=entry(0, "pending"))
        grouped = store._group_append(a, entry(0))  # the final entry, after the pending
        await asyncio.sleep(0)  # the group's flush: behind the queued append
        assert store._pending == 2 and not store._groups
    finally:
        store._conn_lock.release()
    await asyncio.gather(queued, grouped)
    assert threads and set(threads) == {"tether-sqlite"}
    assert _rows(store, "a") == [(0, "ok")]
    monkeypatch.setattr(sqlite_store, "_GROUP_INLINE_MAX", 1)
    threads.clear()
    await asyncio.gather(store._group_append(a, entry(1)), store._group_append(b, entry(0)))
    assert threads and set(threads) == {"tether-sqlite"}
    assert _rows(store, "a") == [(0, "ok"), (1, "ok")] and _rows(store, "b") == [(0, "ok")]


async def test_a_failed_append_in_a_group_fails_alone(
        store: SqliteStore, threads: list[str]) -> None:
    a, b = [(await start_and_claim(store, rid)).lease for rid in ("a", "b")]
    stale = Lease(a.run_id, a.worker_id, a.fencing_token + 1)
    outcomes = await asyncio.gather(
        store._group_append(b, entry(0)), store._group_append(stale, entry(0)),
        store._group_append(a, entry(1)), return_exceptions=True)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], LeaseLost)
    assert set(threads) == {threading.current_thread().name}
    assert _rows(store, "a") == [(1, "ok")] and _rows(store, "b") == [(0, "ok")]


async def test_runs_ends_and_attempts_are_grouped_and_ends_wake_the_workers(
        store: SqliteStore, executed: list[str]) -> None:
    """Runs' ends and attempt histories made while the loop is busy join its group like
    appends: committed on the loop's thread, a failure (a lost lease) failing alone,
    and a committed end waking the workers of other store objects."""
    a, b = [(await start_and_claim(store, rid)).lease for rid in ("a", "b")]
    stale = Lease(b.run_id, b.worker_id, b.fencing_token + 1)
    record = AttemptRecord("t1", "a", 0, 0, "s", 1, "w1", "ok", 1.0, 2.0, None)
    executed.clear()  # the claims above
    async with subscriber(store) as woken:
        asyncio.get_running_loop().call_soon(lambda: None)
        outcomes = await asyncio.gather(
            store.attempt_record(attempts=[record]),
            store.run_finish(lease=a, status="completed", result="1", error=None, now=2.0),
            store.run_finish(lease=stale, status="completed", result="2", error=None,
                             now=2.0),
            return_exceptions=True)
        await asyncio.wait_for(woken.wait(), 5)
    assert outcomes[:2] == [None, "completed"] and isinstance(outcomes[2], LeaseLost)
    assert executed == [threading.current_thread().name]  # one group, on the loop
    got_a, got_b = await store.run_get("a"), await store.run_get("b")
    assert got_a is not None and got_a.status == "completed" and got_a.result == "1"
    assert got_b is not None and got_b.status == "running"
    assert [(t.attempt_id, t.status) for t in await store.attempt_list("a")] == [("t1", "ok")]


async def test_a_workers_claims_join_the_group(store: SqliteStore,
                                              executed: list[str]) -> None:
    """A small claim and the next-available query (a worker's, as its runs end) go with
    the loop's group, on its thread; a claim of more than _GROUP_INLINE_MAX runs goes
    to the writer thread."""
    for i in range(3):
        await store.run_insert(run=run_record(f"r{i}", now=1.0 + i))
    executed.clear()  # the inserts
    asyncio.get_running_loop().call_soon(lambda: None)
    claimed, due = await asyncio.gather(
        store.run_claim(worker_id="w", queues=["q"], limit=2, now=10.0, lease_seconds=30),
        store.next_available_at(queues=["q"]))
    assert [c.run.run_id for c in claimed] == ["r0", "r1"] and due == 3.0
    assert executed == [threading.current_thread().name]
    big = await store.run_claim(worker_id="w", queues=["q"],
                                limit=sqlite_store._GROUP_INLINE_MAX + 1, now=10.0,
                                lease_seconds=30)
    assert [c.run.run_id for c in big] == ["r2"]
    assert executed[-1] == "tether-sqlite"


async def test_a_write_sent_to_the_writer_goes_behind_the_loops_group(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that goes straight to the writer thread (a release) made while the loop
    has gathered writes it has not committed yet takes the group with it, ahead of
    itself: a loop's writes commit in the order it issued them (``ordered_writes``,
    which a run's end relies on to commit after its attempts without waiting for
    them). A read does not: it has no order to keep."""
    a, b = [(await start_and_claim(store, rid)).lease for rid in ("a", "b")]
    batches: list[list[str]] = []
    real = store._execute

    def recorded(conn: apsw.Connection, batch: list[Any], **kw: Any) -> Any:
        batches.append([op.fn.__name__ for op in batch])
        return real(conn, batch, **kw)

    monkeypatch.setattr(store, "_execute", recorded)
    appended = store._group_append(a, entry(0))
    read = store._read(sqlite_store._run_get, "a")
    assert store._groups  # a read leaves the group where it is
    released = store._write(sqlite_store._run_release, b, Wait(None, "x"), 2.0)
    assert not store._groups  # the release took it along
    await asyncio.gather(appended, read, released)
    assert ["_journal_append", "_run_release"] in [
        [n for n in names if n != "_run_get"] for names in batches]
    assert _rows(store, "a") == [(0, "ok")]


async def test_close_commits_a_group_gathered_before_it(store: SqliteStore) -> None:
    a = (await start_and_claim(store, "a")).lease
    appended = store._group_append(a, entry(0))
    await store.close()  # before the loop's next pass flushed the group
    await appended
    assert _rows(store, "a") == [(0, "ok")]
    with pytest.raises(StoreError, match="not open"):
        store._group_append(a, entry(1))


def _suspends(coro: Any) -> bool:
    """Drive ``coro`` (a ``journal_append`` that commits inline) to its end; whether it
    gave the event loop a turn on the way (an ``await asyncio.sleep(0)`` suspends it
    once with ``None``)."""
    suspended = False
    try:
        while True:
            assert coro.send(None) is None  # only a bare yield, never a future to await
            suspended = True
    except StopIteration:
        return suspended


async def test_inline_appends_yield_to_the_loop_only_now_and_then(
        store: SqliteStore, threads: list[str]) -> None:
    lease = (await start_and_claim(store, "a")).lease
    await _idle()
    store._turns.last = 0.0  # long ago: this append gives the loop a turn
    assert _suspends(store.journal_append(lease=lease, entry=entry(0)))
    store._turns.last = time.perf_counter() + 3600  # just now: these ones do not
    assert not _suspends(store.journal_append(lease=lease, entry=entry(1)))
    assert not _suspends(store.journal_append(lease=lease, entry=entry(2)))
    assert threads == [threading.current_thread().name] * 3
    assert _rows(store, "a") == [(0, "ok"), (1, "ok"), (2, "ok")]


async def test_a_run_of_inline_appends_still_lets_the_loop_see_its_sockets(
        store: SqliteStore, threads: list[str]) -> None:
    """A sequential run's steps commit inline one after the other, yielding to the loop
    only now and then; a socket that became readable meanwhile is served at the next
    yield (about _INLINE_YIELD_EVERY later), not after the run."""
    lease = (await start_and_claim(store, "a")).lease
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    served: list[int] = []
    appended = [0]
    try:
        def readable() -> None:
            left.recv(1)
            served.append(appended[0])
            loop.remove_reader(left.fileno())

        loop.add_reader(left.fileno(), readable)
        await _idle()
        await store.journal_append(lease=lease, entry=entry(0))  # yields: the first one
        appended[0] = 1
        right.send(b"x")
        started = time.perf_counter()
        while not served and appended[0] < 5000:
            await store.journal_append(lease=lease, entry=entry(appended[0]))
            appended[0] += 1
        took = time.perf_counter() - started
    finally:
        loop.remove_reader(left.fileno())
        left.close()
        right.close()
    assert served, "the socket was never served while the appends ran"
    assert took < 2.0
    # Inline up to the yield that let the loop see the socket; the append after it
    # found the socket's callback ready and went to the writer thread.
    assert threads[:served[0]] == [threading.current_thread().name] * served[0]


async def test_never_ahead_of_queued_work(store: SqliteStore, threads: list[str]) -> None:
    lease = (await start_and_claim(store, "a")).lease
    await _idle()
    queued = store.journal_append_nowait(lease=lease, entry=entry(0, "pending"))
    assert not store._append_inline(lease, entry(0))  # the writer has one to do first
    await queued
    await _idle()
    await store.journal_append(lease=lease, entry=entry(0))
    assert threads == ["tether-sqlite", threading.current_thread().name]
    assert _rows(store, "a") == [(0, "ok")]


async def test_inline_errors_are_the_writer_threads(
        store: SqliteStore, threads: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same errors whichever way an append was committed: alone on the loop's
    thread, in a group there, or by the writer thread."""
    lease = (await start_and_claim(store, "a")).lease
    stale = Lease(lease.run_id, lease.worker_id, lease.fencing_token + 1)
    await store.journal_append(lease=lease, entry=entry(0))
    threads.clear()
    outcomes: list[tuple[type[BaseException], str]] = []
    for way in ("inline", "group", "writer"):
        monkeypatch.setattr(sqlite_store, "_GROUP_INLINE_MAX", 0 if way == "writer" else 128)
        for bad_lease, e in ((stale, entry(1)), (lease, entry(0, result="2"))):
            if way == "inline":
                await _idle()
            else:
                asyncio.get_running_loop().call_soon(lambda: None)
            with pytest.raises((LeaseLost, StoreError)) as info:
                await store.journal_append(lease=bad_lease, entry=e)
            outcomes.append((type(info.value), str(info.value)))
    here = threading.current_thread().name
    assert threads == [here] * 4 + ["tether-sqlite"] * 2
    assert outcomes[:2] == outcomes[2:4] == outcomes[4:]
    assert outcomes[0][0] is LeaseLost
    assert outcomes[1][0] is StoreError and "final journal entry" in outcomes[1][1]
    assert _rows(store, "a") == [(0, "ok")]
    await _idle()
    await store.journal_append(lease=lease, entry=entry(1))  # the connection still works
    assert _rows(store, "a") == [(0, "ok"), (1, "ok")]


async def test_another_process_write_lock_is_waited_for_on_the_writer_thread(
        store: SqliteStore, threads: list[str]) -> None:
    lease = (await start_and_claim(store, "a")).lease
    other = apsw.Connection(store.path)
    try:
        other.execute("BEGIN IMMEDIATE")
        await _idle()
        assert not store._append_inline(lease, entry(0))  # does not wait on the loop
        task = asyncio.ensure_future(store.journal_append(lease=lease, entry=entry(0)))
        # A group is tried once on the loop, without waiting, then handed over.
        grouped = store._group_append(lease, entry(1))
        await asyncio.sleep(0.1)
        assert not task.done() and not grouped.done()  # the writer thread waits
        other.execute("ROLLBACK")
        await asyncio.gather(task, grouped)
    finally:
        other.close()
    here = threading.current_thread().name
    assert here in threads and threads[-1] == "tether-sqlite"
    assert _rows(store, "a") == [(0, "ok"), (1, "ok")]


async def test_a_closed_store_appends_nothing(store: SqliteStore) -> None:
    lease = (await start_and_claim(store, "a")).lease
    await store.close()
    assert not store._append_inline(lease, entry(0))
    with pytest.raises(StoreError, match="not open"):
        await store.journal_append(lease=lease, entry=entry(0))
    assert _rows(store, "a") == []


# -- inline reads ---------------------------------------------------------------------


@pytest.fixture
def read_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of the thread each read of runs (``run_get``, ``run_get_many``) ran on."""
    seen: list[str] = []
    for name in ("_run_get", "_run_get_many"):
        real = getattr(sqlite_store, name)

        def recorded(conn: apsw.Connection, *args: Any, _real: Any = real) -> Any:
            seen.append(threading.current_thread().name)
            return _real(conn, *args)

        monkeypatch.setattr(sqlite_store, name, recorded)
    yield seen


async def test_an_idle_writer_lets_a_read_run_on_the_callers_thread(
        store: SqliteStore, read_threads: list[str]) -> None:
    await start_and_claim(store, "a")
    read_threads.clear()  # the claim's own reads
    here = threading.current_thread().name
    run = await store.run_get("a")
    assert run is not None and run.status == "running"
    assert await store.run_get("nope") is None
    runs = await store.run_get_many(["a", "nope"])
    assert [r.run_id for r in runs] == ["a"]
    assert await store.run_get_many(["a"], settled_only=True) == []
    assert read_threads == [here] * 4


async def test_a_read_behind_queued_work_waits_for_it_on_the_writer_thread(
        store: SqliteStore, read_threads: list[str]) -> None:
    claimed = await start_and_claim(store, "a")
    read_threads.clear()
    assert claimed.run.cancel_requested is False
    # The writer thread needs the connection's lock to commit: holding it keeps the
    # cancel queued (under load the thread could otherwise commit it within the loop's
    # pass, and the read below would find the writer idle).
    with store._conn_lock:
        task = asyncio.ensure_future(store.run_cancel(run_id="a", now=2.0))
        await asyncio.sleep(0)  # queued, not yet committed
        assert store._pending
        reading = asyncio.ensure_future(store.run_get("a"))
        await asyncio.sleep(0)
        assert not reading.done()
    run = await reading  # sees the cancel request queued before it
    await task
    assert run is not None and run.cancel_requested
    assert set(read_threads) == {"tether-sqlite"}  # the cancel's own read, then ours


async def test_a_long_read_goes_with_the_group_or_to_the_writer_thread(
        store: SqliteStore, read_threads: list[str]) -> None:
    await start_and_claim(store, "a")
    read_threads.clear()
    here = threading.current_thread().name
    ids = ["a"] + [f"x{i}" for i in range(sqlite_store._GROUP_READ_MAX)]
    assert [r.run_id for r in await store.run_get_many(ids)] == ["a"]
    assert read_threads == ["tether-sqlite"]
    # Up to _GROUP_READ_MAX: with this loop's group (on its thread, the writer idle).
    medium = ids[:sqlite_store._INLINE_READ_MAX + 1]
    assert [r.run_id for r in await store.run_get_many(medium)] == ["a"]
    assert [r.run_id for r in await store.run_get_many(ids[:-1])] == ["a"]
    assert read_threads == ["tether-sqlite", here, here]


async def test_an_inline_read_does_not_wait_for_another_process_lock(
        store: SqliteStore) -> None:
    """A lock held elsewhere (SQLITE_BUSY: in WAL mode only in narrow windows, such as
    another process's recovery of the WAL index) is not waited for on the loop: the
    read is left to the writer thread, and the connection still works."""
    tried: list[str] = []

    def busy(conn: apsw.Connection) -> None:
        tried.append(threading.current_thread().name)
        raise apsw.BusyError("database is locked")

    assert store._call_inline(busy) == (False, None)
    assert tried == [threading.current_thread().name]
    assert await store.run_get("a") is None
    await start_and_claim(store, "a")
    assert (await store.run_get("a")) is not None


async def test_a_closed_store_reads_nothing(store: SqliteStore) -> None:
    await start_and_claim(store, "a")
    await store.close()
    assert store._call_inline(sqlite_store._run_get, "a") == (False, None)
    with pytest.raises(StoreError, match="not open"):
        await store.run_get("a")
