"""Store contract of migration 0005 and of cancels, on every backend: claims count
takeovers of running runs, run_crash_mark is fenced, a cancel of a running run is
notified with its id, a cancel keeps the time of its request and adds an event (0021,
0022), and blob references keep texts through purges."""

from __future__ import annotations

import asyncio
import json

import pytest

from tether._types import Lease
from tether.errors import LeaseLost
from tether.store import Store, Wait, open_store
from tether.store._port import RunEvent

from .conftest import LEASE, T0, entry, run_record, start_and_claim


async def test_a_claim_counts_takeovers_and_the_taker_acknowledges_them(
        store: Store) -> None:
    """Taking over a run that was running (its lease expired) adds one to crashes; the
    taker's run_crash_mark (fenced) acknowledges it, so a later normal claim (of a run
    handed back) is no takeover and keeps the count; retry resets it."""
    first = await start_and_claim(store, "r1")
    assert (first.run.crashes, first.run.crashes_seen, first.run.crash_progress) == (
        0, 0, None)
    await store.journal_append(lease=first.lease, entry=entry(0))
    later = T0 + LEASE + 1
    taken = await store.run_claim(worker_id="w2", queues=["q"], limit=1, now=later,
                                  lease_seconds=LEASE)
    assert [(c.run.crashes, c.run.crashes_seen) for c in taken] == [(1, 0)]
    await store.run_crash_mark(lease=taken[0].lease, crashes=1, progress=1)
    again = await store.run_claim(worker_id="w3", queues=["q"], limit=1,
                                  now=later + LEASE + 1, lease_seconds=LEASE)
    assert [(c.run.crashes, c.run.crashes_seen, c.run.crash_progress)
            for c in again] == [(2, 1, 1)]
    with pytest.raises(LeaseLost):  # w2's lease was taken over
        await store.run_crash_mark(lease=taken[0].lease, crashes=9, progress=9)
    await store.run_crash_mark(lease=again[0].lease, crashes=2, progress=1)
    now = later + 2 * LEASE + 2
    await store.run_release(lease=again[0].lease, now=now, wait=Wait(now, "a back-off"))
    normal = await store.run_claim(worker_id="w4", queues=["q"], limit=1, now=now,
                                   lease_seconds=LEASE)
    assert [(c.run.crashes, c.run.crashes_seen) for c in normal] == [(2, 2)]
    with pytest.raises(LeaseLost):
        await store.run_crash_mark(lease=Lease("r1", "w4", 99), crashes=1, progress=0)
    await store.run_finish(lease=normal[0].lease, status="failed", result=None,
                           error='{"message": "x"}', now=now + 1)
    retried = (await store.run_retry(run_id="r1", version=None, now=now + 2)).run
    assert (retried.crashes, retried.crashes_seen, retried.crash_progress) == (0, 0, None)


async def test_a_worker_that_claims_back_its_own_expired_run_counts_no_crash(
        store: Store) -> None:
    """A worker whose lease expired while it could not reach the store (it was gone for
    longer than a lease) claims the run back itself: it did not die, so that is no
    takeover and no crash in a row against the run (five would fail it). Another worker
    taking it over counts one, as before."""
    first = await start_and_claim(store, "r1", worker="w1")
    await store.journal_append(lease=first.lease, entry=entry(0))
    later = T0 + LEASE + 1
    back = await store.run_claim(worker_id="w1", queues=["q"], limit=1, now=later,
                                 lease_seconds=LEASE)
    assert [(c.run.crashes, c.run.crashes_seen, c.lease.fencing_token) for c in back] == [
        (0, 0, first.lease.fencing_token + 1)]
    with pytest.raises(LeaseLost):  # (the claim back fenced the old execution out)
        await store.journal_append(lease=first.lease, entry=entry(1))
    taken = await store.run_claim(worker_id="w2", queues=["q"], limit=1,
                                  now=later + LEASE + 1, lease_seconds=LEASE)
    assert [(c.run.crashes, c.run.crashes_seen) for c in taken] == [(1, 0)]


@pytest.mark.parametrize("queues", [["q"], ["q", "other"]])
async def test_a_claim_with_takeover_before_leaves_leases_expired_after_it(
        store: Store, queues: list[str]) -> None:
    """``takeover_before`` (a worker back from a store outage): a running run whose
    lease expired after that time is not taken over, one that expired before it is, and
    queued runs are claimed as usual; without it, both are taken over. Also through
    the claim of several queues, and of a queue with a concurrency limit."""
    if len(queues) > 1:
        await store.queue_limit_set(queue="other", limit=5, now=T0)
    await start_and_claim(store, "early", now=T0 - 10, worker="w1")
    late = await start_and_claim(store, "late", now=T0, worker="w1")
    await store.run_insert(run=run_record("new", queue=queues[-1], now=T0 + 1))
    later = T0 + LEASE + 5  # both leases expired: early's at T0 + LEASE - 10
    claimed = await store.run_claim(worker_id="w2", queues=queues, limit=10, now=later,
                                    lease_seconds=LEASE, takeover_before=T0 + LEASE - 5)
    assert sorted(c.run.run_id for c in claimed) == ["early", "new"]
    await store.journal_append(lease=late.lease, entry=entry(0))  # w1 still holds it
    again = await store.run_claim(worker_id="w2", queues=queues, limit=10, now=later,
                                  lease_seconds=LEASE)
    assert [c.run.run_id for c in again] == ["late"]


async def test_a_cancel_of_a_running_run_is_notified_with_its_id(store: Store) -> None:
    """Another store object on the same URL cancels a running run: subscribers with
    on_cancel get its id; a cancel of a queued run sends no id (it is claimable)."""
    cancelled: list[str] = []
    got = asyncio.Event()

    def on_cancel(run_id: str) -> None:
        cancelled.append(run_id)
        got.set()

    unsubscribe = await store.subscribe(lambda: None, on_cancel=on_cancel)
    await start_and_claim(store, "busy")
    other = open_store(store.url)
    await other.open()
    try:
        await other.run_insert(run=run_record("idle", queue="elsewhere"))
        await other.run_cancel(run_id="idle", now=T0 + 1)
        await other.run_cancel(run_id="busy", now=T0 + 1)
        await asyncio.wait_for(got.wait(), timeout=5)
        await asyncio.sleep(0.2)
        assert cancelled == ["busy"]
    finally:
        await unsubscribe()
        await other.close()


async def test_blob_references_keep_texts_until_the_last_referrer_is_purged(
        store: Store) -> None:
    for rid in ("a", "b"):
        c = await start_and_claim(store, rid, queue=rid)
        await store.blob_put(blobs={"shared": "S", f"own-{rid}": rid.upper()}, run_id=rid)
        await store.run_finish(lease=c.lease, status="completed", result="1", error=None,
                               now=T0 + (1 if rid == "a" else 2))
    await store.blob_put(blobs={"loose": "L"})  # outside any run: never swept
    report = await store.run_purge(finished_before=T0 + 1.5, statuses=["completed"])
    assert report.run_ids == ["a"] and report.blobs == 1
    keys = ["shared", "own-a", "own-b", "loose"]
    assert sorted(await store.blob_get(keys=keys)) == ["loose", "own-b", "shared"]
    report = await store.run_purge(finished_before=T0 + 3, statuses=["completed"])
    assert report.run_ids == ["b"] and report.blobs == 2
    assert await store.blob_get(keys=keys) == {"loose": "L"}


async def test_a_purge_deletes_the_shared_values_of_its_runs(store: Store) -> None:
    """A run's trace context (``otel.trace:<run id>``, written by tether.otel and the
    HTTP API) goes with the run; other runs' values and other keys stay."""
    for rid in ("a", "b"):
        c = await start_and_claim(store, rid, queue=rid)
        assert await store.kv_cas(key=f"otel.trace:{rid}", value="{}", version=None, now=T0)
        await store.run_finish(lease=c.lease, status="completed", result="1", error=None,
                               now=T0 + (1 if rid == "a" else 2))
    assert await store.kv_cas(key="breaker:a", value="{}", version=None, now=T0)
    report = await store.run_purge(finished_before=T0 + 1.5, statuses=["completed"])
    assert report.run_ids == ["a"]
    assert await store.kv_get(key="otel.trace:a") is None
    assert await store.kv_get(key="otel.trace:b") is not None
    assert await store.kv_get(key="breaker:a") is not None


async def test_a_cancel_keeps_its_first_time_and_tells_the_runs_events(
        store: Store) -> None:
    """A cancel stores when it was requested (``cancel_requested_at``, migration 0021)
    in the statement that sets the flag: a repeat keeps the first time, a parent's
    cancel gives its children theirs, a retry clears it. A cancel that leaves the run's
    status as it is (waiting, running) adds a ``cancel`` event (migration 0022): no
    status event told an open run page of it. A repeat adds none, and a cancel that ends
    the run at once has its status event alone. Until 2026-12-07 the store kept a flag,
    not its time, and a waiting run's cancel had no event."""
    def kinds(events: list[RunEvent]) -> list[str]:
        return [e.kind for e in events]

    parked = await start_and_claim(store, "parked")
    await store.run_release(lease=parked.lease, now=T0 + 1,
                            wait=Wait(None, "signal go", signal="go"))
    before = await store.run_events_read(run_id="parked", after=None)
    await store.run_cancel(run_id="parked", now=T0 + 5)
    again = await store.run_cancel(run_id="parked", now=T0 + 9)
    assert (again.status, again.cancel_requested, again.cancel_requested_at) == (
        "waiting", True, T0 + 5)
    stored = await store.run_get("parked")
    assert stored is not None and stored.cancel_requested_at == T0 + 5
    new = await store.run_events_read(run_id="parked", after=before[-1].event_id)
    assert kinds(new) == ["cancel"]
    assert json.loads(new[0].data or "") == {"cancel_requested_at": T0 + 5}

    # A parent's cancel: its running child's time is the cascade's, with its event.
    await start_and_claim(store, "kid", queue="kids", parent="parked", parent_position=0)
    assert await store.run_children_cancel(parent_run_id="parked", now=T0 + 7) == ["kid"]
    kid = await store.run_get("kid")
    assert kid is not None and (kid.status, kid.cancel_requested_at) == ("running", T0 + 7)
    assert kinds(await store.run_events_read(run_id="kid", after=None))[-1] == "cancel"

    # A run the cancel ends at once (queued, never started): its status event alone.
    await store.run_insert(run=run_record("idle", queue="elsewhere"))
    ended = await store.run_cancel(run_id="idle", now=T0 + 11)
    assert (ended.status, ended.cancel_requested_at) == ("cancelled", T0 + 11)
    assert "cancel" not in kinds(await store.run_events_read(run_id="idle", after=None))

    # A retry clears it; the next cancel has a time of its own.
    claimed = await store.run_claim(worker_id="w2", queues=["q"], limit=1, now=T0 + 12,
                                    lease_seconds=LEASE)
    assert [c.run.run_id for c in claimed] == ["parked"]
    await store.run_finish(lease=claimed[0].lease, status="cancelled", result=None,
                           error=None, now=T0 + 13)
    retried = (await store.run_retry(run_id="parked", version=None, now=T0 + 14)).run
    assert (retried.cancel_requested, retried.cancel_requested_at) == (False, None)
    assert (await store.run_cancel(run_id="parked", now=T0 + 20)).cancel_requested_at \
        == T0 + 20


async def test_a_cancel_keeps_its_reason_and_a_cascade_its_parent(store: Store) -> None:
    """A cancel keeps its reason (``cancel_reason``) and whose cancel it was
    (``cancelled_with``, migration 0023), set by the statement that sets the flag: a
    run's own request has no parent and a repeat keeps the first's reason; a parent's
    cascade gives each child it asks, or ends at once, the parent's id and reason (a
    grandchild its own parent's), but not a child whose own cancel came first, nor one
    that abandons its parent; a blocked run's cancel, which ends it at once, gives its
    children its reason too. No claim reads the columns; a retry clears them."""
    async def got(run_id: str) -> tuple[str, bool, str | None, str | None]:
        run = await store.run_get(run_id)
        assert run is not None
        return run.status, run.cancel_requested, run.cancel_reason, run.cancelled_with

    top = await start_and_claim(store, "top")
    await store.run_release(lease=top.lease, now=T0 + 1,
                            wait=Wait(None, "signal go", signal="go"))
    await store.run_insert(run=run_record("top.a", queue="nowhere", parent="top",
                                          parent_position=0))
    await store.run_insert(run=run_record("top.a.g", queue="nowhere", parent="top.a",
                                          parent_position=0))
    await start_and_claim(store, "top.b", queue="kids", parent="top", parent_position=1)
    await start_and_claim(store, "top.c", queue="own", parent="top", parent_position=2)
    await store.run_insert(run=run_record("top.d", queue="nowhere", parent="top",
                                          parent_position=3, on_parent_cancel="abandon"))
    await store.run_cancel(run_id="top.c", now=T0 + 2, reason="its own")
    asked = await store.run_cancel(run_id="top", now=T0 + 3, reason="duplicate order")
    assert (asked.cancel_reason, asked.cancelled_with) == ("duplicate order", None)
    again = await store.run_cancel(run_id="top", now=T0 + 4, reason="another")
    assert (again.cancel_reason, again.cancel_requested_at) == ("duplicate order", T0 + 3)
    assert await store.run_children_cancel(parent_run_id="top", now=T0 + 5) == [
        "top.a", "top.a.g", "top.b", "top.c"]
    assert {r: await got(r) for r in ("top", "top.a", "top.a.g", "top.b", "top.c",
                                      "top.d")} == {
        "top": ("waiting", True, "duplicate order", None),
        "top.a": ("cancelled", True, "duplicate order", "top"),
        "top.a.g": ("cancelled", True, "duplicate order", "top.a"),
        "top.b": ("running", True, "duplicate order", "top"),
        "top.c": ("running", True, "its own", None),
        "top.d": ("queued", False, None, None)}

    # A claim does not read them (only run_get does): its record leaves them out.
    claimed = await store.run_claim(worker_id="w2", queues=["q"], limit=1, now=T0 + 6,
                                    lease_seconds=LEASE)
    assert [(c.run.run_id, c.run.cancel_requested, c.run.cancel_reason)
            for c in claimed] == [("top", True, None)]

    # A blocked run's cancel ends it at once, its children with it, with its reason.
    blk = await start_and_claim(store, "blk", queue="b")
    await store.run_insert(run=run_record("blk.k", queue="nowhere", parent="blk",
                                          parent_position=0))
    await store.run_finish(lease=blk.lease, status="blocked", result=None,
                           error='{"message": "x"}', now=T0 + 7)
    ended = await store.run_cancel(run_id="blk", now=T0 + 8, reason="stuck")
    assert (ended.status, ended.cancel_reason, ended.cancelled_with) == (
        "cancelled", "stuck", None)
    assert await got("blk.k") == ("cancelled", True, "stuck", "blk")

    # A retry clears them; the next cancel's are its own.
    retried = (await store.run_retry(run_id="top.a", version=None, now=T0 + 9)).run
    assert (retried.cancel_reason, retried.cancelled_with) == (None, None)
    assert await got("top.a") == ("queued", False, None, None)
    assert (await store.run_cancel(run_id="blk.k", now=T0 + 10)).cancel_reason == "stuck"
    await store.run_retry(run_id="blk.k", version=None, now=T0 + 11)
    assert (await store.run_cancel(run_id="blk.k", now=T0 + 12, reason="later")
            ).cancelled_with is None
    assert await got("blk.k") == ("cancelled", True, "later", None)
