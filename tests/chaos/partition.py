"""A network partition of one worker from PostgreSQL.

The test makes a network namespace and a veth pair (``ip netns add``, ``ip link add ...
type veth``); a private cluster (``pgcluster.py``) listens on 127.0.0.1 and on the
host side of the pair. Worker P runs inside the namespace (``ip netns exec``) and
reaches the server through the veth; two more workers run on the host. While P holds
runs, the host side of the link goes down (``ip link set ... down``: packets vanish,
no RST) for several lease periods, then up again.

Figures: the runs P held at the cut, and how many of them moved to the other workers
while P was cut off; whether P (the same process, never restarted) committed new work
after the link came back; duplicated committed-step effects (an execution begun after
the step's journal entry was finished); stale writes accepted (a step run by P and
then again by another worker after the takeover, whose journal entry holds P's
result); runs lost or not completed; wrong results.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from tests import CHECKOUT_PATH
from tests.chaos import chaos_app
from tests.chaos.harness import ROOT, retried
from tests.chaos.pgcluster import PrivateCluster, missing_privilege
from tether import App

LEASE = 2.0
PROFILES = {"smoke": {"rounds": 1, "runs": 24, "down": 8.0},
            "full": {"rounds": 5, "runs": 60, "down": 15.0}}


def missing_netns() -> str | None:
    reason = missing_privilege()
    if reason:
        return reason
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    name = f"tchk{uuid.uuid4().hex[:6]}"
    out = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        return f"cannot make a network namespace: {out.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], check=False)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Namespace:
    """A namespace with one veth pair: host side ``host_ip``, inside ``inner_ip``."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"tch{tag}"
        self.host_if, self.inner_if = f"tch{tag}h", f"tch{tag}n"
        net = random.randrange(1, 250)
        self.host_ip, self.inner_ip = f"10.231.{net}.1", f"10.231.{net}.2"

    def __enter__(self) -> Namespace:
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.inner_if)
            _ip("link", "set", self.inner_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.name, "addr", "add", f"{self.inner_ip}/30", "dev", self.inner_if)
            _ip("-n", self.name, "link", "set", self.inner_if, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def link(self, up: bool) -> None:
        _ip("link", "set", self.host_if, "up" if up else "down")

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


@dataclass
class PartitionFigures:
    rounds: int = 0
    runs: int = 0
    runs_lost: int = 0
    runs_not_completed: int = 0
    wrong_results: int = 0
    held_at_cut: int = 0
    moved_while_cut: int = 0
    move_seconds_max: float = 0.0
    rejoined_rounds: int = 0  # rounds after which P committed new work, same process
    p_restarted: int = 0
    rejoin_seconds_max: float = 0.0  # from healing until it was seen committing again
    duplicated_committed_effects: int = 0
    stale_writes_accepted: int = 0
    reexecutions: int = 0

    def summary(self) -> dict[str, Any]:
        return {"rounds (link down, up)": self.rounds, "runs": self.runs,
                "runs lost": self.runs_lost,
                "runs not completed after drain": self.runs_not_completed,
                "wrong results": self.wrong_results,
                "runs held by the cut-off worker": self.held_at_cut,
                "of those, moved to others while cut off": self.moved_while_cut,
                "slowest move s": round(self.move_seconds_max, 2),
                "rounds after which it committed new work (no restart)": self.rejoined_rounds,
                "slowest rejoin s (seen, 1 s polls)": round(self.rejoin_seconds_max, 1),
                "cut-off worker restarted": self.p_restarted,
                "duplicated committed-step effects": self.duplicated_committed_effects,
                "stale writes accepted": self.stale_writes_accepted,
                "in-flight re-executions": self.reexecutions}


def _ledger(ledger: Path) -> dict[str, list[tuple[int, float]]]:
    rows: dict[str, list[tuple[int, float]]] = {}
    if not ledger.exists():
        return rows
    conn = apsw.Connection(str(ledger), flags=apsw.SQLITE_OPEN_READONLY)
    conn.setbusytimeout(30_000)
    try:
        for key, pid, at in conn.execute("SELECT key, pid, at FROM effects ORDER BY at"):
            rows.setdefault(str(key), []).append((int(str(pid)), float(str(at))))
    except apsw.SQLError:
        pass
    finally:
        conn.close()
    return rows


async def partition(work: Path, rounds: int, runs_per_round: int,
                    down: float) -> PartitionFigures:
    figures = PartitionFigures()
    ledger = work / "ledger.db"
    env = dict(os.environ, CHAOS_LEDGER=str(ledger), PYTHONPATH=CHECKOUT_PATH, CHAOS_CRASH_P="0")
    env.pop("TETHER_DATABASE_URL", None)
    procs: list[subprocess.Popen[bytes]] = []

    def start(url: str, name: str, prefix: list[str]) -> subprocess.Popen[bytes]:
        with open(work / f"{name}.log", "wb") as log:
            p = subprocess.Popen([*prefix, sys.executable, "-m", "tether", "worker",
                                  "tests.chaos.chaos_app:app", "--db", url, "--lease",
                                  str(LEASE)], cwd=ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    with Namespace() as ns:
        cluster = PrivateCluster(listen=("127.0.0.1", ns.host_ip))
        await asyncio.to_thread(cluster.start)
        app = App(cluster.url())
        try:
            await app._open()
            cut_off = start(cluster.url(host=ns.host_ip), "worker-partitioned",
                            ["ip", "netns", "exec", ns.name])
            for n in range(2):
                start(cluster.url(), f"worker-{n}", [])
            marker = f":{cut_off.pid}:"
            end = time.monotonic() + 60
            while time.monotonic() < end and not all(
                    "serving queues" in (work / f"{n}.log").read_text(errors="replace")
                    for n in ("worker-partitioned", "worker-0", "worker-1")):
                await asyncio.sleep(0.2)
            started: list[str] = []
            for r in range(rounds):
                figures.rounds += 1
                # Start runs until P holds some, then cut it off.
                held: list[str] = []
                end = time.monotonic() + 60
                batch_no = 0
                while not held and time.monotonic() < end:
                    batch = [f"p{r}-{batch_no}-{i:03d}" for i in range(runs_per_round)]
                    batch_no += 1
                    for rid in batch:
                        await app.start(chaos_app.part_run, 0, run_id=rid)
                    started += batch
                    until = time.monotonic() + 5
                    while not held and time.monotonic() < until:
                        await asyncio.sleep(0.1)
                        running = await app.store.run_list(status="running", limit=10_000)
                        held = [x.run_id for x in running if x.owner and marker in x.owner]
                figures.held_at_cut += len(held)
                ns.link(up=False)
                cut_at = time.monotonic()
                moved: set[str] = set()
                while time.monotonic() - cut_at < down:
                    for rid in held:
                        run = await app.store.run_get(rid)
                        if rid not in moved and run is not None and (
                                run.status.is_ended or (run.owner and marker not in run.owner)):
                            moved.add(rid)
                            figures.move_seconds_max = max(figures.move_seconds_max,
                                                           time.monotonic() - cut_at)
                    await asyncio.sleep(0.1)
                figures.moved_while_cut += len(moved)
                ns.link(up=True)
                healed_at = time.time()
                # New work after healing: P must commit some of it, as the same process.
                # Batches keep coming until it does: the others may finish one batch
                # before P's connections recover.
                end = time.monotonic() + 90
                rejoined = False
                batch_no = 0
                fresh: list[str] = []
                while not rejoined and time.monotonic() < end:
                    batch = [f"p{r}-new{batch_no}-{i:02d}" for i in range(6)]
                    batch_no += 1
                    for rid in batch:
                        await retried(lambda x=rid: app.start(chaos_app.part_run, 1, run_id=x))
                    fresh += batch
                    started += batch
                    await asyncio.sleep(1.0)
                    for rid in fresh:
                        for e in await retried(lambda x=rid: app.store.journal_read(x)):
                            if e.finished_at and e.finished_at > healed_at and \
                                    app.codec.decode(e.result) == cut_off.pid:
                                rejoined = True
                if rejoined and cut_off.poll() is None:
                    figures.rejoined_rounds += 1
                    figures.rejoin_seconds_max = max(figures.rejoin_seconds_max,
                                                     time.time() - healed_at)
            figures.p_restarted = int(cut_off.poll() is not None)
            # Drain.
            end = time.monotonic() + 120
            while time.monotonic() < end:
                runs = {x.run_id: x for x in await app.store.run_list(limit=100_000)}
                if all(rid in runs and runs[rid].status.is_ended for rid in started):
                    break
                await asyncio.sleep(0.5)
            figures.runs = len(started)
            effects = _ledger(ledger)
            for rid in started:
                run = await app.store.run_get(rid)
                if run is None:
                    figures.runs_lost += 1
                    continue
                if run.status.value != "completed":
                    figures.runs_not_completed += 1
                    continue
                journal = await app.store.journal_read(rid)
                pids = [app.codec.decode(e.result) for e in journal]
                if app.codec.decode(run.result) != pids or len(pids) != 4:
                    figures.wrong_results += 1
                for e in journal:
                    ran = effects.get(f"{rid}:{e.position}", [])
                    figures.reexecutions += max(len(ran) - 1, 0)
                    committed = app.codec.decode(e.result)
                    if e.finished_at is not None:
                        figures.duplicated_committed_effects += sum(
                            1 for _, at in ran if at > e.finished_at + 1e-3)
                    # Run by P, then again by another worker after the takeover: the
                    # journal must hold the other worker's result.
                    if len(ran) > 1 and ran[0][0] == cut_off.pid \
                            and any(pid != cut_off.pid for pid, _ in ran[1:]) \
                            and committed == cut_off.pid:
                        figures.stale_writes_accepted += 1
        finally:
            ns.link(up=True)
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    await asyncio.to_thread(p.wait, 30)
                except subprocess.TimeoutExpired:
                    p.kill()
            await app.close()
            await asyncio.to_thread(cluster.stop)
    return figures


MUST_BE_ZERO = ("runs lost", "runs not completed after drain", "wrong results",
                "cut-off worker restarted", "duplicated committed-step effects",
                "stale writes accepted")
