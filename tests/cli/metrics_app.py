"""Workflows for the worker ``/metrics`` tests (``tests.cli.metrics_app:app``): a step
that fails once, one postponed once, one held at a gate file (for a takeover), and one
that ends its worker's process the first time. The
"once" is kept in files under ``TETHER_TEST_MARKS``, so it holds across processes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import tether
from tether import RetryPolicy
from tether.errors import Postpone

app = tether.App()


def _first_time(name: str) -> bool:
    """True the first time ``name`` is asked for (a mark file is made then)."""
    mark = Path(os.environ["TETHER_TEST_MARKS"]) / name
    try:
        mark.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


@app.step(retry=RetryPolicy(max_attempts=3, initial_interval=0.05))
async def flaky(tag: str) -> str:
    if _first_time(f"flaky-{tag}"):
        raise ValueError("fails once")
    return tag


@app.step
async def busy(tag: str) -> str:
    if _first_time(f"busy-{tag}"):
        raise Postpone(0.05, "busy once")
    return tag


@app.step
async def gated(tag: str) -> str:
    gate = Path(os.environ["TETHER_TEST_MARKS"]) / "gate"
    while not gate.exists():
        await asyncio.sleep(0.05)
    return tag


@app.workflow
async def fails_once(tag: str) -> str:
    return await flaky(tag)


@app.workflow
async def postponed_once(tag: str) -> str:
    return await busy(tag)


@app.workflow
async def held(tag: str) -> str:
    return await gated(tag)


@app.workflow
async def breaks(tag: str) -> str:
    raise RuntimeError(f"broken {tag}")


@app.step
async def deadly(tag: str) -> str:
    if _first_time(f"deadly-{tag}"):
        os._exit(3)  # (the worker process dies in the step, as a segfault would end it)
    return tag


@app.workflow
async def kills_its_worker(tag: str) -> str:
    return await deadly(tag)
