"""Type-checked by mypy (``files`` in pyproject.toml), not run by pytest: the public API
keeps users' signatures, so their own code stays type-checked through the decorators."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import assert_type

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
