"""The app of the backup tests (``tests.cli.backup_app:app``, loaded by worker
processes): runs that are mid-step, waiting for a signal, sleeping, or writing step
after step while the store is backed up. Each step execution appends ``<pid> <step
key>`` (run id and position) to the file named by ``TETHER_TEST_SIDE_FILE``."""

from __future__ import annotations

import asyncio
import os

import tether
from tether import App

app = App()


def _record(what: str = "") -> None:
    with open(os.environ["TETHER_TEST_SIDE_FILE"], "a") as f:
        f.write(f"{os.getpid()} {tether.step_key()}{what}\n")


@app.step
async def tick(i: int) -> int:
    _record()
    await asyncio.sleep(0.01)
    return i


@app.step
async def is_open(gate: str) -> bool:
    _record()
    return os.path.exists(gate)


@app.step
async def through(gate: str) -> str:
    _record(" begun")
    while not os.path.exists(gate):
        await asyncio.sleep(0.02)
    return "through"


@app.workflow
async def busy(gate: str) -> int:
    """Step after step (a write each) until the gate opens."""
    i = 0
    while True:
        await tick(i)
        i += 1
        if await is_open(gate):
            return i


@app.workflow
async def mid_step(gate: str) -> str:
    await tick(0)
    return await through(gate)


@app.workflow
async def waits() -> object:
    await tick(0)
    got = await tether.wait_for_signal("go")
    await tick(1)
    return got


@app.workflow
async def sleeps(seconds: float) -> str:
    await tick(0)
    await tether.sleep(seconds)
    await tick(1)
    return "slept"
