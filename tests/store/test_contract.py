"""The Store contract, run on every backend (SQLite and PostgreSQL).

Each test builds records directly and moves time by passing ``now``; nothing sleeps
except the wake-up test, which waits for another store object's notification.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from tether._types import JournalEntry, Lease
from tether.errors import (
    ConfigError,
    LeaseLost,
    RunNotFound,
    SignalError,
    StoreError,
    TetherError,
)
from tether.store import Store, Wait, WorkerInfo, open_store
from tether.store._port import merge_waits, wait_list

from .conftest import LEASE, T0, entry, run_record, start_and_claim, subscriber

FINAL = ("completed", "failed", "cancelled")


async def claim(store: Store, now: float, *, queues: tuple[str, ...] = ("q",),
                limit: int = 10, worker: str = "w2") -> list[str]:
    got = await store.run_claim(worker_id=worker, queues=list(queues), limit=limit, now=now,
                                lease_seconds=LEASE)
    return [c.run.run_id for c in got]


# -- runs and claims ------------------------------------------------------------------


async def test_insert_is_idempotent_on_run_id(store: Store) -> None:
    """A second insert with the same run id stores nothing and returns the first run."""
    first, created = await store.run_insert(run=run_record("r1", workflow="a"))
    again, created_again = await store.run_insert(run=run_record("r1", workflow="b",
                                                                 now=T0 + 5))
    assert created and not created_again
    assert again.workflow == "a" and again.created_at == T0 == first.created_at
    assert [r.run_id for r in await store.run_list()] == ["r1"]


async def test_run_get_and_list(store: Store) -> None:
    """run_get finds a run or returns None; run_list is newest first and filters."""
    await store.run_insert(run=run_record("old", now=T0))
    await store.run_insert(run=run_record("new", now=T0 + 1))
    assert await store.run_get("missing") is None
    got = await store.run_get("old")
    assert got is not None and got.status == "queued" and got.fencing_token == 0
    assert [r.run_id for r in await store.run_list()] == ["new", "old"]
    assert [r.run_id for r in await store.run_list(limit=1)] == ["new"]
    await start_and_claim(store, "busy", now=T0 + 2, queue="other")
    assert [r.run_id for r in await store.run_list(status="running")] == ["busy"]


async def test_claim_bumps_fencing_token_and_loads_journal(store: Store) -> None:
    """A claim takes a new lease (token + 1) and hands over the journal so far."""
    first = await start_and_claim(store, "r1")
    assert first.run.status == "running" and first.run.owner == "w1"
    assert first.lease == Lease("r1", "w1", 1) and first.journal == []
    await store.journal_append(lease=first.lease, entry=entry(0))
    await store.journal_append(lease=first.lease, entry=entry(1, "pending"))
    later = T0 + LEASE + 1
    second = await store.run_claim(worker_id="w2", queues=["q"], limit=5, now=later,
                                   lease_seconds=LEASE)
    assert len(second) == 1
    taken = second[0]
    assert taken.lease == Lease("r1", "w2", 2) and taken.run.owner == "w2"
    assert [(e.position, e.status) for e in taken.journal] == [(0, "ok"), (1, "pending")]
    assert taken.journal[0] == entry(0)
    assert taken.run.available_at == later + LEASE


async def test_claim_of_several_runs_hands_each_its_own_journal(store: Store) -> None:
    """Claimed together, runs with journals of different lengths and runs with none each
    get exactly their own entries, in position order."""
    leases = {}
    for i, rid in enumerate(("a", "b", "c", "d")):
        leases[rid] = (await start_and_claim(store, rid, now=T0 + i)).lease
    for pos in (2, 0, 1):  # written out of order: read back in position order
        await store.journal_append(lease=leases["c"], entry=entry(pos))
    await store.journal_append(lease=leases["a"], entry=entry(0, "pending"))
    taken = await store.run_claim(worker_id="w2", queues=["q"], limit=10,
                                  now=T0 + LEASE + 10, lease_seconds=LEASE)
    journals = {c.run.run_id: [(e.position, e.status) for e in c.journal] for c in taken}
    assert journals == {"a": [(0, "pending")], "b": [], "c": [(0, "ok"), (1, "ok"),
                                                              (2, "ok")], "d": []}
    assert all(c.lease.fencing_token == 2 for c in taken)


async def test_claimed_run_is_not_claimed_again_until_its_lease_expires(store: Store) -> None:
    """A held lease keeps the run from other workers until the lease's expiry."""
    await start_and_claim(store, "r1")
    assert await claim(store, T0 + LEASE - 0.001) == []
    assert await claim(store, T0 + LEASE) == ["r1"]


async def test_claim_respects_queues_limit_and_availability(store: Store) -> None:
    """Only runs of the asked queues, available by now, at most ``limit`` of them."""
    await store.run_insert(run=run_record("a1", queue="a", now=T0))
    await store.run_insert(run=run_record("a2", queue="a", now=T0 + 1))
    await store.run_insert(run=run_record("b1", queue="b", now=T0))
    await store.run_insert(run=run_record("later", queue="a", available_at=T0 + 20))
    assert await claim(store, T0, queues=("a",)) == ["a1"]
    # Oldest available first.
    assert await claim(store, T0 + 1, queues=("a", "b"), limit=1) == ["b1"]
    assert await claim(store, T0 + 1, queues=("a", "b")) == ["a2"]
    assert await claim(store, T0 + 19, queues=("a", "b")) == []
    assert await claim(store, T0 + 20, queues=("a",)) == ["later"]
    assert await store.run_claim(worker_id="w", queues=[], limit=5, now=T0,
                                 lease_seconds=LEASE) == []


async def test_a_claim_says_when_each_run_became_due(store: Store) -> None:
    """``ClaimedRun.due_at``: the run's ``available_at`` before the claim (its start, a
    later time it waited for, its dead owner's lease expiry), read by the claim itself,
    on every claim path (one queue, several, a queue with a limit)."""
    async def due(now: float, queues: tuple[str, ...]) -> dict[str, float | None]:
        got = await store.run_claim(worker_id="w", queues=list(queues), limit=10, now=now,
                                    lease_seconds=LEASE)
        return {c.run.run_id: c.due_at for c in got}

    await store.run_insert(run=run_record("new", queue="a", now=T0))
    await store.run_insert(run=run_record("later", queue="a", now=T0, available_at=T0 + 7))
    await store.run_insert(run=run_record("other", queue="b", now=T0 + 2))
    await store.run_insert(run=run_record("limited", queue="c", now=T0 + 3))
    await store.queue_limit_set(queue="c", limit=5, now=T0)
    assert await due(T0 + 5, ("a",)) == {"new": T0}  # one queue
    assert await due(T0 + 9, ("a", "b")) == {"later": T0 + 7, "other": T0 + 2}  # several
    assert await due(T0 + 9, ("c",)) == {"limited": T0 + 3}  # a queue with a limit
    # A takeover: due when the previous owner's lease expired.
    assert await due(T0 + 5 + LEASE + 3, ("a",)) == {"new": T0 + 5 + LEASE}
    assert await due(T0 + 9 + LEASE + 1, ("a", "b")) == {
        "later": T0 + 9 + LEASE, "other": T0 + 9 + LEASE}
    # A claim of many runs of one queue (SQLite takes those in two statements).
    for i in range(40):
        await store.run_insert(run=run_record(f"many-{i}", queue="m", now=T0 + i / 8))
    got = await store.run_claim(worker_id="w", queues=["m"], limit=40, now=T0 + 20,
                                lease_seconds=LEASE)
    assert {c.run.run_id: c.due_at for c in got} == {
        f"many-{i}": T0 + i / 8 for i in range(40)}


async def test_claim_and_next_available_at_leave_out_excluded_runs(store: Store) -> None:
    """``exclude`` (the runs one worker handed back for a while): run_claim does not take
    them, on every claim path (one queue, several, a queue with a limit), while another
    worker takes them at once; next_available_at does not report them."""
    await store.queue_limit_set(queue="lim", limit=5, now=T0)
    await store.run_insert(run=run_record("r1", now=T0))
    await store.run_insert(run=run_record("r2", now=T0 + 1))
    await store.run_insert(run=run_record("b1", queue="b", now=T0))
    await store.run_insert(run=run_record("l1", queue="lim", now=T0))
    await store.run_insert(run=run_record("later", available_at=T0 + 20))
    assert await store.next_available_at(queues=["q"], exclude=["r1"]) == T0 + 1
    assert await store.next_available_at(queues=["q"], exclude=["r2", "r1"]) == T0 + 20
    assert await store.next_available_at(queues=["q", "b", "lim"],
                                         exclude=["r1", "r2", "b1", "l1"]) == T0 + 20
    assert await store.next_available_at(queues=["q"], exclude=["r1", "r2", "later"]) is None
    assert await store.next_available_at(queues=["q"], exclude=[]) == T0

    async def take(queues: list[str], exclude: list[str]) -> list[str]:
        got = await store.run_claim(worker_id="w1", queues=queues, limit=10, now=T0 + 5,
                                    lease_seconds=LEASE, exclude=exclude)
        return sorted(c.run.run_id for c in got)

    assert await take(["q"], ["r1", "r2"]) == []
    assert await take(["q", "b", "lim"], ["r1", "b1", "l1"]) == ["r2"]
    assert await take(["lim"], ["l1"]) == []
    assert await take(["b"], ["b1"]) == []
    # Another worker (nothing excluded) takes them at once.
    assert sorted(await claim(store, T0 + 5, queues=("q", "b", "lim"))) == ["b1", "l1", "r1"]


async def test_next_available_at(store: Store) -> None:
    """The earliest time a run on the queues becomes claimable, or None."""
    assert await store.next_available_at(queues=["q"]) is None
    await store.run_insert(run=run_record("r1", available_at=T0 + 50))
    await store.run_insert(run=run_record("r2", available_at=T0 + 20))
    assert await store.next_available_at(queues=["q"]) == T0 + 20
    assert await store.next_available_at(queues=["other"]) is None


# -- fencing ----------------------------------------------------------------------------


async def test_stale_lease_writes_nothing(store: Store) -> None:
    """After a takeover, every write under the old lease raises LeaseLost and changes
    nothing: journal, finish, release, status info, signal take, child start."""
    old = (await start_and_claim(store, "r1")).lease
    await store.journal_append(lease=old, entry=entry(0))
    new = (await store.run_claim(worker_id="w2", queues=["q"], limit=1,
                                 now=T0 + LEASE, lease_seconds=LEASE))[0].lease
    assert new.fencing_token == old.fencing_token + 1
    before = await store.run_get("r1")
    now = T0 + LEASE + 1
    with pytest.raises(LeaseLost) as lost:
        await store.journal_append(lease=old, entry=entry(1))
    assert lost.value.run_id == "r1" and lost.value.fencing_token == old.fencing_token
    with pytest.raises(LeaseLost):
        await store.run_finish(lease=old, status="completed", result="1", error=None, now=now)
    with pytest.raises(LeaseLost):
        await store.run_release(lease=old, wait=Wait(now + 10, "timer"), now=now)
    with pytest.raises(LeaseLost):
        await store.run_set_status_info(lease=old, info='"x"', now=now)
    await store.signal_send(run_id="r1", name="go", payload="1", idempotency_key=None, now=now)
    with pytest.raises(LeaseLost):
        await store.signal_take(lease=old, name="go", position=1, deadline=None, now=now,
                                timeout_error="{}")
    with pytest.raises(LeaseLost):
        await store.child_start(lease=old, child=run_record("c1", parent="r1",
                                                            parent_position=1),
                                entry=entry(1, kind="child_start", name="c1"))
    assert await store.run_get("r1") == before
    assert await store.run_get("c1") is None
    assert [e.position for e in await store.journal_read("r1")] == [0]
    # The signal is still there for the current owner.
    taken = await store.signal_take(lease=new, name="go", position=1, deadline=None, now=now,
                                    timeout_error="{}")
    assert taken is not None and taken.result == "1"


async def test_writes_after_finish_or_release_are_refused(store: Store) -> None:
    """A lease ends with the run's release or end: later writes under it are refused."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.run_release(lease=lease, wait=Wait(T0 + 10, "timer"), now=T0)
    with pytest.raises(LeaseLost):
        await store.journal_append(lease=lease, entry=entry(0))
    lease2 = (await store.run_claim(worker_id="w", queues=["q"], limit=1, now=T0 + 10,
                                    lease_seconds=LEASE))[0].lease
    await store.run_finish(lease=lease2, status="completed", result="1", error=None,
                           now=T0 + 10)
    with pytest.raises(LeaseLost):
        await store.run_finish(lease=lease2, status="failed", result=None, error="{}",
                               now=T0 + 11)
    run = await store.run_get("r1")
    assert run is not None and run.status == "completed" and run.result == "1"


async def test_pending_entry_may_be_overwritten_a_final_one_never(store: Store) -> None:
    """An entry in ``pending`` is replaced by the next append at its position; an ``ok``
    or ``error`` entry is final: appending over it raises and changes nothing."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.journal_append(lease=lease, entry=entry(0, "pending"))
    await store.journal_append(lease=lease, entry=entry(0, "pending", now=T0 + 1))
    await store.journal_append(lease=lease, entry=entry(0, "ok", result='"first"'))
    with pytest.raises(StoreError) as err:
        await store.journal_append(lease=lease, entry=entry(0, "ok", result='"second"'))
    assert not isinstance(err.value, LeaseLost)
    with pytest.raises(StoreError):
        await store.journal_append(lease=lease, entry=entry(0, "pending"))
    (only,) = await store.journal_read("r1")
    assert only.status == "ok" and only.result == '"first"'
    # The pending entry's start time survives its completion.
    assert only.started_at == T0


async def test_an_append_retried_after_its_commit_is_taken_as_written(store: Store) -> None:
    """An append whose first attempt committed but whose caller was not told (the
    connection cut before the answer) is made again by the worker with the same entry
    under the same lease: that is a success, alone or among other runs' appends, not a
    conflict; it changes nothing. The same entry under a lease taken over since is
    refused (LeaseLost), and another entry at the position under the same lease is still
    a conflict. The start time and arguments may differ (the upsert keeps those of the
    pending entry the first attempt replaced)."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.journal_append(lease=lease, entry=entry(0, "pending"))
    first = JournalEntry(0, "step", "ask", "ok", result='"paid"', attempts=2,
                         started_at=T0, finished_at=T0 + 1, args='["q"]')
    await store.journal_append(lease=lease, entry=first)
    await store.journal_append(lease=lease, entry=first)  # alone
    other = (await start_and_claim(store, "r2", queue="q2")).lease
    again = dataclasses.replace(first, started_at=T0 - 5, args='["other"]')
    await asyncio.gather(store.journal_append(lease=lease, entry=again),
                         store.journal_append(lease=other, entry=entry(0)))  # together
    await store.journal_append(lease=lease, entry=first, metrics='{"tokens": 3}', now=T0 + 2)
    for changed in (dataclasses.replace(first, result='"other"'),
                    dataclasses.replace(first, attempts=3),
                    dataclasses.replace(first, status="error", result=None, error="{}")):
        with pytest.raises(StoreError) as err:
            await store.journal_append(lease=lease, entry=changed)
        assert not isinstance(err.value, LeaseLost)
    (stored,) = await store.journal_read("r1")
    assert stored == dataclasses.replace(first, args=None)
    run = await store.run_get("r1")
    assert run is not None and run.metrics == {"tokens": 3.0}
    # Taken over since: the same entry under the old lease is refused.
    await store.run_release(lease=lease, wait=Wait(T0, "handed back"), now=T0 + 3)
    taken = await store.run_claim(worker_id="w2", queues=["q"], limit=1, now=T0 + 3,
                                  lease_seconds=LEASE)
    assert [c.run.run_id for c in taken] == ["r1"]
    with pytest.raises(LeaseLost):
        await store.journal_append(lease=lease, entry=first)
    with pytest.raises(StoreError) as err:  # its own entry, but not under this lease
        await store.journal_append(lease=taken[0].lease, entry=first)
    assert not isinstance(err.value, LeaseLost)


async def test_concurrent_appends_of_many_runs_each_get_their_own_outcome(store: Store) -> None:
    """Appends made at once (shared transactions) succeed or fail one by one: a stale
    lease or a final entry fails only its own append."""
    leases = [(await start_and_claim(store, f"r{i}", queue=f"q{i}")).lease for i in range(20)]
    await store.journal_append(lease=leases[3], entry=entry(0, result="0"))
    stale = Lease("r5", "w1", leases[5].fencing_token - 1)
    calls = [store.journal_append(lease=stale if i == 5 else lease, entry=entry(0))
             for i, lease in enumerate(leases)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes[5], LeaseLost)
    assert isinstance(outcomes[3], StoreError) and not isinstance(outcomes[3], LeaseLost)
    assert [i for i, o in enumerate(outcomes) if o is not None] == [3, 5]
    for i in range(20):
        assert len(await store.journal_read(f"r{i}")) == (0 if i == 5 else 1)


async def test_appends_to_one_position_made_at_once_land_in_order(store: Store) -> None:
    """A pending entry and its final one, appended without waiting, land in order; a
    second final entry for the position, made at the same time, is refused."""
    lease = (await start_and_claim(store, "r1")).lease
    outcomes = await asyncio.gather(
        store.journal_append(lease=lease, entry=entry(0, "pending")),
        store.journal_append(lease=lease, entry=entry(0, "ok", result='"a"')),
        store.journal_append(lease=lease, entry=entry(1, "ok")),
        store.journal_append(lease=lease, entry=entry(0, "ok", result='"b"')),
        return_exceptions=True)
    assert outcomes[:3] == [None, None, None]
    assert isinstance(outcomes[3], StoreError) and not isinstance(outcomes[3], LeaseLost)
    journal = await store.journal_read("r1")
    assert [(e.position, e.status, e.result) for e in journal] == [
        (0, "ok", '"a"'), (1, "ok", "1")]


# -- heartbeats and dead workers ----------------------------------------------------------


async def test_heartbeat_extends_leases_and_reports_owned_and_cancel(store: Store) -> None:
    """A heartbeat moves every lease of the worker forward and says which runs it still
    holds and which of those a user asked to cancel."""
    await start_and_claim(store, "r1", queue="a")
    await start_and_claim(store, "r2", queue="b")
    await start_and_claim(store, "theirs", queue="c", worker="w9")
    await store.run_cancel(run_id="r2", now=T0 + 1)
    hb = await store.lease_heartbeat(worker_id="w1", now=T0 + 20, lease_seconds=LEASE)
    assert hb.owned == {"r1", "r2"} and hb.cancel_requested == {"r2"}
    # The old expiry passed, but the heartbeat moved it.
    assert await claim(store, T0 + LEASE + 1, queues=("a", "b")) == []
    assert await claim(store, T0 + 20 + LEASE, queues=("a", "b")) != []
    hb = await store.lease_heartbeat(worker_id="w1", now=T0 + 60, lease_seconds=LEASE)
    assert hb.owned == set()


async def test_lease_expire_owner_makes_a_dead_workers_runs_claimable_now(
        store: Store) -> None:
    """The runs of a worker known to be dead are claimable at once; it is forgotten."""
    info = WorkerInfo("w1", "host", 123, "start", "q", T0, T0)
    await store.worker_register(info=info)
    await start_and_claim(store, "r1", queue="a")
    await start_and_claim(store, "r2", queue="b")
    await start_and_claim(store, "alive", queue="c", worker="w2")
    assert await store.lease_expire_owner(worker_id="w1", now=T0 + 1) == ["r1", "r2"]
    assert sorted(await claim(store, T0 + 1, queues=("a", "b", "c"))) == ["r1", "r2"]
    assert await store.worker_list() == []


async def test_workers_register_list_and_unregister(store: Store) -> None:
    """A stopping worker is forgotten and its runs go back to the queue at once."""
    a = WorkerInfo("w1", "h1", 1, "s1", "q", T0, T0)
    b = WorkerInfo("w2", "h2", 2, "s2", "q,other", T0 + 1, T0 + 1)
    await store.worker_register(info=a)
    await store.worker_register(info=b)
    await store.worker_register(info=a)  # a restart with the same id
    assert await store.worker_list() == [a, b]
    await start_and_claim(store, "r1")
    await store.worker_unregister(worker_id="w1", now=T0 + 1)
    assert await store.worker_list() == [b]
    run = await store.run_get("r1")
    assert run is not None and run.status == "queued" and run.owner is None
    assert await claim(store, T0 + 1) == ["r1"]


async def test_worker_runs_held_counts_the_running_runs_each_worker_owns(
        store: Store) -> None:
    """Only running runs count, by their owner: a queued run, a released (waiting) one
    and one handed back by a stopping worker are held by no one."""
    assert await store.worker_runs_held() == {}
    await start_and_claim(store, "r1", worker="w1")
    await start_and_claim(store, "r2", worker="w1")
    await start_and_claim(store, "r3", worker="w2")
    released = (await start_and_claim(store, "r4", worker="w2")).lease
    await store.run_release(lease=released, wait=Wait(T0 + 100, "sleep"), now=T0)
    await store.run_insert(run=run_record("queued", queue="other"))
    await start_and_claim(store, "r5", worker="w3")
    await store.worker_unregister(worker_id="w3", now=T0 + 1)
    assert await store.worker_runs_held() == {"w1": 2, "w2": 1}


# -- releasing and waking ------------------------------------------------------------------


async def test_release_waits_until_available_at(store: Store) -> None:
    """A released run has no owner and is claimable again at ``wait.available_at``."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.run_release(lease=lease, wait=Wait(T0 + 100, "sleep until later"), now=T0)
    run = await store.run_get("r1")
    assert run is not None and run.status == "waiting" and run.owner is None
    assert run.waiting_for == "sleep until later" and run.available_at == T0 + 100
    assert await claim(store, T0 + 99) == []
    assert await claim(store, T0 + 100) == ["r1"]


async def test_release_for_a_signal_already_sent_is_claimable_now(store: Store) -> None:
    """No lost wake-up: a signal that arrived before the release makes it claimable."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.signal_send(run_id="r1", name="go", payload=None, idempotency_key=None,
                            now=T0 + 1)
    await store.run_release(lease=lease, wait=Wait(None, "signal go", signal="go"), now=T0 + 2)
    run = await store.run_get("r1")
    assert run is not None and run.available_at == T0 + 2
    # A signal of another name does not count.
    lease = (await store.run_claim(worker_id="w", queues=["q"], limit=1, now=T0 + 2,
                                   lease_seconds=LEASE))[0].lease
    await store.signal_take(lease=lease, name="go", position=0, deadline=None, now=T0 + 2,
                            timeout_error="{}")
    await store.signal_send(run_id="r1", name="other", payload=None, idempotency_key=None,
                            now=T0 + 3)
    await store.run_release(lease=lease, wait=Wait(None, "signal go", signal="go"), now=T0 + 3)
    run = await store.run_get("r1")
    assert run is not None and run.available_at is None


async def test_signal_wakes_a_released_run_waiting_for_it(store: Store) -> None:
    """A signal of the awaited name makes a waiting run claimable at once."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.run_release(lease=lease, wait=Wait(T0 + 1000, "signal go", signal="go"),
                            now=T0)
    await store.signal_send(run_id="r1", name="other", payload=None, idempotency_key=None,
                            now=T0 + 1)
    assert await claim(store, T0 + 1) == []
    await store.signal_send(run_id="r1", name="go", payload=None, idempotency_key=None,
                            now=T0 + 2)
    assert await claim(store, T0 + 2) == ["r1"]


async def test_release_for_a_finished_child_is_claimable_now(store: Store) -> None:
    """No lost wake-up: a child that ended before the release makes it claimable."""
    parent = (await start_and_claim(store, "p")).lease
    await store.child_start(lease=parent, child=run_record("c", queue="kids", parent="p",
                                                           parent_position=0),
                            entry=entry(0, kind="child_start", name="c", result='"c"'))
    child = (await store.run_claim(worker_id="w2", queues=["kids"], limit=1, now=T0,
                                   lease_seconds=LEASE))[0].lease
    await store.run_finish(lease=child, status="completed", result="42", error=None,
                           now=T0 + 1)
    await store.run_release(lease=parent, wait=Wait(None, "child c", child="c"), now=T0 + 2)
    run = await store.run_get("p")
    assert run is not None and run.available_at == T0 + 2


async def test_release_with_a_cancel_pending_is_claimable_now(store: Store) -> None:
    """A run asked to cancel while it ran is claimable at once when it releases."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.run_cancel(run_id="r1", now=T0 + 1)
    await store.run_release(lease=lease, wait=Wait(T0 + 1000, "timer"), now=T0 + 2)
    run = await store.run_get("r1")
    assert run is not None and run.available_at == T0 + 2 and run.cancel_requested


# -- a wait for several signals or children (merge_waits) ------------------------------------


def _any_of(*waits: Wait) -> Wait:
    return merge_waits(waits)


async def _with_children(store: Store, parent: str, *kids: str, queue: str = "q",
                         ) -> tuple[Lease, dict[str, Lease]]:
    """``parent`` claimed, with children ``kids`` started and claimed: the leases."""
    lease = (await start_and_claim(store, parent, queue=queue)).lease
    for pos, kid in enumerate(kids):
        await store.child_start(lease=lease, child=run_record(kid, queue="kids",
                                                              parent=parent,
                                                              parent_position=pos),
                                entry=entry(pos, kind="child_start", name=kid,
                                            result=f'"{kid}"'))
    got = await store.run_claim(worker_id="w2", queues=["kids"], limit=len(kids), now=T0,
                                lease_seconds=LEASE)
    return lease, {c.run.run_id: c.lease for c in got}


def test_merged_waits_keep_the_earliest_deadline_and_every_name() -> None:
    merged = _any_of(Wait(T0 + 50, "timer"), Wait(None, "signal a", signal="a"),
                     Wait(T0 + 9, "signal b", signal="b"), Wait(None, "child c", child="c"),
                     Wait(None, "signal a", signal="a"))
    assert merged.available_at == T0 + 9
    assert wait_list(merged.signal) == ["a", "b"] and merged.child == "c"
    assert merged.description == "timer or signal a or signal b or child c"
    one = _any_of(Wait(None, "signal a", signal="a"))
    assert one.signal == "a" and one.child is None and one.available_at is None


async def test_a_wait_for_several_signals_wakes_for_any_of_them(store: Store) -> None:
    """A run released for signals a or b (and a timer) is claimable when b comes; not
    for a signal of another name."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.run_release(lease=lease, now=T0, wait=_any_of(
        Wait(None, "signal a", signal="a"), Wait(T0 + 1000, "signal b", signal="b")))
    run = await store.run_get("r1")
    assert run is not None and run.available_at == T0 + 1000
    await store.signal_send(run_id="r1", name="other", payload=None, idempotency_key=None,
                            now=T0 + 1)
    await store.signal_send(run_id="r1", name="a b", payload=None, idempotency_key=None,
                            now=T0 + 1)
    assert await claim(store, T0 + 1) == []
    await store.signal_send(run_id="r1", name="b", payload=None, idempotency_key=None,
                            now=T0 + 2)
    assert await claim(store, T0 + 2) == ["r1"]


async def test_a_wait_for_several_signals_one_already_sent_is_claimable_now(
        store: Store) -> None:
    """No lost wake-up: a signal of any of the names, sent before the release, makes it
    claimable at once; one of another name does not."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.signal_send(run_id="r1", name="other", payload=None, idempotency_key=None,
                            now=T0 + 1)
    wait = _any_of(Wait(None, "signal a", signal="a"), Wait(None, "signal b", signal="b"))
    await store.run_release(lease=lease, wait=wait, now=T0 + 2)
    run = await store.run_get("r1")
    assert run is not None and run.available_at is None and run.waiting_for == (
        "signal a or signal b")
    lease = (await start_and_claim(store, "r2")).lease
    await store.signal_send(run_id="r2", name="b", payload=None, idempotency_key=None,
                            now=T0 + 1)
    await store.run_release(lease=lease, wait=wait, now=T0 + 2)
    run = await store.run_get("r2")
    assert run is not None and run.available_at == T0 + 2


async def test_a_wait_for_several_children_wakes_when_any_ends(store: Store) -> None:
    """A parent released for children c1 or c2 (or a signal) is claimable when c2 ends;
    a parent waiting for c2 alone is woken as well."""
    parent, kids = await _with_children(store, "p", "c1", "c2")
    await store.run_release(lease=parent, now=T0 + 1, wait=_any_of(
        Wait(None, "child c1", child="c1"), Wait(None, "child c2", child="c2"),
        Wait(None, "signal s", signal="s")))
    other = (await start_and_claim(store, "o", queue="qo")).lease
    await store.run_release(lease=other, wait=Wait(None, "child c2", child="c2"), now=T0 + 1)
    assert await claim(store, T0 + 1) == []
    await store.run_finish(lease=kids["c2"], status="failed", result=None, error="{}",
                           now=T0 + 2)
    assert sorted(await claim(store, T0 + 2, queues=("q", "qo"))) == ["o", "p"]


async def test_a_wait_for_several_children_one_ended_is_claimable_now(store: Store) -> None:
    """No lost wake-up: a child of the list that ended before the release (or a blocked
    one cancelled after it) makes the parent claimable."""
    parent, kids = await _with_children(store, "p", "c1", "c2")
    await store.run_finish(lease=kids["c1"], status="completed", result="1", error=None,
                           now=T0 + 1)
    await store.run_release(lease=parent, now=T0 + 2, wait=_any_of(
        Wait(T0 + 500, "child c1", child="c1"), Wait(None, "child c2", child="c2")))
    run = await store.run_get("p")
    assert run is not None and run.available_at == T0 + 2
    parent, kids = await _with_children(store, "q", "d1", "d2", queue="q2")
    await store.run_finish(lease=kids["d2"], status="blocked", result=None, error="{}",
                           now=T0 + 1)
    await store.run_release(lease=parent, now=T0 + 2, wait=_any_of(
        Wait(None, "child d1", child="d1"), Wait(None, "child d2", child="d2")))
    assert await claim(store, T0 + 2, queues=("q2",)) == []
    await store.run_cancel(run_id="d2", now=T0 + 3)
    assert await claim(store, T0 + 3, queues=("q2",)) == ["q"]


async def test_several_parents_waiting_for_several_children_released_together(
        store: Store) -> None:
    """Releases of a wait for one child and of a wait for several, queued together (a
    group commit on PostgreSQL), each wake when their child ends."""
    p1, kids1 = await _with_children(store, "p1", "a1", "a2")
    p2, kids2 = await _with_children(store, "p2", "b1")
    await asyncio.gather(
        store.run_release(lease=p1, now=T0 + 1, wait=_any_of(
            Wait(None, "child a1", child="a1"), Wait(None, "child a2", child="a2"))),
        store.run_release(lease=p2, now=T0 + 1, wait=Wait(None, "child b1", child="b1")))
    assert await claim(store, T0 + 1) == []
    await asyncio.gather(
        store.run_finish(lease=kids1["a1"], status="completed", result="1", error=None,
                         now=T0 + 2),
        store.run_finish(lease=kids2["b1"], status="completed", result="1", error=None,
                         now=T0 + 2))
    assert sorted(await claim(store, T0 + 2)) == ["p1", "p2"]


# -- signals ---------------------------------------------------------------------------------


async def test_signal_idempotency_key_stores_a_signal_once(store: Store) -> None:
    """The same idempotency key returns the first signal and stores nothing new;
    signals without a key are all stored."""
    await store.run_insert(run=run_record("r1"))
    first = await store.signal_send(run_id="r1", name="go", payload="1",
                                    idempotency_key="k", now=T0)
    again = await store.signal_send(run_id="r1", name="go", payload="2",
                                    idempotency_key="k", now=T0 + 1)
    assert first.created and not again.created and again.signal_id == first.signal_id
    # The key is the run's: a send under it answers the signal stored there, so that a
    # caller can tell that its send, of another name or payload, was dropped.
    assert (first.name, first.payload) == (None, None)
    assert (again.name, again.payload) == ("go", "1")
    other = await store.signal_send(run_id="r1", name="stop", payload=None,
                                    idempotency_key="k", now=T0 + 1)
    assert (other.created, other.signal_id, other.name, other.payload) == (
        False, first.signal_id, "go", "1")
    a = await store.signal_send(run_id="r1", name="go", payload="3", idempotency_key=None,
                                now=T0 + 2)
    b = await store.signal_send(run_id="r1", name="go", payload="4", idempotency_key=None,
                                now=T0 + 3)
    assert a.created and b.created and len({first.signal_id, a.signal_id, b.signal_id}) == 3
    lease = (await store.run_claim(worker_id="w", queues=["q"], limit=1, now=T0 + 3,
                                   lease_seconds=LEASE))[0].lease
    payloads = []
    for pos in range(4):
        taken = await store.signal_take(lease=lease, name="go", position=pos, deadline=None,
                                        now=T0 + 3, timeout_error="{}")
        payloads.append(taken.result if taken else None)
    assert payloads == ["1", "3", "4", None]


async def test_signal_to_an_unknown_run_raises_run_not_found(store: Store) -> None:
    """A signal needs a run."""
    with pytest.raises(RunNotFound):
        await store.signal_send(run_id="nope", name="go", payload=None, idempotency_key=None,
                                now=T0)


@pytest.mark.parametrize("status", FINAL)
async def test_signal_to_a_finished_run_raises_signal_error(store: Store, status: str) -> None:
    """A run that ended takes no more signals."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.run_finish(lease=lease, status=status, result=None, error=None, now=T0)
    with pytest.raises(SignalError):
        await store.signal_send(run_id="r1", name="go", payload=None, idempotency_key=None,
                                now=T0 + 1)


async def test_signal_take_consumes_in_order_into_the_journal(store: Store) -> None:
    """Signals of a name are taken oldest first, each once, as ``ok`` signal entries."""
    lease = (await start_and_claim(store, "r1")).lease
    for i in range(3):
        await store.signal_send(run_id="r1", name="go", payload=str(i), idempotency_key=None,
                                now=T0 + i)
    await store.signal_send(run_id="r1", name="other", payload='"x"', idempotency_key=None,
                            now=T0)
    got = []
    for pos in range(3):
        taken = await store.signal_take(lease=lease, name="go", position=pos, deadline=None,
                                        now=T0 + 5, timeout_error="{}")
        assert taken is not None
        got.append(taken)
    assert [t.result for t in got] == ["0", "1", "2"]
    assert got[0] == JournalEntry(0, "signal", "go", "ok", result="0", attempts=1,
                                  finished_at=T0 + 5)
    assert await store.signal_take(lease=lease, name="go", position=3, deadline=None,
                                   now=T0 + 5, timeout_error="{}") is None
    journal = await store.journal_read("r1")
    assert [(e.position, e.kind, e.name, e.status, e.result) for e in journal] == [
        (0, "signal", "go", "ok", "0"), (1, "signal", "go", "ok", "1"),
        (2, "signal", "go", "ok", "2")]


async def test_signal_take_past_the_deadline_takes_only_a_signal_sent_by_it(
        store: Store) -> None:
    """Past the deadline, a signal sent at or before it is taken (however late), and
    one sent after it is not: the entry is the timeout, the signal stays for a later
    take. Before the deadline, any pending signal is taken."""
    lease = (await start_and_claim(store, "r1")).lease
    for at, payload in ((T0 + 3, '"on time"'), (T0 + 4, '"late"')):
        await store.signal_send(run_id="r1", name="go", payload=payload,
                                idempotency_key=None, now=at)
    on_time = await store.signal_take(lease=lease, name="go", position=0, deadline=T0 + 3,
                                      now=T0 + 10, timeout_error='"t"')
    assert on_time is not None and (on_time.status, on_time.result) == ("ok", '"on time"')
    timed_out = await store.signal_take(lease=lease, name="go", position=1,
                                        deadline=T0 + 3.5, now=T0 + 10, timeout_error='"t"')
    assert timed_out == JournalEntry(1, "signal", "go", "error", error='"t"', attempts=1,
                                     finished_at=T0 + 10, next_attempt_at=T0 + 3.5)
    assert await store.signal_pending(run_id="r1", name="go")
    early = await store.signal_take(lease=lease, name="go", position=2, deadline=T0 + 20,
                                    now=T0 + 10, timeout_error='"t"')
    assert early is not None and (early.status, early.result) == ("ok", '"late"')
    assert not await store.signal_pending(run_id="r1", name="go")


async def test_signal_pending_reads_the_inbox_without_consuming(store: Store) -> None:
    """``signal_pending`` says whether a signal of a name waits untaken, and takes
    nothing: the signal is still there for ``signal_take``, after which it is not."""
    lease = (await start_and_claim(store, "r1")).lease
    assert not await store.signal_pending(run_id="r1", name="go")
    await store.signal_send(run_id="r1", name="go", payload='"x"', idempotency_key=None,
                            now=T0)
    assert await store.signal_pending(run_id="r1", name="go")
    assert await store.signal_pending(run_id="r1", name="go")
    assert not await store.signal_pending(run_id="r1", name="other")
    assert not await store.signal_pending(run_id="r2", name="go")
    taken = await store.signal_take(lease=lease, name="go", position=0, deadline=None,
                                    now=T0 + 1, timeout_error="{}")
    assert taken is not None and taken.result == '"x"'
    assert not await store.signal_pending(run_id="r1", name="go")
    assert await store.journal_read("r1") == [taken]


async def test_signal_find_reads_the_signal_under_a_key_taken_or_not(store: Store) -> None:
    """``signal_find`` answers the signal stored under an idempotency key (its name and
    payload), before and after a wait took it and after the run ended, and None for a
    key the run never had (or another run's): it stores nothing."""
    lease = (await start_and_claim(store, "r1")).lease
    await start_and_claim(store, "r2")
    assert await store.signal_find(run_id="r1", idempotency_key="k") is None
    sent = await store.signal_send(run_id="r1", name="go", payload='"x"',
                                   idempotency_key="k", now=T0)
    found = await store.signal_find(run_id="r1", idempotency_key="k")
    assert found is not None
    assert (found.signal_id, found.created, found.name, found.payload) == (
        sent.signal_id, False, "go", '"x"')
    assert await store.signal_find(run_id="r2", idempotency_key="k") is None
    assert await store.signal_find(run_id="nobody", idempotency_key="k") is None
    assert await store.signal_find(run_id="r1", idempotency_key="other") is None
    await store.signal_take(lease=lease, name="go", position=0, deadline=None, now=T0 + 1,
                            timeout_error="{}")
    await store.run_finish(lease=lease, status="completed", result="1", error=None,
                           now=T0 + 2)
    assert await store.signal_find(run_id="r1", idempotency_key="k") == found
    assert not await store.signal_pending(run_id="r1", name="go")  # (nothing stored)


async def test_signal_take_records_the_timeout_once_the_deadline_passed(store: Store) -> None:
    """Before the deadline nothing is recorded; at it the timeout error is journaled,
    over the pending entry of the wait."""
    lease = (await start_and_claim(store, "r1")).lease
    deadline = T0 + 10
    wait_entry = JournalEntry(0, "signal", "go", "pending", started_at=T0,
                              next_attempt_at=deadline, args='{"timeout": 10}')
    await store.journal_append(lease=lease, entry=wait_entry)
    assert await store.signal_take(lease=lease, name="go", position=0, deadline=deadline,
                                   now=T0 + 9.9, timeout_error='{"type": "T"}') is None
    taken = await store.signal_take(lease=lease, name="go", position=0, deadline=deadline,
                                    now=deadline, timeout_error='{"type": "T"}')
    assert taken == JournalEntry(0, "signal", "go", "error", error='{"type": "T"}',
                                 attempts=1, finished_at=deadline, next_attempt_at=deadline)
    (stored,) = await store.journal_read("r1")
    assert stored.status == "error" and stored.error == '{"type": "T"}'
    assert stored.started_at == T0 and stored.args == '{"timeout": 10}'


async def test_signal_racing_a_timeout_has_exactly_one_winner(store: Store) -> None:
    """A signal present at the deadline wins over the timeout; one sent after the
    timeout was recorded stays pending for the next wait of that name."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.signal_send(run_id="r1", name="go", payload='"early"', idempotency_key=None,
                            now=T0 + 5)
    won = await store.signal_take(lease=lease, name="go", position=0, deadline=T0 + 10,
                                  now=T0 + 30, timeout_error="{}")
    assert won is not None and won.status == "ok" and won.result == '"early"'
    lost = await store.signal_take(lease=lease, name="go", position=1, deadline=T0 + 10,
                                   now=T0 + 30, timeout_error="{}")
    assert lost is not None and lost.status == "error"
    await store.signal_send(run_id="r1", name="go", payload='"late"', idempotency_key=None,
                            now=T0 + 31)
    # The timeout at position 1 is final; the late signal waits for the next wait.
    with pytest.raises(StoreError):
        await store.journal_append(lease=lease, entry=entry(1))
    nxt = await store.signal_take(lease=lease, name="go", position=2, deadline=None,
                                  now=T0 + 32, timeout_error="{}")
    assert nxt is not None and nxt.result == '"late"'
    statuses = [(e.position, e.status) for e in await store.journal_read("r1")]
    assert statuses == [(0, "ok"), (1, "error"), (2, "ok")]


# -- children ----------------------------------------------------------------------------------


async def test_child_start_is_idempotent_and_journals_the_entry(store: Store) -> None:
    """child_start inserts the child (once) and records its entry in one transaction."""
    lease = (await start_and_claim(store, "p")).lease
    child = run_record("c", queue="kids", parent="p", parent_position=0,
                       on_parent_cancel="abandon")
    started = entry(0, kind="child_start", name="c", result='"c"')
    stored = await store.child_start(lease=lease, child=child, entry=started)
    assert stored.run_id == "c" and stored.parent_run_id == "p"
    assert stored.parent_position == 0 and stored.on_parent_cancel == "abandon"
    assert stored.status == "queued"
    assert await store.journal_read("p") == [started]
    # The parent starting a child of that id again finds the same run.
    again = await store.child_start(lease=lease, child=run_record("c", queue="x", parent="p"),
                                    entry=entry(1, kind="child_start", name="c"))
    assert again.queue == "kids"
    # Another run's start of a child of that id is refused, and journals nothing.
    lease2 = (await start_and_claim(store, "p2")).lease
    with pytest.raises(ConfigError, match="'c' is already used by a run of workflow 'wf' "
                       "that is not a child of 'p2'"):
        await store.child_start(lease=lease2, child=run_record("c", queue="x", parent="p2"),
                                entry=entry(0, kind="child_start", name="c"))
    assert await store.journal_read("p2") == []
    # A final entry at the position refuses the start and inserts nothing.
    with pytest.raises(StoreError):
        await store.child_start(lease=lease, child=run_record("c2", parent="p"),
                                entry=entry(0, kind="child_start", name="c2"))
    assert await store.run_get("c2") is None


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
async def test_child_finish_wakes_the_waiting_parent(store: Store, status: str) -> None:
    """A parent released to wait for a child becomes claimable when the child ends."""
    parent = (await start_and_claim(store, "p")).lease
    await store.child_start(lease=parent, child=run_record("c", queue="kids", parent="p",
                                                           parent_position=0),
                            entry=entry(0, kind="child_start", name="c", result='"c"'))
    await store.run_release(lease=parent, wait=Wait(None, "child c", child="c"), now=T0 + 1)
    assert await claim(store, T0 + 1) == []
    child = (await store.run_claim(worker_id="w2", queues=["kids"], limit=1, now=T0 + 2,
                                   lease_seconds=LEASE))[0].lease
    await store.run_finish(lease=child, status=status, result=None, error=None, now=T0 + 3)
    assert await claim(store, T0 + 3) == ["p"]
    ended = await store.run_get("c")
    assert ended is not None and ended.status == status and ended.finished_at == T0 + 3


async def test_cancelling_a_blocked_child_wakes_the_waiting_parent(store: Store) -> None:
    """A blocked child that is cancelled has ended: its waiting parent is woken."""
    parent = (await start_and_claim(store, "p")).lease
    await store.child_start(lease=parent, child=run_record("c", queue="kids", parent="p",
                                                           parent_position=0),
                            entry=entry(0, kind="child_start", name="c", result='"c"'))
    child = (await store.run_claim(worker_id="w2", queues=["kids"], limit=1, now=T0,
                                   lease_seconds=LEASE))[0].lease
    await store.run_finish(lease=child, status="blocked", result=None, error="{}", now=T0 + 1)
    await store.run_release(lease=parent, wait=Wait(None, "child c", child="c"), now=T0 + 2)
    assert await claim(store, T0 + 2) == []
    await store.run_cancel(run_id="c", now=T0 + 3)
    assert await claim(store, T0 + 3) == ["p"]


async def test_children_cancel_follows_each_childs_policy(store: Store) -> None:
    """Cancelling a parent's children asks those with policy ``cancel`` (not ended) to
    cancel and makes them claimable; ``abandon`` children and ended ones are left alone."""
    lease = (await start_and_claim(store, "p")).lease
    for pos, (cid, policy) in enumerate([("c1", "cancel"), ("c2", "abandon"),
                                         ("c3", "cancel")]):
        await store.child_start(
            lease=lease, child=run_record(cid, queue=f"k{pos}", parent="p",
                                          parent_position=pos, on_parent_cancel=policy,
                                          available_at=T0 + 500, status="waiting"),
            entry=entry(pos, kind="child_start", name=cid, result=f'"{cid}"'))
    c3 = (await store.run_claim(worker_id="w3", queues=["k2"], limit=1, now=T0 + 500,
                                lease_seconds=LEASE))[0].lease
    await store.run_finish(lease=c3, status="completed", result="1", error=None, now=T0 + 501)
    asked = await store.run_children_cancel(parent_run_id="p", now=T0 + 502)
    assert asked == ["c1"]
    c1, c2 = await store.run_get("c1"), await store.run_get("c2")
    assert c1 is not None and c1.cancel_requested and c1.available_at == T0 + 502
    assert c2 is not None and not c2.cancel_requested and c2.available_at == T0 + 500
    assert await store.run_children_cancel(parent_run_id="nobody", now=T0) == []


async def test_children_cancel_ends_a_blocked_child_and_wakes_its_waiter(store: Store) -> None:
    """A blocked child has no code that could observe a cancel: cancelling its parent's
    children ends it ``cancelled`` at once, and the parent waiting for it is woken."""
    parent = (await start_and_claim(store, "p")).lease
    await store.child_start(lease=parent, child=run_record("c", queue="kids", parent="p",
                                                           parent_position=0),
                            entry=entry(0, kind="child_start", name="c", result='"c"'))
    child = (await store.run_claim(worker_id="w2", queues=["kids"], limit=1, now=T0,
                                   lease_seconds=LEASE))[0].lease
    await store.run_finish(lease=child, status="blocked", result=None, error="{}", now=T0 + 1)
    await store.run_release(lease=parent, wait=Wait(None, "child c", child="c"), now=T0 + 2)
    assert await claim(store, T0 + 2) == []
    assert await store.run_children_cancel(parent_run_id="p", now=T0 + 3) == ["c"]
    ended = await store.run_get("c")
    assert ended is not None and ended.status == "cancelled" and ended.finished_at == T0 + 3
    assert ended.available_at is None and ended.owner is None
    assert await claim(store, T0 + 3, queues=("q", "kids")) == ["p"]


async def test_children_cancel_ends_a_child_that_never_started(store: Store) -> None:
    """A queued child with no journal entry (its queue has no worker) has no code that
    could observe a cancel: cancelling its parent's children ends it ``cancelled`` at
    once, as ``run_cancel`` of that child does; one that ran before (it has entries)
    is asked, as a waiting one is."""
    lease = (await start_and_claim(store, "p")).lease
    for pos, cid in enumerate(("fresh", "ran")):
        await store.child_start(lease=lease, child=run_record(cid, queue=f"k{pos}", parent="p",
                                                              parent_position=pos),
                                entry=entry(pos, kind="child_start", name=cid,
                                            result=f'"{cid}"'))
    ran = (await store.run_claim(worker_id="w2", queues=["k1"], limit=1, now=T0,
                                 lease_seconds=LEASE))[0].lease
    await store.journal_append(lease=ran, entry=entry(0))
    await store.run_finish(lease=ran, status="failed", result=None, error="{}", now=T0)
    await store.run_retry(run_id="ran", version=None, now=T0)  # queued again, ran before
    assert (await store.run_get("ran")).status == "queued"  # type: ignore[union-attr]
    assert await store.run_children_cancel(parent_run_id="p", now=T0 + 3) == ["fresh", "ran"]
    fresh, again = await store.run_get("fresh"), await store.run_get("ran")
    assert fresh is not None and fresh.status == "cancelled" and fresh.finished_at == T0 + 3
    assert fresh.available_at is None and fresh.owner is None
    assert again is not None and again.status == "queued" and again.cancel_requested
    assert again.available_at == T0 + 3


# -- cancel and resume -------------------------------------------------------------------------


async def test_cancel_a_queued_or_waiting_run_makes_it_claimable_now(store: Store) -> None:
    """Cancel flags the run; a waiting one, or a queued one whose code ran before (a
    retried run with its journal), becomes claimable at once, to see the cancel."""
    lease = (await start_and_claim(store, "queued")).lease
    await store.journal_append(lease=lease, entry=entry(0))
    await store.run_finish(lease=lease, status="failed", result=None, error="{}", now=T0)
    await store.run_retry(run_id="queued", version=None, now=T0)
    lease = (await start_and_claim(store, "waiting", queue="w")).lease
    await store.run_release(lease=lease, wait=Wait(T0 + 100, "timer"), now=T0)
    for run_id in ("queued", "waiting"):
        run = await store.run_cancel(run_id=run_id, now=T0 + 1)
        assert run.cancel_requested and run.available_at == T0 + 1
        assert run.status != "cancelled"
    assert sorted(await claim(store, T0 + 1, queues=("q", "w"))) == ["queued", "waiting"]


async def test_cancel_a_queued_run_that_never_started_ends_it(store: Store) -> None:
    """A queued run with no journal entry (none of its code ran: e.g. of a workflow no
    worker has) ends cancelled at once: waiting for a worker to see the cancel could be
    forever, and such a run could be neither erased nor purged."""
    await store.run_insert(run=run_record("never", available_at=T0 + 100))
    run = await store.run_cancel(run_id="never", now=T0 + 1)
    assert run.status == "cancelled" and run.finished_at == T0 + 1
    assert run.cancel_requested and run.available_at is None and run.owner is None
    assert await claim(store, T0 + 200) == []


async def test_cancel_a_running_run_keeps_its_lease(store: Store) -> None:
    """A running run is only flagged: its owner learns it at the next heartbeat."""
    lease = (await start_and_claim(store, "r1")).lease
    run = await store.run_cancel(run_id="r1", now=T0 + 1)
    assert run.cancel_requested and run.status == "running" and run.available_at == T0 + LEASE
    await store.journal_append(lease=lease, entry=entry(0))


async def test_cancel_a_blocked_run_ends_it(store: Store) -> None:
    """A blocked run has no code that could observe a cancel: it ends cancelled."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.run_finish(lease=lease, status="blocked", result=None, error="{}", now=T0)
    run = await store.run_cancel(run_id="r1", now=T0 + 1)
    assert run.status == "cancelled" and run.finished_at == T0 + 1
    assert run.available_at is None and run.owner is None


async def _parent_and_family(store: Store) -> Lease:
    """Run "p" waiting for its child "m" (running, under the returned lease), whose
    children are "c" (queued, never started) and "d" (waiting)."""
    parent = (await start_and_claim(store, "p")).lease
    await store.child_start(lease=parent, child=run_record("m", queue="mid", parent="p",
                                                           parent_position=0),
                            entry=entry(0, kind="child_start", name="m", result='"m"'))
    await store.run_release(lease=parent, wait=Wait(None, "child m", child="m"), now=T0 + 1)
    mid = (await store.run_claim(worker_id="w2", queues=["mid"], limit=1, now=T0 + 1,
                                 lease_seconds=LEASE))[0].lease
    for pos, (cid, status) in enumerate([("c", "queued"), ("d", "waiting")]):
        await store.child_start(
            lease=mid, child=run_record(cid, queue=f"k{cid}", parent="m", status=status,
                                        parent_position=pos,
                                        available_at=T0 + 500 if status == "waiting"
                                        else None),
            entry=entry(pos, kind="child_start", name=cid, result=f'"{cid}"'))
    return mid


async def test_a_blocked_end_with_a_cancel_pending_ends_cancelled(store: Store) -> None:
    """A cancel that commits after the worker last heard of cancels but before it
    records its replay's block: the run has no code left that could see it, so the end
    is ``cancelled`` (the block's reason kept as its error), its children are
    cancelled and the parent waiting for it woken, in the end's transaction. It used to
    stay ``blocked`` with the cancel pending, until a second cancel."""
    mid = await _parent_and_family(store)
    asked = await store.run_cancel(run_id="m", now=T0 + 2)
    assert asked.status == "running" and asked.cancel_requested
    ended = await store.run_finish(lease=mid, status="blocked", result=None,
                                   error='{"message": "changed"}', now=T0 + 3)
    assert ended == "cancelled"
    run = await store.run_get("m")
    assert run is not None and run.status == "cancelled" and run.finished_at == T0 + 3
    assert run.error == '{"message": "changed"}' and run.owner is None
    never, waiting = await store.run_get("c"), await store.run_get("d")
    assert never is not None and never.status == "cancelled"  # ended at once
    assert waiting is not None and waiting.status == "waiting" and waiting.cancel_requested
    assert waiting.available_at == T0 + 3  # claimable now, to see the cancel
    assert await claim(store, T0 + 3) == ["p"]
    statuses = [json.loads(e.data)["status"]
                for e in await store.run_events_read(run_id="m", after=None)
                if e.kind == "status"]
    assert statuses[-1] == "cancelled" and "blocked" not in statuses


async def test_a_blocked_end_without_a_cancel_stays_blocked(store: Store) -> None:
    """The same end with no cancel asked: ``blocked``, children left alone; the parent
    is woken to see it (as before)."""
    mid = await _parent_and_family(store)
    ended = await store.run_finish(lease=mid, status="blocked", result=None, error="{}",
                                   now=T0 + 3)
    assert ended == "blocked"
    run, never = await store.run_get("m"), await store.run_get("c")
    assert run is not None and run.status == "blocked"
    assert never is not None and never.status == "queued" and not never.cancel_requested
    assert await claim(store, T0 + 3) == ["p"]


async def test_ends_written_together_each_get_their_status(store: Store) -> None:
    """Ends gathered in one batch: a blocked one whose cancel is pending ends cancelled,
    the others as asked; each caller hears its own status."""
    leases = [(await start_and_claim(store, f"r{i}", queue=f"b{i}")).lease for i in range(4)]
    await store.run_cancel(run_id="r1", now=T0 + 1)
    asked = ["completed", "blocked", "blocked", "failed"]
    got = await asyncio.gather(*(
        store.run_finish(lease=lease, status=status, result=None, error="{}", now=T0 + 2)
        for lease, status in zip(leases, asked, strict=True)))
    assert got == ["completed", "cancelled", "blocked", "failed"]
    for i, status in enumerate(got):
        run = await store.run_get(f"r{i}")
        assert run is not None and run.status == status


async def test_cancel_an_ended_run_changes_nothing_and_an_unknown_one_raises(
        store: Store) -> None:
    """Cancelling a finished run returns it unchanged; an unknown id raises."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.run_finish(lease=lease, status="completed", result="1", error=None, now=T0)
    run = await store.run_cancel(run_id="r1", now=T0 + 1)
    assert run.status == "completed" and not run.cancel_requested
    with pytest.raises(RunNotFound):
        await store.run_cancel(run_id="nope", now=T0)


async def test_resume_makes_a_blocked_run_claimable_again(store: Store) -> None:
    """An operator's resume queues a blocked run at once; anything else is refused."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.run_finish(lease=lease, status="blocked", result=None, error='{"x": 1}',
                           now=T0)
    run = await store.run_resume(run_id="r1", now=T0 + 5)
    assert run.status == "queued" and run.available_at == T0 + 5 and run.error is None
    assert await claim(store, T0 + 5) == ["r1"]
    with pytest.raises(TetherError) as err:
        await store.run_resume(run_id="r1", now=T0 + 6)
    assert not isinstance(err.value, RunNotFound)
    with pytest.raises(RunNotFound):
        await store.run_resume(run_id="nope", now=T0)


async def test_status_info_is_published_under_the_lease(store: Store) -> None:
    """The live status is stored with the run."""
    lease = (await start_and_claim(store, "r1")).lease
    await store.run_set_status_info(lease=lease, info='{"step": 3}', now=T0 + 1)
    run = await store.run_get("r1")
    assert run is not None and run.status_info == '{"step": 3}' and run.updated_at == T0 + 1


# -- registry and notifications ----------------------------------------------------------------


async def test_workflow_register_and_list(store: Store) -> None:
    """Workflow names and queues are recorded; registering again updates the queue."""
    assert await store.workflow_list() == {}
    await store.workflow_register(workflows={"b": "q1", "a": "q2"}, now=T0)
    await store.workflow_register(workflows={"b": "q3"}, now=T0 + 1)
    await store.workflow_register(workflows={}, now=T0 + 2)
    assert await store.workflow_list() == {"a": "q2", "b": "q3"}


async def test_a_run_released_claimable_at_once_wakes_subscribers(store: Store) -> None:
    """A run handed back claimable at once (by a worker that cannot decrypt it, or one
    that is stopping) wakes the workers of other store objects: they claim it now, not
    at their next poll or at the expiry of the lease they saw it under."""
    lease = (await start_and_claim(store, "r1")).lease
    async with subscriber(store) as woken:
        await store.run_release(lease=lease, now=T0 + 1,
                                wait=Wait(T0 + 1, "a worker with key id 'k1'"))
        await asyncio.wait_for(woken.wait(), timeout=5)


async def test_subscribe_wakes_on_another_store_objects_insert(store: Store) -> None:
    """A run inserted through another store object on the same URL wakes subscribers;
    after unsubscribing, nothing more arrives."""
    woken = asyncio.Event()
    unsubscribe = await store.subscribe(woken.set)
    other = open_store(store.url)
    await other.open()
    try:
        await other.run_insert(run=run_record("r1"))
        await asyncio.wait_for(woken.wait(), timeout=5)
        await unsubscribe()
        woken.clear()
        # A second subscriber hears r2's wakeup: then the first one would have too.
        witness = asyncio.Event()
        unsubscribe_witness = await store.subscribe(witness.set)
        await other.run_insert(run=run_record("r2"))
        await asyncio.wait_for(witness.wait(), timeout=5)
        await unsubscribe_witness()
        assert not woken.is_set()
    finally:
        await other.close()


async def test_the_oldest_queued_run_is_dated_from_when_it_became_claimable(
        store: Store) -> None:
    """``tether_queue_oldest_age_seconds``' source: a run queued again (``tether retry``,
    a worker's hand-back) has waited since then, not since it was created (an alert on
    the age fired for a run retried a day after it was made)."""
    await store.run_insert(run=run_record("made-long-ago", queue="qa", now=T0,
                                          available_at=T0 + 86_400))
    await store.run_insert(run=run_record("fresh", queue="qb", now=T0 + 86_000))
    stats = await store.store_stats(now=T0 + 86_500)
    assert stats.queues["qa"] == (1, T0 + 86_400)
    assert stats.queues["qb"] == (1, T0 + 86_000)


async def test_ended_runs_are_counted_per_workflow_and_bucket_before_and_after_a_purge(
        store: Store) -> None:
    """``store_stats``' ended runs (``tether_workflow_runs_ended_total``) and their
    durations from creation to end (``tether_workflow_run_duration_seconds``), per
    workflow, in ``RUN_BUCKETS``: the same after a purge of the runs (then read from the
    totals) and after ``run_retry`` queued an ended one again; a blocked run is not
    counted (it has not ended)."""
    from tether.store._port import RUN_BUCKETS

    ends = [("a", "completed", 0.05), ("a", "failed", 3.0), ("a", "completed", 45.0),
            ("b", "cancelled", 200.0), ("b", "completed", 4000.0),
            ("b", "completed", 100_000.0), ("b", "blocked", 7.0)]
    for i, (workflow, status, seconds) in enumerate(ends):
        claimed = await start_and_claim(store, f"e{i}", queue=f"q{i}", workflow=workflow)
        await store.run_finish(lease=claimed.lease, status=status, result=None,
                               error=None, now=T0 + seconds)

    def histogram(durations: list[float]) -> tuple[float, ...]:
        return (len(durations), sum(durations),
                *(sum(d <= b for d in durations) for b in RUN_BUCKETS))

    expected_ends = {("a", "completed"): 2, ("a", "failed"): 1, ("b", "cancelled"): 1,
                     ("b", "completed"): 2}
    expected = {"a": histogram([0.05, 3.0, 45.0]),
                "b": histogram([200.0, 4000.0, 100_000.0])}
    stats = await store.store_stats(now=T0 + 200_000)
    assert stats.run_ends == expected_ends
    assert stats.run_durations == {w: pytest.approx(v) for w, v in expected.items()}
    report = await store.run_purge(finished_before=T0 + 200_000, limit=100,
                                   statuses=["completed", "cancelled"])
    assert report.runs == 5
    stats = await store.store_stats(now=T0 + 200_000)
    assert stats.run_ends == expected_ends
    assert stats.run_durations == {w: pytest.approx(v) for w, v in expected.items()}
    await store.run_retry(run_id="e1", version=None, now=T0 + 300_000)  # (a's failure)
    stats = await store.store_stats(now=T0 + 300_000)
    assert stats.run_ends == expected_ends
    assert stats.run_durations == {w: pytest.approx(v) for w, v in expected.items()}
    assert stats.runs_by_workflow.get(("a", "failed"), 0) == 0
