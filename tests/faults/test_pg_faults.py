"""Faults with real worker processes on the real PostgreSQL: SIGKILL, a frozen (zombie)
worker, an unreachable database at start, and the query rate of idle workers.

Each test has a database of its own (``pg_url``) and ``tether worker`` subprocesses
running ``tests/faults/pg_apps.py``, whose steps log every execution to a side file
(see there). The server restart test is in ``test_pg_restart.py``: it disturbs every
other user of the server.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests.faults.pg_cluster import (
    PgWorkers,
    executions,
    group_by_step,
    journal_tokens,
    no_overlap,
    wait_statuses,
)
from tests.store.rtproxy import RoundTripProxy
from tether import App

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.postgres]


@pytest.fixture
async def env(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[App, PgWorkers]]:
    # A client App of its own per test: the module's App belongs to the worker processes,
    # and App.close() is final.
    app = App(pg_url)
    workers = PgWorkers(pg_url, tmp_path / "side.log", tmp_path)
    try:
        yield app, workers
    finally:
        workers.stop_all()
        await app.close()


async def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


async def test_sigkill_one_of_three_workers_300_runs(env: tuple[App, PgWorkers],
                                                     pg_url: str) -> None:
    """300 runs of 10 steps on 3 workers; one is SIGKILLed mid-way. Every run completes;
    no committed step runs again; at most one step per run the dead worker held runs
    twice; and no run was ever executed under two leases at once."""
    from tests.faults.pg_apps import chain

    app, workers = env
    procs = [workers.start(concurrency=20) for _ in range(3)]
    workers.wait_serving(procs)
    for i in range(300):
        await app.start(chain, 10, 0.1, run_id=f"r{i:03}")
    await asyncio.to_thread(wait_statuses, pg_url, "completed", 60, 60)
    victim = procs[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    killed_at = time.monotonic()

    statuses = await asyncio.to_thread(wait_statuses, pg_url, "completed", 300, 120)
    assert statuses == {"completed": 300}
    for p in procs[1:]:
        assert p.poll() is None, workers.log(p)
    for i in (0, 150, 299):
        assert await app.handle(f"r{i:03}").result(timeout=5) == 10

    execs = executions(workers.side_file)
    journal = journal_tokens(pg_url)
    assert len(journal) == 3000 and {s for s, _ in journal.values()} == {"ok"}
    counts = Counter((e.run_id, e.position) for e in execs)
    assert set(counts) == set(journal)  # every step ran, nothing else did

    # The runs the killed worker held when it died: it executed something in them and
    # another worker finished them.
    victim_token = {e.run_id: e.token for e in execs if e.pid == victim.pid}
    held = {e.run_id for e in execs if e.run_id in victim_token and e.pid != victim.pid}
    assert held, "the killed worker held no run: the test proved nothing"

    twice = {k: n for k, n in counts.items() if n > 1}
    assert all(n == 2 for n in twice.values()), twice
    per_run = Counter(run_id for run_id, _ in twice)
    assert set(per_run) <= held and max(per_run.values(), default=0) <= 1, per_run
    by_step = group_by_step(execs)
    for (run_id, pos), (_, token) in journal.items():
        ran = by_step[(run_id, pos)]
        # The entry was written by the lease of the last execution; an earlier one
        # can only be the killed worker's, cut before its result committed.
        assert ran[-1].token == token, (run_id, pos, ran, token)
        for e in ran[:-1]:
            assert e.pid == victim.pid and e.token != token, (run_id, pos, ran)
        if victim_token.get(run_id) == token:
            assert len(ran) == 1, f"{run_id}:{pos} was committed and ran again: {ran}"
    no_overlap(execs, killed={victim.pid: killed_at})
    print(f"\nkilled worker held {len(held)} runs; {len(twice)} steps ran twice")


async def test_zombie_worker_write_is_rejected_by_fencing(env: tuple[App, PgWorkers],
                                                          pg_url: str) -> None:
    """A worker frozen with SIGSTOP past its 2 s lease loses its run to another worker,
    which finishes it; resumed with SIGCONT, the frozen worker's step completes and its
    journal write is refused by fencing; the journal keeps the new owner's entries. The
    frozen worker says the loss in one WARNING (where, who holds the run, the tokens, the
    step whose result was refused), and the history shows its attempt ``superseded``."""
    from tests.faults.pg_apps import slow_chain

    app, workers = env
    zombie = workers.start(lease=2.0)
    workers.wait_serving([zombie])
    handle = await app.start(slow_chain, [0.05, 1.5, 0.2, 0.2, 0.2], run_id="z")
    side = workers.side_file

    def started(pos: int, pid: int) -> bool:
        return any(e.position == pos and e.pid == pid for e in executions(side))

    await _wait(lambda: started(1, zombie.pid), 30, "the first worker never reached step 1")
    zombie.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    heir = workers.start(lease=2.0)
    result = await handle.result(timeout=60)
    assert time.monotonic() - frozen_at > 2.0  # the takeover waited for the lease
    zombie.send_signal(signal.SIGCONT)

    def zombie_lost() -> bool:
        return "lease lost" in workers.log(zombie)

    await _wait(zombie_lost, 30, "the zombie did not say its lease was lost:\n"
                + workers.log(zombie))
    await asyncio.sleep(0.5)
    log = workers.log(zombie)
    # One WARNING for the lost run (it had three: the heartbeat's, the store's refusal,
    # the run's end), with where the run stood, who holds it, both tokens, and the step
    # whose result was refused; and it carries the run's fields (a JSON log pipeline's
    # run_id filter finds it).
    warnings = [ln for ln in log.splitlines() if " WARNING " in ln]
    assert len(warnings) == 1, log
    (lost,) = warnings
    zombie_id = lost.rsplit("worker=", 1)[1].rstrip("]")
    assert lost.endswith(f" [run=z position=1 worker={zombie_id}]"), lost
    assert ("run z: lease lost at position 1 (now completed, owner none, fencing token 2; "
            "this worker's fencing token 1 is stale); step 'work' at position 1 (attempt ") \
        in lost, lost
    assert "ran here but its result was refused (attempt superseded" in lost, lost
    assert zombie.poll() is None and heir.poll() is None  # both still serve

    execs = executions(side)
    step1 = [e for e in execs if e.position == 1]
    assert [(e.pid, e.token) for e in step1] == [(zombie.pid, 1), (heir.pid, 2)]
    assert all(e.end is not None for e in step1)  # the zombie's step did finish
    assert step1[0].end is not None and step1[0].end > step1[1].end  # ...late
    counts = Counter(e.position for e in execs)
    assert counts == {0: 1, 1: 2, 2: 1, 3: 1, 4: 1}, counts

    info = await app.get_run("z")
    assert info.status.value == "completed"
    assert result == [f"{zombie.pid}:1"] + [f"{heir.pid}:2"] * 4
    assert [e["result"] for e in info.journal] == result
    tokens = journal_tokens(pg_url)
    assert [tokens[("z", p)] for p in range(5)] == [("ok", 1)] + [("ok", 2)] * 4
    no_overlap([e for e in execs if e.pid != zombie.pid or e.position == 0], killed={})
    # The history: the zombie's attempt at position 1 ran (its side effect happened)
    # but its result was refused; the heir's is the one that stands.
    at1 = [(a["worker_id"] == zombie_id, a["status"]) for a in info.attempts
           if a["position"] == 1]
    assert at1 == [(True, "superseded"), (False, "ok")], info.attempts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proxy_to(url: str) -> RoundTripProxy:
    """A round-trip proxy in front of the server of ``url``."""
    parts = urlsplit(url)
    return RoundTripProxy(parts.hostname or "127.0.0.1", parts.port or 5432)


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


class _ProxyOnPort(RoundTripProxy):
    """The round-trip proxy on a port chosen in advance (the database "comes up")."""

    def __init__(self, url: str, port: int) -> None:
        parts = urlsplit(url)
        super().__init__(parts.hostname or "127.0.0.1", parts.port or 5432)
        self._want = port

    async def start(self) -> _ProxyOnPort:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self._want)
        self.port = self._want
        return self


async def test_unreachable_database_at_start_worker_retries_then_serves(
    env: tuple[App, PgWorkers], pg_url: str,
) -> None:
    """A worker started while nothing listens on the database's port logs a one-line
    error naming host and port, keeps retrying, and serves once the port answers."""
    from tests.faults.pg_apps import chain

    app, workers = env
    port = _free_port()
    via_port = _with_port(pg_url, port)
    proc = workers.start(db=via_port)

    def retried(n: int) -> bool:
        return workers.log(proc).count(f"127.0.0.1:{port} is unavailable") >= n

    await _wait(lambda: retried(3), 30, "no retries logged:\n" + workers.log(proc))
    assert proc.poll() is None  # it did not crash
    lines = [ln for ln in workers.log(proc).splitlines() if str(port) in ln]
    assert all("Connection refused" in ln and "retrying in" in ln for ln in lines), lines
    assert "(attempt 3)" in workers.log(proc)
    assert "Traceback" not in workers.log(proc)

    proxy = await _ProxyOnPort(pg_url, port).start()
    try:
        handle = await app.start(chain, 2, 0.0, run_id="late")
        await _wait(lambda: "serving queues" in workers.log(proc), 30,
                    "never connected:\n" + workers.log(proc))
        assert await handle.result(timeout=30) == 2
        assert "store reachable after" in workers.log(proc)
        assert proxy.connections > 0  # the worker really went through the late port
    finally:  # in a thread: the proxy in this loop must serve the workers' goodbyes
        await asyncio.to_thread(workers.stop_all)
        await proxy.close()


@pytest.mark.serial  # its 20 workers hold ~60 of the server's 100 connections for ~40 s
async def test_twenty_idle_workers_make_few_queries(env: tuple[App, PgWorkers],
                                                    pg_url: str) -> None:
    """20 idle worker processes on one database, ~20 s: the round trips they make (every
    query, heartbeat, poll and listener check, counted on the wire) stay under 20/s in
    total. bench/cluster.py --idle reports the figure.

    Nothing here needs a quiet machine: the window opens once start-up is over (a whole
    second below the bound), a starved worker only makes its trips later, and the
    server's view is read live: every session on the database is one the proxy
    carries, so no traffic went around the count. (The database's transaction counters
    are no witness: a busy backend reports them up to 10 s late, PostgreSQL's
    ``PGSTAT_IDLE_INTERVAL``, so start-up's commits land in any window.)"""
    _, workers = env
    proxy = await _proxy_to(pg_url).start()
    try:
        procs = [workers.start(db=proxy.url(pg_url), concurrency=10) for _ in range(20)]
        await asyncio.to_thread(workers.wait_serving, procs, 120)
        await _quiet(proxy, below=20, timeout=120)  # past start-up: claims, LISTEN
        proxy.reset()
        t0 = time.monotonic()
        await asyncio.sleep(20)  # > the idle heartbeat (15 s) and two notified polls
        trips = proxy.round_trips
        elapsed = time.monotonic() - t0
        carried, sessions = proxy.open, await asyncio.to_thread(_sessions, pg_url)
    finally:  # in a thread: the proxy in this loop must serve the workers' goodbyes
        await asyncio.to_thread(workers.stop_all)
        await proxy.close()
    rate = trips / elapsed
    print(f"\n20 idle workers: {rate:.2f} round trips/s over {elapsed:.1f} s; "
          f"{sessions} sessions on the database, {carried} through the proxy")
    assert all(p.returncode == 0 for p in procs)
    assert rate < 20, f"{rate:.1f} round trips/s from 20 idle workers"
    assert sessions == carried >= 20, f"{sessions} sessions, {carried} through the proxy"


async def _quiet(proxy: RoundTripProxy, below: int, timeout: float) -> None:
    """Wait for a whole second in which the proxy carried fewer than ``below`` round
    trips."""
    deadline = time.monotonic() + timeout
    while True:
        before = proxy.round_trips
        await asyncio.sleep(1.0)
        if proxy.round_trips - before < below:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {proxy.round_trips - before} round trips a second")


def _sessions(url: str) -> int:
    """Sessions on ``url``'s database, this one left out."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND pid <> pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])
