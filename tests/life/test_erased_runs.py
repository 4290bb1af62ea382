"""A run whose payloads were erased does not run again: retry, resume and fork of it
would feed the erasure marker (``{"erased": true}``) to its code as its input, its
steps' results and its signals, and the steps after would act on it."""

from __future__ import annotations

import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App, RetryPolicy


async def test_an_erased_run_is_not_retried_or_forked(store_url: str) -> None:
    app = App(store_url)
    sent: list[object] = []
    broken = {"send": True}

    @app.step
    async def fetch_secret() -> str:
        return "ssn-123-45-6789"

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def send(value: str) -> str:
        sent.append(value)
        if broken["send"]:
            raise RuntimeError("smtp down")
        return f"sent {value}"

    @app.workflow
    async def pipeline() -> str:
        return await send(await fetch_secret())

    async with app, app.worker():
        h = await app.start(pipeline, run_id="p-1")
        with pytest.raises(tether.RunFailed):
            await h.result(timeout=20)
        await app.store.run_erase(run_id="p-1", now=app.clock.now())
        broken["send"] = False
        with pytest.raises(tether.RunStateError, match="erased"):
            await app.retry("p-1")
        with pytest.raises(tether.RunStateError, match="erased"):
            await app.fork("p-1", at=1, new_run_id="p-1-fork")
        with pytest.raises(tether.RunNotFound):
            await app.get_run("p-1-fork")
        info = await app.get_run("p-1")
    assert info.status is tether.RunStatus.FAILED
    assert sent == ["ssn-123-45-6789"]  # the marker was never sent anywhere


async def test_an_erased_blocked_run_is_not_resumed(store_url: str) -> None:
    app = App(store_url)
    moved = {"on": False}

    @app.step
    async def a() -> int:
        return 1

    @app.step
    async def b() -> int:
        return 2

    @app.workflow
    async def flow() -> int:
        x = await (b() if moved["on"] else a())
        await tether.wait_for_signal("go")
        return x

    async with app, app.worker():
        await app.start(flow, run_id="f-1")
        await wait_for(lambda: status_is(app, "f-1", "waiting"), what="f-1 waiting")
        moved["on"] = True  # a deploy that changed the code under the run
        await app.signal("f-1", "go", "secret")
        await wait_for(lambda: status_is(app, "f-1", "blocked"), what="f-1 blocked")
        await app.store.run_erase(run_id="f-1", now=app.clock.now())
        moved["on"] = False  # fixed
        with pytest.raises(tether.RunStateError, match="erased"):
            await app.resume("f-1")
        with pytest.raises(tether.RunStateError, match="erased"):
            await app.retry("f-1")
        info = await app.get_run("f-1")
    assert info.status is tether.RunStatus.BLOCKED
