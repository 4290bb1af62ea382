"""An app for ``tether mcp``'s stop-signal test (loaded by subprocesses by name:
``tests.mcp_server.drain_app:app``): ``gated(gate)`` runs one step that waits for the
file ``gate``. The step appends ``<pid> begun`` and ``<pid> done`` to the file named by
``TETHER_TEST_SIDE_FILE``."""

from __future__ import annotations

import asyncio
import os

from tether import App

app = App()


def _record(what: str) -> None:
    with open(os.environ["TETHER_TEST_SIDE_FILE"], "a") as f:
        f.write(f"{os.getpid()} {what}\n")


@app.step
async def wait_for_gate(gate: str) -> str:
    _record("begun")
    while not os.path.exists(gate):
        await asyncio.sleep(0.02)
    _record("done")
    return "through"


@app.workflow(mcp=True)
async def gated(gate: str) -> str:
    return await wait_for_gate(gate)
