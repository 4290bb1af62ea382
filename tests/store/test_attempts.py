"""attempt_record: step attempts (history) written in batches, on every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tether.store import Store, open_store
from tether.store._lifecycle import AttemptRecord
from tether.store.sqlite import SqliteStore

from .conftest import LEASE, T0, entry, run_record, start_and_claim


def attempt(attempt_id: str, status: str, *, position: int = 0, attempt: int = 1,
            finished_at: float | None = None, error: str | None = None) -> AttemptRecord:
    return AttemptRecord(attempt_id, "r", 0, position, "s", attempt, "w1", status,
                         T0 + position, finished_at, error)


async def test_a_batch_inserts_updates_and_keeps_the_last_state_of_an_id(store: Store) -> None:
    await store.attempt_record(attempts=[attempt("a1", "running")])
    await store.attempt_record(attempts=[
        attempt("a1", "ok", finished_at=T0 + 0.5),  # updates the stored attempt
        attempt("a2", "running", position=1),
        attempt("a2", "error", position=1, finished_at=T0 + 2, error='{"m": "x"}'),
        attempt("a3", "running", position=1, attempt=2),
    ])
    await store.attempt_record(attempts=[])
    got = await store.attempt_list("r")
    assert [(a.attempt_id, a.status, a.finished_at, a.error) for a in got] == [
        ("a1", "ok", T0 + 0.5, None), ("a2", "error", T0 + 2, '{"m": "x"}'),
        ("a3", "running", None, None)]
    assert got[2].attempt == 2 and got[2].worker_id == "w1" and got[2].started_at == T0 + 1


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[Store]:
    s = open_store(sqlite_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def _leases(store: Store) -> list[tuple[str, int, str]]:
    assert isinstance(store, SqliteStore)
    return await store._read(lambda conn: [tuple(r) for r in conn.execute(
        "SELECT run_id, fencing_token, worker_id FROM tether_leases ORDER BY 1, 2")])


async def test_sqlite_reads_a_first_attempt_that_succeeded_from_its_entry(
        sqlite_store: Store) -> None:
    """SQLite (migration 0012): a step entry that succeeded at attempt 1 with no ``ok``
    row at its position is listed as that attempt, run by the worker that held the
    entry's lease (each claim records it); an ``ok`` row written is not listed twice, an
    interrupted attempt before it stays, a takeover's entries are the new worker's, an
    attempt whose entry was lost keeps its row beside the one journaled after it, an
    archived generation keeps its attempts, a fork's copied entries are not its
    attempts, and a purge forgets the leases."""
    store = sqlite_store
    assert store.capabilities.attempts_from_journal
    first = await start_and_claim(store, "r1", worker="w1")
    await store.journal_append(lease=first.lease, entry=entry(0, name="a", now=T0 + 1))
    await store.attempt_record(attempts=[  # position 1: written, the usual way
        AttemptRecord("x1", "r1", 0, 1, "b", 1, "w1", "running", T0 + 2)])
    await store.attempt_record(attempts=[
        AttemptRecord("x1", "r1", 0, 1, "b", 1, "w1", "ok", T0 + 2, T0 + 2.5)])
    await store.journal_append(lease=first.lease, entry=entry(1, name="b", now=T0 + 2))
    await store.attempt_record(attempts=[  # position 2: cut off on w1, then done on w2
        AttemptRecord("x2", "r1", 0, 2, "c", 1, "w1", "running", T0 + 3)])
    later = T0 + LEASE + 5
    [taken] = await store.run_claim(worker_id="w2", queues=["q"], limit=1, now=later,
                                    lease_seconds=LEASE)
    await store.journal_append(lease=taken.lease, entry=entry(2, name="c", now=later))
    await store.journal_append(lease=taken.lease, entry=entry(3, "error", name="d",
                                                              now=later))
    await store.attempt_record(attempts=[  # position 4: succeeded, its entry lost, again
        AttemptRecord("x3", "r1", 0, 4, "e", 1, "w2", "ok", later + 0.1, later + 0.2)])
    await store.journal_append(lease=taken.lease, entry=entry(4, name="e", now=later + 0.3))
    got = [(a.generation, a.position, a.name, a.attempt, a.worker_id, a.status,
            a.started_at, a.finished_at) for a in await store.attempt_list("r1")]
    assert got == [
        (0, 0, "a", 1, "w1", "ok", T0 + 1, T0 + 1),
        (0, 1, "b", 1, "w1", "ok", T0 + 2, T0 + 2.5),
        (0, 2, "c", 1, "w1", "running", T0 + 3, None),
        (0, 2, "c", 1, "w2", "ok", later, later),
        (0, 4, "e", 1, "w2", "ok", later + 0.1, later + 0.2),
        (0, 4, "e", 1, "w2", "ok", later + 0.3, later + 0.3),
    ]  # (the failed entry at 3 is not an attempt that succeeded: no row, nothing read)
    assert await _leases(store) == [("r1", 1, "w1"), ("r1", 2, "w2")]

    await store.run_continue(lease=taken.lease, input="[]", now=later + 1)
    [again] = await store.run_claim(worker_id="w3", queues=["q"], limit=1,
                                    now=later + 2, lease_seconds=LEASE)
    await store.journal_append(lease=again.lease, entry=entry(0, name="e", now=later + 3))
    got = [(a.generation, a.position, a.worker_id, a.status)
           for a in await store.attempt_list("r1")]
    assert got == [(0, 0, "w1", "ok"), (0, 1, "w1", "ok"), (0, 2, "w1", "running"),
                   (0, 2, "w2", "ok"), (0, 4, "w2", "ok"), (0, 4, "w2", "ok"),
                   (1, 0, "w3", "ok")]

    fork = await store.run_fork(source_run_id="r1", run=run_record("f1"), at=1)
    assert fork.run_id == "f1" and await store.attempt_list("f1") == []

    await store.run_finish(lease=again.lease, status="completed", result="1", error=None,
                           now=later + 4)
    await store.run_purge(finished_before=later + 10, statuses=["completed"])
    assert await store.run_get("r1") is None
    assert await _leases(store) == []


async def test_show_takes_a_running_attempt_that_its_entry_records_as_ended(
        store_url: str) -> None:
    """The worker died with the end of position 0's attempt noted but not yet written
    (the history is written every 50 ms), while its journal entry was committed: the
    attempt is shown as it ended (ok), not 'interrupted' as the tether demo showed it
    after its kill -9; position 1's attempt, with no entry, was cut off."""
    from tether import App

    store = open_store(store_url)
    await store.open()
    try:
        lease = (await start_and_claim(store, "r")).lease
        await store.attempt_record(attempts=[attempt("a0", "running"),
                                             attempt("a1", "running", position=1)])
        done = entry(0, now=T0)
        await store.journal_append(lease=lease, entry=done)
        await store.run_claim(worker_id="w2", queues=["q"], limit=1, now=T0 + LEASE + 1,
                              lease_seconds=LEASE)  # the lease expired: w2 took the run
    finally:
        await store.close()
    app = App(store_url)
    try:
        info = await app.get_run("r")
    finally:
        await app.close()
    shown = {(a["position"], a["attempt"]): (a["status"], a["finished_at"])
             for a in info.attempts}
    assert shown == {(0, 1): ("ok", T0), (1, 1): ("interrupted", None)}, shown
