"""A queue concurrency limit holds across real worker processes.

Four ``tether worker`` processes serve a queue limited to 2; every step records its
wall-clock (start, end) in a side file. Steps run inside their run's lease, and a run
is held from its claim to its end, so at no instant may more than 2 steps overlap.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import CHECKOUT_PATH, forked
from tests.engine.helpers import wait_for
from tests.faults.procs import ROOT
from tether import App

pytestmark = [pytest.mark.faults, pytest.mark.slow]

LIMIT = 2
WORKERS = 4
RUNS = 14
STEP_SECONDS = 0.3


@pytest.fixture
def worker_procs(store_url: str, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def start_worker(url: str, side: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TETHER_TEST_SIDE_FILE=str(side), PYTHONPATH=CHECKOUT_PATH)
    with open(log, "wb") as out:
        return forked.Popen(
            [sys.executable, "-m", "tether", "worker", "tests.faults.limit_apps:app",
             "--db", url, "--queue", "limited", "--concurrency", "20"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant
    do not overlap)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    return peak


async def test_four_workers_never_run_more_than_the_limit_at_once(
        store_url: str, tmp_path: Path, worker_procs: list[subprocess.Popen[bytes]]) -> None:
    from tests.faults.limit_apps import limited_job

    side = tmp_path / "steps.log"
    app = App(store_url)  # a client of its own: App.close() is final
    try:
        await app.set_queue_limit("limited", LIMIT)
        assert await app.queue_limits() == {"limited": LIMIT}
        handles = [await app.start(limited_job, i, STEP_SECONDS, run_id=f"job-{i:02d}")
                   for i in range(RUNS)]
        for n in range(WORKERS):
            worker_procs.append(start_worker(store_url, side, tmp_path / f"worker-{n}.log"))
        results = [await h.result(timeout=120) for h in handles]
    finally:
        await app.close()
    assert results == list(range(RUNS))
    await wait_for(lambda: _lines(side) >= RUNS, timeout=10)
    rows = [line.split() for line in side.read_text().splitlines()]
    assert sorted(int(r[0]) for r in rows) == list(range(RUNS)), "each step ran once"
    intervals = [(float(r[1]), float(r[2])) for r in rows]
    assert max_overlap(intervals) == LIMIT, intervals


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0
