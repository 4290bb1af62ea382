"""An app served over stdio by ``tether mcp`` in tests/mcp_server/test_stdio.py: it
writes to the file named by ``TETHER_TEST_SIDE_FILE`` whether ``tether.store.FAIL_FAST``
was set where a tool call starts its run (an MCP request: it should be) and where the
run executes (the worker of the same process: it should not)."""

from __future__ import annotations

import os
from typing import Any

from tether import App
from tether.store import FAIL_FAST


def _record(what: str) -> None:
    path = os.environ.get("TETHER_TEST_SIDE_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{what}\n")


class _SpyApp(App):
    async def start(self, *args: Any, **kwargs: Any) -> Any:
        _record(f"start fail_fast={FAIL_FAST.get()}")
        return await super().start(*args, **kwargs)


app = _SpyApp()


@app.step
def in_step() -> bool:
    return FAIL_FAST.get()


@app.workflow(mcp=True)
async def where() -> dict[str, bool]:
    """Say whether the run's workflow and step saw FAIL_FAST."""
    return {"workflow": FAIL_FAST.get(), "step": await in_step()}
