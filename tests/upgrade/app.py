"""The upgrade check's workflows, run by workers of two Tether versions on one store.

Only API that both the previous and the new version have is used here: this module is
imported by ``tether worker`` processes of either. Every result is a pure function of
the run's input (``expected``), so a run that went through both versions must end with
what a run on one version ends with. Every step execution appends a row (step key,
attempt, pid) to the ledger file ``UPGRADE_LEDGER`` before returning, so the check
sees which process ran what, and every step that ran twice.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import apsw

import tether
from tether import App, RetryPolicy
from tether.ai import LLM, user_message

app = App(os.environ.get("UPGRADE_DB"))
llm = LLM("openai:gpt-4.1-mini", base_url=os.environ.get("UPGRADE_LLM_URL"),
          api_key="upgrade-check", breaker=None)

_local = threading.local()


def _ledger() -> apsw.Connection:
    conn: apsw.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = apsw.Connection(os.environ["UPGRADE_LEDGER"])
        conn.setbusytimeout(60_000)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT NOT NULL, "
                     "attempt INTEGER NOT NULL, pid INTEGER NOT NULL, at REAL NOT NULL)")
        _local.conn = conn
    return conn


def _effect() -> None:
    _ledger().execute("INSERT INTO effects VALUES (?, ?, ?, ?)",
                      (tether.step_key(), tether.step_attempt(), os.getpid(), time.time()))


def value(k: int, i: int) -> int:
    return (k * 7919 + i * 104729) % 1_000_003


@app.step
def add(k: int, i: int) -> int:
    _effect()
    return value(k, i)


@app.step(retry=RetryPolicy(initial_interval=4.0, backoff=1.0, max_attempts=10))
def flaky_step(k: int, fails: int) -> int:
    """Fails its first ``fails`` attempts, 4 s apart: a run caught mid-retry."""
    _effect()
    if tether.step_attempt() <= fails:
        raise RuntimeError(f"attempt {tether.step_attempt()} fails on purpose")
    return value(k, 99)


@app.step
def slow_step(k: int, seconds: float) -> int:
    """Says it started in this process (a file the check waits for), then works
    ``seconds``: the check kills its worker with SIGKILL meanwhile. (Not the attempt
    number: SQLite may give an attempt cut off by a kill the same number again.)"""
    _effect()
    open(os.path.join(os.environ["UPGRADE_DIR"], f"started-{k}-{os.getpid()}"), "w").close()
    time.sleep(seconds)
    return value(k, 7)


@app.step(retry=RetryPolicy(max_attempts=1))
def gated_step(k: int) -> int:
    """Fails until the file ``gate-K`` exists: a failed run that ``tether retry``
    completes once the 'fix' is in."""
    _effect()
    if not os.path.exists(os.path.join(os.environ["UPGRADE_DIR"], f"gate-{k}")):
        raise RuntimeError(f"gate {k} is closed")
    return value(k, 5)


@app.workflow
async def steps(k: int, n: int) -> list[int]:
    out = [await add(k, i) for i in range(n)]
    out += await asyncio.gather(add(k, 100), add(k, 101))
    return out


@app.workflow
async def on_signal(k: int) -> list[Any]:
    a = await add(k, 1)
    got = await tether.wait_for_signal("go")
    return [a, got, await add(k, 2)]


@app.workflow
async def sleeper(k: int, seconds: float) -> list[int]:
    a = await add(k, 1)
    await tether.sleep(seconds)
    return [a, await add(k, 2)]


@app.workflow
async def child(k: int) -> list[Any]:
    got = await tether.wait_for_signal("go")
    return [got, await add(k, 3)]


@app.workflow
async def parent(k: int) -> list[Any]:
    a = await add(k, 1)
    return [a, await tether.call(child, k)]


@app.workflow
async def flaky(k: int, fails: int) -> list[int]:
    return [await add(k, 1), await flaky_step(k, fails)]


@app.workflow
async def slow(k: int, seconds: float) -> list[int]:
    return [await add(k, 1), await slow_step(k, seconds), await add(k, 2)]


@app.workflow
async def gated(k: int) -> list[int]:
    return [await add(k, 1), await gated_step(k)]


@app.workflow
async def ask(k: int) -> list[Any]:
    reply = await llm.chat([user_message(f"echo {k}")])
    return [await add(k, 1), reply.text]


@app.workflow
async def chatty(k: int, n: int) -> int:
    """Many small writes of one run: a step, then a live status, ``n`` times (the check
    publishes chunks into the run's events meanwhile)."""
    total = 0
    for i in range(n):
        total = (total + await add(k, i)) % 1_000_003
        tether.set_status({"done": i})
    return total


def llm_answer(prompt: str) -> str:
    """What the scripted LLM server answers to a prompt (its responder)."""
    return f"echoed: {prompt}"


def expected(workflow: str, args: list[Any], signal: Any = None) -> Any:
    """The result of a run of ``workflow(*args)`` on one version (``signal``: the
    payload of the signal "go" it took)."""
    k = args[0]
    if workflow == "steps":
        return [value(k, i) for i in range(args[1])] + [value(k, 100), value(k, 101)]
    if workflow == "on_signal":
        return [value(k, 1), signal, value(k, 2)]
    if workflow == "sleeper":
        return [value(k, 1), value(k, 2)]
    if workflow == "parent":
        return [value(k, 1), [signal, value(k, 3)]]
    if workflow == "flaky":
        return [value(k, 1), value(k, 99)]
    if workflow == "slow":
        return [value(k, 1), value(k, 7), value(k, 2)]
    if workflow == "gated":
        return [value(k, 1), value(k, 5)]
    if workflow == "chatty":
        return sum(value(k, i) for i in range(args[1])) % 1_000_003
    if workflow == "ask":
        return [value(k, 1), llm_answer(f"echo {k}")]
    raise ValueError(f"no such workflow: {workflow}")
