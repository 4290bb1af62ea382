"""``catchup="all"`` with each overlap policy: the missed ticks of one call are one batch,
and the overlap policy compares it with the runs in flight from before it, never the
batch's runs with one another (see docs/lifecycle.md, "Schedules").

Driven by explicit times, without a worker (its own schedule loop would tick on the real
clock): ``Held`` claims the queued runs as a worker would (a claimed run is ``running``,
not ended) and ends the ones a test names."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, cast

import pytest

from tether import App
from tether._lifecycle import tick_schedules, to_record
from tether._types import Lease, RunRecord
from tether.store import Store


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def H(hour: int) -> str:
    """The run id of the hourly tick at ``hour`` on 2026-12-02."""
    return f"hourly@2026-12-02T{hour:02d}:00:00Z"


class Held:
    """Stands in for a worker: holds every claimable run (so it is ``running``) until
    ``end`` completes it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.leases: dict[str, Lease] = {}

    async def end(self, *run_ids: str, at: str) -> None:
        for c in await self.store.run_claim(worker_id="w", queues=["default"], limit=100,
                                            now=ts(at), lease_seconds=1e9):
            self.leases[c.run.run_id] = c.lease
        for rid in run_ids:
            await self.store.run_finish(lease=self.leases.pop(rid), status="completed",
                                        result="null", error=None, now=ts(at))


def scheduled(url: str, overlap: str) -> App:
    app = App(url)

    @app.workflow
    async def job() -> None: ...

    app.schedule(job, cron="0 * * * *", name="hourly", catchup="all", catchup_max=3,
                 overlap=overlap)
    return app


async def install(app: App, since: str) -> Held:
    """Store the schedule as a worker that started at ``since`` would have."""
    await app.store.schedule_upsert(
        schedule=to_record(app, app._schedules["hourly"], ts(since)))
    return Held(app.store)


async def tick(app: App, at: str, workers: int = 1) -> None:
    """``workers`` workers tick the schedules at the same moment."""
    await asyncio.gather(*(tick_schedules(app, app.store, {"job"}, ts(at), lambda: None)
                           for _ in range(workers)))


async def runs(app: App) -> dict[str, RunRecord]:
    return {r.run_id: r for r in await app.store.run_list(limit=100)
            if r.run_id.startswith("hourly@")}


async def cancelled(app: App) -> list[str]:
    return sorted(rid for rid, r in (await runs(app)).items() if r.cancel_requested)


async def last_run(app: App) -> str | None:
    s = await app.store.schedule_get("hourly")
    assert s is not None
    return s.last_run_id


async def test_all_skip_nothing_running_starts_each_missed_tick(store_url: str) -> None:
    """5 hours missed, nothing in flight: the last catchup_max ticks each get one run
    (it started only 13:00 and lost 14:00 and 15:00), however many workers tick."""
    app = scheduled(store_url, "skip")
    async with app:
        held = await install(app, "2026-12-02 10:30:00")
        await tick(app, "2026-12-02 15:10:00", workers=3)
        assert sorted(await runs(app)) == [H(13), H(14), H(15)]
        assert await cancelled(app) == []
        assert await last_run(app) == H(15)
        # The next tick overlaps the batch as long as any run of it is in flight.
        await tick(app, "2026-12-02 16:00:01")
        await held.end(H(14), H(15), at="2026-12-02 16:30:00")
        await tick(app, "2026-12-02 17:00:01")  # 13:00's run is still running
        assert sorted(await runs(app)) == [H(13), H(14), H(15)]
        assert await last_run(app) == H(15)
        await held.end(H(13), at="2026-12-02 17:30:00")
        await tick(app, "2026-12-02 18:00:01", workers=2)
        assert sorted(await runs(app)) == [H(13), H(14), H(15), H(18)]
        assert await last_run(app) == H(18)


async def test_all_skip_previous_run_still_running_skips_the_batch(store_url: str) -> None:
    """The 10:00 run has not ended: every missed tick would have found it running, so
    none of the batch starts (and the last run stays 10:00's); once it has ended, the
    next batch starts whole."""
    app = scheduled(store_url, "skip")
    async with app:
        held = await install(app, "2026-12-02 09:30:00")
        await tick(app, "2026-12-02 10:00:01")
        await tick(app, "2026-12-02 15:10:00", workers=2)
        assert sorted(await runs(app)) == [H(10)]
        assert await last_run(app) == H(10)
        s = await app.store.schedule_get("hourly")
        assert s is not None and s.next_tick == ts("2026-12-02 16:00:00")
        await held.end(H(10), at="2026-12-02 15:20:00")
        await tick(app, "2026-12-02 18:05:00")
        assert sorted(await runs(app)) == [H(10), H(16), H(17), H(18)]
        assert await cancelled(app) == []


async def test_all_cancel_previous_cancels_only_runs_from_before_the_batch(
        store_url: str) -> None:
    """The run in flight before the batch is asked to cancel; no run of the batch cancels
    another of it (it cancelled 13:00 and 14:00 at once); the next tick cancels every
    run of the batch still in flight."""
    app = scheduled(store_url, "cancel_previous")
    async with app:
        held = await install(app, "2026-12-02 09:30:00")
        await tick(app, "2026-12-02 10:00:01")
        await tick(app, "2026-12-02 15:10:00", workers=2)
        assert sorted(await runs(app)) == [H(10), H(13), H(14), H(15)]
        assert await cancelled(app) == [H(10)]
        assert await last_run(app) == H(15)
        await held.end(H(14), at="2026-12-02 15:30:00")
        await tick(app, "2026-12-02 16:00:01")
        assert sorted(await runs(app)) == [H(10), H(13), H(14), H(15), H(16)]
        assert await cancelled(app) == [H(10), H(13), H(15)]


async def test_all_cancel_previous_nothing_running(store_url: str) -> None:
    app = scheduled(store_url, "cancel_previous")
    async with app:
        await install(app, "2026-12-02 10:30:00")
        await tick(app, "2026-12-02 15:10:00")
        assert sorted(await runs(app)) == [H(13), H(14), H(15)]
        assert await cancelled(app) == []


async def test_all_allow_starts_each_and_cancels_nothing(store_url: str) -> None:
    app = scheduled(store_url, "allow")
    async with app:
        await install(app, "2026-12-02 09:30:00")
        await tick(app, "2026-12-02 10:00:01")
        await tick(app, "2026-12-02 15:10:00", workers=2)
        await tick(app, "2026-12-02 16:00:01")
        assert sorted(await runs(app)) == [H(10), H(13), H(14), H(15), H(16)]
        assert await cancelled(app) == []
        assert await last_run(app) == H(16)


async def test_a_manual_trigger_does_not_hide_a_catch_up_run_still_in_flight(
        store_url: str) -> None:
    """A caught-up batch whose oldest run is still running, then a manual trigger (the
    schedule's last run is now the trigger's): skipped ticks must not move the window of
    runs looked at past that batch. It did (``last_tick`` moved on with each skipped
    tick), and the second tick after the trigger started although 13:00's run was still
    running."""
    from tether._lifecycle import trigger_schedule

    app = scheduled(store_url, "skip")
    async with app:
        held = await install(app, "2026-12-02 10:30:00")
        await tick(app, "2026-12-02 15:10:00")
        assert sorted(await runs(app)) == [H(13), H(14), H(15)]
        await held.end(H(14), H(15), at="2026-12-02 15:15:00")
        s = await app.store.schedule_get("hourly")
        assert s is not None
        manual = await trigger_schedule(app, app.store, s, ts("2026-12-02 15:20:00"))
        assert await last_run(app) == manual
        await held.end(manual, at="2026-12-02 15:25:00")
        for hour in (16, 17, 18):  # 13:00's run is still running: each tick is skipped
            await tick(app, f"2026-12-02 {hour}:00:01")
            assert sorted(await runs(app)) == sorted([H(13), H(14), H(15), manual]), hour
        await held.end(H(13), at="2026-12-02 18:30:00")
        await tick(app, "2026-12-02 19:00:01")
        assert sorted(await runs(app)) == sorted([H(13), H(14), H(15), manual, H(19)])
        assert await last_run(app) == H(19)


async def test_the_missed_ticks_a_catch_up_drops_are_logged(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Workers down from 09:30 to 12:30: the ticks of 10:00, 11:00 and 12:00 were missed.
    Each schedule's log says so once, at WARNING: how many, the first and the last, and
    what its ``catchup`` did with them (``skip``: none started; ``latest``: 12:00 started
    late; ``all`` with ``catchup_max=2``: 11:00 and 12:00). It was an INFO line of the
    ticks not started alone: an outage read as routine, and ``catchup="all"`` (every tick
    started late) said nothing of it."""
    app = App(store_url)

    @app.workflow
    async def job() -> None: ...

    for catchup in ("skip", "latest", "all"):
        app.schedule(job, cron="0 * * * *", name=f"h-{catchup}", catchup=catchup,
                     catchup_max=2)
    async with app:
        for spec in app._schedules.values():
            await app.store.schedule_upsert(schedule=to_record(app, spec,
                                                               ts("2026-12-02T09:30:00")))
        caplog.set_level(logging.INFO, logger="tether.worker")
        await tick_schedules(app, app.store, {"job"}, ts("2026-12-02T12:30:00"),
                             lambda: None)
        started = sorted(r.run_id for r in await app.store.run_list(limit=100))
    lines = sorted((r.levelname, r.getMessage()) for r in caplog.records
                   if "missed tick" in r.getMessage())
    span = ("3 missed ticks, 2026-12-02T10:00:00Z to 2026-12-02T12:00:00Z (no worker of "
            "workflow job started them on time)")
    assert lines == [
        ("WARNING", f"schedule h-all: {span}; catchup=all, catchup_max=2: 2 started late, "
                    "1 not started"),
        ("WARNING", f"schedule h-latest: {span}; catchup=latest: 1 started late, 2 not "
                    "started"),
        ("WARNING", f"schedule h-skip: {span}; catchup=skip: 0 started late, 3 not started"),
    ], lines
    assert started == ["h-all@2026-12-02T11:00:00Z", "h-all@2026-12-02T12:00:00Z",
                       "h-latest@2026-12-02T12:00:00Z"]


class ListedEarlier:
    """The store as a worker sees it that listed the schedules (``listed``) just before
    another worker's compare-and-set moved them on: every other call is the store's."""

    def __init__(self, store: Store, listed: list[Any]) -> None:
        self._store, self._listed = store, listed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def schedule_list(self) -> list[Any]:
        return self._listed


async def test_missed_ticks_are_logged_once_when_two_workers_tick_at_once(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Two workers back after an outage find the same missed ticks: the one whose
    compare-and-set moves the schedule on logs them; the other, which read the schedule
    before that and starts nothing new (each tick's run id is the same), logs nothing.
    Each worker logged them, once per worker ticking at once."""
    app = App(store_url)

    @app.workflow
    async def job() -> None: ...

    app.schedule(job, cron="0 * * * *", name="h-twice", catchup="latest")
    async with app:
        for spec in app._schedules.values():
            await app.store.schedule_upsert(schedule=to_record(app, spec,
                                                               ts("2026-12-02T09:30:00")))
        listed = await app.store.schedule_list()
        caplog.set_level(logging.INFO, logger="tether.worker")
        at = ts("2026-12-02T12:30:00")
        await tick_schedules(app, app.store, {"job"}, at, lambda: None)
        late = cast(Store, ListedEarlier(app.store, listed))
        await tick_schedules(app, late, {"job"}, at + 1, lambda: None)
        started = sorted(r.run_id for r in await app.store.run_list(limit=100))
    warned = [r.getMessage() for r in caplog.records if "missed tick" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("schedule h-twice: 3 missed ticks"), warned
    assert started == ["h-twice@2026-12-02T12:00:00Z"]
