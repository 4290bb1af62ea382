"""Released means released: runs waiting on signals cost a worker process no memory,
and one signal wakes exactly the run it names.

The worker is a real ``tether worker`` process serving this module's ``app``; its
resident memory is read from ``/proc/PID/status``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import apsw
import psycopg
import pytest

import tether
from tests import CHECKOUT_PATH, forked
from tests.engine.helpers import client_app, wait_for
from tests.faults.procs import ROOT
from tether import App, _faults
from tether.errors import StoreUnavailable

pytestmark = [pytest.mark.faults]

#: Runs parked on a signal at once (``bench/waiting.py timers`` measures the worker's
#: memory with up to 100,000 runs waiting).
WAITING_RUNS = 5_000
#: Allowed growth of the worker's resident memory with all of them waiting, over its
#: warmed-up idle size: parking thousands of runs at once raises the allocator's high
#: water (5,000 runs: 2.9 MB on SQLite, 5.3 MB on PostgreSQL here), and a loaded machine
#: (more of them claimed at once) raises it further.
RSS_SLACK_KB = 12 * 1024
#: Allowed growth while the second half of them parks, after the first half did: the
#: same peak again, so what grows is what waiting runs keep (1.0-1.2 MB for 2,500 runs
#: here, on either store); a run's state kept after its release (its journal, its
#: context: several kB each) would show many times over.
RSS_SECOND_HALF_KB = 4 * 1024

app = App()


@app.step
async def prepare(i: int) -> int:
    return i


@app.workflow(queue="scale")
async def awaits_go(i: int) -> dict[str, Any]:
    """One journaled step, then a release until the signal ``go`` arrives."""
    prepared = await prepare(i)
    payload = await tether.wait_for_signal("go")
    return {"i": prepared, "payload": payload}


def rss_kb(pid: int) -> int:
    """The process's resident set size (VmRSS) in kB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


@pytest.fixture
def worker_proc(store_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One ``tether worker`` process for the ``scale`` queue, stopped by its PID."""
    args = [sys.executable, "-m", "tether", "worker", f"{__name__}:app", "--db", store_url,
            "--queue", "scale"]
    # A new interpreter, not a fork (tests/forked.py): the test measures this process's
    # memory, and a forked child's resident set starts with the fork server's.
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, PYTHONPATH=CHECKOUT_PATH),
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
async def client(store_url: str) -> AsyncIterator[App]:
    # Opened before any gather, so concurrent starts share one open.
    async with client_app(app, store_url) as own:
        yield own


async def start_many(client: App, ids: list[str], batch: int = 500, first: int = 0,
                     end: int | None = None) -> None:
    """Start the runs ``ids[first:end]`` (run ``i`` gets the input ``i``) through the
    public API, ``batch`` at a time (they share commits)."""
    end = len(ids) if end is None else end
    for lo in range(first, end, batch):
        await asyncio.gather(*(client.start(awaits_go, i, run_id=ids[i])
                               for i in range(lo, min(lo + batch, end))))


async def none_pending(client: App) -> bool:
    """No run is queued or running: every started run reached its wait (or ended)."""
    for status in ("queued", "running"):
        if await client.list_runs(status=status, limit=1):
            return False
    return True


async def status_counts(client: App, limit: int) -> dict[str, int]:
    counts = {}
    for status in ("queued", "running", "waiting", "completed", "failed", "cancelled",
                   "blocked"):
        counts[status] = len(await client.list_runs(status=status, limit=limit))
    return counts


def snapshot(store_url: str) -> dict[str, tuple[Any, ...]]:
    """Every stored column of every run with its journal rows, read straight from the
    store's tables in two queries, to prove later that nothing claimed or wrote into
    them (the API's reads would take one query per run)."""
    runs_sql = "SELECT * FROM {s}runs ORDER BY run_id"
    journal_sql = "SELECT run_id, kind, * FROM {s}journal ORDER BY run_id, position"
    if store_url.startswith("sqlite:"):
        conn = apsw.Connection(store_url.split("///", 1)[1], flags=apsw.SQLITE_OPEN_READONLY)
        try:
            runs = list(conn.execute(runs_sql.format(s="tether_")))
            journal = list(conn.execute(journal_sql.format(s="tether_")))
        finally:
            conn.close()
    else:
        with psycopg.connect(store_url) as pg:
            runs = pg.execute(runs_sql.format(s="tether.")).fetchall()
            journal = pg.execute(journal_sql.format(s="tether.")).fetchall()
    out: dict[str, tuple[Any, ...]] = {row[0]: (tuple(row), ()) for row in runs}
    for row in journal:
        run, rows = out[row[0]]
        out[row[0]] = (run, (*rows, tuple(row)))
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_five_thousand_waiting_runs_cost_no_worker_memory_and_one_signal_wakes_one(
    client: App, worker_proc: subprocess.Popen[bytes], store_url: str,
) -> None:
    """With 5,000 runs released on a signal, the worker's RSS stays within a few MB of
    its warmed-up idle size, and grows little while the second half of them parks; the
    CLI's signal to one run completes that run only."""
    # Warm up: the worker runs the whole path (claim, step, release, wake, finish).
    warm = [f"warm-{i}" for i in range(2)]
    await start_many(client, warm)
    await wait_for(lambda: none_pending(client), timeout=60, interval=0.05)
    for rid in warm:
        await client.signal(rid, "go", "warm")
    for rid in warm:
        assert (await client.handle(rid).result(timeout=30))["payload"] == "warm"
    await asyncio.sleep(1.0)  # let the worker settle into its idle loop
    idle_kb = rss_kb(worker_proc.pid)

    ids = [f"wait-{i:05d}" for i in range(WAITING_RUNS)]
    half = WAITING_RUNS // 2
    t0 = time.monotonic()
    await start_many(client, ids, end=half)
    await wait_for(lambda: none_pending(client), timeout=300, interval=0.2)
    await asyncio.sleep(1.0)
    half_kb = rss_kb(worker_proc.pid)
    await start_many(client, ids, first=half)
    await wait_for(lambda: none_pending(client), timeout=300, interval=0.2)
    parked_in = time.monotonic() - t0
    waiting = await client.list_runs(status="waiting", limit=WAITING_RUNS + 10)
    waiting_token = {r.run_id: r.fencing_token for r in waiting}
    assert len(waiting) == WAITING_RUNS, (
        f"after {parked_in:.1f} s: {await status_counts(client, WAITING_RUNS + 10)}")
    assert {r.waiting_for for r in waiting} == {"signal go"}
    await asyncio.sleep(1.0)
    waiting_kb = rss_kb(worker_proc.pid)
    assert worker_proc.poll() is None
    print(f"\n{WAITING_RUNS} runs parked in {parked_in:.1f} s; worker RSS idle {idle_kb} kB, "
          f"with half of them waiting {half_kb} kB, all {waiting_kb} kB")
    assert waiting_kb - idle_kb < RSS_SLACK_KB, (
        f"worker RSS grew from {idle_kb} kB idle to {waiting_kb} kB with "
        f"{WAITING_RUNS} runs released"
    )
    assert waiting_kb - half_kb < RSS_SECOND_HALF_KB, (
        f"worker RSS grew from {half_kb} kB with {half} runs released to {waiting_kb} kB "
        f"with {WAITING_RUNS}"
    )

    before = await asyncio.to_thread(snapshot, store_url)
    assert sorted(before) == sorted([*warm, *ids])
    assert all([row[1] for row in before[rid][1]] == ["step"] for rid in ids)
    chosen = ids[4321]
    out = forked.run(
        [sys.executable, "-m", "tether", "signal", chosen, "go", "--data", '{"by": "cli"}',
         "--db", store_url],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=CHECKOUT_PATH), capture_output=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()
    result = await client.handle(chosen).result(timeout=30)
    assert result == {"i": 4321, "payload": {"by": "cli"}}

    await asyncio.sleep(2 * 1.0)  # two of the worker's slow polls: any stray claim shows
    after = await asyncio.to_thread(snapshot, store_url)
    del after[chosen], before[chosen]
    woken = await client.store.run_get(chosen)
    assert woken is not None and woken.status == "completed"
    assert woken.fencing_token == waiting_token[chosen] + 1  # claimed once
    assert [e.kind for e in await client.store.journal_read(chosen)] == ["step", "signal"]
    changed = [rid for rid, snap in after.items() if snap != before[rid]]
    assert changed == [], f"{len(changed)} other runs were touched, e.g. {changed[:3]}"


async def test_a_store_failure_under_a_run_hands_it_back_instead_of_failing_it(
    store_url: str,
) -> None:
    """An engine write that fails transiently (here after its commit, as when the
    connection drops before the reply; on PostgreSQL the scale test above met deadlocks)
    ends the attempt, not the run: it is replayed and completes, and the step that
    committed is answered from the journal."""
    own = App(store_url)
    ran: list[int] = []

    @own.step
    async def once(i: int) -> int:
        ran.append(i)
        return i

    @own.workflow
    async def two_steps() -> int:
        return await once(1) + await once(2)

    def fail() -> None:
        raise StoreUnavailable("connection dropped before the commit's reply")

    _faults.arm("journal.after_commit", fail)
    try:
        async with own.worker():
            handle = await own.start(two_steps, run_id="under-fault")
            assert await handle.result(timeout=30) == 3
    finally:
        _faults.disarm_all()
        await own.close()
    assert ran == [1, 2]
