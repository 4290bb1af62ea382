"""The chaos workload, run by real ``tether worker`` processes.

A run of ``chaos(seed)`` draws its plan from ``plan(seed)``: steps, durable timers,
child runs and signal waits. Every step writes one row to the effect ledger (a SQLite
file of its own, ``CHAOS_LEDGER``) keyed by ``tether.step_key()`` *before* returning, so
the ledger sees every execution, including those a crash made Tether repeat. With
``CHAOS_CRASH_P`` > 0 a step kills its own process with SIGKILL right after its effect
and before Tether can commit it: the named crash point ``effect.before_commit``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time

import apsw

import tether
from tether import App
from tether._replay import current_run

app = App(os.environ.get("CHAOS_DB"))

_ledger = threading.local()  # one connection per step thread: apsw forbids sharing


#: The operations that wait for the signal "go" (one per run at most).
SIGNALS = ("signal", "gsignal")


def plan(seed: int) -> list[tuple[str, int]]:
    """The operations of run ``seed``: ("step", i), ("sleep", ms), ("child", i),
    ("signal", 0), ("gather", i): two branches of two steps each, gathered (``gathered``);
    ("gsignal", i): a branch of two steps gathered with one that waits for the signal and
    then runs a step (``signalled``: the waiting branch parks while the other one's steps
    run, and the run is released once they are journaled). Shared by the workflow and the
    model (pure, from the seed only)."""
    rng = random.Random(seed)
    ops: list[tuple[str, int]] = []
    for i in range(rng.randint(3, 8)):
        kind = rng.choices(["step", "sleep", "child", "signal", "gather", "gsignal"],
                           [6, 2, 1, 1, 1, 1])[0]
        if kind in SIGNALS and any(k in SIGNALS for k, _ in ops):
            kind = "step"  # one signal wait per run: the harness sends one "go"
        ops.append((kind, rng.randint(20, 300) if kind == "sleep" else i))
    return ops


def value(seed: int, i: int) -> int:
    return (seed * 7919 + i * 104729) % 1_000_003


def branch_args(i: int, b: int) -> tuple[int, int]:
    """The arguments of branch ``b``'s two steps in the gather of operation ``i``: each
    branch's own, so that a result delivered to the wrong branch changes the run's."""
    return 1000 + i * 10 + b * 2, 1001 + i * 10 + b * 2


def _ledger_conn() -> apsw.Connection:
    conn: apsw.Connection | None = getattr(_ledger, "conn", None)
    if conn is None:
        conn = apsw.Connection(os.environ["CHAOS_LEDGER"])
        conn.setbusytimeout(60_000)
        conn.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT NOT NULL, "
                     "pid INTEGER NOT NULL, attempt INTEGER NOT NULL, at REAL NOT NULL, "
                     "wall REAL, token INTEGER)")
        _ledger.conn = conn
    return conn


def record_effect() -> None:
    """The side effect: one ledger row, durable before the step returns."""
    # ``at``: the time on the engine's clock (tether.now() in a step: fresh, not
    # journaled), the clock the journal's finished_at is written with: on PostgreSQL it
    # follows the server's as this worker last read it (``SyncedClock``), which may
    # differ from another worker's by up to half a round trip of that read. ``wall``:
    # this machine's clock, one for every worker; ``token``: the fencing token of the
    # lease the step runs under (``harness._check`` tells with them whether an
    # execution began after the committed one had finished).
    ctx = current_run.get()
    _ledger_conn().execute(
        "INSERT INTO effects (key, pid, attempt, at, wall, token) VALUES (?, ?, ?, ?, ?, ?)",
        (tether.step_key(), os.getpid(), tether.step_attempt(), tether.now().timestamp(),
         time.time(), None if ctx is None else ctx.lease.fencing_token))
    crash_p = float(os.environ.get("CHAOS_CRASH_P", "0") or 0)
    if crash_p and random.random() < crash_p:
        os.kill(os.getpid(), signal.SIGKILL)  # crash point effect.before_commit


@app.step
def effect(seed: int, i: int) -> int:
    record_effect()
    return value(seed, i)


@app.workflow
async def child(seed: int, i: int) -> int:
    a = await effect(seed + 1, i)
    b = await effect(seed + 2, i)
    return (a + b) % 1_000_003


async def gathered(seed: int, i: int, b: int) -> int:
    """A branch of a gather: two steps, the second taken when the first's result
    arrives, so the positions the branches take depend on the order of completion."""
    first, second = branch_args(i, b)
    a = await effect(seed, first)
    return (a + await effect(seed, second)) % 1_000_003


async def signalled(seed: int, i: int) -> int:
    """A branch that waits for the signal "go", then runs a step."""
    payload = int(await tether.wait_for_signal("go"))
    return (payload + await effect(seed, branch_args(i, 1)[0])) % 1_000_003


@app.workflow
async def chaos(seed: int) -> list[int]:
    out: list[int] = []
    for kind, arg in plan(seed):
        if kind == "step":
            out.append(await effect(seed, arg))
        elif kind == "sleep":
            await tether.sleep(arg / 1000)
        elif kind == "child":
            out.append(await tether.call(child, seed, arg))
        elif kind == "gather":
            out.extend(await asyncio.gather(gathered(seed, arg, 0), gathered(seed, arg, 1)))
        elif kind == "gsignal":
            out.extend(await asyncio.gather(gathered(seed, arg, 0), signalled(seed, arg)))
        else:
            out.append(int(await tether.wait_for_signal("go")))
    return out


@app.step
def slow_effect() -> int:
    """The fencing race's step: its effect, then a pause in which the harness stops
    this process (SIGSTOP) until another worker has taken the run over."""
    record_effect()
    time.sleep(0.6)
    return os.getpid()


@app.workflow
async def fenced(i: int) -> int:
    return await slow_effect()


@app.workflow
async def storm_one(i: int) -> int:
    return await effect(i, 0)


@app.step
def held_effect() -> int:
    """The clock scenario's long step: its worker holds the run's lease for 4 s."""
    record_effect()
    time.sleep(4.0)
    return os.getpid()


@app.workflow
async def clock_hold(i: int) -> int:
    return await held_effect()


@app.workflow
async def clock_timer(i: int, ms: int) -> int:
    await tether.sleep(ms / 1000)
    return await effect(i, 0)


@app.step
def pid_step(i: int, k: int) -> int:
    """The partition scenario's step: its effect, a short pause, and who ran it."""
    record_effect()
    time.sleep(0.4)
    return os.getpid()


@app.workflow
async def part_run(i: int) -> list[int]:
    return [await pid_step(i, k) for k in range(4)]


@app.step
def gated_effect() -> int:
    """The recovery measurement's step: its effect, then a pause until the file
    ``CHAOS_GATE`` exists, so that the harness kills its worker while the run is held."""
    record_effect()
    while not os.path.exists(os.environ["CHAOS_GATE"]):
        time.sleep(0.02)
    return os.getpid()


@app.workflow
async def gated_then_waits(i: int) -> int:
    """Held while its step waits for the gate; then released until the signal "go"."""
    await gated_effect()
    return int(await tether.wait_for_signal("go"))
