"""The MCP test app plus a sum whose last step is held by the test (loaded by
subprocesses by name: ``tests.mcp_server.failover_apps:app``). ``held_sum`` adds
every number but the last, then waits in a step until the file named by
``TETHER_TEST_RELEASE`` exists, then adds the last one: a test can keep the run in
flight for exactly as long as it needs, instead of pausing a fixed time."""

from __future__ import annotations

import asyncio
import os

from tests.mcp_server.apps import build

app = build()


@app.step
def add_number(n: int, i: int) -> int:
    path = os.environ.get("TETHER_TEST_SIDE_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} add {i}\n")
    return n


@app.step
async def hold() -> None:
    """Return once the release file exists (polled every 50 ms)."""
    release = os.environ["TETHER_TEST_RELEASE"]
    while not os.path.exists(release):
        await asyncio.sleep(0.05)


@app.workflow(mcp=True)
async def held_sum(numbers: list[int]) -> int:
    """Add the numbers, one step each; the last one only after the release file exists."""
    total = 0
    for i, n in enumerate(numbers[:-1]):
        total += await add_number(n, i)
    await hold()
    return total + await add_number(numbers[-1], len(numbers) - 1)
