"""SyncedClock: the machine's clock until synced, then the reference clock's."""

from __future__ import annotations

import asyncio
import time

from tether._clock import SyncedClock


async def test_unsynced_is_the_machine_clock_then_the_reference_after_sync() -> None:
    clock = SyncedClock()
    assert not clock.synced and clock.due()
    assert abs(clock.now() - time.time()) < 60

    async def server_an_hour_ahead() -> float:
        return time.time() + 3600

    await clock.sync(server_an_hour_ahead)
    assert clock.synced and not clock.due()
    assert 3540 < clock.now() - time.time() < 3660
    first = clock.now()
    assert clock.now() >= first  # monotonic between syncs


async def test_a_slow_round_trip_keeps_the_previous_anchor() -> None:
    clock = SyncedClock()

    async def ahead(seconds: float, delay: float = 0.0) -> float:
        if delay:
            await asyncio.sleep(delay)
        return time.time() + seconds

    await clock.sync(lambda: ahead(100.0))
    await clock.sync(lambda: ahead(-100.0, delay=0.3), tries=1, max_round_trip=0.25)
    assert clock.now() - time.time() > 50  # the slow read was not taken
    await clock.sync(lambda: ahead(-100.0))
    assert clock.now() - time.time() < -50


async def test_a_resync_a_little_behind_holds_the_clock_rather_than_set_it_back() -> None:
    # Found by the restart soak (pgrestart-often): a resync after a restart set a
    # worker's clock back 4.5 ms while a step ran, and the step's journal entry
    # finished before it started.
    clock = SyncedClock()

    async def ahead(seconds: float) -> float:
        return time.time() + seconds

    await clock.sync(lambda: ahead(0.05))
    before = clock.now()
    await clock.sync(lambda: ahead(0.0))  # 50 ms behind the last anchor: its error
    assert clock.now() >= before
    assert clock.now() - time.time() < 0.06  # held at most until the new anchor's time


async def test_a_resync_far_behind_sets_the_clock_back_at_once() -> None:
    clock = SyncedClock()

    async def ahead(seconds: float) -> float:
        return time.time() + seconds

    await clock.sync(lambda: ahead(10.0))
    await clock.sync(lambda: ahead(0.0))  # the reference's clock set back 10 s
    assert abs(clock.now() - time.time()) < 1.0
