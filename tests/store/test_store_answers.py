"""Reads whose cost must not grow with the store's other runs, on every backend: what
``TestEnv`` polls (``Store.run_activity``), its answers checked against the runs."""

from __future__ import annotations

from tether.store import Store

from .conftest import T0, run_record, start_and_claim


async def test_run_activity_says_busy_and_the_next_wake_from_the_runs_of_its_queues(
        store: Store) -> None:
    """``run_activity``: busy while a run is running on any queue, or a queued or waiting
    run of the given queues is due; the next wake is the earliest later ``available_at``
    of a queued or waiting run of those queues (not of another queue's, nor of a run
    waiting on a signal alone, nor of an ended run)."""
    assert await store.run_activity(queues=["q"], now=T0) == (False, None)
    # Ended runs and runs of other queues count for nothing, whatever their times.
    for i, status in enumerate(("completed", "failed", "cancelled", "blocked")):
        await store.run_insert(run=run_record(f"end-{i}", status=status, now=T0 - 10))
    await store.run_insert(run=run_record("other-due", queue="other", now=T0 - 5))
    await store.run_insert(run=run_record("other-later", queue="other", status="waiting",
                                          available_at=T0 + 5))
    await store.run_insert(run=run_record("on-signal", status="waiting"))  # no time
    assert await store.run_activity(queues=["q"], now=T0) == (False, None)
    # A timer of our queue: idle until it is due, and it is the next wake.
    await store.run_insert(run=run_record("timer", status="waiting", available_at=T0 + 60))
    await store.run_insert(run=run_record("later", queue="q2", status="waiting",
                                          available_at=T0 + 30))
    assert await store.run_activity(queues=["q"], now=T0) == (False, T0 + 60)
    assert await store.run_activity(queues=["q", "q2"], now=T0) == (False, T0 + 30)
    assert await store.run_activity(queues=["q", "other"], now=T0) == (True, T0 + 5)
    assert await store.run_activity(queues=["q"], now=T0 + 60) == (True, None)
    assert await store.run_activity(queues=[], now=T0) == (False, None)
    # A queued run due now on our queue: busy, and the timer is still the next wake.
    await store.run_insert(run=run_record("due", now=T0 - 1))
    assert await store.run_activity(queues=["q"], now=T0) == (True, T0 + 60)
    # A running run, of any queue: busy.
    await start_and_claim(store, "runs", queue="elsewhere", now=T0)
    assert await store.run_activity(queues=["q2"], now=T0) == (True, T0 + 30)
