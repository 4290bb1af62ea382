"""Concurrency inside a workflow: operations gathered, raced and cancelled by workflow
code replay as they ran (docs/concepts.md, "Concurrency in a workflow")."""

from __future__ import annotations

import asyncio

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App


async def test_gathered_calls_of_children_replay_whichever_child_ends_first(
        store_url: str) -> None:
    """``tether.call`` is a start and a wait: both positions are taken when it is called.
    Before, the wait took its position when the start returned, so the live run recorded
    a's start, b's start, then the waits, while a replay (which answers a's start at once)
    asked for a's wait at b's start's position: the parent was blocked at its first
    replay, however its children ended."""
    app = App(store_url)

    @app.workflow
    async def held(x: int) -> int:
        await tether.wait_for_signal("go")
        return x * 10

    @app.workflow
    async def quick(x: int) -> int:
        return x * 100

    @app.workflow
    async def parent() -> list[int]:
        return list(await asyncio.gather(tether.call(held, 1), tether.call(quick, 2)))

    async with app.worker():
        handle = await app.start(parent, run_id="p")
        # The second child ends first; the parent is released waiting for the first.
        await wait_for(lambda: status_is(app, "p.0", "waiting"), timeout=30)
        await wait_for(lambda: status_is(app, "p", "waiting"), timeout=30)
        await app.signal("p.0", "go")
        assert await handle.result(timeout=30) == [10, 200]
    info = await app.get_run("p")
    assert [(e["kind"], e["position"]) for e in info.journal] == [
        ("child_start", 0), ("child_result", 1), ("child_start", 2), ("child_result", 3)]
    await app.close()
