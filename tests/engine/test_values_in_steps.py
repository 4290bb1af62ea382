"""tether.now()/random()/uuid() inside a step are not workflow operations."""

from __future__ import annotations

import tether
from tether import App, RetryPolicy


async def test_values_read_in_a_step_take_no_position_and_are_fresh_per_attempt(
        store_url: str) -> None:
    """A step that reads the clock, a random number and a uuid on each of three attempts
    gets fresh values each time, and the workflow's journal holds only its own operations."""
    app = App(store_url)
    seen: list[tuple[float, str]] = []

    @app.step(retry=RetryPolicy(initial_interval=0.01, max_attempts=3))
    async def flaky() -> int:
        seen.append((tether.random(), str(tether.uuid())))
        tether.now()
        if len(seen) < 3:
            raise RuntimeError("again")
        return len(seen)

    @app.step
    def plain() -> str:  # a thread step: the same rule
        return str(tether.uuid())

    @app.workflow
    async def wf() -> list[object]:
        return [await flaky(), await plain(), str(tether.uuid())]

    async with app, app.worker():
        out = await (await app.start(wf, run_id="v")).result(timeout=30)
        journal = (await app.get_run("v")).journal
    assert out[0] == 3
    assert len({u for _, u in seen}) == 3 and len({r for r, _ in seen}) == 3
    assert [(e["position"], e["kind"]) for e in journal] == [
        (0, "step"), (1, "step"), (2, "uuid")]


async def test_run_operations_called_in_a_step_take_no_position(store_url: str) -> None:
    """``tether.patched`` and ``tether.sleep`` in a step's body behave as outside a
    workflow (True; ``asyncio.sleep``), ``set_status`` works from a plain ``def`` step's
    thread, and the waits that only a workflow can do are refused in a step. Before,
    ``patched`` and ``sleep`` journaled an entry at a workflow position from inside the
    step, so the run was blocked (non-determinism) at its next replay; ``set_status`` in a
    ``def`` step failed every attempt with "no current event loop"."""
    app = App(store_url)

    @app.step
    async def uses_patched() -> bool:
        return tether.patched("v2")

    @app.step
    async def uses_sleep() -> str:
        await tether.sleep(0.01)  # a helper's back-off
        return "slept"

    @app.step
    def reports() -> str:
        tether.set_status({"phase": "step"})
        return "reported"

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def waits() -> None:
        await tether.wait_for_signal("x")

    @app.workflow
    async def wf() -> list[object]:
        first = [await uses_patched(), await uses_sleep(), await reports()]
        await tether.sleep(0.3)  # released (sticky_wait below): a replay follows
        try:
            await waits()
        except tether.StepError as exc:
            first.append(exc.error_type)
        return first

    async with app.worker(sticky_wait=0.05):
        assert await (await app.start(wf, run_id="p")).result(timeout=10) == [
            True, "slept", "reported", "tether.errors.OutsideRun"]
    info = await app.get_run("p")
    assert [(e["kind"], e["name"]) for e in info.journal] == [
        ("step", "uses_patched"), ("step", "uses_sleep"), ("step", "reports"),
        ("sleep", "sleep"), ("step", "waits")]
    assert info.status_info == {"phase": "step"}
    await app.close()
