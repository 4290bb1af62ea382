"""The one seam for time. Queries take ``now`` as a parameter from here."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

#: The epoch seconds a ``datetime`` can stand for (years 1 to 9999, UTC), whole seconds.
_FIRST = int(dt.datetime.min.replace(tzinfo=dt.UTC).timestamp())
_LAST = int(dt.datetime.max.replace(tzinfo=dt.UTC).timestamp()) - 1


def utc_datetime(ts: float) -> dt.datetime:
    """``ts`` (epoch seconds) as an aware UTC ``datetime``, held to the years 1 to 9999
    that ``datetime`` can stand for: a durable timer may be set further ahead (its
    wake-up is a float in the store), and every place that prints a time reads it
    through here rather than fail on it (``ValueError: year 33715 is out of range``)."""
    return dt.datetime.fromtimestamp(min(max(ts, _FIRST), _LAST), dt.UTC)


def beyond_dates(ts: float) -> str | None:
    """What a person reads for ``ts`` when no date stands for it ("after 9999-12-31",
    a retry policy's or a Postpone's delay of 1e12 s), else None: the CLI and the run
    page say so rather than print ``utc_datetime``'s held date as if it were the time."""
    if ts > _LAST:
        return "after 9999-12-31"
    if ts < _FIRST:
        return "before 0001-01-01"
    return None


#: ``age``'s units: below each bound (seconds), the age in that unit. The web UI's
#: script (``fmtAgo`` in serve/static/app.js) keeps the same bounds, to redraw what the
#: server drew.
AGE_UNITS = ((120, 1, "s"), (7200, 60, "min"), (172800, 3600, "h"))


def age(seconds: float) -> str:
    """How long ago, short, the one rule of ``tether workers``' STARTED and HEARTBEAT,
    ``tether approvals``' WAITING and the web UI's "... ago": ``42 s`` under 2 minutes,
    ``17 min`` under 2 hours, ``5.2 h`` under 48 hours, then days, ``3.0 d`` under ten
    and ``118 d`` beyond. (Until 2026-12-07 the three had rules of their own: past 48
    hours ``tether approvals`` said ``52.0 h`` where ``tether workers`` said ``2.2 d``,
    and the UI ``2 min ago`` where both said ``90 s``.)"""
    seconds = max(seconds, 0.0)
    for bound, unit, name in AGE_UNITS:
        if seconds < bound:
            value = seconds / unit
            return f"{value:.1f} {name}" if name == "h" else f"{value:.0f} {name}"
    days = seconds / 86400
    return f"{days:.1f} d" if days < 10 else f"{days:.0f} d"


class Clock(Protocol):
    """Wall-clock time in epoch seconds, and a way to wait on it."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class SyncedClock(SystemClock):
    """The App's default clock: this machine's clock until ``sync`` has read a
    reference clock (the PostgreSQL server's, shared by every worker of the store);
    then the reference's time at the last sync plus the monotonic time elapsed since.

    On PostgreSQL, leases and timers are compared across hosts, so they must be read
    off one clock: a worker whose own clock is an hour ahead would otherwise take the
    leases of live workers and fire timers an hour early, and one an hour behind would
    claim nothing and hand out leases that others see as expired. A step of the local
    wall clock after a sync changes nothing (elapsed time is monotonic); ``sync`` again
    from time to time corrects drift (workers do it with their heartbeats).

    A resync that would set the clock back by no more than its error bound (half the
    largest round trip it takes, ``max_round_trip``) holds it still instead, at the
    time it read last, until the new anchor catches up: readings from one process never
    go back for a correction that small (a step's ``finished_at`` before its own
    ``started_at``: a resync after a database restart set a worker's clock back 4.5 ms
    mid-step). A larger step back (the reference's own clock set back) is taken at once.
    """

    #: Seconds between syncs that workers ask for.
    RESYNC_EVERY = 30.0

    def __init__(self) -> None:
        self._base: tuple[float, float] | None = None  # (reference time, monotonic)
        #: The clock reads no earlier than this (a resync's small step back, held).
        self._floor = 0.0

    @property
    def synced(self) -> bool:
        return self._base is not None

    def due(self) -> bool:
        """True if never synced or the last sync is older than ``RESYNC_EVERY``."""
        return self._base is None or time.monotonic() - self._base[1] >= self.RESYNC_EVERY

    def now(self) -> float:
        if self._base is None:
            return time.time()
        ref, mono = self._base
        t = ref + (time.monotonic() - mono)
        return t if t >= self._floor else self._floor

    async def sync(self, read: Callable[[], Awaitable[float]], *, tries: int = 3,
                   max_round_trip: float = 0.25) -> None:
        """Read the reference clock with ``read()``; its value is taken as the time at
        the middle of the round trip, so the error is at most half the round trip. Up
        to ``tries`` reads keep the one with the shortest round trip, and at least two
        when ``tries`` allows: the first read may set up a connection (the store's
        pool opening, or reconnecting after a database restart) before the server
        reads its clock, which puts that reading late in its round trip and the clock
        ahead by up to half of it (5-12 ms on a local PostgreSQL, a first round trip
        short enough to be kept alone), while the next one reuses the connection. Once
        synced, a best round trip over ``max_round_trip`` (a server restarting, a slow
        network) keeps the previous anchor rather than a worse one."""
        best: tuple[float, float, float] | None = None  # (round trip, ref, monotonic)
        for n in range(max(tries, 1)):
            t0 = time.monotonic()
            ref = await read()
            t1 = time.monotonic()
            if best is None or t1 - t0 < best[0]:
                best = (t1 - t0, ref, (t0 + t1) / 2)
            if n > 0 and t1 - t0 <= max_round_trip / 10:
                break
        assert best is not None
        round_trip, ref, mono = best
        if self._base is not None and round_trip > max_round_trip:
            return
        before = None if self._base is None else self.now()
        self._base = (ref, mono)
        after = ref + (time.monotonic() - mono)
        # (Back by at most the sync's error bound: held; further: taken at once.)
        held = before is not None and 0.0 < before - after <= max_round_trip / 2
        self._floor = before if held and before is not None else 0.0


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for ``event`` up to ``timeout`` seconds; True if it was set.

    Uses ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11 the
    latter can swallow a cancellation that races with the event being set, which
    left a stopping worker's loop running forever.
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
