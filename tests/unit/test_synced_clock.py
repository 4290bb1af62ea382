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
