"""Helpers for the PostgreSQL fault tests: worker processes, the side log, the journal.

Workers are real ``python -m tether worker tests.faults.pg_apps:app`` processes, each
with its own log file, ended by their PID (``stop_all`` also resumes stopped ones).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests import CHECKOUT_PATH, forked

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.faults.pg_apps:app"


class PgWorkers:
    """Starts ``tether worker`` processes against one store and cleans them up."""

    def __init__(self, db: str, side_file: Path, log_dir: Path) -> None:
        self.db = db
        self.side_file = side_file
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def start(self, *, lease: float = 5.0, concurrency: int = 50, db: str | None = None,
              app: str = APP, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "tether", "worker", app, "--db", db or self.db,
                "--lease", str(lease), "--concurrency", str(concurrency), *extra]
        env = dict(os.environ, TETHER_TEST_SIDE_FILE=str(self.side_file),
                   PYTHONPATH=CHECKOUT_PATH)
        log_path = self.log_dir / f"worker-{len(self.procs)}.log"
        with open(log_path, "wb") as log:
            proc = forked.Popen(args, cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.logs[proc.pid] = log_path
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[proc.pid].read_text(errors="replace")

    def wait_serving(self, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
        """Wait until each process logged that it serves its queues."""
        deadline = time.monotonic() + timeout
        for p in procs:
            while "serving queues" not in self.log(p):
                if p.poll() is not None:
                    raise AssertionError(f"worker {p.pid} exited {p.returncode}:\n{self.log(p)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker {p.pid} not serving:\n{self.log(p)}")
                time.sleep(0.05)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGCONT)
                    p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@dataclass(frozen=True, slots=True)
class Execution:
    """One execution of a step, from the side log (``end`` is None if it never ended)."""

    run_id: str
    position: int
    pid: int
    token: int
    start: float
    end: float | None


def executions(side_file: Path) -> list[Execution]:
    """Pair the side log's start and end lines by execution id, in order of start."""
    if not side_file.exists():
        return []
    starts: dict[str, tuple[str, int, int, int, float]] = {}
    ends: dict[str, float] = {}
    # Workers append while a test polls: a line another process is writing can be seen
    # in part (the file grows as the write's bytes are copied), so only lines that end
    # in a newline are read.
    complete = side_file.read_text().split("\n")[:-1]
    for line in complete:
        what, run_id, pos, pid, token, t, exec_id = line.split()
        if what == "start":
            starts[exec_id] = (run_id, int(pos), int(pid), int(token), float(t))
        else:
            ends[exec_id] = float(t)
    assert set(ends) <= set(starts), "an end without a start"
    return [Execution(*s, end=ends.get(k)) for k, s in
            sorted(starts.items(), key=lambda kv: kv[1][4])]


def group_by_step(execs: list[Execution]) -> dict[tuple[str, int], list[Execution]]:
    """(run_id, position) -> its executions, in order of start."""
    out: dict[tuple[str, int], list[Execution]] = {}
    for e in execs:
        out.setdefault((e.run_id, e.position), []).append(e)
    return out


def journal_tokens(db: str, schema: str = "tether") -> dict[tuple[str, int], tuple[str, int]]:
    """(run_id, position) -> (status, fencing token of the writer) for every entry."""
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            f"SELECT run_id, position, status, fencing_token FROM {schema}.journal").fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def run_statuses(db: str, schema: str = "tether") -> Counter[str]:
    with psycopg.connect(db, connect_timeout=3) as conn:
        rows = conn.execute(
            f"SELECT status, count(*) FROM {schema}.runs GROUP BY status").fetchall()
    return Counter({r[0]: r[1] for r in rows})


def wait_statuses(db: str, want: str, n: int, timeout: float) -> Counter[str]:
    """Poll (reconnecting each time, so it survives a server restart) until ``n`` runs
    have status ``want``; returns the last counts."""
    deadline = time.monotonic() + timeout
    last: Counter[str] = Counter()
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.OperationalError):
            last = run_statuses(db)
            if last[want] >= n:
                return last
        time.sleep(0.25)
    raise TimeoutError(f"{n} runs not {want} within {timeout} s: {dict(last)}")


def no_overlap(execs: list[Execution], killed: dict[int, float]) -> None:
    """Prove that no run was executed under two leases at once.

    For each run, the executions under one fencing token form an interval (first start
    to last end; an execution cut by SIGKILL ends at the kill time). Each token must
    belong to one process, and the intervals of a run's tokens, in token order, must
    not overlap.
    """
    by_run: dict[str, dict[int, list[Execution]]] = {}
    for e in execs:
        by_run.setdefault(e.run_id, {}).setdefault(e.token, []).append(e)
    for run_id, tokens in by_run.items():
        prev_end = float("-inf")
        prev_token = None
        for token in sorted(tokens):
            group = tokens[token]
            pids = {e.pid for e in group}
            assert len(pids) == 1, f"run {run_id}: token {token} used by processes {pids}"
            ends = []
            for e in group:
                if e.end is not None:
                    ends.append(e.end)
                else:
                    assert e.pid in killed, (
                        f"run {run_id}: step {e.position} of live pid {e.pid} never ended")
                    ends.append(killed[e.pid])
            start = min(e.start for e in group)
            assert start >= prev_end, (
                f"run {run_id}: token {token} started at {start:.6f} before token "
                f"{prev_token} ended at {prev_end:.6f}")
            prev_end, prev_token = max(ends), token


def pg_cluster_version() -> str | None:
    """The version of the local cluster ``main`` as pg_ctlcluster names it, if any."""
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        return None
    versions = sorted(v for v in os.listdir("/etc/postgresql")
                      if os.path.isdir(f"/etc/postgresql/{v}/main"))
    return versions[-1] if versions else None


def pg_ctl(version: str, action: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``pg_ctlcluster VERSION main ACTION``. Its own waits add up to more than a minute
    (``pg_ctl stop -w``'s 60 s, then up to 30 s for the socket), so the bound here is
    above theirs: killing pg_ctlcluster mid-restart leaves a server half stopped. On a
    timeout the error carries the server log's tail, which says what the server was
    doing."""
    try:
        return subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
            capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"pg_ctlcluster {version} main {action} took more than {timeout:.0f} s; "
            f"the server log ends with:\n{pg_log_tail(version)}") from exc


def pg_log_tail(version: str, lines: int = 40) -> str:
    """The last lines of the local cluster's server log (empty if it cannot be read)."""
    try:
        text = Path(f"/var/log/postgresql/postgresql-{version}-main.log").read_text(
            errors="replace")
    except OSError as exc:
        return f"(server log unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def checkpoint(url: str) -> float:
    """Run ``CHECKPOINT`` on the server of ``url``; return the seconds it took.

    A restart's shutdown checkpoint writes every dirty buffer of the whole server. Right
    after the parallel part of the suite (hundreds of databases created, filled and
    dropped) that can be most of ``shared_buffers``, which a slow disk takes longer to
    write than pg_ctl waits. Checkpointing first leaves the restart only the test's own
    writes to flush."""
    t0 = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    return time.monotonic() - t0


def pg_ready(timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"],
                             check=False, timeout=10)
        if out.returncode == 0:
            return True
        time.sleep(0.2)
    return False
