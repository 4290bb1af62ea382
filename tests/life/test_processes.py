"""Real worker processes: SIGTERM drain with a grace period, code versions on one
store, and a schedule served by three workers (one run per tick)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests import forked
from tests.engine.helpers import wait_for
from tests.life.procs import ROOT, Workers
from tests.store.rtproxy import RoundTripProxy
from tether import App
from tether.worker._worker import STOP_WRITES_TIMEOUT

pytestmark = [pytest.mark.slow, pytest.mark.faults]


async def registered(app: App, n: int) -> bool:
    return len(await app.store.worker_list()) >= n


async def started_slow(w: Workers) -> bool:
    return w.counts()["start slow"] >= 1


async def two_workers(client: App, workers: Workers, *extra: str
                      ) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    a, b = workers.start(*extra), workers.start(*extra)
    await wait_for(lambda: registered(client, 2), timeout=30, what="two workers up")
    return a, b


async def the_one_running(workers: Workers, a: subprocess.Popen[bytes],
                          b: subprocess.Popen[bytes]
                          ) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """(the worker executing the slow step, the other), once the step started."""
    await wait_for(lambda: started_slow(workers), timeout=30, what="slow step started")
    pid = next(p for p, what in workers.executions() if what == "start slow")
    return (a, b) if pid == a.pid else (b, a)


async def test_sigterm_drain_finishes_the_step_and_hands_the_run_over(
        store_url: str, workers: Workers) -> None:
    """A 2 s step in flight when SIGTERM arrives completes once; the other worker
    continues the run without running it again."""
    async with App(store_url) as client:
        a, b = await two_workers(client, workers)
        h = await client.start("deploy", 2.0, run_id="d-1")
        a, b = await the_one_running(workers, a, b)
        a.send_signal(signal.SIGTERM)
        assert await h.result(timeout=60) == ["slow done", "quick done"]
        assert a.wait(30) == 0
        info = await client.get_run("d-1")
    counts = workers.counts()
    story = workers.story()
    assert (counts["start slow"], counts["end slow"], counts["quick"]) == (1, 1, 1), story
    by_pid = {what: pid for pid, what in workers.executions()}
    assert by_pid["end slow"] == a.pid and by_pid["quick"] == b.pid, story
    assert [x["status"] for x in info.attempts] == ["ok", "ok"], story
    assert "draining: 1 run in flight" in workers.log(workers.procs.index(a))


async def test_sigterm_with_hundreds_of_runs_in_flight_hands_each_over_once(
        store_url: str, workers: Workers) -> None:
    """200 runs, each in a 0.3 s step when SIGTERM arrives: the draining worker lets
    every step end and journals it, hands every run back and exits at once, giving up
    no write; the next worker finishes them all, and no step runs twice."""
    runs, links = 200, 10
    async with App(store_url) as client:
        a = workers.start("--concurrency", str(runs))
        await wait_for(lambda: registered(client, 1), timeout=30, what="worker up")
        handles = [await client.start("chain", links, 0.3, run_id=f"c-{k}")
                   for k in range(runs)]

        def runs_past_a_step() -> int:
            return len({what.split(":")[0] for _, what in workers.executions()
                        if what.startswith("link ")})

        # Each run has ended a step, and none can have ended all ten (3 s): every run is
        # in flight on ``a``.
        await wait_for(lambda: runs_past_a_step() == runs, timeout=60,
                       what="every run past its first step")
        a.send_signal(signal.SIGTERM)
        assert a.wait(30) == 0
        workers.start("--concurrency", str(runs))
        results = [await h.result(timeout=120) for h in handles]
    assert results == [sum(range(links))] * runs
    executed = Counter(what for _, what in workers.executions() if what.startswith("link "))
    assert len(executed) == runs * links, workers.story()[-3000:]
    assert max(executed.values()) == 1, [k for k, n in executed.items() if n > 1]
    log = workers.log(0)
    assert f"draining: {runs} runs in flight" in log, log[-3000:]
    for problem in ("could not record", "not written within", "abandoning", "Traceback"):
        assert problem not in log, log[-3000:]


@pytest.mark.postgres
async def test_sigterm_with_the_database_gone_exits_soon_after_the_grace_period(
        pg_url: str, tmp_path: Path) -> None:
    """The database goes away under a worker whose run is in a step, then SIGTERM: the
    worker waits out its grace period (1 s), gives its last writes (the attempts' last
    states, its unregistration) ``STOP_WRITES_TIMEOUT`` side by side, closes the store
    and exits (1: its step was cut off), well within the margin a platform gives over
    ``--grace``. (It waited for the attempts, then for the pool's 10 s, one after the
    other: 16 s here.)"""
    proxy = await RoundTripProxy().start()
    workers = Workers(proxy.url(pg_url), tmp_path)
    try:
        async with App(pg_url) as client:
            a = workers.start("--grace", "1")
            await wait_for(lambda: registered(client, 1), timeout=30, what="worker up")
            await client.start("deploy", 60.0, run_id="gone-1")
            await wait_for(lambda: started_slow(workers), timeout=30, what="slow step started")
            await proxy.close()
            t0 = time.monotonic()
            a.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(a.wait, 60)
            took = time.monotonic() - t0
    finally:
        workers.stop_all()
    assert code == 1, workers.story()
    assert took < 1 + STOP_WRITES_TIMEOUT + 7, (took, workers.story())
    assert "could not unregister" in workers.log(0)


async def test_sigterm_with_a_short_grace_reruns_the_step_elsewhere(
        store_url: str, workers: Workers) -> None:
    """With --grace 1 the 2 s step is cut off: the next worker runs it again, and the
    cut-off attempt shows as interrupted, with its worker."""
    async with App(store_url) as client:
        a, b = await two_workers(client, workers, "--grace", "1")
        h = await client.start("deploy", 2.0, run_id="d-2")
        a, b = await the_one_running(workers, a, b)
        a.send_signal(signal.SIGTERM)
        assert a.wait(30) == 1  # (the step was cut off: not a clean stop)
        assert "the grace period of 1 s ran out" in workers.log(workers.procs.index(a))
        assert await h.result(timeout=60) == ["slow done", "quick done"]
        info = await client.get_run("d-2")
    counts = workers.counts()
    assert (counts["start slow"], counts["end slow"]) == (2, 1)
    assert [pid for pid, what in workers.executions() if what == "end slow"] == [b.pid]
    slow = [x for x in info.attempts if x["name"] == "slow"]
    assert [x["status"] for x in slow] == ["interrupted", "ok"]
    assert slow[0]["worker_id"] != slow[1]["worker_id"]


async def test_a_hung_thread_step_cannot_keep_the_worker_alive(
        store_url: str, workers: Workers) -> None:
    async with App(store_url) as client:
        a = workers.start("--grace", "1")
        await wait_for(lambda: registered(client, 1), timeout=30, what="worker up")
        await client.start("hung", run_id="h-1")
        await wait_for(lambda: workers.counts()["hang"] >= 1, timeout=30, what="hanging")
        a.send_signal(signal.SIGTERM)
        # (well before the step's 600 s; 1: the step was cut off, not a clean stop)
        assert a.wait(30) == 1
        run = await client.store.run_get("h-1")
        assert run is not None and run.status == "queued" and run.owner is None


async def test_versions_keep_in_flight_runs_on_their_own_workers(
        store_url: str, workers: Workers, tmp_path: Path) -> None:
    """Two worker processes with different versions on one store: each run finishes on
    the workers of the version it started with; migrate-runs moves compatible runs."""
    async with App(store_url, version="v1") as old, App(store_url, version="v2") as new:
        w1 = workers.start(version="v1")
        await wait_for(lambda: registered(old, 1), timeout=30, what="v1 worker up")
        old_runs = [(await old.start("versioned", run_id=f"old-{i}")) for i in range(3)]
        await wait_for(lambda: workers.counts().total() >= 3, timeout=30,
                       what="v1 runs at their first step")
        w2 = workers.start(version="v2")
        await wait_for(lambda: registered(old, 2), timeout=30, what="v2 worker up")
        new_runs = [(await new.start("versioned", run_id=f"new-{i}")) for i in range(3)]
        for h in [*old_runs, *new_runs]:
            await wait_for(lambda h=h: first_done(new, h.run_id), timeout=30,
                           what=f"{h.run_id} at its first step")
        for h in [*old_runs, *new_runs]:
            await new.signal(h.run_id, "go")
        for h in [*old_runs, *new_runs]:
            assert await h.result(timeout=60) == "second"
        ex = workers.executions()
        for pid, what in ex:
            version, run_id, _ = what.split()
            assert version == ("v1" if run_id.startswith("old") else "v2"), what
            assert pid == (w1.pid if version == "v1" else w2.pid), what
        counts = dict((v, n) for v, _, n in await new.store.run_versions())
        assert counts == {"v1": 3, "v2": 3}

        # A v1 run still waiting is moved to v2 once its journal replays on v2's code.
        late = await old.start("versioned", run_id="late")
        await wait_for(lambda: first_done(new, "late"), timeout=30, what="late started")
        await wait_for(lambda: released(new, "late"), timeout=30, what="late released")
        w1.send_signal(signal.SIGTERM)
        assert w1.wait(30) == 0
        out = cli("migrate-runs", "--from", "v1", "--to", "v2", "--app",
                  "tests.life.apps:app", db=store_url, tmp=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "moved 1 of 1" in out.stdout
        await new.signal("late", "go")
        assert await late.result(timeout=60) == "second"
        last = [(pid, what) for pid, what in workers.executions() if "late second" in what]
        assert last == [(w2.pid, "v2 late second")]
        listing = cli("versions", "--json", db=store_url, tmp=tmp_path)
        assert '"version": "v2"' in listing.stdout


async def slow_attempt_recorded(app: App, run_id: str) -> bool:
    return any(x["name"] == "slow" for x in (await app.get_run(run_id)).attempts)


async def first_done(app: App, run_id: str) -> bool:
    info = await app.get_run(run_id)
    return any(e["status"] == "ok" for e in info.journal)


async def released(app: App, run_id: str) -> bool:
    return (await app.get_run(run_id)).status.value == "waiting"


def cli(*args: str, db: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ, PYTHONPATH=str(ROOT), TETHER_TEST_SIDE_FILE=str(tmp / "x.txt"))
    env.pop("TETHER_DATABASE_URL", None)
    return forked.run([sys.executable, "-m", "tether", *args, "--db", db], cwd=ROOT,
                      env=env, capture_output=True, text=True, timeout=60)


async def test_schedule_on_three_workers_starts_one_run_per_tick(
        store_url: str, workers: Workers) -> None:
    """A schedule ticking every second, served by three worker processes until seven
    ticks have run: every tick of the window has exactly one run, executed once."""
    async with App(store_url) as client:
        for _ in range(3):
            workers.start(schedule=True)
        await wait_for(lambda: registered(client, 3), timeout=30, what="3 workers up")
        await wait_for(lambda: len({w for _, w in workers.executions()}) >= 7, timeout=60,
                       interval=0.2, what="seven ticks executed")
        workers.stop_all()
        runs = [r for r in await client.list_runs(limit=1000)
                if r.run_id.startswith("every-second@")]
    executed = Counter(what.split()[1] for _, what in workers.executions())
    assert executed, "no tick ran"
    assert max(executed.values()) == 1, executed.most_common(3)
    ticks = sorted(int(_epoch(r.run_id)) for r in runs)
    assert len(ticks) >= 7, ticks
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), ticks  # no gap, no twin
    done = {r.run_id for r in runs if r.status == "completed"}
    assert set(executed) >= done


def _epoch(run_id: str) -> float:
    import datetime as dt

    stamp = run_id.split("@", 1)[1].rstrip("Z")
    return dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.UTC).timestamp()


async def test_an_attempt_cut_off_by_kill_9_shows_as_interrupted(
        store_url: str, workers: Workers) -> None:
    async with App(store_url) as client:
        a, b = await two_workers(client, workers)
        h = await client.start("deploy", 1.5, run_id="k-1")
        a, b = await the_one_running(workers, a, b)
        # The attempt writer has put the step's start on disk (waited for, not slept).
        await wait_for(lambda: slow_attempt_recorded(client, "k-1"), timeout=30,
                       interval=0.05, what="the slow attempt's start stored")
        a.kill()
        a.wait(10)
        assert await h.result(timeout=60) == ["slow done", "quick done"]
        info = await client.get_run("k-1")
    slow = [x for x in info.attempts if x["name"] == "slow"]
    assert [x["status"] for x in slow] == ["interrupted", "ok"]
    assert str(a.pid) in slow[0]["worker_id"] and str(b.pid) in slow[1]["worker_id"]
