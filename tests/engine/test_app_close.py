"""App.close() is final: a closed App never silently opens a new store."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from tether import App, ConfigError, RunStatus
from tether.errors import StoreUnavailable


async def test_a_closed_app_refuses_every_call_that_needs_the_store(store_url: str) -> None:
    """After close(), start/get_run/worker/store raise ConfigError naming the fix."""
    app = App(store_url)

    @app.workflow
    async def wf() -> int:
        return 1

    async with app.worker():
        assert await (await app.start(wf, run_id="r")).result(timeout=10) == 1
    await app.close()
    assert app.closed
    with pytest.raises(ConfigError, match="App is closed"):
        await app.start(wf)
    with pytest.raises(ConfigError, match="App is closed"):
        await app.get_run("r")
    with pytest.raises(ConfigError, match="App is closed"):
        app.worker()
    with pytest.raises(ConfigError, match="App is closed"):
        _ = app.store
    with pytest.raises(ConfigError, match="App is closed"):
        async with app:
            pass
    await app.close()  # closing twice is harmless


async def test_the_run_outlives_its_closed_app(store_url: str) -> None:
    """Closing loses nothing: a new App on the same store sees the run."""
    app = App(store_url)

    @app.workflow
    async def wf() -> int:
        return 7

    async with app, app.worker():
        await (await app.start(wf, run_id="kept")).result(timeout=10)
    again = App(store_url)
    try:
        assert (await again.get_run("kept")).result == 7
    finally:
        await again.close()


async def test_the_app_fixture_is_open_and_usable(app: App) -> None:
    """The shared ``app`` fixture gives an open App on the test's store."""

    @app.workflow
    async def wf(x: int) -> int:
        return x + 1

    async with app.worker():
        assert await (await app.start(wf, 1)).result(timeout=10) == 2
    assert not app.closed


async def test_list_runs_refuses_an_unknown_status_or_limit(app: App) -> None:
    """A bad filter is a one-line ConfigError, not an empty list that looks like an
    answer; a RunStatus or its string both work."""

    @app.workflow
    async def wf() -> int:
        return 1

    await app.start(wf, run_id="q")
    with pytest.raises(ConfigError, match="unknown run status 'queueed'"):
        await app.list_runs(status="queueed")
    with pytest.raises(ConfigError, match="limit must be >= 1"):
        await app.list_runs(limit=0)
    assert [r.run_id for r in await app.list_runs(status=RunStatus.QUEUED)] == ["q"]
    assert [r.run_id for r in await app.list_runs(status="queued")] == ["q"]


async def test_reset_store_keeps_the_app_usable_and_a_closed_app_refuses_it(
        store_url: str) -> None:
    """What a worker process does after a failed start: the store is closed and built
    again on next use; unlike close(), the App goes on working."""
    app = App(store_url)

    @app.workflow
    async def wf() -> int:
        return 3

    first = await app.start(wf, run_id="before")
    await app.reset_store()
    assert not app.closed
    async with app.worker():
        assert await first.result(timeout=10) == 3
    await app.close()
    with pytest.raises(ConfigError, match="App is closed"):
        await app.reset_store()


def _readers_left() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks()
            if t.get_name() == "tether-result-reader" and not t.done()]


async def _close_during_a_result_read(app: App, read: Any) -> None:
    """Start a run no worker serves, wait for its result, and close the App while the
    result reader is inside ``read`` (standing in for the store's ``run_get_many``)."""
    @app.workflow
    async def wf() -> int:
        return 1

    async with app:
        entered = asyncio.Event()

        async def patched(run_ids: list[str], *, settled_only: bool = False) -> Any:
            entered.set()
            return await read(run_ids, settled_only=settled_only)

        app.store.run_get_many = patched  # type: ignore[method-assign]
        await app.start(wf, run_id="r")
        waiter = asyncio.ensure_future(app.handle("r").result(timeout=60))
        await asyncio.wait_for(entered.wait(), 10)
    done, _ = await asyncio.wait({waiter}, timeout=10)
    assert waiter in done, "the result waiter was left waiting on a closed App"
    assert _readers_left() == []


async def test_closing_during_a_result_read_ends_the_reader(store_url: str) -> None:
    """close() cancels the coalesced result reader and waits for it, even when the read
    turns its cancellation into a store error (as a PostgreSQL read does when the
    connection is closed under its query): no task outlives the App, so nothing is
    left for the event loop's shutdown to wait on for ever."""
    async def read(run_ids: list[str], *, settled_only: bool = False) -> Any:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)
            raise StoreUnavailable("connection closed under the read") from None

    await _close_during_a_result_read(App(store_url), read)


@pytest.mark.postgres
async def test_closing_during_a_real_postgres_read_ends_the_reader(pg_url: str) -> None:
    """The same with a query in flight on a pooled connection: the reader's cancellation
    cancels the query on the server and returns the connection before the pool closes."""
    app = App(pg_url)

    async def read(run_ids: list[str], *, settled_only: bool = False) -> Any:
        await app.store._one("server_time", {})  # type: ignore[attr-defined]
        async with app.store._connection() as conn:  # type: ignore[attr-defined]
            await conn.execute("SELECT pg_sleep(30)")
        return []

    await _close_during_a_result_read(app, read)


async def _cancelled_while_held_up(call: Any, gate: asyncio.Event) -> None:
    """Run ``call()`` in a task, cancel the task while ``gate`` holds the work up, and
    check the task ended cancelled at once (a swallowed cancellation would keep it
    waiting for the gate)."""
    task = asyncio.ensure_future(call())
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    assert done and task.cancelled()


async def _a_held_run(app: App) -> tuple[Any, str]:
    """A worker holding a run whose step is in flight, and the run's id."""
    started = asyncio.Event()

    @app.step()
    async def slow() -> int:
        started.set()
        await asyncio.sleep(3600)
        return 1

    @app.workflow
    async def wf() -> int:
        return await slow()

    worker = app.worker()
    await worker.start()
    handle = await app.start(wf, run_id="held")
    await asyncio.wait_for(started.wait(), 10)
    return worker, handle.run_id


def _hold_up_unsubscribe(worker: Any, gate: asyncio.Event) -> None:
    """The first thing a stopping worker awaits waits for ``gate`` first."""
    real = worker._unsubscribe

    async def held_up() -> None:
        await gate.wait()
        await real()

    worker._unsubscribe = held_up


async def _handed_back(store_url: str, run_id: str) -> tuple[str, str | None, list[str]]:
    """The run's status and owner, and the workers still registered, read afresh."""
    async with App(store_url) as other:
        run = await other.store.run_get(run_id)
        assert run is not None
        workers = [w.worker_id for w in await other.store.worker_list()]
        return str(run.status), run.owner, workers


async def test_a_cancelled_close_goes_on_and_a_second_close_waits_for_it(
        store_url: str) -> None:
    """A timeout around ``App.close`` cancels the caller at once; the closing goes on by
    itself (the worker hands its run back and unregisters, then the store closes), and
    calling ``close`` again waits for that instead of closing the store under a worker
    that is still running."""
    app = App(store_url)
    worker, run_id = await _a_held_run(app)
    gate = asyncio.Event()
    _hold_up_unsubscribe(worker, gate)
    await _cancelled_while_held_up(app.close, gate)
    assert not app.closed
    gate.set()
    await app.close()
    assert app.closed
    assert await _handed_back(store_url, run_id) == ("queued", None, [])


async def test_a_cancelled_worker_stop_goes_on_and_a_second_stop_waits_for_it(
        store_url: str) -> None:
    """The same for ``Worker.stop``: the second call used to return at once (the worker
    was already marked stopping) with the run still held and the worker registered."""
    app = App(store_url)
    try:
        worker, run_id = await _a_held_run(app)
        gate = asyncio.Event()
        _hold_up_unsubscribe(worker, gate)
        await _cancelled_while_held_up(worker.stop, gate)
        gate.set()
        await worker.stop()
        assert await _handed_back(store_url, run_id) == ("queued", None, [])
    finally:
        await app.close()


_LEFT_SERVING = """
import asyncio, sys
from tether import App

async def main() -> None:
    app = App(sys.argv[1])
    started = asyncio.Event()

    @app.step()
    async def slow() -> int:
        started.set()
        await asyncio.sleep(3600)
        return 1

    @app.workflow
    async def wf() -> int:
        return await slow()

    serving = asyncio.create_task(app.worker().run())
    await app.start(wf, run_id="left")
    await asyncio.wait_for(started.wait(), 30)
    await asyncio.sleep(0.2)  # (step attempts noted, the writer idle)
    raise RuntimeError("main failed")  # nothing stops the worker or closes the app

asyncio.run(main())
"""


async def test_a_worker_left_serving_when_the_loop_ends_hands_its_run_back(
        store_url: str) -> None:
    """``asyncio.run`` ending on an uncaught exception with ``worker.run()`` still a task:
    the loop's shutdown cancels every task once, the worker's stop among them, and the
    stop still hands the run back and unregisters the worker (on PostgreSQL the store's
    own tasks were cancelled in the same sweep, and the run stayed marked running until
    its lease expired, to be taken over as after a crash)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _LEFT_SERVING, store_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, err.decode()
    assert "RuntimeError: main failed" in err.decode()
    assert await _handed_back(store_url, "left") == ("queued", None, [])


@pytest.mark.postgres
async def test_a_claim_in_flight_at_stop_does_not_land_after_the_unregistration(
        pg_migrated_url: str) -> None:
    """A worker stops while its claim waits on the server (here for the lock of its
    queue's concurrency limit, held by another session). The claim is cancelled on the
    server before the stop unregisters the worker, so it cannot commit afterwards and
    leave the run marked running under a worker that is gone until its lease expires:
    once the lock is free, the run is still queued, with no owner, for the next worker.
    (psycopg cancels an interrupted query on the server and waits for it to end; a
    claim that had committed by then is handed back by the unregistration.)"""
    import psycopg

    app = App(pg_migrated_url)

    @app.workflow
    async def wf() -> int:
        return 1

    try:
        await app.set_queue_limit("default", 5)
        await app.start(wf, run_id="r")
        async with await psycopg.AsyncConnection.connect(pg_migrated_url) as locker:
            await locker.execute("BEGIN")
            await locker.execute(
                "SELECT 1 FROM tether.queue_limits WHERE queue = 'default' FOR UPDATE")
            worker = app.worker(queues=["default"])
            await worker.start()  # (its claim loop begins: the claim waits for the lock)
            async with await psycopg.AsyncConnection.connect(
                    pg_migrated_url, autocommit=True) as watcher:
                for _ in range(500):  # the worker's claim waits for the lock
                    cur = await watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND wait_event_type = 'Lock'")
                    if (await cur.fetchone() or (0,))[0]:
                        break
                    await asyncio.sleep(0.02)
                else:
                    raise AssertionError("the worker's claim never waited for the lock")
                await asyncio.wait_for(worker.stop(), 30)
                cur = await watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND wait_event_type = 'Lock'")
                assert (await cur.fetchone() or (0,))[0] == 0  # cancelled, not waiting
            await locker.execute("COMMIT")
        await asyncio.sleep(0.3)
        assert await _handed_back(pg_migrated_url, "r") == ("queued", None, [])
    finally:
        await app.close()
