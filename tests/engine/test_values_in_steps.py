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
