"""``tether replay --check --workflow`` as a deploy gate: ``--unfinished`` (and
``--status``) check only the runs a worker may still replay, so an ended run that the new
code would not replay does not fail the check; an unfinished one still does. Real runs
on SQLite and PostgreSQL, the real CLI in its own process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests import forked
from tests.engine.helpers import status_is, wait_for
from tether import App

from . import replay_gate_apps as apps

ROOT = Path(__file__).resolve().parents[2]


def tether(*args: str) -> forked.subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TETHER_DATABASE_URL", None)
    return forked.run([sys.executable, "-m", "tether", *args], cwd=ROOT, env=env,
                      capture_output=True, text=True, timeout=60)


async def _record(store_url: str) -> None:
    """A completed run "done" and a run "open" waiting for its signal, by v1."""
    app = App(store_url)
    gate = apps.define(app)
    async with app.worker():
        done = await app.start(gate, 1, run_id="done")
        await app.start(gate, 5, run_id="open")
        await app.signal("done", "go")
        assert await done.result(timeout=10) == 20
        await wait_for(lambda: status_is(app, "open", "waiting"))
    await app.close()


def check(store_url: str, code: str, *flags: str) -> tuple[int, dict[str, bool]]:
    out = tether("replay", "--check", f"tests.testing.replay_gate_apps:{code}",
                 "--db", store_url, "--workflow", "gate", "--json", *flags)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, {r["run_id"]: r["compatible"] for r in json.loads(out.stdout)}


async def test_unfinished_checks_only_the_runs_that_may_replay(store_url: str) -> None:
    await _record(store_url)
    run = asyncio.to_thread
    # Every run: the completed one does not replay under the appended step (exit 1).
    assert await run(check, store_url, "appended") == (1, {"done": False, "open": True})
    # The runs in flight alone: the gate passes.
    assert await run(check, store_url, "appended", "--unfinished") == (0, {"open": True})
    assert await run(check, store_url, "appended", "--status", "waiting") == (
        0, {"open": True})
    assert await run(check, store_url, "appended", "--status", "queued,running",
                     "--status", "blocked") == (0, {})
    assert await run(check, store_url, "appended", "--status", "completed") == (
        1, {"done": False})
    # An unfinished run the new code would block still fails it.
    assert await run(check, store_url, "renamed", "--unfinished") == (1, {"open": False})
    assert await run(check, store_url, "v1", "--unfinished") == (0, {"open": True})


def test_a_bad_status_is_bad_input(sqlite_url: str) -> None:
    out = tether("replay", "--check", "tests.testing.replay_gate_apps:v1", "--db",
                 sqlite_url, "--workflow", "gate", "--status", "done")
    assert out.returncode == 2
    assert "--status 'done': 'done' is not a status; the statuses are queued," in out.stderr
