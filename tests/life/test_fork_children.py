"""A fork of a run waiting for its children, on both stores: the fork shares the
children started before its position and waits for them like its source."""

from __future__ import annotations

import asyncio

import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App, _operations


@pytest.mark.parametrize("gathered", [False, True])
async def test_a_fork_waiting_for_shared_children_sees_them_end(
        store_url: str, gathered: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork taken while its source waited for two running children (a gather) waits
    for the same children. A child's end finds a waiter among several only through its
    own parent, so the fork used to wait forever (its source completed); it looks again
    every ``SHARED_CHILD_POLL`` now. One awaited child at a time was found already."""
    monkeypatch.setattr(_operations, "SHARED_CHILD_POLL", 0.2, raising=False)
    app = App(store_url)

    @app.workflow
    async def kid(x: int) -> int:
        return x + int(await tether.wait_for_signal("go"))

    @app.workflow
    async def parent() -> int:
        a = await tether.start_child(kid, 1, run_id="k-a")
        b = await tether.start_child(kid, 2, run_id="k-b")
        if gathered:
            ra, rb = await asyncio.gather(a.result(), b.result())
        else:
            ra, rb = await a.result(), await b.result()
        return ra + rb

    async with app, app.worker():
        source = await app.start(parent, run_id="p")
        for rid in ("k-a", "k-b", "p"):
            await wait_for(lambda rid=rid: status_is(app, rid, "waiting"), what=rid)
        fork = await app.fork("p", at=2, new_run_id="f")
        await wait_for(lambda: status_is(app, "f", "waiting"), what="fork waiting")
        await app.signal("k-a", "go", 10)
        await app.signal("k-b", "go", 20)
        assert await source.result(timeout=10) == 33
        assert await fork.result(timeout=10) == 33
        children = await app.store.run_get_many(["k-a", "k-b"])
        assert {c.parent_run_id for c in children} == {"p"}  # shared, not copied
