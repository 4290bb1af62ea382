"""The app of the ``tether db copy`` tests (``tests.cli.copy_app:app``, loaded by
worker processes): runs that end, wait for a signal or an approval, sleep, or are
killed mid-way, and a schedule. Each step execution appends ``<pid> <step key>`` (run
id and position) to the file named by ``TETHER_TEST_SIDE_FILE``."""

from __future__ import annotations

import asyncio
import os

import tether
from tether import App, RetryPolicy
from tether.ai import request_approval

app = App()


def _record() -> None:
    with open(os.environ["TETHER_TEST_SIDE_FILE"], "a") as f:
        f.write(f"{os.getpid()} {tether.step_key()}\n")


@app.step
async def tick(i: int) -> int:
    _record()
    return i


@app.step
async def through(gate: str) -> str:
    """Until the file ``gate`` exists."""
    _record()
    while not os.path.exists(gate):
        await asyncio.sleep(0.02)
    return "through"


_FAST = RetryPolicy(initial_interval=0.05, backoff=1.0, max_interval=0.05, max_attempts=3)


@app.step
async def slow(i: int) -> int:
    """A first attempt that outlives the attempt writer's delay: its row is written."""
    _record()
    await asyncio.sleep(0.3)
    return i


@app.step(retry=_FAST)
async def flaky(i: int) -> int:
    """Fails at its first two attempts, succeeds at its third."""
    _record()
    if tether.step_attempt() < 3:
        raise RuntimeError("not yet")
    return i


@app.step(retry=RetryPolicy(initial_interval=0.05, max_attempts=2))
async def doomed() -> int:
    _record()
    raise RuntimeError("never")


@app.workflow
async def retried(generation: int) -> list[int]:
    """First-try successes (fresh, and one whose row is written), a step that succeeds
    at its third attempt, in two generations (a continue-as-new)."""
    out = [await tick(0), await slow(1), await flaky(2), await tick(3)]
    if generation == 0:
        tether.continue_as_new(1)
    return out


@app.workflow
async def fails() -> int:
    await tick(0)
    return await doomed()


@app.workflow
async def ends(n: int) -> list[int]:
    return [await tick(i) for i in range(n)]


@app.workflow
async def waits() -> object:
    await tick(0)
    got = await tether.wait_for_signal("go")
    await tick(1)
    return got


@app.workflow
async def approves() -> bool:
    await tick(0)
    decision = await request_approval("pay", {"amount": 500}, "over $100", approval_id="a")
    await tick(1)
    return decision.approved


@app.workflow
async def sleeps(seconds: float) -> str:
    await tick(0)
    await tether.sleep(seconds)
    await tick(1)
    return "slept"


@app.workflow
async def midway(gate: str) -> str:
    """Three steps, then one that waits for the file ``gate``."""
    for i in range(3):
        await tick(i)
    return await through(gate)


@app.workflow
async def ticked() -> str:
    """The schedule's workflow."""
    await tick(0)
    return "ticked"


app.schedule(ticked, cron="0 0 1 1 *", name="yearly")


@app.workflow(mcp=True)  # (an MCP tool, for `tether mcp` on a store being copied)
async def greets(name: str) -> str:
    return f"hello {name}"
