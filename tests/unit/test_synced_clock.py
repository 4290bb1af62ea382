"""SyncedClock: the machine's clock until synced, then the reference clock's."""

from __future__ import annotations

import asyncio
import time

import pytest

from tether import _clock
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


class _Time:
    """The machine's clocks for ``tether._clock``, stepped by the test: the monotonic
    clock and the wall clock, both ``at`` seconds."""

    def __init__(self) -> None:
        self.at = 5000.0

    def monotonic(self) -> float:
        return self.at

    def time(self) -> float:
        return self.at


async def test_a_first_read_that_sets_up_a_connection_is_not_kept_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first read of a sync opens the connection (20 ms) before the server reads
    its clock (at the end of its round trip), the next ones reuse it (1 ms each way).
    The clock was 10 ms ahead of the reference: the first round trip (20 ms, under
    ``max_round_trip / 10``) was kept alone, its reading taken as the middle of it."""
    fake = _Time()
    monkeypatch.setattr(_clock, "time", fake)
    reads = 0

    async def server() -> float:  # the reference: the machine's clock + 100 s
        nonlocal reads
        reads += 1
        if reads == 1:
            fake.at += 0.020  # connecting, then the statement: read at once
            return fake.at + 100.0
        fake.at += 0.001
        ref = fake.at + 100.0
        fake.at += 0.001
        return ref

    clock = _clock.SyncedClock()
    await clock.sync(server)
    assert clock.now() - (fake.at + 100.0) == pytest.approx(0.0, abs=1e-9)
    assert reads == 2  # (the connection reused once: no more reads than that)
