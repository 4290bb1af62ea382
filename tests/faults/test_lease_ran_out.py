"""A worker cut off from PostgreSQL past its lease starts no step until the heartbeat
renews the lease (by its own clock the lease ran out: another worker may hold the run).

The worker runs in this process behind ``CuttingProxy``; the test's own client, which
plays the other worker, reaches the server directly. The run has two branches: one is
in a step as the server goes away, the other starts its step only when told, once the
lease ran out by the worker's clock (no store call stands between that branch and its
step's body: it would start at once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.cutproxy import CuttingProxy
from tether import App, RunStatus

pytestmark = [pytest.mark.postgres]


@pytest.fixture
async def proxy(pg_migrated_url: str) -> AsyncIterator[CuttingProxy]:
    p = CuttingProxy(pg_migrated_url).start()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
async def client(pg_migrated_url: str) -> AsyncIterator[App]:
    """The test's own App, on the server directly (never cut)."""
    app = App(pg_migrated_url)
    await app._open()
    try:
        yield app
    finally:
        await app.close()


def _two_branches(url: str, effects: Path, begun: asyncio.Event, go: asyncio.Event,
                  release: asyncio.Event) -> App:
    app = App(url, pool_timeout=2.0, connect_timeout=1.0)

    @app.step
    async def slow() -> str:
        begun.set()
        await release.wait()
        return "slow"

    @app.step
    async def charge() -> str:
        with effects.open("a") as f:
            f.write("charged\n")
        return "charged"

    @app.workflow
    async def pay() -> list[str]:
        async def later() -> str:
            await go.wait()
            return await charge()

        return list(await asyncio.gather(slow(), later()))

    return app


async def _lease_ran_out(proxy: CuttingProxy, client: App, app: App, run_id: str) -> None:
    """Cut the worker off, and wait (polling) until its lease on ``run_id`` ran out by
    its own clock (the server's row, read directly, says until when it holds)."""
    proxy.go_down()
    deadline = time.monotonic() + 30
    while not proxy.down:
        assert time.monotonic() < deadline, "the proxy never went down"
        await asyncio.sleep(0.01)
    while True:
        run = await client.store.run_get(run_id)
        assert run is not None and run.status is RunStatus.RUNNING, run
        if app.clock.now() > run.available_at:
            return
        assert time.monotonic() < deadline, "the lease never ran out"
        await asyncio.sleep(0.05)


async def _until(what: str, check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_cut_off_worker_starts_no_step_once_its_lease_ran_out_and_was_taken(
        proxy: CuttingProxy, client: App, tmp_path: Path) -> None:
    """The worker is cut off in one branch's step; once its lease ran out by its clock,
    another worker takes the run over, and the other branch reaches its step. The step
    does not start (it ran, its side effect under a lease another worker held: nothing
    looked at the lease's time); when the server is back, the heartbeat reports the run
    lost and the worker drops it."""
    effects = tmp_path / "charged.txt"
    begun, go, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    app = _two_branches(proxy.url(), effects, begun, go, release)
    try:
        async with app.worker(lease_seconds=2.0) as worker:
            await app.start("pay", run_id="r")
            await asyncio.wait_for(begun.wait(), 30)
            await _lease_ran_out(proxy, client, app, "r")
            claimed = await client.store.run_claim(
                worker_id="thief", queues=["default"], limit=1, now=client.clock.now(),
                lease_seconds=600)
            assert [c.run.run_id for c in claimed] == ["r"]
            go.set()
            proxy.back()

            async def dropped() -> bool:
                return not worker.holds("r")

            await _until("the run dropped", dropped)
    finally:
        release.set()
        await app.close()
    assert not effects.exists()


async def test_a_step_waiting_for_the_lease_starts_once_the_heartbeat_renews_it(
        proxy: CuttingProxy, client: App, tmp_path: Path) -> None:
    """The same, with nobody taking the run over: the step that waited for the lease
    starts once the server is back and the heartbeat renewed it, and the run completes
    under its first claim, each step run once."""
    effects = tmp_path / "charged.txt"
    begun, go, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    app = _two_branches(proxy.url(), effects, begun, go, release)
    try:
        async with app.worker(lease_seconds=2.0):
            await app.start("pay", run_id="r")
            await asyncio.wait_for(begun.wait(), 30)
            await _lease_ran_out(proxy, client, app, "r")
            go.set()
            release.set()
            proxy.back()

            async def ended() -> bool:
                run = await client.store.run_get("r")
                return run is not None and run.status.is_ended

            await _until("the run ended", ended)
    finally:
        release.set()
        await app.close()
    run = await client.store.run_get("r")
    assert run is not None and run.status is RunStatus.COMPLETED, (run.status, run.error)
    assert run.fencing_token == 1, run.fencing_token
    assert effects.read_text() == "charged\n"
