"""Kill -9 soak: real worker processes run the seeded chaos workload while the harness
SIGKILLs one every 1-3 s (and steps kill their own process at the crash point between
an effect and its commit); then a drain, and the outcome checked against the model.

Figures (zero means zero): runs lost, runs not completed after the drain, wrong results,
duplicated committed-step effects, effects missing, journal gaps, integrity_check; and
in-flight re-executions (bounded by the kills), recovery p50/p99 after a kill (until
another worker has claimed each run the killed one held, or the run has ended: see
``recovery_state``) with the slowest recoveries by run id.

The drain soak (``DRAIN_PROFILES``) sends SIGTERM instead: each stopped worker lets its
steps in flight finish and be journaled, hands its runs back and exits. There nothing
may run twice (in-flight re-executions are zero too), every worker exits within
``DRAIN_EXIT_LIMIT`` seconds, and no worker logs a write it could not make
(``DRAIN_LOG_PROBLEMS``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import apsw

from tests import CHECKOUT_PATH, forked
from tests.chaos import chaos_app
from tests.chaos.model import expected, signal_payload
from tether import App
from tether._types import JournalEntry, RunRecord
from tether.errors import StoreUnavailable

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Profile:
    name: str
    workers: int
    duration: float  # seconds of kills (and new runs)
    runs: int
    crash_p: float = 0.01  # probability that a step dies at effect.before_commit
    lease: float = 2.0
    kill_every: tuple[float, float] | None = (1.0, 3.0)  # None: no kills
    drain_timeout: float = 180.0
    min_kills: int = 0  # kills go on past ``duration`` (before the drain) until this many
    stop_signal: int = signal.SIGKILL  # SIGTERM: graceful stops (drains) instead of kills


PROFILES = {
    ("smoke", "sqlite"): Profile("smoke", workers=2, duration=8, runs=30,
                                 kill_every=(0.5, 1.5), min_kills=5),
    ("smoke", "postgres"): Profile("smoke", workers=3, duration=8, runs=30,
                                   kill_every=(0.5, 1.5), min_kills=5),
    ("full", "sqlite"): Profile("full", workers=2, duration=300, runs=900),
    ("full", "postgres"): Profile("full", workers=3, duration=300, runs=900),
    ("smoke", "proxy"): Profile("smoke", workers=3, duration=8, runs=30, crash_p=0.0,
                                kill_every=None),
    ("full", "proxy"): Profile("full", workers=3, duration=120, runs=400, crash_p=0.0,
                               kill_every=None),
}

#: The drain soak: SIGTERM every 0.5-2 s, no crash points.
DRAIN_PROFILES = {
    ("smoke", "sqlite"): Profile("smoke", workers=2, duration=8, runs=120, crash_p=0.0,
                                 kill_every=(0.5, 1.5), min_kills=5,
                                 stop_signal=signal.SIGTERM),
    ("smoke", "postgres"): Profile("smoke", workers=3, duration=8, runs=120, crash_p=0.0,
                                   kill_every=(0.5, 1.5), min_kills=5,
                                   stop_signal=signal.SIGTERM),
    ("full", "sqlite"): Profile("full", workers=2, duration=180, runs=1500, crash_p=0.0,
                                kill_every=(0.5, 2.0), stop_signal=signal.SIGTERM),
    ("full", "postgres"): Profile("full", workers=3, duration=180, runs=1500, crash_p=0.0,
                                  kill_every=(0.5, 2.0), stop_signal=signal.SIGTERM),
}

#: Seconds a SIGTERMed worker may take to exit. The chaos workload's steps are short (a
#: ledger write; its timers of up to 0.3 s are handed back, not waited for): what a
#: drain waits for is the steps in flight, their journal writes and the hand-backs, well
#: under a second; a write stuck on the store (the pool's lost wake-up of 2026-12-05
#: held one for its 10 s ``pool_timeout``) is not.
DRAIN_EXIT_LIMIT = 5.0

#: What a drained worker's log must not say: a write it gave up on, runs abandoned
#: after the grace period, an uncaught error.
DRAIN_LOG_PROBLEMS = ("could not record", "not written within", "still in flight; abandoning",
                      "Traceback")


#: Soak figures (``Figures.summary`` keys) that must be zero in any profile, kill or drain.
MUST_BE_ZERO = ("runs lost", "runs not completed after drain", "wrong results",
                "duplicated committed-step effects", "effects missing", "effects unexpected",
                "journal gaps")


@dataclass
class Figures:
    backend: str
    profile: str
    seed: int
    drains: bool = False  # the workers were stopped with SIGTERM, not killed
    runs_started: int = 0
    runs_lost: int = 0
    runs_not_completed: int = 0
    wrong_results: int = 0
    kills: int = 0
    crash_point_kills: int = 0
    worker_exits: int = 0  # exits the harness did not cause (crash points included)
    signals_not_sent: int = 0  # the harness's own signal failed for good
    not_completed_detail: list[str] = field(default_factory=list)  # for diagnosis
    duplicated_committed_effects: int = 0
    in_flight_reexecutions: int = 0
    effects_missing: int = 0
    effects_unexpected: int = 0
    journal_gaps: int = 0
    integrity: str = "n/a"
    runs_held_at_kills: int = 0
    recovery: list[float] = field(default_factory=list)
    recovered_runs: list[tuple[float, str]] = field(default_factory=list)  # (seconds, run)
    let_go_before_kill: int = 0  # released or ended by the victim before its kill
    drain_exits: list[float] = field(default_factory=list)  # SIGTERM -> exit, seconds
    drains_over_limit: int = 0  # exits slower than DRAIN_EXIT_LIMIT (or none at all)
    log_problems: list[str] = field(default_factory=list)  # DRAIN_LOG_PROBLEMS lines
    #: For each duplicated committed-step effect: the step, its executions, the journal
    #: entry (``duplicate_report`` prints them with the worker logs around them).
    duplicate_detail: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def recovery_p(self, q: float) -> float | None:
        if not self.recovery:
            return None
        data = sorted(self.recovery)
        return data[min(len(data) - 1, int(q * len(data)))]

    def summary(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "profile": self.profile, "seed": self.seed,
            "runs started": self.runs_started, "runs lost": self.runs_lost,
            "runs not completed after drain": self.runs_not_completed,
            "signals the harness could not send": self.signals_not_sent,
            "wrong results": self.wrong_results,
            "SIGTERMs (harness)" if self.drains else "kills (harness)": self.kills,
            "kills (crash point effect.before_commit)": self.crash_point_kills,
            "worker exits not caused by the harness (replaced)": self.worker_exits,
            "duplicated committed-step effects": self.duplicated_committed_effects,
            "in-flight re-executions": self.in_flight_reexecutions,
            "effects missing": self.effects_missing,
            "effects unexpected": self.effects_unexpected,
            "journal gaps": self.journal_gaps, "integrity_check": self.integrity,
            "recovery p50 s": _round(self.recovery_p(0.5)),
            "recovery p99 s": _round(self.recovery_p(0.99)),
            "runs held by killed workers": self.runs_held_at_kills,
            "recoveries measured": len(self.recovery),
            "slowest recoveries (s run)": ", ".join(
                f"{t:.3f} {r}" for t, r in sorted(self.recovered_runs, reverse=True)[:3]),
            "runs let go by the victim before its kill": self.let_go_before_kill,
            **({"drained exits": len(self.drain_exits),
                "slowest drained exit s": _round(max(self.drain_exits, default=None)),
                "drained exits over the limit": self.drains_over_limit,
                "problems in worker logs": len(self.log_problems)}
               if self.drains else {}),
            "wall time s": round(self.seconds, 1),
        }


@dataclass(frozen=True)
class Held:
    """A run a worker held when the harness looked, just before killing that worker."""

    run_id: str
    owner: str
    fencing_token: int


def recovery_state(run: RunRecord | None, held: Held, killed_owners: set[str], *,
                   drained: bool = False) -> str:
    """Where a run the stopped worker held stands now: ``"recovered"``, ``"held"`` (no
    live worker has claimed it yet) or ``"let go"`` (a killed victim released or ended
    it itself between the harness's look and the kill: it held nothing to recover).

    Recovered is what docs/reliability.md calls it: another worker has claimed the run
    (every claim moves the fencing token on, and only claims do), or it has ended. The
    owner *now* does not tell: the worker that takes a run over may hand it back within
    milliseconds, with no owner, for a wait (its replay reached a signal wait or a
    child's result) or for a crash back-off (the run's second crash in a row at the same
    place: claimable again after 1 s or more, and then only by an idle worker). Until
    2026-12-06 the harness counted such a run as not recovered until it was claimed
    again, which put the wait or the back-off into the figure.

    ``drained``: the victim was sent SIGTERM; it hands its runs back (or ends them)
    after the signal, so a run without an owner is recovered only once another worker
    claims it, and one it ended is recovered."""
    if run is None:
        return "held"
    moved_on = run.fencing_token > held.fencing_token
    if run.status.is_ended:
        return "recovered" if moved_on or drained else "let go"
    if moved_on and run.owner not in killed_owners:  # a live worker's, or released by it
        return "recovered"
    if run.owner is None and not moved_on and not drained:
        return "let go"
    return "held"  # the dead owner's still (or a killed worker's claim before its kill)


T = TypeVar("T")


async def retried(call: Callable[[], Awaitable[T]], timeout: float = 120.0) -> T:
    """The harness's own store calls, retried while the store is unreachable (a
    scenario restarting or cutting off PostgreSQL hits the harness too). Every call
    retried this way is idempotent: starts by run id, signals by idempotency key."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except (StoreUnavailable, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


class _Workers:
    def __init__(self, url: str, ledger: Path, logs: Path, profile: Profile,
                 extra_env: dict[str, str] | None = None) -> None:
        self.url, self.ledger, self.logs, self.profile = url, ledger, logs, profile
        self.extra_env = extra_env or {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()
        self._n = 0

    def start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, CHAOS_LEDGER=str(self.ledger), PYTHONPATH=CHECKOUT_PATH,
                   CHAOS_CRASH_P=str(self.profile.crash_p), **self.extra_env)
        env.pop("TETHER_DATABASE_URL", None)
        self._n += 1
        with open(self.logs / f"worker-{self._n}.log", "wb") as log:
            proc = forked.Popen(
                [sys.executable, "-m", "tether", "worker", "tests.chaos.chaos_app:app",
                 "--db", self.url, "--lease", str(self.profile.lease)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def stop_all(self) -> None:
        for p in self.alive():
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


async def soak(backend: str, url: str, workdir: Path, profile: Profile,
               seed: int = 12, worker_url: str | None = None,
               disturb: Callable[[float], Awaitable[None]] | None = None,
               worker_env: dict[str, str] | None = None,
               outside: tuple[str, ...] = ()) -> Figures:
    """Run ``profile``; workers reach the store at ``worker_url`` (default ``url``:
    e.g. through a proxy that breaks their connections) and the harness at ``url``.
    ``disturb(deadline)`` runs alongside the kills until the monotonic ``deadline``
    (e.g. restarting the server); ``worker_env`` is added to the workers' environment."""
    rng = random.Random(seed)
    figures = Figures(backend, profile.name, seed,
                      drains=profile.stop_signal != signal.SIGKILL)
    ledger = workdir / "ledger.db"
    workers = _Workers(worker_url or url, ledger, workdir, profile, worker_env)
    app = App(url)
    started: dict[str, int] = {}
    tasks: set[asyncio.Task[Any]] = set()
    t0 = time.monotonic()
    try:
        # (opened before the loops: the kill loop reads the store directly, and a first
        # start that took longer to open it than the first pause between kills left it
        # reading a store not yet open: "store is not open", the soak ended)
        await retried(app._open)
        for _ in range(profile.workers):
            workers.start()
        deadline = time.monotonic() + profile.duration

        async def send_signal(run_id: str, delay: float) -> None:
            await asyncio.sleep(delay)
            try:
                await retried(lambda: app.signal(run_id, "go", signal_payload(started[run_id]),
                                                 idempotency_key=f"go-{run_id}"))
            except Exception as exc:  # counted: a run left waiting is not the engine's fault
                figures.signals_not_sent += 1
                figures.not_completed_detail.append(f"signal to {run_id} failed: {exc!r}")

        async def start_runs() -> None:
            gap = profile.duration * 0.7 / profile.runs
            for i in range(profile.runs):
                run_seed = rng.randrange(1, 10**9)
                run_id = f"c{i:05d}"
                await retried(lambda s=run_seed, r=run_id: app.start(chaos_app.chaos, s, run_id=r))
                started[run_id] = run_seed
                if expected(run_id, run_seed).waits_for_signal:
                    t = asyncio.create_task(send_signal(run_id, rng.uniform(0, 1.5)))
                    tasks.add(t)
                await asyncio.sleep(gap)

        async def measure_recovery(held: list[Held], killed_at: float) -> None:
            pending = {h.run_id: h for h in held}
            while pending and time.monotonic() - killed_at < 120:
                await asyncio.sleep(0.05)
                for run_id, h in list(pending.items()):
                    try:
                        run = await app.store.run_get(run_id)
                    except (StoreUnavailable, OSError):
                        continue
                    state = recovery_state(run, h, owners_of_killed,
                                           drained=figures.drains)
                    if state == "held":
                        continue
                    del pending[run_id]
                    if state == "let go":
                        figures.let_go_before_kill += 1
                        continue
                    took = time.monotonic() - killed_at
                    figures.recovery.append(took)
                    figures.recovered_runs.append((took, run_id))

        owners_of_killed: set[str] = set()

        async def kill_loop() -> None:
            if profile.kill_every is None:
                return
            while time.monotonic() < deadline or figures.kills < profile.min_kills:
                await asyncio.sleep(rng.uniform(*profile.kill_every))
                alive = workers.alive()
                if not alive:
                    continue
                victim = rng.choice(alive)
                running = await retried(
                    lambda: app.store.run_list(status="running", limit=100_000))
                marker = f":{victim.pid}:"
                held = [Held(r.run_id, r.owner, r.fencing_token) for r in running
                        if r.owner and marker in r.owner]
                figures.runs_held_at_kills += len(held)
                owners_of_killed.update(h.owner for h in held)
                workers.killed.add(victim.pid)
                victim.send_signal(profile.stop_signal)
                killed_at = time.monotonic()
                if not figures.drains:
                    await asyncio.to_thread(victim.wait, 30)
                    workers.start()
                else:  # a drain: its runs come back at once; a replacement takes them
                    workers.start()
                    exited = await asyncio.to_thread(_exit_within, victim, 60.0)
                    took = time.monotonic() - killed_at
                    if exited:
                        figures.drain_exits.append(took)
                    if not exited or took > DRAIN_EXIT_LIMIT:
                        figures.drains_over_limit += 1
                figures.kills += 1
                t = asyncio.create_task(measure_recovery(held, killed_at))
                tasks.add(t)

        async def replace_crashed() -> None:
            seen: set[int] = set()
            while True:
                await asyncio.sleep(0.2)
                for p in workers.procs:
                    if p.poll() is not None and p.pid not in workers.killed \
                            and p.pid not in seen:
                        seen.add(p.pid)
                        figures.worker_exits += 1
                        if p.returncode == -signal.SIGKILL:
                            figures.crash_point_kills += 1
                        workers.start()

        replacer = asyncio.create_task(replace_crashed())
        await asyncio.gather(start_runs(), kill_loop(),
                             *([disturb(deadline)] if disturb is not None else []))
        figures.runs_started = len(started)
        await _drain(app, started, profile.drain_timeout)
        replacer.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(replacer, *tasks, return_exceptions=True)
        await _check(app, started, ledger, figures, outside)
        if figures.duplicate_detail:
            print(duplicate_report(figures.duplicate_detail, workdir), flush=True)
        if figures.not_completed_detail:
            print("runs not completed / signals not sent:",
                  *figures.not_completed_detail[:20], sep="\n  ", flush=True)
    finally:
        # Off the event loop: a proxy in this process must keep relaying while the
        # workers shut down through it.
        await asyncio.to_thread(workers.stop_all)
        await app.close()
    if figures.drains:
        figures.log_problems = _log_problems(workdir)
        if figures.log_problems:
            print("problems in worker logs:", *figures.log_problems[:20], sep="\n  ",
                  flush=True)
    if backend == "sqlite":
        path = url.split("///", 1)[1]
        conn = apsw.Connection(path)
        figures.integrity = str(conn.execute("PRAGMA integrity_check").fetchall()[0][0])
        conn.close()
    figures.seconds = time.monotonic() - t0
    return figures


def _exit_within(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return False
    return True


def _log_problems(workdir: Path) -> list[str]:
    """The lines of the workers' logs that name a ``DRAIN_LOG_PROBLEMS`` problem."""
    found = []
    for path in sorted(workdir.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if any(p in line for p in DRAIN_LOG_PROBLEMS):
                found.append(f"{path.name}: {line[:300]}")
    return found


async def _drain(app: App, started: dict[str, int], timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        runs = await retried(lambda: app.store.run_list(limit=1_000_000))
        by_id = {r.run_id: r for r in runs}
        if all(rid in by_id and by_id[rid].status.is_ended for rid in started):
            return
        await asyncio.sleep(0.5)


@dataclass(frozen=True)
class Effect:
    """One execution of a step, as the ledger saw it (``chaos_app.record_effect``)."""

    pid: int
    attempt: int
    at: float  # the worker's engine clock (the one finished_at is written with)
    wall: float | None  # this machine's clock, one for every process
    token: int | None  # the fencing token of the lease it ran under


def _read_ledger(ledger: Path) -> dict[str, list[Effect]]:
    out: dict[str, list[Effect]] = {}
    if ledger.exists():
        conn = apsw.Connection(str(ledger), flags=apsw.SQLITE_OPEN_READONLY)
        conn.setbusytimeout(30_000)
        for key, pid, attempt, at, wall, token in conn.execute(
                "SELECT key, pid, attempt, at, wall, token FROM effects"):
            out.setdefault(key, []).append(Effect(pid, attempt, at, wall, token))
        conn.close()
    return out


def _entry_tokens(url: str, schema: str) -> dict[str, int]:
    """The fencing token each journal entry was written under, by ``run:position``."""
    query = "SELECT run_id, position, fencing_token FROM {}"
    if url.startswith("sqlite"):
        conn = apsw.Connection(url.split("///", 1)[1], flags=apsw.SQLITE_OPEN_READONLY)
        conn.setbusytimeout(30_000)
        try:
            rows = list(conn.execute(query.format("tether_journal")))
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(url) as pg:
            rows = pg.execute(query.format(f'"{schema}".journal')).fetchall()
    return {f"{r}:{p}": int(t) for r, p, t in rows}


def late_executions(effects: list[Effect], finished_at: float,
                    token: int | None) -> list[Effect]:
    """The executions of a step that began after its committed journal entry (finished
    at ``finished_at``, written under fencing token ``token``) had finished.

    The execution that committed the entry is never one: it began before it finished.
    Comparing every execution's ``at`` with ``finished_at`` counted it when its
    worker's clock stepped back between the two (a ``SyncedClock`` resync, up to half
    the round trip of its read of the server's clock: 4.5 ms after a restart on
    2026-12-07, the entry's ``finished_at`` before its own ``started_at``). So, with
    the fencing tokens known (the ledger's and the journal's):

    - the committing execution is the first under ``token``: not late;
    - one under a later token began after the commit (that claim moved the token on,
      so the entry had committed before it, and the claim read it): late, whatever
      the clocks say; so is another one under ``token`` that began after the first's
      finish;
    - one under an earlier token (a stalled worker's) is late if it began after the
      finish on one clock, this machine's (``wall``): the finish is moved onto it by
      the committing execution's offset (its ``at - wall``).

    Without tokens (a ledger without them), the engine clocks are compared as they are."""
    if token is None or any(e.token is None or e.wall is None for e in effects):
        return [e for e in effects if e.at > finished_at + 1e-3]
    committing = sorted((e for e in effects if e.token == token),
                        key=lambda e: e.wall or 0.0)
    if not committing:  # (not in the ledger: compare on the engine clocks)
        return [e for e in effects if e.at > finished_at + 1e-3]
    first = committing[0]
    assert first.wall is not None
    done = finished_at - (first.at - first.wall)
    late = []
    for e in effects:
        assert e.token is not None and e.wall is not None
        if e is first:
            continue
        if e.token > token or e.wall > done + 1e-3:
            late.append(e)
    return late


async def _check(app: App, started: dict[str, int], ledger: Path, figures: Figures,
                 outside: tuple[str, ...] = ()) -> None:
    store = app.store
    executions = _read_ledger(ledger)
    tokens = await asyncio.to_thread(_entry_tokens, app.url,
                                     getattr(store, "schema", "tether"))
    expected_effects: set[str] = set()
    entries: dict[str, JournalEntry] = {}
    for run_id, run_seed in started.items():
        want = expected(run_id, run_seed)
        expected_effects |= want.effects
        run = await store.run_get(run_id)
        if run is None:
            figures.runs_lost += 1
            continue
        if run.status.value != "completed":
            figures.runs_not_completed += 1
            figures.not_completed_detail.append(
                f"{run_id}: {run.status.value}, owner {run.owner}, waiting for "
                f"{run.waiting_for!r}, error {str(run.error)[:200]!r}")
            continue
        if app.codec.decode(run.result) != want.result:
            figures.wrong_results += 1
        journal = await store.journal_read(run_id)
        if [e.position for e in journal] != list(range(want.positions)):
            figures.journal_gaps += 1
        for e in journal:
            entries[f"{run_id}:{e.position}"] = e
        for child_id in {k.rsplit(":", 1)[0] for k in want.effects} - {run_id}:
            cj = await store.journal_read(child_id)
            if [e.position for e in cj] != [0, 1]:
                figures.journal_gaps += 1
            for e in cj:
                entries[f"{child_id}:{e.position}"] = e
    for key in expected_effects:
        effects = executions.get(key, [])
        if not effects:
            figures.effects_missing += 1
            continue
        figures.in_flight_reexecutions += len(effects) - 1
        entry = entries.get(key)
        if entry is not None and entry.finished_at is not None:
            # An execution that began after the committed one had returned.
            late = late_executions(effects, entry.finished_at, tokens.get(key))
            by_clocks = [e for e in effects if e.at > entry.finished_at + 1e-3]
            figures.duplicated_committed_effects += len(late)
            if late or by_clocks:
                figures.duplicate_detail.append(await _duplicate_detail(
                    store, key, effects, entry, tokens.get(key), late))
    # Runs the harness did not start (``outside``: id prefixes, their children included)
    # are the caller's to check.
    figures.effects_unexpected = len({k for k in set(executions) - expected_effects
                                      if not k.startswith(outside)})


async def _duplicate_detail(store: Any, key: str, effects: list[Effect], entry: JournalEntry,
                            token: int | None, late: list[Effect]) -> dict[str, Any]:
    """What is known of a step ``key`` (``run:position``) of which an execution began
    after its committed entry had finished, by one clock (``late``) or by the workers'
    engine clocks only (then a measurement artefact: ``late`` is empty)."""
    run_id, position = key.rsplit(":", 1)
    try:
        attempts = [dataclasses.asdict(a) for a in await store.attempt_list(run_id)
                    if a.position == int(position)]
    except Exception as exc:  # the report must not hide the figure
        attempts = [{"error": repr(exc)}]
    return {"key": key, "run": run_id, "counted": len(late),
            "executions": [dataclasses.asdict(e)
                           for e in sorted(effects, key=lambda e: e.wall or e.at)],
            "entry": {"status": str(entry.status), "attempts": entry.attempts,
                      "started_at": entry.started_at, "finished_at": entry.finished_at,
                      "fencing_token": token},
            "attempts": attempts}


def duplicate_report(details: list[dict[str, Any]], workdir: Path, around: float = 3.0) -> str:
    """The duplicated committed-step effects, each with the workers' log lines that name
    its run or fall within ``around`` seconds of one of its executions."""
    import datetime as dt
    import json

    logs = {p.name: p.read_text(errors="replace").splitlines()
            for p in sorted(workdir.glob("worker-*.log"))}
    out = ["executions that began after their step's committed entry had finished "
           "(by one clock: counted; by the workers' clocks only: not counted):"]
    for d in details:
        out.append(json.dumps(d, default=str))
        times = [e["wall"] or e["at"] for e in d["executions"]]
        lo, hi = min(times) - around, max(times) + around
        for name, lines in logs.items():
            for line in lines:
                try:
                    t = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").replace(
                        tzinfo=dt.UTC).timestamp()
                except ValueError:
                    continue
                if f"run={d['run']}" in line or d["run"] in line or lo <= t <= hi:
                    out.append(f"  {name}: {line[:400]}")
    return "\n".join(out)
