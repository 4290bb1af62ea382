"""Workflows the lifecycle tests run in real worker processes.

Each step that really runs appends ``<pid> <what>`` to ``TETHER_TEST_SIDE_FILE``.
``TETHER_TEST_VERSION`` sets the app's code version; ``TETHER_TEST_SCHEDULE=1``
declares a schedule ticking every second. ``TETHER_TEST_CRASH_BACKOFF`` sets the
worker's first back-off for a run whose workers died running it (production: 1 s,
doubling), so a test of the crash bound does not wait out the production back-offs.
"""

from __future__ import annotations

import asyncio
import os
import time

import tether
from tether import App
from tether.encryption import AesGcm

if os.environ.get("TETHER_TEST_CRASH_BACKOFF"):
    from tether.worker import _worker

    _worker.CRASH_BACKOFF = float(os.environ["TETHER_TEST_CRASH_BACKOFF"])

app = App(version=os.environ.get("TETHER_TEST_VERSION") or None,
          payload_hook=AesGcm.from_env() if os.environ.get("TETHER_PAYLOAD_KEYS") else None)


def side(what: str, *, sync: bool = True) -> None:
    """``sync=False``: no fsync (a worker that exits or is killed loses nothing already
    written; only a machine's crash would)."""
    with open(os.environ["TETHER_TEST_SIDE_FILE"], "a") as f:
        f.write(f"{os.getpid()} {what}\n")
        f.flush()
        if sync:
            os.fsync(f.fileno())


@app.step
async def slow(seconds: float) -> str:
    side("start slow")
    await asyncio.sleep(seconds)
    side("end slow")
    return "slow done"


@app.step
async def quick() -> str:
    side("quick")
    return "quick done"


@app.workflow
async def deploy(seconds: float) -> list[str]:
    return [await slow(seconds), await quick()]


@app.step
async def link(i: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    side(f"link {tether.step_key()}", sync=False)
    return i


@app.workflow
async def chain(links: int, seconds: float) -> int:
    """``links`` steps of ``seconds`` each, one after the other."""
    total = 0
    for i in range(links):
        total += await link(i, seconds)
    return total


@app.step
def hang() -> None:
    side("hang")
    time.sleep(600)


@app.step
def doze(seconds: float) -> str:
    """A plain-def step (run in the executor's thread) that returns after ``seconds``."""
    side("doze start")
    time.sleep(seconds)
    side("doze end")
    return "dozed"


@app.workflow
async def dozing(seconds: float) -> list[str]:
    return [await doze(seconds), await quick()]


@app.workflow
async def hung() -> None:
    await hang()


@app.step
async def mark(what: str) -> str:
    side(f"{app.version} {tether.run_id()} {what}")
    return what


@app.workflow
async def versioned() -> str:
    await mark("first")
    await tether.wait_for_signal("go")
    return await mark("second")


@app.workflow
async def tick() -> str:
    return await mark("tick")


if os.environ.get("TETHER_TEST_SCHEDULE") == "1":
    app.schedule(tick, cron="* * * * * *", name="every-second", catchup="all",
                 catchup_max=30, overlap="allow")


@app.step
async def wait_forever() -> None:
    side("waiting forever")
    await asyncio.sleep(3600)


@app.workflow
async def stuck() -> str:
    try:
        await wait_forever()
    except tether.Cancelled:
        side("cancelled")
        raise
    return "not reached"


@app.step
def hang_once() -> str:
    """Hangs (a thread that never returns) the first time only."""
    path = os.environ["TETHER_TEST_SIDE_FILE"]
    first = not os.path.exists(path) or "hang once" not in open(path).read()
    side("hang once")
    if first:
        time.sleep(600)
    return "done"


@app.workflow
async def hung_once() -> str:
    return await hang_once()


@app.step
def die() -> None:
    """Kills the worker process that executes it, as a segfault would."""
    side("die")
    os._exit(1)


@app.workflow
async def poison() -> None:
    await quick()
    await die()
