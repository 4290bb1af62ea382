"""The app of the cancel-reason tests (``tests.cli.cancel_app:app``, loaded by worker
processes): ``top`` starts ``middle`` (which starts a ``waiter``) and a ``waiter`` of
its own, and awaits ``middle``; a ``waiter`` waits for a signal. Cancelling ``top``
cascades to ``middle``, then to its ``waiter``, each level on a worker's replay."""

from __future__ import annotations

import tether
from tether import App

app = App()


@app.workflow
async def waiter() -> object:
    return await tether.wait_for_signal("go")


@app.workflow
async def middle() -> object:
    child = await tether.start_child("waiter", run_id=f"{tether.run_id()}.w")
    return await child.result()


@app.workflow
async def top() -> object:
    await tether.start_child("waiter", run_id=f"{tether.run_id()}.own")
    child = await tether.start_child("middle", run_id=f"{tether.run_id()}.m")
    return await child.result()
