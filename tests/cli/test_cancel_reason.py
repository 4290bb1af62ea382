"""A cancel's reason and origin as a user sees them, with real worker processes on both
stores: ``tether cancel --reason``, ``tether show`` (text and ``--json``) and ``tether
result`` of runs cancelled on their own request and with their parent (a cascade of
two levels, each delivered by a worker's replay)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import tether
from tests import forked
from tests.cli.test_cli import cli
from tests.forked import stop_process
from tether import App
from tether.cli._common import fmt_time

APP = "tests.cli.cancel_app:app"


def _worker(db: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("TETHER_DATABASE_URL", None)
    with log.open("wb") as out:
        return forked.Popen([sys.executable, "-m", "tether", "worker", APP, "--db", db],
                            cwd=forked.ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


async def _until(app: App, run_id: str, status: tether.RunStatus,
                 proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(1200):  # (a bounded wait for the worker, not a timing assertion)
        try:
            if (await app.get_run(run_id)).status is status:
                return
        except tether.RunNotFound:  # (not started yet)
            pass
        assert proc.poll() is None, log.read_text()
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never {status.value}: {log.read_text()}")


async def test_a_cancels_reason_and_origin_are_kept_and_shown(
        store_url: str, tmp_path: Path) -> None:
    """``tether cancel --reason`` keeps why; a parent's cancel gives its children its
    reason and its id (``cancelled_with``), the worker's replay of each level passing
    it on: ``tether result`` of the grandchild says it was cancelled with its parent
    run, whose cancel was requested when, and why; ``tether show`` says it (text and
    ``--json``). A child cancelled on its own request first keeps its own reason, with
    no parent. A repeat with another reason keeps the first and says so on stderr.
    Until 2026-12-07 a cancel took no reason, and "with its parent" was guessed from
    the two requests' times."""
    log = tmp_path / "worker.log"
    worker = _worker(store_url, log)
    app = App(store_url)
    try:
        started = await cli("start", "top", "--id", "p-1", db=store_url)
        assert started.returncode == 0, started.stderr
        await _until(app, "p-1.m.w", tether.RunStatus.WAITING, worker, log)
        await _until(app, "p-1.own", tether.RunStatus.WAITING, worker, log)
        own = await cli("cancel", "p-1.own", "--reason", "not needed", "--json",
                        db=store_url)
        assert own.returncode == 0, own.stderr
        assert json.loads(own.stdout) == {"run_id": "p-1.own", "status": "waiting",
                                          "cancel_reason": "not needed"}
        await _until(app, "p-1.own", tether.RunStatus.CANCELLED, worker, log)
        asked = await cli("cancel", "p-1", "--reason", "duplicate order", db=store_url)
        assert asked.returncode == 0 and asked.stderr == "", asked
        again = await cli("cancel", "p-1", "--reason", "another", db=store_url)
        assert again.returncode == 0, again.stderr
        assert again.stderr.splitlines() == [
            "tether: the cancel was requested already (an earlier request): it keeps that "
            "request's reason 'duplicate order', not this one's"]
        await _until(app, "p-1.m.w", tether.RunStatus.CANCELLED, worker, log)
        await _until(app, "p-1", tether.RunStatus.CANCELLED, worker, log)
        said = {run_id: await cli("result", run_id, db=store_url)
                for run_id in ("p-1", "p-1.m.w", "p-1.own")}
        docs = {run_id: json.loads((await cli("show", run_id, "--json", db=store_url)).stdout)
                for run_id in ("p-1", "p-1.m", "p-1.m.w", "p-1.own")}
        text = (await cli("show", "p-1.m.w", db=store_url)).stdout
        runs = {run_id: await app.store.run_get(run_id)
                for run_id in ("p-1", "p-1.m", "p-1.m.w", "p-1.own")}
    finally:
        stop_process(worker, 60)
        await app.close()
    assert {run_id: (d["status"], d["cancel_reason"], d["cancelled_with"])
            for run_id, d in docs.items()} == {
        "p-1": ("cancelled", "duplicate order", None),
        "p-1.m": ("cancelled", "duplicate order", "p-1"),
        "p-1.m.w": ("cancelled", "duplicate order", "p-1.m"),
        "p-1.own": ("cancelled", "not needed", None)}
    top, mid, kid, own_run = (runs[r] for r in ("p-1", "p-1.m", "p-1.m.w", "p-1.own"))
    assert top is not None and mid is not None and kid is not None and own_run is not None
    assert (said["p-1.m.w"].returncode, said["p-1.m.w"].stderr.splitlines()) == (1, [
        f"tether: error: run 'p-1.m.w' was cancelled at {fmt_time(kid.finished_at)} with "
        f"its parent run 'p-1.m', whose cancel was requested at "
        f"{fmt_time(mid.cancel_requested_at)}: duplicate order"])
    assert said["p-1"].stderr.splitlines() == [
        f"tether: error: run 'p-1' was cancelled at {fmt_time(top.finished_at)}, on a "
        f"cancel requested at {fmt_time(top.cancel_requested_at)}: duplicate order"]
    assert said["p-1.own"].stderr.splitlines() == [
        f"tether: error: run 'p-1.own' was cancelled at {fmt_time(own_run.finished_at)}, "
        f"on a cancel requested at {fmt_time(own_run.cancel_requested_at)}: not needed"]
    lines = text.splitlines()
    at = lines.index(f"cancel requested at {fmt_time(kid.cancel_requested_at)} with its "
                     "parent run 'p-1.m'")
    assert lines[at + 1] == "  reason: duplicate order", text


async def test_a_bad_reason_is_refused_before_anything_is_asked(store_url: str) -> None:
    """``tether cancel --reason`` that is empty, over 1,000 characters or over a line:
    one error line, exit 2, and the run's cancel is not requested."""
    async with App(store_url) as app:
        await app.start("waiter", run_id="w-1")
    for bad, said in (("", "--reason: a cancel's reason is empty: give a reason, or none"),
                      ("x" * 1001, "--reason: a cancel's reason is 1,001 characters long; "
                                   "at most 1,000 are allowed"),
                      ("a\nb", "--reason: a cancel's reason holds control characters (a "
                               "line break, a tab, an escape): it is one line of text")):
        proc = await cli("cancel", "w-1", "--reason", bad, db=store_url)
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            2, "", f"tether: error: {said}\n"), proc
    async with App(store_url) as app:
        run = await app.store.run_get("w-1")
    assert run is not None and (run.status, run.cancel_requested) == ("queued", False)
