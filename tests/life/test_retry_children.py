"""Retry of a run with children, and cancel of a blocked run with children, on both
stores: a retried parent brings back the children it would otherwise find ended (the
ones its cancel cancelled, or whose failure it failed on), and a blocked parent's cancel
reaches its children as any cancel does."""

from __future__ import annotations

import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App, RetryPolicy


def tree_app(url: str, calls: dict[str, int], broken: dict[str, bool]) -> App:
    app = App(url)

    @app.step
    async def prepare(x: int) -> int:
        calls["prepare"] = calls.get("prepare", 0) + 1
        return x + 1

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def charge(x: int) -> int:
        calls["charge"] = calls.get("charge", 0) + 1
        if broken["charge"]:
            raise ValueError("bad charge code")
        return x * 10

    @app.workflow
    async def grandchild(x: int) -> int:
        got = await tether.wait_for_signal("go")
        return x + int(got)

    @app.workflow
    async def child(x: int) -> int:
        y = await prepare(x)
        g = await tether.start_child(grandchild, y, run_id=f"g-{x}")
        z = await g.result()
        return await charge(z)

    @app.workflow
    async def parent(x: int) -> int:
        h = await tether.start_child(child, x, run_id=f"c-{x}")
        return await h.result() + 1

    return app


async def test_retry_of_a_cancelled_parent_brings_back_the_children_it_cancelled(
        store_url: str) -> None:
    """Cancelling a parent cancels its child and grandchild; retrying the parent used to
    fail it at once (it waited again for a child that stayed cancelled); now the tree
    runs on from where it was, and no completed step runs again."""
    calls: dict[str, int] = {}
    app = tree_app(store_url, calls, {"charge": False})
    async with app, app.worker():
        h = await app.start("parent", 1, run_id="p-1")
        await wait_for(lambda: status_is(app, "g-1", "waiting"), what="grandchild waits")
        await app.cancel("p-1")
        for rid in ("p-1", "c-1", "g-1"):
            await wait_for(lambda rid=rid: status_is(app, rid, "cancelled"), what=rid)
        assert await app.retry("p-1") == tether.RunStatus.QUEUED
        await wait_for(lambda: status_is(app, "g-1", "waiting"), what="grandchild again")
        assert (await app.get_run("c-1")).status in ("queued", "running", "waiting")
        await app.signal("g-1", "go", 3)
        assert await h.result(timeout=20) == (2 + 3) * 10 + 1
        assert calls == {"prepare": 1, "charge": 1}


async def test_retry_of_a_failed_parent_retries_the_child_it_failed_on(
        store_url: str) -> None:
    """A child fails, so its parent does; after the fix, retrying the parent retries the
    child too (it used to fail again at once on the child's old failure); the child's
    completed step and its completed grandchild do not run again."""
    calls: dict[str, int] = {}
    broken = {"charge": True}
    app = tree_app(store_url, calls, broken)
    async with app, app.worker():
        h = await app.start("parent", 2, run_id="p-2")
        await wait_for(lambda: status_is(app, "g-2", "waiting"), what="grandchild waits")
        await app.signal("g-2", "go", 4)
        with pytest.raises(tether.RunFailed):
            await h.result(timeout=20)
        assert (await app.get_run("c-2")).status == "failed"
        broken["charge"] = False  # the fix is deployed
        assert await app.retry("p-2") == tether.RunStatus.QUEUED
        assert await h.result(timeout=20) == (3 + 4) * 10 + 1
        assert calls == {"prepare": 1, "charge": 2}
        assert (await app.get_run("g-2")).status == "completed"


async def test_retry_leaves_a_child_whose_failure_the_parent_handled(store_url: str) -> None:
    """The rule takes only the failures the parent did not handle: a child whose failure
    the parent caught, and then failed later for another reason, stays failed."""
    app = App(store_url)
    broken = {"after": True}

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def bad() -> int:
        raise ValueError("child broke")

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def after() -> str:
        if broken["after"]:
            raise ValueError("after broke")
        return "ok"

    @app.workflow
    async def kid() -> int:
        return await bad()

    @app.workflow
    async def top() -> str:
        h = await tether.start_child(kid, run_id="k-3")
        try:
            await h.result()
        except tether.RunFailed:
            pass
        return await after()

    async with app, app.worker():
        h = await app.start(top, run_id="t-3")
        with pytest.raises(tether.RunFailed):
            await h.result(timeout=20)
        broken["after"] = False
        await app.retry("t-3")
        assert await h.result(timeout=20) == "ok"
        assert (await app.get_run("k-3")).status == "failed"


async def test_cancel_of_a_blocked_parent_cancels_its_children(store_url: str) -> None:
    """A blocked run ends cancelled at once when asked (no code runs to see the
    cancel); its children whose policy is cancel used to run on, never told: now they
    are asked to cancel too (and a blocked grandchild ends with them)."""
    app = App(store_url)
    mode = {"v": 1}

    @app.step
    async def a() -> int:
        return 1

    @app.step
    async def b() -> int:
        return 2

    @app.workflow
    async def leaf() -> int:
        return int(await tether.wait_for_signal("go"))

    @app.workflow
    async def kid() -> int:
        h = await tether.start_child(leaf, run_id="l-4")
        await (a() if mode["v"] == 1 else b())
        await tether.wait_for_signal("go")
        return await h.result()

    @app.workflow
    async def mid() -> int:
        h = await tether.start_child(kid, run_id="k-4")
        kept = await tether.start_child(leaf, run_id="kept-4", on_parent_cancel="abandon")
        await (a() if mode["v"] == 1 else b())
        await tether.wait_for_signal("go")
        return await h.result() + await kept.result()

    async with app, app.worker():
        await app.start(mid, run_id="m-4")
        for rid in ("m-4", "k-4", "l-4", "kept-4"):
            await wait_for(lambda rid=rid: status_is(app, rid, "waiting"), what=rid)
        mode["v"] = 2  # new code: the runs' replays no longer match their journals
        await app.signal("m-4", "go", 1)
        await app.signal("k-4", "go", 1)
        await wait_for(lambda: status_is(app, "m-4", "blocked"), what="m-4 blocked")
        await wait_for(lambda: status_is(app, "k-4", "blocked"), what="k-4 blocked")
        assert await app.cancel("m-4") == tether.RunStatus.CANCELLED
        # k-4 (blocked) ends at once with its parent; l-4 (waiting) is asked to cancel
        # and ends cancelled at its next operation; the abandoned child runs on.
        assert (await app.store.run_get("k-4")).status == "cancelled"
        await wait_for(lambda: status_is(app, "l-4", "cancelled"), what="l-4 cancelled")
        kept = await app.store.run_get("kept-4")
        assert kept.status == "waiting" and not kept.cancel_requested
