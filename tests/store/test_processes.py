"""Shared state across real processes, on every backend: a token bucket several
processes take from, and live events one process publishes for another."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import forked
from tether.store import Store

from .proc_client import BIG, event

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def spawn(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return forked.Popen([sys.executable, "-m", "tests.store.proc_client", *args],
                        cwd=ROOT, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)


async def finish(proc: subprocess.Popen[str]) -> str:
    out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 0, err
    return out


async def test_processes_taking_from_one_bucket_never_exceed_the_limit(store: Store) -> None:
    """Four processes take from one bucket of 25 per hour as fast as they can, on the
    wall clock: together they are granted 25 (a take's refill over the test's seconds is
    under one token), never more."""
    procs = [spawn("rate", store.url, "rpm", "25", "3600", "40") for _ in range(4)]
    granted = [int(await finish(p)) for p in procs]
    assert sum(granted) == 25, granted


async def test_events_published_by_another_process_arrive_in_order(
        store: Store, tmp_path: Path) -> None:
    """A subscriber in this process receives, in order, what another process publishes
    after the subscription is in place (probes come first until it says it is ready)."""
    ready = tmp_path / "ready"
    proc = spawn("publish", store.url, "run-1", str(ready), "200")
    got: list[str] = []
    try:
        events = store.run_events("run-1")
        async with contextlib.aclosing(events):
            while True:
                data = await asyncio.wait_for(anext(events), 30)
                if data == "probe" and not got:
                    ready.touch()
                    continue
                got.append(data)
                if data == BIG:
                    break
    finally:
        await finish(proc)
    assert got == [event(i) for i in range(200)] + [BIG]
