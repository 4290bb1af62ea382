"""Type-checked by mypy (``files`` in pyproject.toml), not run by pytest: the public API
keeps users' signatures, so their own code stays type-checked through the decorators."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, assert_type

import tether
from tether import App, RetryPolicy, RunHandle, RunInfo, RunStatus

app = App("sqlite:///typing.db")


@app.step(retry=RetryPolicy(max_attempts=None, non_retryable=(ValueError,)))
async def search(query: str, limit: int = 3) -> list[str]:
    return [query] * limit


@app.step
def parse(text: str) -> dict[str, int]:
    return {text: len(text)}


@app.workflow(queue="agents")
async def research(topic: str) -> dict[str, object]:
    hits = await search(topic, limit=2)
    assert_type(hits, list[str])
    assert_type(await parse(topic), dict[str, int])
    assert_type(tether.now().isoformat(), str)
    assert_type(tether.random(), float)
    assert_type(tether.patched("x"), bool)
    assert_type(tether.deprecate_patch("x"), None)
    child = await tether.start_child(helper, 3, queue="tools")
    assert_type(await child.result(), int)
    return {"hits": hits}


@app.workflow
async def helper(n: int) -> int:
    return n


async def client() -> None:
    assert_type(search("q"), Awaitable[list[str]])
    handle = await app.start(research, "t", run_id="r-1")
    assert_type(handle, RunHandle[dict[str, object]])
    assert_type(await handle.result(timeout=1), dict[str, object])
    info = await app.get_run("r-1")
    assert_type(info, RunInfo)
    assert_type(info.status, RunStatus)
    assert_type(info.metrics, dict[str, float])


# -- runs over their whole life (issue 11) -----------------------------------------------

versioned = tether.App("sqlite:///typing.db", version="2026-12-02", retention="30d")


@versioned.step(timeout=2.5)
async def bounded(x: int) -> int:
    return x


@versioned.schedule("*/5 * * * *", timezone="Europe/Paris")
@versioned.workflow
async def session(notes: list[str]) -> list[str]:
    assert_type(await bounded(1), int)
    if len(notes) > 100:
        tether.continue_as_new(notes[-10:])
    return notes


async def lifecycle_client() -> None:
    assert_type(await versioned.retry("r-1"), RunStatus)
    fork = await versioned.fork("r-1", at=3, input=[["a"]], new_run_id="r-2")
    assert_type(fork.run_id, str)
    info = await versioned.get_run("r-2")
    assert_type(info.forked_from, str | None)
    assert_type(info.attempts, list[dict[str, Any]])
    versioned.schedule(session, cron="0 9 * * mon", input=[[]], name="weekly")


# -- tether.ext: what an integration writes -----------------------------------------------

from tether import ext  # noqa: E402


async def integration_call(query: str) -> object:
    async def body(q: str) -> list[str]:
        return [q]

    run = ext.current_run()
    if run is not None:
        assert_type(run.run_id, str)
        assert_type(run.memory("k", list[int]), list[int])
        run.add_metrics({"calls": 1})
        await run.publish({"type": "integration.call"})
        assert_type(await run.shared.kv_get(key="integration:x"), tuple[str, int] | None)
    step = ext.current_step()
    if step is not None:
        assert_type(step.key, str)
    assert_type(ext.in_workflow(), bool)
    return await ext.step("integration:search", body, query, retry=RetryPolicy())
