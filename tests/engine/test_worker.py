"""Worker scheduling: a worker whose slots are all busy waits without spinning."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import wait_for
from tether import App, ConfigError, InvalidName
from tether._types import RunRecord, RunStatus


async def test_a_saturated_worker_still_runs_everything(store_url: str) -> None:
    """concurrency=1 with several runs: each waits its turn; a finished run frees the
    slot (this used to spin the event loop forever once a wake-up arrived while busy)."""
    app = App(store_url)

    @app.step
    async def work(i: int) -> int:
        await asyncio.sleep(0.01)
        return i

    @app.workflow
    async def wf(n: int) -> int:
        total = 0
        for i in range(n):
            total += await work(i)
        return total

    handles = [await app.start(wf, 5) for _ in range(4)]
    async with app.worker(concurrency=1):
        results = await asyncio.wait_for(
            asyncio.gather(*(h.result(timeout=30) for h in handles)), 30)
    assert results == [10, 10, 10, 10]
    await app.close()


def test_a_script_may_run_two_event_loops_with_an_app_each(tmp_path: object) -> None:
    """asyncio.run() twice, one App per loop on one store; the closed first App stays
    closed in the second loop instead of silently opening a new store."""
    url = f"sqlite:///{tmp_path}/reuse.db"
    apps: list[App] = []

    async def once(base: int) -> list[int]:
        app = App(url)
        apps.append(app)

        @app.workflow
        async def wf(x: int) -> int:
            return x

        handles = await asyncio.gather(*(app.start(wf, base + i) for i in range(3)))
        async with app.worker():
            out = [await h.result(timeout=10) for h in handles]
        await app.close()
        return out

    async def reuse_closed() -> None:
        await apps[0].get_run("any")

    assert asyncio.run(once(0)) == [0, 1, 2]
    assert asyncio.run(once(10)) == [10, 11, 12]
    with pytest.raises(ConfigError, match="App is closed"):
        asyncio.run(reuse_closed())


async def _app_of_done(store_url: str) -> tuple[App, Any]:
    """An opened App with one workflow, ``wf``, that returns "done"."""
    app = App(store_url)

    @app.workflow
    async def wf() -> str:
        return "done"

    await app._open()
    return app, wf


async def test_a_failed_final_write_is_retried(store_url: str) -> None:
    """The store refuses the run's final write twice (a dropped connection): the worker
    keeps trying instead of leaving the run 'running' under a lease it renews forever."""
    from tether import StoreUnavailable

    app, wf = await _app_of_done(store_url)
    store = app.store
    real_finish = store.run_finish
    failures: list[str] = []

    async def flaky_finish(**kwargs: object) -> str:
        if len(failures) < 2:
            failures.append("refused")
            raise StoreUnavailable("connection dropped (injected)")
        return await real_finish(**kwargs)  # type: ignore[arg-type]

    store.run_finish = flaky_finish  # type: ignore[method-assign]
    async with app.worker():
        assert await (await app.start(wf, run_id="f")).result(timeout=20) == "done"
    assert failures == ["refused", "refused"]
    await app.close()


async def test_a_steps_append_refused_by_an_outage_is_written_again_in_place(
        store_url: str) -> None:
    """The store refuses a step's journal append three times (unavailable: a dropped
    connection, a locked SQLite file), and a deferred one (a clock value) twice: the
    worker writes each again, with the result it holds, instead of handing the run back
    for a replay that would run the step again. The step ran once; the run was never
    claimed again (fencing token 1)."""
    from tether import StoreUnavailable, now

    app = App(store_url)
    calls: list[int] = []

    @app.step
    async def paid() -> str:
        calls.append(1)
        return "answer"

    @app.workflow
    async def wf() -> str:
        when = now()
        said = await paid()
        return f"{said} {when.year > 2000}"

    await app._open()
    store = app.store
    real_append = store.journal_append
    refused: list[str] = []

    async def flaky_append(**kwargs: Any) -> None:
        entry = kwargs["entry"]
        limit = 3 if entry.kind == "step" else 2
        if sum(1 for k in refused if k == entry.kind) < limit:
            refused.append(entry.kind)
            raise StoreUnavailable(f"connection dropped (injected, {entry.kind})")
        await real_append(**kwargs)

    store.journal_append = flaky_append  # type: ignore[method-assign]
    async with app.worker():
        assert await (await app.start(wf, run_id="a")).result(timeout=20) == "answer True"
    assert calls == [1]
    assert sorted(refused) == ["now", "now", "step", "step", "step"]
    run = await store.run_get("a")
    assert run is not None and run.fencing_token == 1
    await app.close()


async def test_a_locked_sqlite_file_during_a_steps_append_does_not_run_it_again(
        tmp_path: Any) -> None:
    """SQLite: another process holds the file's write lock when the step's append comes,
    for longer than the store's busy timeout (the append fails: StoreUnavailable, "stayed
    locked"). The worker writes the result again once the lock is gone; the step ran
    once."""
    import apsw

    path = f"{tmp_path}/locked.db"
    app = App(f"sqlite:///{path}", busy_timeout=0.2)
    calls: list[int] = []
    other = apsw.Connection(path)
    loop = asyncio.get_running_loop()

    @app.step
    async def paid() -> str:
        calls.append(1)
        other.execute("BEGIN IMMEDIATE")  # held for 1.5 s, past 7 busy timeouts
        loop.call_later(1.5, lambda: other.execute("ROLLBACK"))
        return "answer"

    @app.workflow
    async def wf() -> str:
        return await paid()

    async with app.worker():
        handle = await app.start(wf, run_id="a")
        while not calls:
            await asyncio.sleep(0.01)
        await asyncio.sleep(2.0)  # (this test's own reads would meet the lock too)
        assert await handle.result(timeout=20) == "answer"
    run = await app.store.run_get("a")
    assert run is not None and run.fencing_token == 1
    assert calls == [1]
    other.close()
    await app.close()


async def test_a_store_outage_under_many_runs_is_logged_once_not_per_run(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The store refuses the final writes of 30 runs in flight (an outage): the log
    says so once when the first fails and once when writes go through again, with the
    counts; each run's retries are at debug level (a thousand runs in flight made
    thousands of warnings a minute)."""
    from tether import StoreUnavailable

    app, wf = await _app_of_done(store_url)
    store = app.store
    real_finish = store.run_finish
    down = True
    refused: list[str] = []

    async def outage_finish(**kwargs: Any) -> str:
        if down:
            refused.append(kwargs["lease"].run_id)
            raise StoreUnavailable("PostgreSQL at db:5432 is unavailable: Connection refused")
        return await real_finish(**kwargs)

    store.run_finish = outage_finish  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG, logger="tether.worker")
    async with app.worker():
        handles = [await app.start(wf, run_id=f"o{i:02}") for i in range(30)]
        deadline = time.monotonic() + 20
        while len(set(refused)) < 30 or len(refused) < 60:  # every run tried twice
            assert time.monotonic() < deadline, refused
            await asyncio.sleep(0.05)
        down = False
        for h in handles:
            assert await h.result(timeout=20) == "done"
    await app.close()
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "tether.worker" and r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("store unavailable (PostgreSQL at db:5432 is "
                                  "unavailable: Connection refused); the worker and its "
                                  "runs in flight retry"), warnings
    assert re.fullmatch(r"store available again, \d+\.\d s after the first failed call "
                        r"\((\d+) failed calls meanwhile, 30 runs in flight among them, "
                        r"each retried\)", warnings[1]), warnings
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG
             and "store unavailable" in r.getMessage()]
    assert len(debug) == len(refused)
    assert any(m.startswith("run o07: store unavailable (") and "retrying in" in m
               for m in debug), debug


async def test_an_idle_workers_failed_claims_are_one_outage_in_the_log(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """No run in flight, the store refuses four claims in a row: one warning when the
    first fails and one when a claim goes through, each failure at debug level (a claim
    every few seconds was a warning each for as long as an outage lasted)."""
    from tether import StoreUnavailable

    app, wf = await _app_of_done(store_url)
    store = app.store
    real_claim = store.run_claim
    refused: list[int] = []

    async def outage_claim(**kwargs: Any) -> Any:
        if len(refused) < 4:
            refused.append(1)
            raise StoreUnavailable("PostgreSQL at db:5432 is unavailable: Connection refused")
        return await real_claim(**kwargs)

    store.run_claim = outage_claim  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG, logger="tether.worker")
    async with app.worker():
        assert await (await app.start(wf, run_id="c")).result(timeout=20) == "done"
    await app.close()
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "tether.worker" and r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("store unavailable (PostgreSQL at db:5432"), warnings
    assert re.fullmatch(r"store available again, \d+\.\d s after the first failed call "
                        r"\(4 failed calls meanwhile, 0 runs in flight among them, each "
                        r"retried\)", warnings[1]), warnings
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG
             and r.getMessage().startswith("store unavailable (")]
    assert len(debug) == 4 and all("claim failed; retrying in" in m for m in debug), debug


async def test_a_schedule_loops_failed_reads_are_one_outage_in_the_log(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A worker with a schedule, an outage: the store refuses its claims, heartbeats and
    schedule reads until six schedule reads failed (it tries again every second): one
    warning when the first call fails and one when calls go through again, each failure
    at debug level. Before, each failed schedule read was a warning of its own: a worker
    with a schedule logged one a second for as long as an outage lasted."""
    from tether import StoreUnavailable

    app, wf = await _app_of_done(store_url)
    app.schedule(wf, cron="0 0 1 1 *", name="yearly")
    store = app.store
    refused: list[int] = []
    down = True

    def outage(real: Any, schedules: bool) -> Any:
        async def call(**kwargs: Any) -> Any:
            if down:
                if schedules:
                    refused.append(1)
                raise StoreUnavailable("PostgreSQL at db:5432 is unavailable: "
                                       "Connection refused")
            return await real(**kwargs)
        return call

    caplog.set_level(logging.DEBUG, logger="tether.worker")
    async with app.worker():
        store.schedule_list = outage(store.schedule_list, True)  # type: ignore[method-assign]
        store.run_claim = outage(store.run_claim, False)  # type: ignore[method-assign]
        store.lease_heartbeat = outage(  # type: ignore[method-assign]
            store.lease_heartbeat, False)
        deadline = time.monotonic() + 30
        while len(refused) < 6:
            assert time.monotonic() < deadline, refused
            await asyncio.sleep(0.05)
        down = False
        while not any(r.getMessage().startswith("store available again")
                      for r in caplog.records):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    await app.close()
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "tether.worker" and r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("store unavailable (PostgreSQL at db:5432"), warnings
    assert warnings[1].startswith("store available again, "), warnings
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG
             and r.getMessage().startswith("store unavailable (")
             and "schedules failed; retrying in 1.0 s" in r.getMessage()]
    assert len(debug) == 6, debug


async def test_a_run_whose_executor_crashed_is_handed_back(store_url: str) -> None:
    """An unexpected error escaping a run's conclusion does not leave the run 'running'
    under a lease the heartbeat renews forever: it is handed back and replayed."""
    from tether import StoreError

    app = App(store_url)
    executed: list[int] = []

    @app.step
    async def work() -> int:
        executed.append(1)
        return 1

    @app.workflow
    async def wf() -> int:
        return await work()

    release = asyncio.Event()

    @app.step
    async def hold() -> None:
        await release.wait()

    @app.workflow
    async def long_runner() -> None:
        await hold()  # keeps the worker holding another lease, renewed by heartbeats

    await app._open()
    store = app.store
    real_finish = store.run_finish
    failures: list[str] = []

    async def broken_once(**kwargs: object) -> str:
        if not failures:
            failures.append("boom")
            raise StoreError("unexpected (injected)")
        return await real_finish(**kwargs)  # type: ignore[arg-type]

    store.run_finish = broken_once  # type: ignore[method-assign]
    async with app.worker(lease_seconds=1.0):
        await app.start(long_runner, run_id="other")
        try:
            assert await (await app.start(wf, run_id="w")).result(timeout=10) == 1
        finally:
            release.set()
    assert failures == ["boom"]
    assert executed == [1]  # replayed from the journal, not run again
    await app.close()


async def test_a_stopped_worker_writes_the_attempts_it_noted(store_url: str) -> None:
    """Attempt states are noted in memory and written within 50 ms; a worker stopped
    inside that window still writes them: the finished step's attempt is on disk as
    ``ok``, the one it cut off as ``running`` (``show`` calls it interrupted)."""
    app = App(store_url)
    second_started = asyncio.Event()

    @app.step
    async def quick() -> int:
        return 1

    @app.step
    async def slow() -> int:
        second_started.set()
        await asyncio.sleep(3600)
        return 2

    @app.workflow
    async def wf() -> int:
        return await quick() + await slow()

    handle = await app.start(wf)
    async with app.worker():
        await asyncio.wait_for(second_started.wait(), 30)
    # No wait here: the 50 ms timer of the attempt writer has not fired yet.
    attempts = await app.store.attempt_list(handle.run_id)
    assert [(a.name, a.status) for a in attempts] == [("quick", "ok"), ("slow", "running")]
    await app.close()


async def test_the_history_lists_every_attempt_with_its_worker(store_url: str) -> None:
    """Every attempt is in the history with the worker that ran it: steps that succeeded
    at once (on SQLite without a row of their own: their journal entry and the lease's
    worker are the attempt), a step that failed once then succeeded, and one that
    outlived the history's write delay."""
    from tether import RetryPolicy

    app = App(store_url)
    failed: list[int] = []

    @app.step
    async def quick(i: int) -> int:
        return i

    @app.step(retry=RetryPolicy(max_attempts=3, initial_interval=0.01))
    async def flaky() -> int:
        if not failed:
            failed.append(1)
            raise RuntimeError("once")
        return 1

    @app.step
    async def slow() -> int:
        await asyncio.sleep(0.2)  # (past the 50 ms write delay: its running row is written)
        return 2

    @app.workflow
    async def wf() -> int:
        return sum([await quick(i) for i in range(5)]) + await flaky() + await slow()

    async with app.worker() as worker:
        handle = await app.start(wf)
        assert await handle.result(timeout=30) == 13
    info = await app.get_run(handle.run_id)
    got = [(a["position"], a["name"], a["attempt"], a["status"], a["worker_id"])
           for a in info.attempts]
    me = worker.worker_id
    assert got == [*[(i, "quick", 1, "ok", me) for i in range(5)],
                   (5, "flaky", 1, "error", me), (5, "flaky", 2, "ok", me),
                   (6, "slow", 1, "ok", me)], got
    for a, e in zip(info.attempts, info.journal, strict=False):
        if a["name"] == "quick":
            assert (a["started_at"], a["finished_at"]) == (e["started_at"], e["finished_at"])
    rows = await app.store._read(  # type: ignore[attr-defined]
        lambda conn: conn.execute("SELECT count(*) FROM tether_attempts").fetchone()[0]) \
        if store_url.startswith("sqlite") else None
    if rows is not None:  # SQLite: the five quick first attempts wrote no row
        assert rows == 3, rows
    await app.close()


async def test_an_idle_worker_polls_at_jittered_intervals(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each idle poll waits up to 10 % less than the poll interval, never more, and not
    always the same: workers started together do not poll together, and a poll does not
    keep meeting the worker's own heartbeat."""
    from tether.worker import _worker

    waits: list[float] = []
    real = _worker.wait_event

    async def recorded(event: asyncio.Event, timeout: float | None) -> bool:
        if timeout is not None and event is worker._wake:  # (the polls, not heartbeats)
            waits.append(timeout)
        return await real(event, timeout)

    monkeypatch.setattr(_worker, "wait_event", recorded)
    app = App(f"sqlite:///{tmp_path}/jitter.db")

    @app.workflow
    async def wf(x: int) -> int:
        return x

    worker = app.worker(poll_interval=0.02)
    async with worker:
        while len(waits) < 20:
            await asyncio.sleep(0.02)
    await app.close()
    assert all(0.018 - 1e-9 <= w <= 0.02 for w in waits), waits
    assert len(set(waits)) > 1


async def test_a_lost_lease_is_logged_with_who_holds_the_run_now(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A worker whose run was taken (here: its lease expired in the store and another
    worker claimed it) stops executing it, and its log says who holds the run now, so a
    lease lost on a healthy machine explains itself."""
    app = App(store_url)
    started = asyncio.Event()
    finished: list[int] = []

    @app.step
    async def hold() -> None:
        started.set()
        await asyncio.sleep(30)
        finished.append(1)

    @app.workflow
    async def wf() -> None:
        await hold()

    await app._open()
    store = app.store
    handle = await app.start(wf, run_id="taken")
    # One place, taken by the run it executes: its own claims cannot take the run back
    # once its lease expired (the expiry wakes them), before the thief's claim below.
    async with app.worker(lease_seconds=2.0, concurrency=1) as worker:
        await asyncio.wait_for(started.wait(), 30)
        await store.lease_expire_owner(worker_id=worker.worker_id, now=app.clock.now())
        claimed = await store.run_claim(worker_id="thief", queues=["default"], limit=1,
                                        now=app.clock.now(), lease_seconds=60)
        assert [c.run.run_id for c in claimed] == [handle.run_id]
        for _ in range(200):
            if not worker.holds(handle.run_id):
                break
            await asyncio.sleep(0.05)
        assert not worker.holds(handle.run_id)
        # (The heartbeat cancels the run's task first, then reads who holds it to log
        # it: leaving the worker at once could stop that read before the line.)
        for _ in range(200):
            lost = [r.getMessage() for r in caplog.records if "lease lost" in r.getMessage()]
            if lost:
                break
            await asyncio.sleep(0.05)
    assert lost and "owner thief" in lost[0] and "fencing token 2" in lost[0], lost
    assert finished == []
    run = await store.run_get(handle.run_id)
    assert run is not None and run.owner == "thief"
    await app.close()



async def test_many_lost_leases_cost_one_read_and_a_bounded_log(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A worker that lost many leases at once (a long pause) reads the first few back in
    one read and counts the rest: its heartbeat loop must not stall on the log. Those
    lines are DEBUG (each lost run's end says the loss once, as a WARNING): without DEBUG
    on, no read at all."""
    from tether.worker import _worker

    app = App(store_url)

    @app.workflow
    async def wf() -> None:
        pass

    await app._open()
    reads: list[list[str]] = []
    real = app.store.run_get_many

    async def counted(run_ids: list[str], *, settled_only: bool = False) -> list[object]:
        reads.append(list(run_ids))
        return await real(run_ids, settled_only=settled_only)  # type: ignore[return-value]

    app.store.run_get_many = counted  # type: ignore[method-assign, assignment]
    handle = await app.start(wf, run_id="known")
    async with app.worker() as worker:
        lost = [handle.run_id] + [f"gone-{i}" for i in range(_worker.LOST_DETAILS + 1)]
        await worker._say_lost(lost)
        assert reads == []
        caplog.set_level(logging.DEBUG, "tether.worker")
        await worker._say_lost(lost)
    assert reads == [lost[:_worker.LOST_DETAILS]]
    lines = [r.getMessage() for r in caplog.records if "lease" in r.getMessage()]
    assert len(lines) == _worker.LOST_DETAILS + 1, lines
    assert "run known: lease lost (heartbeat; now " in lines[0]
    assert lines[-1] == "2 more leases lost; dropping those runs"
    await app.close()


@pytest.mark.postgres
async def test_runs_lost_together_read_who_holds_them_in_a_few_reads(
        pg_migrated_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A worker whose leases were all taken at once (a storm of takeovers, after a long
    pause) reads who holds each run now for its warning in reads of many runs together
    (the first alone, at once), not one ``run_get`` a run: on PostgreSQL 1,000 such reads
    held the pool for 1.5-1.8 s, where one read of them all takes 0.02-0.05 s
    (``bench/lost_storm.py``). (SQLite reads a run on the calling thread when its writer
    is idle, with no round trip: each read ends before the next is asked, as cheap.)"""
    app = App(pg_migrated_url)
    n = 20
    entered: list[int] = []

    @app.step
    async def hang(i: int) -> None:
        entered.append(i)
        await asyncio.sleep(3600)

    @app.workflow
    async def victim(i: int) -> None:
        await hang(i)

    await app._open()
    store = app.store
    await app.start_many(victim, [(i,) for i in range(n)], run_ids=[f"v-{i}" for i in range(n)])
    one: list[str] = []
    many: list[list[str]] = []
    real_one, real_many = store.run_get, store.run_get_many

    async def read_one(run_id: str) -> Any:
        one.append(run_id)
        return await real_one(run_id)

    async def read_many(run_ids: list[str], *, settled_only: bool = False) -> Any:
        many.append(list(run_ids))
        return await real_many(run_ids, settled_only=settled_only)

    async with app.worker(lease_seconds=2.0, concurrency=n) as worker:
        await wait_for(lambda: len(entered) == n, timeout=30, what="every run in its step")
        store.run_get = read_one  # type: ignore[method-assign]
        store.run_get_many = read_many  # type: ignore[method-assign]
        await store.lease_expire_owner(worker_id=worker.worker_id, now=app.clock.now())
        claimed = await store.run_claim(worker_id="thief", queues=["default"], limit=n,
                                        now=app.clock.now(), lease_seconds=60)
        assert len(claimed) == n
        await wait_for(lambda: not any(worker.holds(f"v-{i}") for i in range(n)),
                       timeout=30, what="every run dropped")
        await wait_for(lambda: sum("lease lost at position 0" in r.getMessage()
                                   for r in caplog.records) == n,
                       timeout=30, what="a warning per lost run")
    lost = [r.getMessage() for r in caplog.records if "lease lost at position" in r.getMessage()]
    assert all("owner thief" in line for line in lost), lost
    alone = [i for i in one if i.startswith("v-")]
    assert len(alone) <= 1, alone  # (the first loss reads at once, the others wait)
    read = alone + [i for ids in many for i in ids]
    assert sorted(set(read)) == sorted(f"v-{i}" for i in range(n))
    assert len(alone) + len(many) < n // 2, (alone, many)  # (a few reads, not one a run)
    await app.close()


@pytest.mark.parametrize("lost_in", ["run_crash_mark", "run_release"])
async def test_a_lease_lost_in_a_takeovers_crash_bookkeeping_is_counted_and_said_once(
        store_url: str, caplog: pytest.LogCaptureFixture, lost_in: str) -> None:
    """A worker that takes a run over from a dead one first records the crash
    (``run_crash_mark``) and, from the second crash in a row at one place, hands the run
    back for a back-off (``run_release``). A worker that stalls there past its new lease
    loses the run to another (here: its lease expired in the store and a thief claimed
    the run just before that call): the loss is counted in ``leases_lost``
    (``tether_worker_leases_lost_total``: it was not) and said in one WARNING."""
    app = App(store_url)
    ran: list[int] = []

    @app.step
    async def work() -> None:
        ran.append(1)

    @app.workflow
    async def wf() -> None:
        await work()

    await app._open()
    store = app.store
    await app.start(wf, run_id="t")
    # Workers that died holding the run (their leases expired in the store): one for a
    # first crash; two at the same place (the second recorded its crash) for a back-off.
    dead = ["dead-1"] if lost_in == "run_crash_mark" else ["dead-1", "dead-2"]
    for i, name in enumerate(dead):
        claimed = await store.run_claim(worker_id=name, queues=["default"], limit=1,
                                        now=app.clock.now(), lease_seconds=60)
        assert [c.run.run_id for c in claimed] == ["t"]
        if i:
            await store.run_crash_mark(lease=claimed[0].lease, crashes=1, progress=0)
        await store.lease_expire_owner(worker_id=name, now=app.clock.now())
    stolen = _stolen_at_first(app, lost_in)
    await _lost_once(app, caplog, "t", stolen)
    assert ran == []
    await app.close()


def _stolen_at_first(app: App, method: str) -> list[int]:
    """Make the store's ``method`` (a write under the caller's lease) lose that lease at
    its first call, as a worker that stalled just before it: its owner's lease expires
    in the store and a thief claims the run. The list gets the thief's fencing token."""
    store = app.store
    real = getattr(store, method)
    stolen: list[int] = []

    async def stalled(*, lease: Any, **kwargs: Any) -> Any:
        if not stolen:  # (the first call: the worker "stalled" just before it)
            await store.lease_expire_owner(worker_id=lease.worker_id, now=app.clock.now())
            taken = await store.run_claim(worker_id="thief", queues=["default"], limit=1,
                                          now=app.clock.now(), lease_seconds=60)
            stolen.append(taken[0].lease.fencing_token)
        return await real(lease=lease, **kwargs)

    setattr(store, method, stalled)
    return stolen


async def _lost_once(app: App, caplog: pytest.LogCaptureFixture, run_id: str,
                     stolen: list[int]) -> None:
    """A worker runs until it loses its lease on ``run_id`` to the thief: the loss is
    counted once (``tether_worker_leases_lost_total``) and said in one WARNING."""
    from tether.worker._metrics import exposition

    async with app.worker(concurrency=1) as worker:
        for _ in range(400):
            if worker.counts.leases_lost:
                break
            await asyncio.sleep(0.025)
        said = [f"{r.levelname} {r.getMessage()}" for r in caplog.records]
        assert worker.counts.leases_lost == 1, (worker.counts.leases_lost, said)
        assert "tether_worker_leases_lost_total 1\n" in exposition(worker)
    lines = [r.getMessage() for r in caplog.records
             if r.levelno >= logging.WARNING and "lease lost" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"run {run_id}: lease lost at position 0 (now running, owner "
                               f"thief, fencing token {stolen[0]}; this worker's fencing "
                               f"token {stolen[0] - 1} is stale); dropping it"), lines
    run = await app.store.run_get(run_id)
    assert run is not None and run.owner == "thief"


class _Unencodable:
    """A result whose ``model_dump`` raises: writing the run's end crashes the executor."""

    def model_dump(self, **_: object) -> object:
        raise RuntimeError("cannot encode me")


async def test_a_lease_lost_handing_back_a_crashed_executors_run_is_counted_and_said_once(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """An executor that crashed (here: its run's result cannot be encoded) has its run
    handed back (``run_release``) for a replay after a back-off. A worker that stalls
    there past its lease loses the run to another (its lease expired in the store and a
    thief claimed the run just before that call): the loss is counted in
    ``leases_lost`` (it was ignored, uncounted and unsaid) and said in one WARNING."""
    app = App(store_url)

    @app.workflow
    async def wf() -> object:
        return _Unencodable()

    await app._open()
    await app.start(wf, run_id="c")
    stolen = _stolen_at_first(app, "run_release")
    await _lost_once(app, caplog, "c", stolen)
    await app.close()


async def test_a_crash_suspect_runs_only_in_a_worker_that_holds_nothing_else(
        sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A run whose workers died twice in a row running it (a suspect) is executed only
    by a worker that holds no other run: claimed in one batch with a healthy run, it is
    handed back until the healthy run is over, so a crash it causes cannot be counted
    against a run that merely shared its process."""
    import apsw

    app = App(sqlite_url)
    order: list[str] = []

    @app.step
    async def work(name: str) -> str:
        order.append(name)
        await asyncio.sleep(0.2)
        return name

    @app.workflow
    async def wf(name: str) -> str:
        return await work(name)

    suspect = await app.start(wf, "suspect", run_id="a-suspect")
    healthy = await app.start(wf, "healthy", run_id="b-healthy")
    conn = apsw.Connection(sqlite_url.removeprefix("sqlite:///"))
    conn.execute("UPDATE tether_runs SET crashes = 2, crashes_seen = 2, crash_progress = 0, "
                 "available_at = available_at - 1 WHERE run_id = 'a-suspect'")
    conn.close()
    async with app.worker(concurrency=4):
        assert await healthy.result(timeout=30) == "healthy"
        assert await suspect.result(timeout=30) == "suspect"
    assert order == ["healthy", "suspect"]
    alone = [r for r in caplog.records if "executing it alone" in r.getMessage()]
    assert len(alone) == 1
    await app.close()


async def test_a_step_that_blocks_the_event_loop_past_half_a_lease_is_told(
        sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """An ``async def`` step that blocks the loop (``time.sleep`` standing for a
    synchronous SDK call) for longer than half the lease: the worker's heartbeat wakes
    late and says so, naming the cure (other workers would take its runs over as from a
    dead one, and count crashes)."""
    app = App(sqlite_url)

    @app.step
    async def blocking() -> str:
        time.sleep(1.5)  # the whole event loop stops with it
        return "done"

    @app.workflow
    async def wf() -> str:
        return await blocking()

    caplog.set_level(logging.ERROR, logger="tether.worker")
    async with app.worker(lease_seconds=2.0):
        assert await (await app.start(wf, run_id="b")).result(timeout=20) == "done"
    await app.close()
    told = [r.getMessage() for r in caplog.records if "event loop was blocked" in r.getMessage()]
    assert len(told) == 1 and "(the lease is 2 s)" in told[0], told
    assert "asyncio.to_thread" in told[0]


async def test_the_attempt_history_is_written_outside_any_runs_context(
        sqlite_url: str) -> None:
    """The history writer serves every run of the worker: its writes (and their log
    lines, such as 'could not record N step attempts' in an outage) carry no run's
    context. They carried the context of the run that noted last, so the worker-wide
    outage lines were tagged with an arbitrary run id."""
    from tether._replay import current_run

    app, _ = await _app_of_done(sqlite_url)

    @app.step
    async def slow() -> int:
        await asyncio.sleep(0.1)  # (past the writer's 50 ms: its running state is written)
        return 1

    @app.workflow
    async def stepped() -> int:
        return await slow()

    store = app.store
    real = store.attempt_record
    contexts: list[object] = []

    async def recording(**kwargs: Any) -> None:
        contexts.append(current_run.get())
        await real(**kwargs)

    store.attempt_record = recording  # type: ignore[method-assign]
    async with app.worker():
        assert await (await app.start(stepped, run_id="h")).result(timeout=20) == 1
    await app.close()
    assert contexts and all(c is None for c in contexts), contexts


class _Kept(logging.Handler):
    """The records a handler with the CLI's run-context filter emits, fields added."""

    def __init__(self) -> None:
        from tether.cli._logging import RunContextFilter

        super().__init__(logging.INFO)
        self.addFilter(RunContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_store_outages_lines_name_the_worker_and_no_run(store_url: str) -> None:
    """The lines of a store outage are the worker's: each carries its ``worker_id`` (a
    text line's ``worker=ID``) and no run's id. The history writer's ('could not record
    N step attempts', 'step attempts recorded again') named no worker (it writes in a
    context of its own, which held nothing), and the worker's ('store unavailable',
    'store available again') named the run whose write told it first, one run in
    flight among others. A run's step written again after the outage carries the run
    and the position its line names (the position was not a field of the line)."""
    from tether import StoreUnavailable

    app = App(store_url)

    @app.step
    async def slow() -> int:
        await asyncio.sleep(0.1)  # (past the writer's 50 ms: its running state is written)
        return 1

    @app.workflow
    async def stepped() -> int:
        return await slow()

    await app._open()
    store = app.store
    real_append, real_record = store.journal_append, store.attempt_record
    down = True
    refused: list[str] = []

    async def outage_append(**kwargs: Any) -> Any:
        if down:  # (a step's result, written again by the run until the store is back)
            refused.append(kwargs["lease"].run_id)
            raise StoreUnavailable("PostgreSQL at db:5432 is unavailable: Connection refused")
        return await real_append(**kwargs)

    async def outage_record(**kwargs: Any) -> None:
        if down:
            raise StoreUnavailable("PostgreSQL at db:5432 is unavailable: Connection refused")
        await real_record(**kwargs)

    store.journal_append = outage_append  # type: ignore[method-assign]
    store.attempt_record = outage_record  # type: ignore[method-assign]
    kept = _Kept()
    logger = logging.getLogger("tether.worker")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(kept)
    try:
        worker = app.worker()
        async with worker:
            handles = [await app.start(stepped, run_id=f"s{i}") for i in range(3)]
            deadline = time.monotonic() + 20
            while len(set(refused)) < 3 or len(refused) < 6:
                assert time.monotonic() < deadline, refused
                await asyncio.sleep(0.05)
            down = False
            for h in handles:
                assert await h.result(timeout=20) == 1
            # (a step after the outage: its attempt is the first written again)
            assert await (await app.start(stepped, run_id="after")).result(timeout=20) == 1
    finally:
        logger.removeHandler(kept)
        logger.setLevel(level)
        await app.close()
    kinds = ("store unavailable", "store available again", "could not record",
             "step attempts recorded again")
    outage = [r for r in kept.records if r.getMessage().startswith(kinds)]
    for kind in kinds:
        assert any(r.getMessage().startswith(kind) for r in outage), (kind, outage)
    for r in outage:
        assert getattr(r, "worker_id", None) == worker.worker_id, r.getMessage()
        assert getattr(r, "run_id", None) is None, (r.getMessage(), r.run_id)
        assert getattr(r, "position", None) is None, r.getMessage()
    # A run's step written again names the run and the position, as fields too.
    again = [r for r in kept.records if "written after the store came back" in r.getMessage()]
    assert {r.run_id for r in again} == {"s0", "s1", "s2"}, again
    for r in again:
        assert r.getMessage() == (f"run {r.run_id}: step 'slow' at position {r.position} "
                                  "(ok) written after the store came back"), r.getMessage()
        assert r.worker_id == worker.worker_id


@pytest.mark.parametrize("second_signal", [True, False])
async def test_a_drain_cut_short_says_why(store_url: str, caplog: pytest.LogCaptureFixture,
                                          second_signal: bool) -> None:
    """A drain that ends with a run still in flight logs why it stopped waiting: a second
    stop signal (``abandon``, set by the CLI's second SIGTERM) or the grace period's end,
    not "after the grace period" in both cases."""
    app = App(store_url)
    entered = asyncio.Event()

    @app.step
    async def slow() -> None:
        entered.set()
        await asyncio.sleep(60)

    @app.workflow
    async def wf() -> None:
        await slow()

    await app.start(wf)
    worker = app.worker()
    await worker.start()
    try:
        await asyncio.wait_for(entered.wait(), 10)
        abandon = asyncio.Event()
        if second_signal:
            asyncio.get_running_loop().call_later(0.05, abandon.set)
        caplog.set_level(logging.WARNING, logger="tether")
        started = time.monotonic()
        clean = await worker.drain(30.0 if second_signal else 0.1, abandon)
        assert not clean and time.monotonic() - started < 10
    finally:
        await worker.stop()
        await app.close()
    lines = [r.getMessage() for r in caplog.records if "abandoning" in r.getMessage()]
    assert len(lines) == 1, lines
    # (one run: "1 run ... abandoning it (its steps ...)"; it said "1 runs ... them")
    assert "with 1 run still in flight; abandoning it (its steps run again elsewhere)" \
        in lines[0], lines
    if second_signal:
        assert "told to stop draining (a second stop signal)" in lines[0]
        assert "grace period" not in lines[0]
    else:
        assert "the grace period (0.1 s) is over" in lines[0]


async def test_a_clean_drain_says_how_long_it_took(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A drain that let every run go within the grace period says so, with how many and
    how long it took (an operator tunes --grace from it): until 2026-12-07 the log had
    "draining: 2 runs in flight" then "stopped", and nothing of the time between."""
    app = App(store_url)
    entered: list[str] = []
    release = asyncio.Event()

    @app.step
    async def slow(tag: str) -> str:
        entered.append(tag)
        await release.wait()
        return tag

    @app.workflow
    async def wf(tag: str) -> str:
        return await slow(tag) + await slow(tag)

    await app.start(wf, "a", run_id="dr-a")
    await app.start(wf, "b", run_id="dr-b")
    worker = app.worker()
    await worker.start()
    try:
        while len(entered) < 2:
            await asyncio.sleep(0.01)
        caplog.set_level(logging.INFO, logger="tether.worker")
        asyncio.get_running_loop().call_later(0.05, release.set)
        assert await worker.drain(30.0)
    finally:
        await worker.stop()
        await app.close()
    lines = [r.getMessage() for r in caplog.records if " drained in " in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert lines[0].startswith(f"worker {worker.worker_id} drained in "), lines
    assert lines[0].endswith(" s: 2 runs let go, each at its next operation (handed back "
                             "to the queue, or ended)"), lines


async def test_a_failed_run_is_logged_once_with_its_id_and_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run whose workflow code raised (or whose result could not be encoded) ended
    failed without a line in the worker's log: an operator tailing it saw nothing. Now
    one warning names the run, its workflow and the error (with a payload hook, only the
    error's type, as for a failed step)."""
    import tether
    from tether.encryption import AesGcm

    secret = "sk-canary-5f3a9c1e7b2d4680"
    caplog.set_level(logging.INFO, logger="tether")
    for hook in (None, AesGcm({"k1": bytes(range(32))})):
        caplog.clear()
        app = App(f"sqlite:///{tmp_path}/{hook is None}.db", payload_hook=hook)

        @app.workflow
        async def boom(key: str) -> None:
            raise ValueError(f"bad input {key}")

        @app.workflow
        async def unencodable() -> object:
            return object()

        async with app, app.worker():
            for name, args in (("boom", (secret,)), ("unencodable", ())):
                with pytest.raises(tether.RunFailed):
                    await (await app.start(name, *args, run_id=name)).result(timeout=20)
        lines = [(r.getMessage(), getattr(r, "run_id", None)) for r in caplog.records
                 if r.levelno >= logging.WARNING]
        assert [m.split(":")[0] for m, _ in lines] == ["run boom (boom) failed",
                                                        "run unencodable (unencodable) failed"]
        assert [run_id for _, run_id in lines] == ["boom", "unencodable"]
        assert lines[0][0].startswith("run boom (boom) failed: ValueError")
        assert (secret in lines[0][0]) == (hook is None), lines
        assert "PayloadError" in lines[1][0] or "NotSerializable" in lines[1][0], lines


async def test_a_run_failed_by_its_step_names_the_error_once_and_a_retry_due_now_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run whose step failed for good was logged "failed: StepError[ValueError]:
    ValueError: bad amount" (the type twice: the rebuilt error's class, then its text);
    it says "failed: ValueError: bad amount", as ``tether show`` does, and with a
    payload hook "failed: ValueError (message not logged: ...)". A failed attempt whose
    next one is due at once said "next attempt at T (in 0.0 s)", T a few milliseconds
    before the line's own time; it says "next attempt now"."""
    import tether
    from tether import RetryPolicy
    from tether.encryption import AesGcm

    caplog.set_level(logging.INFO, logger="tether")
    for hook in (None, AesGcm({"k1": bytes(range(32))})):
        caplog.clear()
        app = App(f"sqlite:///{tmp_path}/{hook is None}.db", payload_hook=hook)

        @app.step(retry=RetryPolicy(max_attempts=2, initial_interval=0))
        async def check() -> None:
            raise ValueError("bad amount")

        @app.workflow
        async def pay() -> None:
            await check()

        async with app, app.worker():
            with pytest.raises(tether.RunFailed):
                await (await app.start("pay", run_id="r")).result(timeout=20)
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        said = "ValueError: bad amount" if hook is None else (
            "ValueError (message not logged: the app has a payload hook)")
        assert lines[0] == f"run r position 0: step check attempt 1 failed: {said}; next " \
                           "attempt now", lines
        failed = [line for line in lines if line.startswith("run r (pay) failed: ")]
        assert len(failed) == 1, lines
        assert failed[0].startswith(f"run r (pay) failed: {said}"), lines
        assert "StepError" not in failed[0], lines


async def test_a_worker_given_one_queue_name_as_a_string_serves_that_queue(
        store_url: str) -> None:
    """``app.worker(queues="default")`` served the queues "d", "e", "f", "a", "u", "l"
    and "t" (the string taken as a list of letters): the worker ran and claimed nothing,
    silently. A string is one queue name now."""
    app = App(store_url)

    @app.workflow
    async def wf() -> str:
        return "done"

    async with app.worker(queues="default") as worker:  # type: ignore[arg-type]
        assert worker.queues == ["default"]
        assert await (await app.start(wf)).result(timeout=30) == "done"
    # An empty name (``tether worker --queue ''``) served a queue no run can be on
    # (``tether start --queue ''`` is refused): it is refused too.
    with pytest.raises(InvalidName, match="queue '' is empty"):
        app.worker(queues=[""])
    await app.close()


async def test_a_worker_on_a_queue_no_workflow_is_declared_on_says_so(
        sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """``tether worker --queue tool`` (for "tools") served a queue none of the app's
    workflows is declared on and waited for ever, saying nothing; it warns now, naming
    the queues they are on. A worker on one of them says nothing of it."""
    app = App(sqlite_url)

    @app.workflow(queue="tools")
    async def wf() -> str:
        return "done"

    async with app.worker(queues=["tool"]):
        pass
    warned = [r.getMessage() for r in caplog.records if "is declared on" in r.getMessage()]
    assert len(warned) == 1 and "queue 'tool' (they are on 'tools')" in warned[0], warned
    caplog.clear()
    async with app.worker(queues=["tools", "other"]):
        pass
    assert not [r for r in caplog.records if "is declared on" in r.getMessage()]
    await app.close()


def test_a_step_retry_that_is_not_a_retry_policy_is_refused_where_it_is_written() -> None:
    """``@app.step(retry=3)`` was accepted, and the step's first failure failed the run
    with ``AttributeError: 'int' object has no attribute ...``; and ``App(max_payload=0)``
    made every payload "too large"."""
    app = App("sqlite:///:memory:")
    for retry in (3, {"max_attempts": 2}):
        with pytest.raises(ConfigError, match=r"retry must be a tether\.RetryPolicy"):
            app.step(retry=retry)(lambda: 1)  # type: ignore[call-overload]
    for limit in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="max_payload"):
            App("sqlite:///:memory:", max_payload=limit)  # type: ignore[arg-type]


async def test_a_dead_workers_runs_are_taken_during_an_outages_grace(
        store_url: str) -> None:
    """After an outage, a worker leaves the leases that expired during it to their
    owners for a lease (``takeover_before``), since a live owner may renew them. A worker
    on its host whose process is gone renews nothing: its runs are taken over at once,
    not a lease later."""
    import os
    import socket
    import subprocess
    import sys

    from tether.errors import StoreUnavailable
    from tether.store import WorkerInfo

    app = App(store_url)

    @app.workflow
    async def held() -> str:
        return "done"

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert gone.pid != os.getpid()
    async with app:
        # A run held by a worker whose process is gone (before the live worker starts,
        # which would otherwise claim it first).
        now = app.clock.now()
        await app.store.run_insert(run=RunRecord(
            run_id="h-1", workflow="held", queue="default", status=RunStatus.QUEUED,
            input='{"args": []}', created_at=now, updated_at=now, available_at=now))
        claimed = await app.store.run_claim(worker_id="gone", queues=["default"], limit=1,
                                            now=now, lease_seconds=60)
        assert [c.run.run_id for c in claimed] == ["h-1"]
        async with app.worker(lease_seconds=60) as worker:
            # The worker met an outage and the store is back: its grace runs for 60 s.
            worker._outage.failed(None, StoreUnavailable("the test's outage"), "test")
            worker._outage.back(by_run=False, wrote=False)
            assert worker._outage.in_grace() is not None
            now = app.clock.now()
            await app.store.worker_register(info=WorkerInfo(
                "gone", socket.gethostname(), gone.pid, "no-start", "default", now, now))
            await worker._reap_dead_workers(refresh=True)
            assert await app.handle("h-1").result(timeout=20) == "done"
