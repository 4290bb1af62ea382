"""SQLite on a disk that fills up, with real worker processes and a real file system: a
small tmpfs that this test mounts (root only; it skips otherwise) and a filler file
that takes every free byte until the test deletes it.

While the disk is full every write fails with "database or disk is full": the workers
keep the results of their steps in memory and retry (``RunContext.write_again``), and a
run's step is never executed again because of it. The chaos suite's disk scenario
(``tests/chaos/test_disk_full.py``) fills the disk for shorter than a lease; these
tests keep it full for longer, so every lease expires while nobody can write."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.chaos.diskfull import fill, missing_privilege, small_tmpfs
from tests.engine.helpers import journal_has, status_is, wait_for
from tests.faults.procs import Workers
from tether import App

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(300)]

LEASE = 5.0  # seconds; the disk stays full for longer


@pytest.fixture
def disk() -> Iterator[Path]:
    reason = missing_privilege()
    if reason:
        pytest.skip(f"disk full: {reason}")
    with small_tmpfs("16m") as mnt:
        yield mnt


@pytest.fixture
async def env(disk: Path, tmp_path: Path) -> AsyncIterator[tuple[App, Workers, Path]]:
    url = f"sqlite:///{disk}/t.db"
    app = App(url)
    workers = Workers(url, tmp_path / "side.log", tmp_path)
    try:
        yield app, workers, disk
    finally:
        workers.stop_all()
        await app.close()


def _log(workers: Workers, i: int) -> str:
    return (workers.log_dir / f"worker-{i}.log").read_text(errors="replace")


async def test_a_live_workers_run_is_not_taken_over_when_the_disk_returns(
        env: tuple[App, Workers, Path]) -> None:
    """Two workers on one file; the disk is full for three leases while worker A holds a
    run whose step has returned (its result waits in memory). When space returns,
    worker B's claim is the first write to go through (A is held for a moment, so the
    order is sure; in the wild it is a race that B won once in three tries with 60
    runs): every lease has expired, but B itself could not write either, so an expiry
    during its own outage says nothing about A. Before the fix B took the run over, and
    the step that A had executed ran again."""
    from tests.faults.apps import six_steps

    app, workers, disk = env
    a = workers.start(lease=LEASE)
    handle = await app.start(six_steps, 1.0, run_id="held")
    await wait_for(lambda: status_is(app, "held", "running"), timeout=30)
    b = workers.start(lease=LEASE)
    await wait_for(lambda: "serving queues" in _log(workers, 1), timeout=30)
    await wait_for(lambda: journal_has(app, "held", 1), timeout=30)

    ballast = disk / "ballast"
    fill(ballast)
    await asyncio.sleep(3 * LEASE)  # step 2 returns meanwhile; its result cannot be written
    assert workers.counts()["step 2"] == 1, workers.counts()
    a.send_signal(signal.SIGSTOP)
    try:
        os.unlink(ballast)
        # B's claims go through again (it says so: its first claim went through). A is
        # held a moment longer, well within the lease of grace B gives it: A renews once
        # it runs again, which a loaded machine delays (1.5 s held and a 4 s lease made
        # B take the run over once in a full parallel run of the suite).
        await wait_for(lambda: "store available again" in _log(workers, 1),
                       timeout=30)
        await asyncio.sleep(0.5)
    finally:
        a.send_signal(signal.SIGCONT)
    assert await handle.result(timeout=60) == [1, 4, 9, 16, 25, 36]
    counts = workers.counts()
    assert all(counts[f"step {i}"] == 1 for i in range(1, 7)), counts
    assert {pid for pid, _ in workers.executions()} == {a.pid}
    assert "database or disk is full" in _log(workers, 0)
    assert "taken over" not in _log(workers, 1)
    assert b.poll() is None and a.poll() is None



async def test_starts_on_a_full_disk_fail_with_one_line_and_write_nothing(
        env: tuple[App, Workers, Path]) -> None:
    """``App.start_many`` (one transaction) and ``tether start`` on a full disk: a
    StoreUnavailable saying the disk is full, exit 1 with one line, and no run of them
    exists once space is back (their ids start anew)."""
    import sys

    from tests import forked
    from tests.faults.apps import six_steps
    from tether import StoreUnavailable

    app, workers, disk = env
    await app.start(six_steps, 0.0, run_id="before")  # the store exists, its WAL is used
    ballast = disk / "ballast"
    fill(ballast)
    try:
        with pytest.raises(StoreUnavailable, match="database or disk is full"):
            await app.start_many(six_steps, [[0.0]] * 50, run_ids=[f"m{i}" for i in range(50)])
        cli = forked.run([sys.executable, "-m", "tether", "start", "six_steps", "--db",
                          workers.db, "--input", "[0.0]", "--id", "cli"],
                         capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(ballast)
    assert cli.returncode == 1, (cli.stdout, cli.stderr)
    # (Before it, a warning that no worker has registered the workflow yet: none runs.)
    last = cli.stderr.strip().splitlines()[-1]
    assert last.startswith("tether: error: ") and last.endswith("database or disk is full")
    assert "Traceback" not in cli.stderr, cli.stderr
    assert [r.run_id for r in await app.list_runs(limit=100)] == ["before"]
    handles = await app.start_many(six_steps, [[0.0]] * 3, run_ids=["m0", "m1", "cli"])
    workers.start()
    for h in handles:
        assert await h.result(timeout=60) == [1, 4, 9, 16, 25, 36]
