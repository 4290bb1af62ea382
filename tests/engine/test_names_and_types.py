"""Types restored from annotations resolved late; strict workflow input; children
started by name land on the queue their workers registered."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import tether
from tests.engine import fwd_app
from tether import App, RunFailed


async def test_forward_referenced_types_are_restored(store_url: str) -> None:
    app = fwd_app.make_app(store_url)
    async with app.worker():
        handle = await app.start("mirror", fwd_app.Point(3, 4))
        assert await handle.result(timeout=10) == fwd_app.Point(3, 3)
    await app.close()


@dataclass
class Pt:
    x: int
    y: int


async def test_input_that_does_not_fit_its_annotation_fails_clearly(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def add(p: Pt) -> int:
        return p.x + p.y

    async with app.worker():
        handle = await app.start("add", {"x": 1})
        with pytest.raises(RunFailed) as info:
            await handle.result(timeout=10)
    assert "argument 1 of workflow 'add' does not fit Pt" in str(info.value)
    assert "y" in str(info.value)
    await app.close()


async def test_child_started_by_name_goes_to_its_registered_queue(store_url: str) -> None:
    app = App(store_url)

    @app.workflow(queue="tools")
    async def tool(x: int) -> int:
        return x * 10

    @app.workflow(queue="agents")
    async def agent(x: int) -> int:
        return int(await tether.call("tool", x))

    async with app.worker(queues=["agents"]), app.worker(queues=["tools"]):
        assert await (await app.start(agent, 4, run_id="a")).result(timeout=10) == 40
    assert (await app.get_run("a.0")).queue == "tools"
    await app.close()
