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


async def _until_waiting_then_go(app: App, run_id: str) -> None:
    await wait_for(lambda: status_is(app, run_id, "waiting"), timeout=30)
    await app.signal(run_id, "go")


async def test_a_step_the_workflow_cancels_is_journaled_and_not_run_again(
        store_url: str) -> None:
    """The loser of ``asyncio.wait(FIRST_COMPLETED)``, a step under ``asyncio.wait_for``
    that times out and a ``TaskGroup`` member whose sibling failed: each was cancelled by
    the workflow's code. Before, nothing was journaled for them, and every replay (here:
    after the run was released for a signal) ran them again for real."""
    app = App(store_url)
    starts: dict[str, int] = {}

    @app.step
    async def hold(tag: str) -> str:
        starts[tag] = starts.get(tag, 0) + 1
        await asyncio.Event().wait()  # never ends by itself
        return tag

    @app.step
    async def quick() -> str:
        return "quick"

    @app.step(retry=tether.RetryPolicy(max_attempts=1))
    async def fail() -> None:
        raise ValueError("no")

    @app.workflow
    async def race() -> list[str]:
        slow = asyncio.ensure_future(hold("race"))
        fast = asyncio.ensure_future(quick())
        done, pending = await asyncio.wait({slow, fast}, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        outcome = [t.result() for t in done]
        await tether.wait_for_signal("go")
        return outcome

    @app.workflow
    async def timed() -> str:
        try:
            await asyncio.wait_for(hold("timed"), 0.2)
            outcome = "ended"
        except TimeoutError:
            outcome = "timed out"
        await tether.wait_for_signal("go")
        return outcome

    @app.workflow
    async def group() -> list[str]:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(hold("group"))
                tg.create_task(fail())
            outcome = ["none"]
        except* ValueError as eg:
            outcome = [type(e).__name__ for e in eg.exceptions]
        await tether.wait_for_signal("go")
        return outcome

    async with app.worker():
        handles = [await app.start(wf, run_id=wf.__name__) for wf in (race, timed, group)]
        for h in handles:
            await _until_waiting_then_go(app, h.run_id)
        outcomes = [await h.result(timeout=30) for h in handles]
    assert outcomes == [["quick"], "timed out", ["StepError[ValueError]"]]
    assert starts == {"race": 1, "timed": 1, "group": 1}  # not again at the replay
    for run_id in ("race", "timed", "group"):
        first = (await app.get_run(run_id)).journal[0]
        assert (first["kind"], first["name"], first["status"]) == ("step", "hold", "error")
        assert first["error"]["type"] == "asyncio.CancelledError"
    await app.close()


async def test_a_cancelled_error_raised_by_a_steps_own_code_is_a_failed_attempt(
        store_url: str) -> None:
    """A step (async, or a plain def in a thread) whose code raises CancelledError
    though nobody cancelled it fails an attempt like any error. Before, the error ended
    the run's task as if the worker were stopping: the run stayed 'running' under the
    live worker's lease with nothing executing it."""
    app = App(store_url)
    calls: list[str] = []

    @app.step(retry=tether.RetryPolicy(max_attempts=2, initial_interval=0.01))
    async def leaks() -> str:
        calls.append("async")
        raise asyncio.CancelledError()

    @app.step(retry=tether.RetryPolicy(max_attempts=2, initial_interval=0.01))
    def leaks_in_a_thread() -> str:
        calls.append("thread")
        raise asyncio.CancelledError()

    @app.workflow
    async def wf() -> list[str]:
        caught = []
        for step in (leaks, leaks_in_a_thread):
            try:
                await step()
            except tether.StepError as exc:
                caught.append(exc.error_type)
        return caught

    async with app.worker():
        h = await app.start(wf, run_id="own")
        assert await h.result(timeout=30) == ["asyncio.exceptions.CancelledError"] * 2
    assert calls == ["async", "async", "thread", "thread"]
    await app.close()
