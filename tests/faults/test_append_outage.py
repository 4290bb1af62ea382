"""A step's journal append cut off by a PostgreSQL outage: the step's result, still in
memory, is written when the store is back, and the step's body is not run again.

The worker runs in this process behind ``CuttingProxy``, which cuts every connection
when the step's append (the only message holding the step's result) goes out: before
the server sees it, or after the server committed it and before its answer comes back.
The proxy then refuses connections for a while (the server is gone) and comes back.
The test's own client reaches the server directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.faults.cutproxy import CuttingProxy, Mode, cutting_proxy, direct_app, run_ended
from tether import App, RunStatus

pytestmark = [pytest.mark.postgres]


def _agent_app(url: str, calls: list[str], answer: str) -> App:
    """An app whose workflow makes one paid call (a step) and returns what it said."""
    app = App(url, pool_timeout=2.0, connect_timeout=1.0)

    @app.step
    async def paid_call(prompt: str) -> str:
        calls.append(prompt)
        return answer

    @app.step
    async def after(text: str) -> str:
        return text + "!"

    @app.workflow
    async def agent(prompt: str) -> str:
        said = await paid_call(prompt)
        return await after(said)

    return app


@pytest.fixture
def proxy(pg_migrated_url: str) -> Iterator[CuttingProxy]:
    with cutting_proxy(pg_migrated_url) as p:
        yield p


@pytest.fixture
async def client(pg_migrated_url: str) -> AsyncIterator[App]:
    """The test's own App, on the server directly (never cut)."""
    async with direct_app(pg_migrated_url) as app:
        yield app


@pytest.mark.parametrize("mode", ["before", "after"])
@pytest.mark.parametrize("outage", [1.5, 4.0], ids=["short", "past-the-lease"])
async def test_a_steps_append_cut_off_is_written_when_the_store_is_back(
        proxy: CuttingProxy, client: App, mode: Mode, outage: float) -> None:
    """The connection drops while the step's entry is being written, with the write
    lost (``before``) or committed unbeknown to the worker (``after``); the server stays
    away for less than the 2 s lease or for twice as long. The worker keeps the result
    and writes it again when the server is back; the step ran once, the run completes
    with its result, under its first claim (fencing token 1: never handed back)."""
    answer = f"paid-{uuid.uuid4().hex}"
    calls: list[str] = []
    app = _agent_app(proxy.url(), calls, answer)
    try:
        async with app.worker(lease_seconds=2.0):
            proxy.arm(answer.encode(), mode)
            handle = await app.start("agent", "hello", run_id="r1")
            await proxy.wait_cut()
            assert proxy.answered is (mode == "after")
            await asyncio.sleep(outage)
            proxy.back()
            run = await run_ended(client, handle.run_id)
    finally:
        await app.close()
    assert calls == ["hello"], calls
    assert run.status is RunStatus.COMPLETED, (run.status, run.error)
    assert client.codec.decode(run.result) == answer + "!"
    journal = await client.store.journal_read("r1")
    assert [(e.position, e.name, e.status) for e in journal] == [
        (0, "paid_call", "ok"), (1, "after", "ok")]
    assert run.fencing_token == 1, run.fencing_token


@pytest.mark.parametrize("mode", ["before", "after"])
async def test_a_result_held_through_an_outage_is_dropped_if_another_worker_took_the_run(
        proxy: CuttingProxy, client: App, pg_migrated_url: str, mode: Mode,
        caplog: pytest.LogCaptureFixture) -> None:
    """The worker holding the result cannot reach the server for longer than its 1 s
    lease, and another worker (which can) takes the run over and completes it. When the
    server is back, the first worker's write is refused by fencing (its token is stale)
    and its result dropped, said in the log; the run keeps the other worker's outcome.
    The step ran again there only if the first write never reached the server: then the
    first worker's attempt reads ``superseded`` (its result refused), else it stands.
    One WARNING says the lost run; the retried write's own line is DEBUG."""
    caplog.set_level(logging.DEBUG, logger="tether")
    answer = f"paid-{uuid.uuid4().hex}"
    calls: list[str] = []
    cut_off = _agent_app(proxy.url(), calls, answer)
    other = _agent_app(pg_migrated_url, calls, answer)
    try:
        async with cut_off.worker(lease_seconds=1.0) as first:
            proxy.arm(answer.encode(), mode)
            await cut_off.start("agent", "hello", run_id="r1")
            await proxy.wait_cut()
            async with other.worker(lease_seconds=1.0):
                run = await run_ended(client, "r1")
            proxy.back()
            deadline = time.monotonic() + 20
            while not any(r.getMessage().startswith("run r1: lease lost at position 0 ")
                          for r in caplog.records):
                assert time.monotonic() < deadline, "the first worker never heard"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # (its history write, issued before the line)
    finally:
        await cut_off.close()
        await other.close()
    assert calls == (["hello"] if mode == "after" else ["hello", "hello"]), calls
    assert run.status is RunStatus.COMPLETED and run.fencing_token == 2
    assert client.codec.decode(run.result) == answer + "!"
    journal = await client.store.journal_read("r1")
    assert [(e.position, e.status) for e in journal] == [(0, "ok"), (1, "ok")]
    (said,) = [r.getMessage() for r in caplog.records
               if "lease lost while the store was unavailable" in r.getMessage()]
    assert said.startswith("run r1: lease lost while the store was unavailable (another "
                           "worker took the run over: fencing token 1 is stale); the step "
                           "'paid_call' at position 0 (ok) held in memory is dropped"), said
    (lost,) = [r for r in caplog.records if r.levelno >= logging.WARNING
               and "lease lost" in r.getMessage()]
    assert lost.getMessage().startswith(
        "run r1: lease lost at position 0 (now completed, owner none, fencing token 2; this "
        "worker's fencing token 1 is stale)"), lost.getMessage()
    refused = "step 'paid_call' at position 0 (attempt 1) ran here but its result was refused"
    assert (refused in lost.getMessage()) is (mode == "before"), lost.getMessage()
    attempts = (await client.get_run("r1")).attempts
    superseded = [a["worker_id"] for a in attempts if a["status"] == "superseded"]
    assert superseded == ([first.worker_id] if mode == "before" else []), attempts


async def test_a_run_cancelled_while_its_result_waits_for_the_store(
        proxy: CuttingProxy, client: App) -> None:
    """A cancel sent (to the server directly) while the run's step result waits for the
    store: the result is written when the store is back, and the cancel is delivered at
    the next operation (a signal wait here: whether the worker learns of the cancel
    before it or when the run comes back from waiting). The step ran once; its entry is
    kept, and the cancel takes the next position."""
    import tether

    answer = f"paid-{uuid.uuid4().hex}"
    calls: list[str] = []
    app = App(proxy.url(), pool_timeout=2.0, connect_timeout=1.0)

    @app.step
    async def paid_call(prompt: str) -> str:
        calls.append(prompt)
        return answer

    @app.workflow
    async def agent(prompt: str) -> str:
        said = await paid_call(prompt)
        await tether.wait_for_signal("go", timeout=60)
        return said

    try:
        async with app.worker(lease_seconds=2.0):
            proxy.arm(answer.encode(), "before")
            await app.start("agent", "hello", run_id="r1")
            await proxy.wait_cut()
            await client.cancel("r1")
            await asyncio.sleep(1.0)
            proxy.back()
            run = await run_ended(client, "r1")
    finally:
        await app.close()
    assert calls == ["hello"]
    assert run.status is RunStatus.CANCELLED
    journal = await client.store.journal_read("r1")
    assert [(e.position, e.kind, e.status) for e in journal] == [
        (0, "step", "ok"), (1, "cancel", "ok")]
    assert client.codec.decode(journal[0].result) == answer


async def test_a_draining_worker_writes_a_held_result_within_its_grace_period(
        proxy: CuttingProxy, client: App, pg_migrated_url: str) -> None:
    """SIGTERM (``drain``) while the run's step result waits for the store: the worker
    keeps trying through its grace period; the store back within it, the result is
    written and the run handed back, and another worker completes it without running
    the step again."""
    answer = f"paid-{uuid.uuid4().hex}"
    calls: list[str] = []
    app = _agent_app(proxy.url(), calls, answer)
    other = _agent_app(pg_migrated_url, calls, answer)
    try:
        async with app.worker(lease_seconds=2.0) as worker:
            proxy.arm(answer.encode(), "before")
            await app.start("agent", "hello", run_id="r1")
            await proxy.wait_cut()
            draining = asyncio.ensure_future(worker.drain(grace=20.0))
            await asyncio.sleep(1.5)
            assert not draining.done()
            proxy.back()
            assert await draining is True
        handed_back = await client.store.run_get("r1")
        assert handed_back is not None and handed_back.owner is None
        assert handed_back.waiting_for == "handed back by a draining worker"
        assert [e.name for e in await client.store.journal_read("r1")] == ["paid_call"]
        async with other.worker():
            run = await run_ended(client, "r1")
    finally:
        await app.close()
        await other.close()
    assert calls == ["hello"]
    assert run.status is RunStatus.COMPLETED and run.fencing_token == 2


async def test_many_runs_cut_off_at_once_each_write_their_result_once(
        proxy: CuttingProxy, client: App) -> None:
    """Twenty runs whose steps end together (their appends group-committed) when every
    connection drops and the server stays away past their lease: each keeps one entry
    in memory (a run has one write in flight; the worker's concurrency bounds the runs),
    and each writes it when the server is back; every step ran once."""
    tag = f"paid-{uuid.uuid4().hex}"
    calls: list[str] = []
    gate = asyncio.Event()
    app = App(proxy.url(), pool_timeout=2.0, connect_timeout=1.0)

    @app.step
    async def paid_call(prompt: str) -> str:
        calls.append(prompt)
        await gate.wait()
        return f"{tag}-{prompt}"

    @app.workflow
    async def agent(prompt: str) -> str:
        return await paid_call(prompt)

    try:
        async with app.worker(lease_seconds=1.0, concurrency=20):
            proxy.arm(tag.encode(), "before")
            for i in range(20):
                await app.start("agent", f"p{i}", run_id=f"r{i:02}")
            deadline = time.monotonic() + 20
            while len(calls) < 20:
                assert time.monotonic() < deadline, calls
                await asyncio.sleep(0.02)
            gate.set()
            await proxy.wait_cut()
            await asyncio.sleep(3.0)
            proxy.back()
            runs = [await run_ended(client, f"r{i:02}") for i in range(20)]
    finally:
        await app.close()
    assert sorted(calls) == sorted(f"p{i}" for i in range(20)), calls
    for i, run in enumerate(runs):
        assert run.status is RunStatus.COMPLETED, (run.run_id, run.status, run.error)
        assert client.codec.decode(run.result) == f"{tag}-p{i}"
        assert run.fencing_token == 1, (run.run_id, run.fencing_token)


async def test_a_step_running_through_an_outage_past_its_lease_is_not_run_again(
        proxy: CuttingProxy, client: App) -> None:
    """The server goes away while a step runs (a long model call) and stays away past
    the 1 s lease; the step ends after it is back. The worker does not claim its own
    run back (which would replay it beside the task still running the step, and run
    the step again): its heartbeat renews the lease, and the step's result is written
    under the first claim."""
    answer = f"paid-{uuid.uuid4().hex}"
    calls: list[str] = []
    started = asyncio.Event()
    gate = asyncio.Event()
    app = App(proxy.url(), pool_timeout=2.0, connect_timeout=1.0)

    @app.step
    async def paid_call(prompt: str) -> str:
        calls.append(prompt)
        started.set()
        await gate.wait()
        return answer

    @app.workflow
    async def agent(prompt: str) -> str:
        return await paid_call(prompt)

    try:
        async with app.worker(lease_seconds=1.0):
            await app.start("agent", "hello", run_id="r1")
            await asyncio.wait_for(started.wait(), 20)
            proxy.go_down()
            await asyncio.sleep(3.0)
            proxy.back()
            await asyncio.sleep(3.0)  # the worker's claims and heartbeats go through
            gate.set()
            run = await run_ended(client, "r1")
    finally:
        await app.close()
    assert calls == ["hello"], calls
    assert run.status is RunStatus.COMPLETED and run.fencing_token == 1
