"""run_insert_many and run_get_many: the store calls behind App.start_many and the
result waiters, on every backend."""

from __future__ import annotations

from tether.store import Store

from .conftest import T0, run_record, start_and_claim, subscriber


async def test_insert_many_creates_in_one_call_and_is_idempotent(store: Store) -> None:
    await store.run_insert(run=run_record("old", workflow="a"))
    got = await store.run_insert_many(runs=[
        run_record("r1"), run_record("old", workflow="b"), run_record("r2"),
        run_record("r1", workflow="c")])
    assert [(r.run_id, r.workflow, created) for r, created in got] == [
        ("r1", "wf", True), ("old", "a", False), ("r2", "wf", True), ("r1", "wf", False)]
    assert sorted(r.run_id for r in await store.run_list()) == ["old", "r1", "r2"]
    assert await store.run_insert_many(runs=[]) == []
    stored = await store.run_get("r2")
    assert stored is not None and stored.status == "queued" and stored.available_at == T0


async def test_inserted_many_are_claimable(store: Store) -> None:
    await store.run_insert_many(runs=[run_record(f"r{i}", now=T0 + i) for i in range(5)])
    claimed = await store.run_claim(worker_id="w", queues=["q"], limit=10, now=T0 + 10,
                                    lease_seconds=30)
    assert [c.run.run_id for c in claimed] == [f"r{i}" for i in range(5)]


async def test_get_many_finds_existing_runs_and_filters_settled(store: Store) -> None:
    await store.run_insert_many(runs=[run_record("a"), run_record("b")])
    done = await start_and_claim(store, "done", queue="other")
    await store.run_finish(lease=done.lease, status="completed", result="7", error=None,
                           now=T0 + 1)
    got = await store.run_get_many(["a", "missing", "done", "b"])
    assert sorted(r.run_id for r in got) == ["a", "b", "done"]
    settled = await store.run_get_many(["a", "missing", "done", "b"], settled_only=True)
    assert [(r.run_id, r.status, r.result) for r in settled] == [("done", "completed", "7")]
    assert await store.run_get_many([]) == []


async def test_get_many_reads_more_ids_than_one_statement_holds(store: Store) -> None:
    ids = [f"r{i:04}" for i in range(1200)]
    await store.run_insert_many(runs=[run_record(i) for i in ids])
    got = await store.run_get_many(ids)
    assert sorted(r.run_id for r in got) == ids


async def test_many_runs_ending_at_once_each_get_their_own_outcome(store: Store) -> None:
    """Ends submitted together (group-committed on PostgreSQL): a stale lease fails
    alone, a parent waiting for one of the children becomes claimable."""
    import asyncio

    from tether._types import Lease
    from tether.errors import LeaseLost
    from tether.store import Wait

    parent = await start_and_claim(store, "parent", queue="p")
    await store.run_insert_many(runs=[
        run_record(f"c{i}", parent="parent", parent_position=0) for i in range(6)])
    claimed = await store.run_claim(worker_id="w", queues=["q"], limit=10, now=T0,
                                    lease_seconds=30)
    leases = {c.run.run_id: c.lease for c in claimed}
    assert sorted(leases) == [f"c{i}" for i in range(6)]
    await store.run_release(lease=parent.lease, wait=Wait(
        available_at=None, description="child c3", child="c3"), now=T0)
    stale = Lease("c5", "w", leases["c5"].fencing_token + 7)
    outcomes = await asyncio.gather(
        *(store.run_finish(lease=leases[f"c{i}"], status="completed", result=str(i),
                           error=None, now=T0 + 1) for i in range(5)),
        store.run_finish(lease=stale, status="completed", result="5", error=None,
                         now=T0 + 1),
        return_exceptions=True)
    assert outcomes[:5] == ["completed"] * 5  # the status each ended with
    assert isinstance(outcomes[5], LeaseLost)
    runs = {r.run_id: r for r in await store.run_get_many([f"c{i}" for i in range(6)])}
    assert [(runs[f"c{i}"].status, runs[f"c{i}"].result) for i in range(5)] == [
        ("completed", str(i)) for i in range(5)]
    assert runs["c5"].status == "running"
    woken = await store.run_claim(worker_id="w", queues=["p"], limit=10, now=T0 + 2,
                                  lease_seconds=30)
    assert [c.run.run_id for c in woken] == ["parent"]


async def test_many_runs_released_at_once_each_get_their_own_outcome(store: Store) -> None:
    """Releases submitted together (group-committed on PostgreSQL, one transaction for
    the lot) each take their own wait, as one at a time would: a timer, a signal already
    sent, a signal not sent, a child already ended, a child still running, a cancel
    asked for; a stale lease fails alone; one released claimable at once wakes the
    workers of another store object."""
    import asyncio

    from tether._types import Lease
    from tether.errors import LeaseLost
    from tether.store import Wait
    from tether.store.postgres import PostgresStore

    done = await start_and_claim(store, "child-done", queue="c")
    await store.run_finish(lease=done.lease, status="completed", result="1", error=None,
                           now=T0)
    await start_and_claim(store, "child-busy", queue="c")
    ids = ["timer", "sent", "unsent", "ended", "busy", "cancel", "stale", "at-once"]
    await store.run_insert_many(runs=[run_record(i) for i in ids])
    claimed = await store.run_claim(worker_id="w", queues=["q"], limit=20, now=T0,
                                    lease_seconds=30)
    leases = {c.run.run_id: c.lease for c in claimed}
    assert sorted(leases) == sorted(ids)
    await store.signal_send(run_id="sent", name="go", payload=None, idempotency_key=None,
                            now=T0)
    await store.run_cancel(run_id="cancel", now=T0)
    now = T0 + 1
    waits = {
        "timer": Wait(T0 + 100, "sleep"),
        "sent": Wait(None, "signal go", signal="go"),
        "unsent": Wait(T0 + 50, "signal go", signal="go"),
        "ended": Wait(None, "child child-done", child="child-done"),
        "busy": Wait(None, "child child-busy", child="child-busy"),
        "cancel": Wait(T0 + 100, "sleep"),
        "stale": Wait(T0 + 100, "sleep"),
        "at-once": Wait(now, "a worker with key id 'k1'"),
    }
    leases["stale"] = Lease("stale", "w", leases["stale"].fencing_token + 3)
    async with subscriber(store) as woken:
        batches = store._writer.batches if isinstance(store, PostgresStore) else 0
        outcomes = await asyncio.gather(
            *(store.run_release(lease=leases[i], wait=waits[i], now=now) for i in ids),
            return_exceptions=True)
        if isinstance(store, PostgresStore):
            assert store._writer.batches == batches + 1  # one transaction for all
        await asyncio.wait_for(woken.wait(), timeout=5)
    got = dict(zip(ids, outcomes, strict=True))
    assert isinstance(got.pop("stale"), LeaseLost)
    assert set(got.values()) == {None}
    runs = {r.run_id: r for r in await store.run_get_many(ids)}
    assert {i: (r.status, r.available_at, r.waiting_for) for i, r in runs.items()} == {
        "timer": ("waiting", T0 + 100, "sleep"),
        "sent": ("waiting", now, "signal go"),
        "unsent": ("waiting", T0 + 50, "signal go"),
        "ended": ("waiting", now, "child child-done"),
        "busy": ("waiting", None, "child child-busy"),
        "cancel": ("waiting", now, "sleep"),
        "stale": ("running", runs["stale"].available_at, None),
        "at-once": ("waiting", now, "a worker with key id 'k1'"),
    }


async def test_a_created_run_is_answered_as_stored(store: Store) -> None:
    """The record run_insert and run_insert_many answer for a run they created is the
    run as the store reads it back (a store may answer with what it was given, without
    reading it again)."""
    got = await store.run_insert_many(runs=[run_record("m1"), run_record("m2", now=T0 + 2)])
    one, created = await store.run_insert(run=run_record("s1", workflow="other"))
    child, child_created = await store.run_insert(run=run_record(
        "c1", parent="m1", parent_position=3, on_parent_cancel="abandon", status="waiting"))
    assert created and child_created and all(c for _, c in got)
    for answered in (*(r for r, _ in got), one, child):
        assert answered == await store.run_get(answered.run_id)
