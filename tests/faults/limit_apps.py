"""A workflow for the queue-limit test with real worker processes.

Its one step appends ``<i> <start> <end>`` (wall-clock seconds) to the file named by
``TETHER_TEST_SIDE_FILE``, so the test can check how many steps overlapped in time.
"""

from __future__ import annotations

import asyncio
import os
import time

from tether import App

app = App()


@app.step
async def hold(i: int, seconds: float) -> int:
    start = time.time()
    await asyncio.sleep(seconds)
    end = time.time()
    with open(os.environ["TETHER_TEST_SIDE_FILE"], "a") as f:
        f.write(f"{i} {start!r} {end!r}\n")
        f.flush()
        os.fsync(f.fileno())
    return i


@app.workflow(queue="limited")
async def limited_job(i: int, seconds: float) -> int:
    return await hold(i, seconds)
