"""Rolling upgrade check: workers and CLIs of a previous version beside the new one.

    python -m tests.upgrade --from REV [--db sqlite|postgres] [--migrate-by worker|cli] [--keep]

With real processes on one store (a SQLite file, or a new PostgreSQL database dropped
after), REV's code (``git archive REV src``) and this checkout's (``tests.CHECKOUT_PATH``):

1. a worker of REV creates the store and runs workflows until there are runs in every
   state: waiting on a signal, sleeping, waiting for a child, mid-retry, failed, and one
   in a step under the live worker;
2. the new code migrates the store under that live worker: its first worker, which
   migrates the store it opens (``--migrate-by cli``: ``tether db migrate``);
3. a new worker joins the old one on the same queues; REV's ``tether`` CLI lists, shows,
   signals, cancels, retries and starts runs, and so does the new one; REV's App starts
   runs too; REV's ``tether queue-limit`` and the new ``queue-pause`` / ``queue-resume``
   take turns on one queue (``queue_pause_beside_old``);
4. REV's worker alone, then the new one alone, runs a run of every kind to its end
   (steps, gather, sleep, signal, child, LLM call); kill -9 of REV's worker in a step,
   the new worker finishes the run; then kill -9 of the new worker in a step, a worker
   of REV started after the migration finishes it;
5. every run ends with the status and result a run on one version has (the workflows'
   results are pure functions of their input: ``tests.upgrade.app.expected``);
6. the new ``tether serve`` (started after the migration) streams (SSE) every run's
   events, those written by REV's workers before and after the migration included:
   each finished journal entry's op event, its last status, then the run's end; the
   streams it followed live while a worker of either version ran the run hold the
   same events, in the same order, as a read after the end; REV's ``serve`` streams a few of them
   (the same events on SQLite; on PostgreSQL a figure: it cannot read the rows stored
   after migration 0013, see docs/operations.md);
7. no process logged a traceback.

Prints the figures and every mismatch; exits 1 on any, 0 otherwise. Bounded: each wait
has a deadline and the whole check stops after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from tests import CHECKOUT_PATH
from tests.upgrade.app import expected, llm_answer

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.upgrade.app:app"
PG_ADMIN_URL = os.environ.get("TETHER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_PREFIX = os.environ.get("TETHER_TEST_DB_PREFIX", "tether_")
LEASE = "2"


@dataclass
class Run:
    run_id: str
    workflow: str
    args: list[Any]
    signal: Any = None         # the payload of "go" it is sent (it or its child)
    status: str = "completed"  # how it must end
    sent: bool = False         # its signal was sent

    def spec(self) -> list[Any]:
        return [self.run_id, self.workflow, self.args]


class Check:
    """One check: the store, the two code trees, the processes, what was found."""

    def __init__(self, rev: str, backend: str, work: Path, url: str, old_src: Path,
                 llm_url: str) -> None:
        self.rev, self.backend, self.work, self.url = rev, backend, work, url
        self.src = {"old": str(old_src), "new": CHECKOUT_PATH.split(os.pathsep)[0]}
        self.llm_url = llm_url
        self.ledger = work / "ledger.db"
        self.runs: dict[str, Run] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.problems: list[str] = []
        self.figures: dict[str, Any] = {}
        self.streams: dict[str, list[tuple[str, str, str]]] = {}  # the new serve's
        self.live: dict[str, list[tuple[str, str, str]]] = {}  # followed while it ran
        self.serve_port: int | None = None  # the new serve's
        self.migrate_by = "worker"  # or "cli": tether db migrate
        self._k = 0

    # -- processes ------------------------------------------------------------------

    def env(self, version: str) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join((self.src[version], str(ROOT))),
                   UPGRADE_DB=self.url, UPGRADE_LEDGER=str(self.ledger),
                   UPGRADE_DIR=str(self.work), UPGRADE_LLM_URL=self.llm_url,
                   OPENAI_API_KEY="upgrade-check")
        env.pop("TETHER_DATABASE_URL", None)
        return env

    def worker(self, version: str, name: str) -> subprocess.Popen[bytes]:
        with open(self.work / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tether", "worker", APP, "--db", self.url,
                 "--lease", LEASE, "--concurrency", "20"],
                cwd=self.work, env=self.env(version), stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    async def cli(self, version: str, *args: str, ok: bool = True,
                  timeout: float = 60.0) -> tuple[int, str, str]:
        """``tether ARGS --db URL`` of ``version``; a failure is a problem if ``ok``."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tether", *args, "--db", self.url, cwd=self.work,
            env=self.env(version), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        rc = proc.returncode or 0
        if ok and rc != 0:
            self.problem(f"{version} CLI `tether {' '.join(args)}` exit {rc}: "
                         f"{err.decode().strip()[-400:]}")
        return rc, out.decode(), err.decode()

    async def driver(self, version: str, command: str, payload: Any) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.upgrade.driver", command, json.dumps(payload),
            cwd=self.work, env=self.env(version), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        if proc.returncode != 0:
            self.problem(f"{version} App ({command}) exit {proc.returncode}: "
                         f"{err.decode().strip().splitlines()[-1][-400:]}")
            return {"not_reached": []}
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    # -- runs -----------------------------------------------------------------------

    def problem(self, text: str) -> None:
        print(f"  PROBLEM: {text}", flush=True)
        self.problems.append(text)

    def new_run(self, prefix: str, workflow: str, *args: Any, **kw: Any) -> Run:
        self._k += 1
        run = Run(f"{prefix}-{workflow}-{self._k}", workflow, [self._k, *args], **kw)
        self.runs[run.run_id] = run
        return run

    async def start(self, version: str, runs: list[Run]) -> None:
        await self.driver(version, "start", [r.spec() for r in runs])

    async def wait(self, version: str, conditions: list[tuple[str, str]],
                   timeout: float = 60.0) -> None:
        out = await self.driver(version, "wait", {"conditions": conditions,
                                                  "timeout": timeout})
        for run_id, cond in out["not_reached"]:
            self.problem(f"run {run_id} did not reach {cond!r} within {timeout:.0f} s "
                         f"({version} code)")

    def effects(self, where: str = "1", params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.ledger.exists():
            return []
        conn = apsw.Connection(str(self.ledger))
        try:
            return list(conn.execute(f"SELECT key, attempt, pid FROM effects WHERE {where}",
                                     params))
        finally:
            conn.close()

    def markers(self, k: int) -> list[int]:
        """The pids that began run ``k``'s slow step, in no order."""
        return [int(p.name.rsplit("-", 1)[1]) for p in self.work.glob(f"started-{k}-*")]

    async def wait_marker(self, k: int, timeout: float = 30.0) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.markers(k):
                return self.markers(k)[0]
            await asyncio.sleep(0.05)
        return None


# -- the phases ---------------------------------------------------------------------------


async def before_upgrade(c: Check) -> None:
    """REV's worker makes and fills the store: runs in every state."""
    print(f"[1] {c.rev} creates the store and leaves runs in every state", flush=True)
    c.worker("old", "old-1")
    done = [c.new_run("pre", "steps", 3) for _ in range(4)] + [c.new_run("pre", "ask")]
    waiting = [c.new_run("pre", "on_signal", signal=10 + i) for i in range(3)]
    cancelled = c.new_run("pre", "on_signal", status="cancelled")
    sleeping = [c.new_run("pre", "sleeper", 10.0) for _ in range(2)]
    parents = [c.new_run("pre", "parent", signal=20 + i) for i in range(2)]
    flaky = c.new_run("pre", "flaky", 3)  # attempts 1-3 fail, 4 s apart
    gated = c.new_run("pre", "gated")
    slow = c.new_run("pre", "slow", 8.0)  # in its step under the live worker at migration
    await c.start("old", [*done, *waiting, cancelled, *sleeping, *parents, flaky, gated, slow])
    # REV's CLI starts one too.
    cli_run = c.new_run("pre", "steps", 2)
    await c.cli("old", "start", "steps", "--id", cli_run.run_id, "--input",
                json.dumps(cli_run.args), "--app", APP)
    await c.wait("old", [*[(r.run_id, "completed") for r in [*done, cli_run]],
                         *[(r.run_id, "waiting") for r in [*waiting, cancelled, *sleeping,
                                                           *parents]],
                         *[(r.run_id + ".1", "waiting") for r in parents],
                         (flaky.run_id, "retrying"), (gated.run_id, "failed"),
                         (slow.run_id, "running")])
    if await c.wait_marker(slow.args[0]) != c.procs["old-1"].pid:
        c.problem(f"{slow.run_id}'s slow step did not begin in the old worker")
    c.figures["runs before the upgrade"] = len(c.runs)


async def upgrade(c: Check) -> None:
    print("[2] the new code migrates the store under the live old worker", flush=True)
    _, before, _ = await c.cli("new", "db", "status")
    c.figures["migrations applied"] = " ".join(
        line.split()[0] for line in before.splitlines() if line.endswith("pending")) or "none"
    t0 = time.monotonic()
    if c.migrate_by == "cli":
        await c.cli("new", "db", "migrate")
    else:  # as in a rolling update: the first new worker migrates the store it opens
        c.worker("new", "new-1")
        while "pending" in (await c.cli("new", "db", "status"))[1]:
            if time.monotonic() - t0 > 60 or c.procs["new-1"].poll() is not None:
                c.problem("the new worker did not migrate the store within 60 s")
                break
            await asyncio.sleep(0.1)
    c.figures[f"migration by the new {c.migrate_by} (s)"] = round(time.monotonic() - t0, 2)
    if c.procs["old-1"].poll() is not None:
        c.problem(f"the old worker exited during the migration ({c.procs['old-1'].poll()})")
    _, out, _ = await c.cli("new", "db", "status")
    if "pending" in out:
        c.problem(f"new `tether db status` after the migration: {out.strip()}")
    c.serve_port = await start_serve(c, "new")  # upgraded with the first new worker


async def mixed(c: Check) -> None:
    print("[3] old and new workers and CLIs on the migrated store", flush=True)
    if "new-1" not in c.procs:
        c.worker("new", "new-1")
    # REV's CLI reads the migrated store.
    rc, out, _ = await c.cli("old", "runs", "--json", "--limit", "500")
    if rc == 0:
        listed = {r["run_id"] for r in json.loads(out)}
        missing = [r for r in c.runs if r not in listed]
        if missing:
            c.problem(f"old `tether runs` lists {len(listed)} runs, not {missing[:3]}")
    first = next(iter(c.runs))
    await c.cli("old", "show", first)
    await c.cli("old", "show", first, "--json")
    # Signals from both CLIs; a cancel and a retry from REV's.
    waiting = [r for r in c.runs.values() if r.workflow == "on_signal" and r.signal is not None]
    for i, r in enumerate(waiting):
        await c.cli("old" if i % 2 == 0 else "new", "signal", r.run_id, "go",
                    "--data", json.dumps(r.signal))
    for r in c.runs.values():
        if r.status == "cancelled":
            await c.cli("old", "cancel", r.run_id)
    for r in c.runs.values():
        if r.workflow == "gated":
            (c.work / f"gate-{r.args[0]}").write_text("open")
            await c.cli("old", "retry", r.run_id)
    await queue_pause_beside_old(c)
    # New runs from REV's App and CLI and from the new code: one queue, two versions.
    by_old = [c.new_run("post-old", "steps", 4) for _ in range(6)] + [
        c.new_run("post-old", "ask"), c.new_run("post-old", "sleeper", 1.0),
        c.new_run("post-old", "parent", signal=30)]
    by_new = [c.new_run("post-new", "steps", 4) for _ in range(6)] + [
        c.new_run("post-new", "ask"), c.new_run("post-new", "sleeper", 1.0),
        c.new_run("post-new", "parent", signal=31)]
    await c.start("old", by_old)
    await c.start("new", by_new)
    cli_run = c.new_run("post-old", "steps", 2)
    await c.cli("old", "start", "steps", "--id", cli_run.run_id, "--input",
                json.dumps(cli_run.args), "--app", APP)
    await c.wait("new", [(r.run_id, "completed") for r in [*by_old, *by_new, cli_run]
                         if r.workflow in ("steps", "ask", "sleeper")])


async def queue_pause_beside_old(c: Check) -> None:
    """A pause's kept limit (migration 0019) beside REV's ``tether queue-limit``, which
    never names the column: REV pauses a queue the new code paused (the kept limit
    stays), sets a limit on it (the pause is lifted and, by migration 0020's trigger,
    the kept limit forgotten), pauses it again (the trigger keeps that limit), the new
    ``queue-resume`` gives back the last limit REV set, and REV removes it. A queue no
    run uses, so no claim is held up."""
    async def limits() -> dict[str, Any]:
        rc, out, _ = await c.cli("new", "queues", "--json")
        rows = {r["queue"]: r for r in json.loads(out)} if rc == 0 else {}
        row = rows.get("upgrade-paused")
        return {} if row is None else {k: row[k] for k in
                                       ("limit", "paused", "limit_before_pause")}

    steps: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [
        ("new", ("queue-limit", "upgrade-paused", "5"),
         {"limit": 5, "paused": False, "limit_before_pause": None}),
        ("new", ("queue-pause", "upgrade-paused"),
         {"limit": 0, "paused": True, "limit_before_pause": 5}),
        ("old", ("queue-limit", "upgrade-paused", "0"),
         {"limit": 0, "paused": True, "limit_before_pause": 5}),
        ("old", ("queue-limit", "upgrade-paused", "3"),
         {"limit": 3, "paused": False, "limit_before_pause": None}),
        ("old", ("queue-limit", "upgrade-paused", "0"),
         {"limit": 0, "paused": True, "limit_before_pause": 3}),
        ("new", ("queue-resume", "upgrade-paused"),
         {"limit": 3, "paused": False, "limit_before_pause": None}),
        ("old", ("queue-limit", "upgrade-paused", "none"), {}),
    ]
    for version, args, wanted in steps:
        await c.cli(version, *args)
        got = await limits()
        if got != wanted:
            c.problem(f"after {version} `tether {' '.join(args)}`: {got}, not {wanted}")


async def kills(c: Check) -> None:
    print("[4] kill -9 of an old worker in a step, then of a new one", flush=True)
    # Only the old worker: a new run's slow step is surely its.
    c.procs["new-1"].terminate()
    await asyncio.to_thread(c.procs["new-1"].wait, 30)
    await alone(c, "old-1")
    await followed(c, "old-1")
    await kill_in_step(c, "old-1", "new", "new-2")
    await alone(c, "new-2")
    await followed(c, "new-2")
    await kill_in_step(c, "new-2", "old", "old-2")
    c.worker("new", "new-3")


async def alone(c: Check, worker: str) -> None:
    """Every kind of workflow, run to its end on the migrated store by ``worker`` alone:
    steps, a gather, a sleep, a signal, a child waiting for a signal, an LLM call."""
    runs = [c.new_run(f"alone-{worker}", "steps", 3), c.new_run(f"alone-{worker}", "ask"),
            c.new_run(f"alone-{worker}", "sleeper", 1.0),
            c.new_run(f"alone-{worker}", "on_signal", signal=40),
            c.new_run(f"alone-{worker}", "parent", signal=41)]
    await c.start("new", runs)
    # The new serve follows each run while the worker writes its events.
    following = {r.run_id: asyncio.ensure_future(sse(c.serve_port, r.run_id, 60))
                 for r in runs if c.serve_port is not None}
    waits = [r for r in runs if r.signal is not None]
    await c.wait("new", [(r.run_id + (".1" if r.workflow == "parent" else ""), "waiting")
                         for r in waits])
    for r in waits:
        await c.cli("new", "signal", r.run_id + (".1" if r.workflow == "parent" else ""),
                    "go", "--data", json.dumps(r.signal))
        r.sent = True
    await c.wait("new", [(r.run_id, "completed") for r in runs])
    pid = c.procs[worker].pid
    others = [row for row in c.effects("key LIKE ?", (f"alone-{worker}-%",)) if row[2] != pid]
    if others:
        c.problem(f"runs meant for {worker} alone ran steps elsewhere: {others[:3]}")
    c.figures[f"runs of every kind run to their end by {worker} alone"] = len(runs)
    for run_id, task in following.items():
        try:
            c.live[run_id] = await asyncio.wait_for(task, 30)
        except (TimeoutError, OSError) as exc:
            c.problem(f"the new serve's live stream of {run_id} failed: {exc!r}")


async def followed(c: Check, worker: str) -> None:
    """A run's events while ``worker`` (alone) writes them (60 steps, each with a live
    status) and four connections of the new code publish chunks into them: a reader of
    the new code going from cursor to cursor meanwhile gets every event the run has,
    once, in order. (On PostgreSQL the old worker's appends lock the run's row FOR SHARE,
    the new writers FOR NO KEY UPDATE: migration 0013's order needs them to conflict.)"""
    from tether import App

    run = c.new_run(f"follow-{worker}", "chatty", 60)
    await c.start("new", [run])
    done = asyncio.Event()
    async with App(c.url) as app:
        store = app.store

        async def publish(who: int) -> None:
            for i in range(30):
                await store.run_publish(run_id=run.run_id, data=json.dumps([who, i]))
                await asyncio.sleep(0.01)

        async def follow() -> list[str]:
            got: list[str] = []
            while True:
                last = done.is_set()
                batch = await store.run_events_read(run_id=run.run_id,
                                                    after=got[-1] if got else None)
                got += [e.event_id for e in batch]
                if last and not batch:
                    return got

        reader = asyncio.ensure_future(follow())
        await asyncio.gather(*[publish(who) for who in range(4)])
        await c.wait("new", [(run.run_id, "completed")])
        done.set()
        got = await asyncio.wait_for(reader, 30)
        every = [e.event_id for e in await store.run_events_read(
            run_id=run.run_id, after=None, limit=100_000)]
    if got != every:
        c.problem(f"{run.run_id}: followed from cursor to cursor {len(got)} events, the "
                  f"run has {len(every)} (missed {sorted(set(every) - set(got))[:5]})")
    ran = {pid for _, _, pid in c.effects("key LIKE ?", (f"{run.run_id}%",))}
    if ran != {c.procs[worker].pid}:
        c.problem(f"{run.run_id}: its steps ran in {ran}, not in {worker} alone")
    c.figures[f"events of a run {worker} wrote beside 4 publishers, followed / the run's"] = (
        f"{len(got)} / {len(every)}")


async def kill_in_step(c: Check, victim: str, heir_version: str, heir: str) -> None:
    run = c.new_run(f"kill-{victim}", "slow", 4.0)
    k = run.args[0]
    await c.start("new", [run])
    pid = await c.wait_marker(k)
    if pid != c.procs[victim].pid:
        c.problem(f"{run.run_id}'s step began in pid {pid}, not in {victim} "
                  f"({c.procs[victim].pid})")
    c.procs[victim].kill()
    c.procs[victim].wait(10)
    heir_proc = c.worker(heir_version, heir)
    await c.wait("new", [(run.run_id, "completed")], timeout=60)
    resumed = heir_proc.pid in c.markers(k)
    if not resumed:
        code = heir_proc.poll()
        c.problem(f"{run.run_id}: the killed step ran again in {c.markers(k)}, not in "
                  f"{heir} ({heir_proc.pid}{'' if code is None else f', exited {code}'})")
    c.figures[f"killed {victim}, resumed by {heir}"] = "yes" if resumed else "no"


async def finish(c: Check) -> None:
    print("[5] the children get their signals; every run's end is checked", flush=True)
    parents = [r for r in c.runs.values() if r.workflow == "parent" and not r.sent]
    for i, r in enumerate(parents):
        await c.cli("old" if i % 2 else "new", "signal", r.run_id + ".1", "go",
                    "--data", json.dumps(r.signal))
    ended = ("completed", "failed", "cancelled")
    await c.wait("new", [(r.run_id, r.status) for r in c.runs.values()], timeout=90)
    from tether import App, RunNotFound

    async with App(c.url) as app:
        wrong = 0
        for r in c.runs.values():
            try:
                info = await app.get_run(r.run_id)
            except RunNotFound:
                wrong += 1
                c.problem(f"{r.run_id} was never started")
                continue
            if info.status != r.status:
                wrong += 1
                c.problem(f"{r.run_id} ended {info.status}, not {r.status} ({info.error})")
            elif r.status == "completed" and info.result != expected(r.workflow, r.args,
                                                                      r.signal):
                wrong += 1
                c.problem(f"{r.run_id}: result {info.result!r}, on one version "
                          f"{expected(r.workflow, r.args, r.signal)!r}")
            unfinished = [e["position"] for e in info.journal
                          if e["status"] not in ("ok", "error")]
            if info.status in ended and r.status == "completed" and unfinished:
                c.problem(f"{r.run_id}: journal entries not final: {unfinished}")
    c.figures["runs"] = len(c.runs)
    c.figures["runs with a wrong end or result"] = wrong
    pids = {name: p.pid for name, p in c.procs.items()}
    by = {pid: name for name, pid in pids.items()}
    rows = c.effects()
    post = [pid for key, _, pid in rows if key.startswith("post-")]
    c.figures["steps of runs started after the upgrade, by old / new workers"] = (
        f"{sum(by.get(p, '').startswith('old') for p in post)} / "
        f"{sum(by.get(p, '').startswith('new') for p in post)}")
    if not all(any(by.get(p, "").startswith(v) for p in post) for v in ("old", "new")):
        c.problem("the runs started after the upgrade were not shared by both versions")
    seen: dict[tuple[str, int], int] = {}
    for key, attempt, _ in rows:
        seen[(key, attempt)] = seen.get((key, attempt), 0) + 1
    twice = sorted(k for k, n in seen.items() if n > 1)
    c.figures["step attempts executed twice (in flight at a kill)"] = len(twice)
    if len(twice) > 2 * 20:  # at most what the two killed workers held
        c.problem(f"{len(twice)} step attempts ran twice: {twice[:5]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def sse(port: int, run_id: str, timeout: float = 15.0) -> list[tuple[str, str, str]]:
    """Every (id, event, data) of a run's stream, until its ``end``."""
    import httpx

    events: list[tuple[str, str, str]] = []
    fields: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=timeout) as client, client.stream(
            "GET", f"http://127.0.0.1:{port}/api/v1/runs/{run_id}/events") as resp:
        async for line in resp.aiter_lines():
            if line == "":
                if "event" in fields:
                    events.append((fields.get("id", ""), fields["event"],
                                   fields.get("data", "")))
                    if fields["event"] == "end":
                        return events
                fields = {}
            elif not line.startswith(":") and ":" in line:
                name, _, value = line.partition(":")
                fields[name] = value.lstrip(" ")
    return events


async def start_serve(c: Check, version: str) -> int | None:
    """``tether serve`` of ``version`` on a free port; None if it does not answer."""
    import httpx

    port = free_port()
    with open(c.work / f"serve-{version}.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether", "serve", "--db", c.url, "--port", str(port)],
            cwd=c.work, env=c.env(version), stdout=log, stderr=subprocess.STDOUT)
    c.procs[f"serve-{version}"] = proc
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return port
            if time.monotonic() > deadline or proc.poll() is not None:
                c.problem(f"{version} tether serve did not answer within 30 s")
                return None
            await asyncio.sleep(0.2)


def ops_of(events: list[tuple[str, str, str]]) -> set[tuple[int, str]]:
    return {(json.loads(d)["position"], json.loads(d)["status"])
            for _, e, d in events if e == "op"}


async def serve(c: Check) -> None:
    print("[6] the new `tether serve` streams every run's events", flush=True)
    port = c.serve_port
    if port is None:
        return
    from tether import App, RunNotFound

    streams = events = 0
    async with App(c.url) as app:
        for r in c.runs.values():
            try:
                info = await app.get_run(r.run_id)
            except RunNotFound:
                continue
            got = await asyncio.wait_for(sse(port, r.run_id), 30)
            c.streams[r.run_id] = got
            streams += 1
            events += len(got)
            ops = ops_of(got)
            missing = [e["position"] for e in info.journal if e["status"] in ("ok", "error")
                       and (e["position"], e["status"]) not in ops]
            statuses = [json.loads(d)["status"] for _, e, d in got if e == "status"]
            if missing:
                c.problem(f"SSE of {r.run_id}: no op event for positions {missing}")
            if not got or got[-1][1] != "end":
                c.problem(f"SSE of {r.run_id}: the stream ended without 'end'")
            if not statuses or statuses[-1] != info.status:
                c.problem(f"SSE of {r.run_id}: last status event {statuses[-1:]}, "
                          f"the run is {info.status}")
            ids = [i for i, e, _ in got if e != "end"]
            if len(set(ids)) != len(ids):
                c.problem(f"SSE of {r.run_id}: an event id twice")
            live = c.live.get(r.run_id)
            if live is not None and [e[:2] for e in live] != [e[:2] for e in got]:
                c.problem(f"SSE of {r.run_id}: followed live {len(live)} events, read after "
                          f"its end {len(got)}: {[e[:2] for e in live]}")
    c.figures["new serve: SSE streams read / events"] = f"{streams} / {events}"
    c.figures["new serve: runs followed live while a worker of either version ran them, "
              "their events"] = f"{len(c.live)}, {sum(len(v) for v in c.live.values())}"
    if c.backend == "postgres":
        import psycopg

        async with await psycopg.AsyncConnection.connect(c.url) as conn:
            cur = await conn.execute("SELECT count(txid), count(*) - count(txid) "
                                     "FROM tether.run_events")
            row = await cur.fetchone()
        c.figures["run_events rows with a txid (before 0013) / without"] = (
            f"{row[0]} / {row[1]}" if row else "?")


async def old_serve(c: Check) -> None:
    """What REV's ``serve`` shows of the same runs. On PostgreSQL it reads only rows
    with a transaction id (before migration 0013): a known limit (docs/operations.md,
    Rolling updates), so there a figure, not a problem; on SQLite the same events."""
    print(f"[7] {c.rev}'s `tether serve` streams the same runs", flush=True)
    port = await start_serve(c, "old")
    if port is None:
        return
    counts = {"before": [0, 0], "after": [0, 0]}
    for prefix in ("pre-steps", "post-old-steps", "post-new-steps"):
        for run_id in [r for r in c.runs if r.startswith(prefix)][:2]:
            got = await asyncio.wait_for(sse(port, run_id), 60)
            new = [e for e in c.streams.get(run_id, []) if e[1] != "end"]
            old = [e for e in got if e[1] != "end"]
            when = counts["before" if prefix == "pre-steps" else "after"]
            when[0] += len(old)
            when[1] += len(new)
            if c.backend == "sqlite" and [e[:2] for e in old] != [e[:2] for e in new]:
                c.problem(f"{c.rev}'s SSE of {run_id}: {len(old)} events, the new "
                          f"serve's {len(new)}")
    c.figures[f"{c.rev} serve: events shown / the new serve's, of 2 runs ended before "
              "the migration; of 4 after"] = (
        f"{counts['before'][0]} / {counts['before'][1]}; "
        f"{counts['after'][0]} / {counts['after'][1]}")


async def logs(c: Check) -> None:
    """No process of either version logged a traceback (the killed ones aside, which
    log nothing for their kill)."""
    found = []
    for log in sorted(c.work.glob("*.log")):
        if "Traceback" in log.read_text(errors="replace"):
            found.append(log.stem)
    for name in found:
        c.problem(f"{name}'s log has a traceback")
    c.figures["process logs read / with a traceback"] = (
        f"{len(list(c.work.glob('*.log')))} / {len(found)}")


# -- the store and the old code -------------------------------------------------------------


@contextlib.contextmanager
def store(backend: str, work: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{work}/store.db"
        return
    import psycopg

    name = f"{DB_PREFIX}upgrade_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def old_tree(rev: str, into: Path) -> Path:
    """REV's ``src`` folder, from the checkout's git history."""
    git = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True,
                         capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=git.stdout, check=True)
    return into / "src"


async def check(rev: str, backend: str, work: Path, migrate_by: str) -> Check:
    from tether.testing.llm_server import RecordedRequest, Reply, ScriptedLLMServer

    def answer(request: RecordedRequest) -> Reply:
        return Reply(llm_answer(request.last_user_text()))

    old_src = old_tree(rev, work)
    async with ScriptedLLMServer(responder=answer) as llm:
        with store(backend, work) as url:
            c = Check(rev, backend, work, url, old_src, llm.base_url)
            c.migrate_by = migrate_by
            try:
                for phase in (before_upgrade, upgrade, mixed, kills, finish, serve, old_serve,
                              logs):
                    await phase(c)
            finally:
                c.stop_all()
            c.figures["LLM requests"] = len(llm.requests)
    return c


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.upgrade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="rev", required=True, help="the previous version")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--migrate-by", choices=("worker", "cli"), default="worker",
                        help="the new code's first process: a worker (default), which "
                             "migrates the store it opens, or `tether db migrate`")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds after which the check stops (default 600)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the working folder (logs, ledger, SQLite store)")
    args = parser.parse_args(argv)
    found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "--verify",
                            f"{args.rev}^{{commit}}"], capture_output=True, text=True)
    if found.returncode != 0:
        parser.error(f"--from {args.rev}: not a commit of {ROOT}'s history (a shallow "
                     "clone may lack it: git fetch --unshallow)")
    rev = found.stdout.strip()
    work = Path(tempfile.mkdtemp(prefix=f"tether-upgrade-{rev}-"))
    print(f"upgrade check: {rev} -> this checkout, {args.db}, in {work}", flush=True)
    t0 = time.monotonic()
    try:
        c = asyncio.run(asyncio.wait_for(check(rev, args.db, work, args.migrate_by),
                                         args.timeout))
    except TimeoutError:
        print(f"FAILED: the check did not end within {args.timeout:.0f} s")
        return 1
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    c.figures["seconds"] = round(time.monotonic() - t0, 1)
    print(f"\nsummary ({rev} -> new, {args.db}):")
    for name, value in c.figures.items():
        print(f"  {name}: {value}")
    print(f"problems: {len(c.problems)}")
    for p in c.problems:
        print(f"  - {p}")
    return 1 if c.problems else 0


if __name__ == "__main__":
    sys.exit(main())
