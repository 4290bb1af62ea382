"""Workflows for the PostgreSQL fault tests, run by real ``tether worker`` processes.

Every execution of ``work`` appends two lines to the file named by
``TETHER_TEST_SIDE_FILE``, each with one ``write(2)`` on an ``O_APPEND`` descriptor (so
lines from several processes never interleave, and what was written survives SIGKILL):

    start <run_id> <position> <pid> <fencing_token> <monotonic time> <execution id>
    end   <run_id> <position> <pid> <fencing_token> <monotonic time> <execution id>

``CLOCK_MONOTONIC`` is one clock for every process on the host, so the test can order
executions of different workers in time. The fencing token is the one of the lease the
executing worker holds; the journal stores the token of the writer of each entry.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import tether
from tether import App
from tether.ext import current_run

app = App()


def _record(what: str, position: int, exec_id: str) -> str:
    run = current_run()
    token = run.fencing_token if run is not None else -1
    line = (f"{what} {tether.run_id()} {position} {os.getpid()} {token} "
            f"{time.monotonic():.6f} {exec_id}\n")
    fd = os.open(os.environ["TETHER_TEST_SIDE_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return f"{os.getpid()}:{token}"


@app.step
async def work(position: int, delay: float) -> str:
    """A side effect, counted; returns who did it (``pid:token``)."""
    exec_id = uuid.uuid4().hex
    _record("start", position, exec_id)
    await asyncio.sleep(delay)
    return _record("end", position, exec_id)


@app.workflow(queue="pg")
async def chain(steps: int, delay: float) -> int:
    """``steps`` sequential side effects; the result says how many were recorded."""
    done = 0
    for i in range(steps):
        await work(i, delay)
        done += 1
    return done


@app.workflow(queue="pg")
async def slow_chain(delays: list[float]) -> list[str]:
    """One step per delay; returns who recorded each step."""
    return [await work(i, d) for i, d in enumerate(delays)]
