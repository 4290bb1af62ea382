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
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.faults.cutproxy import CuttingProxy, Mode
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


async def _cut(proxy: CuttingProxy, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not proxy.cut.is_set():
        assert time.monotonic() < deadline, "the step's append never went out"
        await asyncio.sleep(0.01)


async def _ended(client: App, run_id: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = await client.store.run_get(run_id)
        if run is not None and run.status.is_ended:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run and run.status}"
        await asyncio.sleep(0.05)


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
            await _cut(proxy)
            assert proxy.answered is (mode == "after")
            await asyncio.sleep(outage)
            proxy.back()
            run = await _ended(client, handle.run_id)
    finally:
        await app.close()
    assert calls == ["hello"], calls
    assert run.status is RunStatus.COMPLETED, (run.status, run.error)
    assert client.codec.decode(run.result) == answer + "!"
    journal = await client.store.journal_read("r1")
    assert [(e.position, e.name, e.status) for e in journal] == [
        (0, "paid_call", "ok"), (1, "after", "ok")]
    assert run.fencing_token == 1, run.fencing_token
