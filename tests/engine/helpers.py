"""Helpers for engine tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tether import App, RunNotFound


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0,
                   interval: float = 0.01, what: str = "condition") -> Any:
    """Poll an async or plain predicate until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not met within {timeout} s")
        await asyncio.sleep(interval)


async def journal_has(app: App, run_id: str, n_ok: int, kind: str = "step") -> bool:
    try:
        info = await app.get_run(run_id)
    except Exception:
        return False
    return sum(1 for e in info.journal if e["kind"] == kind and e["status"] == "ok") >= n_ok


async def status_is(app: App, run_id: str, *statuses: str) -> bool:
    try:
        info = await app.get_run(run_id)
    except RunNotFound:
        return False
    return info.status.value in statuses


def client_app(module_app: App, url: str) -> App:
    """A new App on ``url`` with the workflows of ``module_app`` (a module-level app the
    worker subprocesses import), for one test: ``App.close()`` is final, so tests don't
    share one App."""
    client = App(url)
    for wdef in module_app.workflows().values():
        client.workflow(name=wdef.name, queue=wdef.queue)(wdef.fn)
    return client
