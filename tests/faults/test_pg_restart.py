"""Restart the PostgreSQL server under load: workers reconnect and every run completes.

WARNING: this module restarts the shared local cluster with ``pg_ctlcluster ...
restart``. Every other client of the server (other tests running at the same time
included) loses its connections for the second or two the restart takes. It is marked
``slow``, ``faults``, ``postgres`` and ``serial`` (``scripts/test.sh`` runs it alone, after
the parallel part); deselect it with ``-m "not faults"``. Whatever
happens, the server is running again when the test ends (the fixture starts it).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.faults.pg_cluster import (
    PgWorkers,
    checkpoint,
    executions,
    group_by_step,
    journal_tokens,
    no_overlap,
    pg_cluster_version,
    pg_ctl,
    pg_log_tail,
    pg_ready,
    wait_statuses,
)
from tether import App

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.postgres, pytest.mark.serial]


@pytest.fixture
def cluster(pg_url: str) -> Iterator[str]:
    """The local cluster's version, checkpointed (see ``checkpoint``); on teardown, the
    server is up (started if not). It asks for ``pg_url`` so that it is set up after the
    test's database and torn down before it: the database is dropped on a running
    server."""
    version = pg_cluster_version()
    if version is None:
        reason = "no local cluster to restart (pg_ctlcluster and /etc/postgresql/*/main)"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    took = checkpoint(pg_url)
    print(f"\ncheckpoint before the test took {took:.1f} s")
    try:
        yield version
    finally:
        if not pg_ready(5):
            pg_ctl(version, "start")
            assert pg_ready(60), ("PostgreSQL did not come back after the restart test; the "
                                  f"server log ends with:\n{pg_log_tail(version)}")


@pytest.fixture
async def env(cluster: str, pg_url: str,
              tmp_path: Path) -> AsyncIterator[tuple[App, PgWorkers]]:
    # A client App of its own per test: the module's App belongs to the worker processes,
    # and App.close() is final.
    app = App(pg_url)
    workers = PgWorkers(pg_url, tmp_path / "side.log", tmp_path)
    try:
        yield app, workers
    finally:
        workers.stop_all()
        await app.close()


async def test_server_restart_with_100_runs_in_flight(env: tuple[App, PgWorkers],
                                                      cluster: str, pg_url: str) -> None:
    """100 runs of 30 short steps in flight on two workers (about 1,000 journal writes a
    second, so the restart cuts some off); the server restarts. The workers
    reconnect by themselves and every run completes; no entry is lost or written twice,
    and the only steps that ran twice are ones whose record the restart cut off (at
    most one per run)."""
    from tests.faults.pg_apps import chain

    app, workers = env
    procs = [workers.start(concurrency=60) for _ in range(2)]
    workers.wait_serving(procs)
    for i in range(100):
        await app.start(chain, 30, 0.1, run_id=f"r{i:03}")
    await _wait(lambda: sum(e.end is not None for e in executions(workers.side_file)) >= 300,
                30)
    ended_before = sum(e.end is not None for e in executions(workers.side_file))
    assert ended_before < 2000, "most steps ended before the restart began"
    t0 = time.monotonic()
    out = await asyncio.to_thread(pg_ctl, cluster, "restart")
    assert out.returncode == 0, out.stderr
    assert await asyncio.to_thread(pg_ready, 30)
    down_for = time.monotonic() - t0

    statuses = await asyncio.to_thread(wait_statuses, pg_url, "completed", 100, 120)
    assert statuses == {"completed": 100}
    for p in procs:
        assert p.poll() is None, workers.log(p)  # reconnected, did not crash
    logs = "".join(workers.log(p) for p in procs)
    assert "listener reconnected" in logs, logs
    assert "Traceback" not in logs, logs

    journal = journal_tokens(pg_url)
    assert len(journal) == 3000 and {s for s, _ in journal.values()} == {"ok"}
    execs = executions(workers.side_file)
    counts = Counter((e.run_id, e.position) for e in execs)
    assert set(counts) == set(journal)  # nothing lost, nothing extra
    twice = {k: n for k, n in counts.items() if n > 1}
    assert all(n == 2 for n in twice.values()), twice
    assert max(Counter(r for r, _ in twice).values(), default=0) <= 1, twice
    by_step = group_by_step(execs)
    for (run_id, pos), (_, token) in journal.items():
        ran = by_step[(run_id, pos)]
        assert ran[-1].token == token, (run_id, pos, ran, token)  # the last one counted
        assert all(e.token != token for e in ran[:-1]), (run_id, pos, ran)
    no_overlap(execs, killed={})
    for i in (0, 99):
        assert await app.handle(f"r{i:03}").result(timeout=10) == 30
    print(f"\nrestart took {down_for:.1f} s; {len(twice)} steps ran twice "
          f"(their record was cut off by the restart)")


async def test_an_outage_longer_than_the_lease_counts_no_crash(
        env: tuple[App, PgWorkers], cluster: str, pg_url: str) -> None:
    """The server stops for longer than a lease (5 s) under a worker with 20 runs in
    flight, then starts again. The worker's leases expired meanwhile, and it claims its
    runs back itself: it did not die, so no crash is counted against them. With
    ``--max-crashes 1`` a takeover counted as a crash would fail each run at once (it did,
    before: every run took "crash 1 of 5" from a 30 s outage)."""
    from tests.faults.pg_apps import chain

    app, workers = env
    proc = workers.start(concurrency=20, extra=("--max-crashes", "1"))
    workers.wait_serving([proc])
    for i in range(20):
        await app.start(chain, 40, 0.1, run_id=f"o{i:02}")
    await _wait(lambda: sum(e.end is not None for e in executions(workers.side_file)) >= 40,
                30)
    await _stopped_for(cluster, 8.0)

    statuses = await asyncio.to_thread(wait_statuses, pg_url, "completed", 20, 120)
    assert statuses == {"completed": 20}, statuses
    assert proc.poll() is None, workers.log(proc)
    log = workers.log(proc)
    assert "taken over from a worker" not in log and "Traceback" not in log, log
    import psycopg

    with psycopg.connect(pg_url) as conn:
        crashes = conn.execute("SELECT sum(crashes) FROM tether.runs").fetchone()
    assert crashes == (0,), crashes
    # Whether the worker claimed its expired leases back (fencing tokens past 1) or its
    # heartbeat, waiting in the pool through the outage, renewed them first is a race
    # of the two calls after the restart (the claim won 3 runs out of 4 here); either
    # way no crash is counted.
    taken_back = max(token for _, token in journal_tokens(pg_url).values()) > 1
    print(f"\nthe worker claimed its runs back: {taken_back}")


async def _stopped_for(cluster: str, seconds: float) -> None:
    """Stop the server, wait ``seconds`` (longer than a lease), start it, and wait until
    it accepts connections."""
    out = await asyncio.to_thread(pg_ctl, cluster, "stop")
    assert out.returncode == 0, out.stderr
    await asyncio.sleep(seconds)
    out = await asyncio.to_thread(pg_ctl, cluster, "start")
    assert out.returncode == 0, out.stderr
    assert await asyncio.to_thread(pg_ready, 30)


async def _wait(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_an_outage_longer_than_the_lease_leaves_a_live_workers_runs_to_it(
        env: tuple[App, PgWorkers], cluster: str, pg_url: str) -> None:
    """Two workers; the server stops for longer than a lease while worker A holds 10 runs
    whose steps of 2 s are in flight, and worker B holds none. When the server is back,
    every lease has expired, A's live ones included. B met the outage too: none of its
    calls failed (on PostgreSQL they wait for the server), but its store lost the
    listening connection (``Store.outages``), so it leaves them to A for a lease
    (``run_claim``'s ``takeover_before``), and A, alive, renews them and records its
    steps' results. No step runs twice and B takes nothing over. Before, B took all 10
    over the moment the server was back and ran their steps again (4 runs of the test
    out of 5)."""
    from tests.faults.pg_apps import slow_chain

    app, workers = env
    a = workers.start(concurrency=20)
    workers.wait_serving([a])
    for i in range(10):
        await app.start(slow_chain, [0.05, 2.0, 0.05], run_id=f"h{i:02}")
    await _wait(lambda: sum(e.position == 1 for e in executions(workers.side_file)) >= 10,
                30)
    b = workers.start(concurrency=20)
    workers.wait_serving([b])
    await _stopped_for(cluster, 8.0)

    statuses = await asyncio.to_thread(wait_statuses, pg_url, "completed", 10, 120)
    assert statuses == {"completed": 10}, statuses
    twice = {key: [e.pid for e in execs]
             for key, execs in group_by_step(executions(workers.side_file)).items()
             if len(execs) > 1}
    assert twice == {}, (twice, workers.log(b))
    assert "taken over from a worker" not in workers.log(b), workers.log(b)
    assert a.poll() is None and b.poll() is None
