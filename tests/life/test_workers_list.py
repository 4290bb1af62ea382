"""``tether workers``: the live workers of real worker processes, one row each, with the
runs each holds; a killed one dropped once found dead, a stale registration under
``--all``."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import forked
from tests.engine.helpers import wait_for
from tests.life.procs import ROOT, Workers
from tests.web.helpers import READ, serving
from tether import App

pytestmark = [pytest.mark.slow, pytest.mark.faults]


def tether_cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    env["COLUMNS"] = "200"
    return forked.run([sys.executable, "-m", "tether", *args, "--db", db], cwd=ROOT,
                      capture_output=True, text=True, timeout=60, env=env)


def listed(db: str, *extra: str) -> list[dict[str, Any]]:
    out = tether_cli("workers", "--json", *extra, db=db)
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


async def ids(app: App) -> set[str]:
    return {w.worker_id for w in await app.store.worker_list()}


def served_rows(http: httpx.Client, **params: str) -> list[dict[str, Any]]:
    r = http.get("/api/v1/workers", params=params)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"workers"}, r.text
    rows: list[dict[str, Any]] = r.json()["workers"]
    return rows


def steady(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` without their heartbeats (which move between two reads)."""
    return [{k: v for k, v in r.items() if k != "heartbeat_at"} for r in rows]


async def test_workers_lists_live_workers_their_versions_queues_and_held_runs(
        store_url: str, workers: Workers, tmp_path: Path) -> None:
    """Two workers of different queues, one of a version, one holding a run in a slow
    step: one row each, sorted by start on one host, the same from ``tether workers
    --json`` and ``GET /api/v1/workers``; one killed with SIGKILL drops out once the
    other finds it dead; a registration silent for over a minute is listed only under
    ``--all`` (``?all=true``), marked stale, with the run it still holds."""
    with serving(store_url, tmp_path, app=None, tokens=f"read:{READ}\n") as served, \
            httpx.Client(base_url=served.url, timeout=30,
                         headers={"Authorization": f"Bearer {READ}"}) as http:
        await _story(store_url, workers, http)


async def _story(store_url: str, workers: Workers, http: httpx.Client) -> None:
    async with App(store_url) as client:
        a = workers.start("--queue", "default", version="v7")
        await wait_for(lambda: _n(client, 1), timeout=30, what="worker a up")
        (a_id,) = await ids(client)
        b = workers.start("--queue", "other", "--queue", "spare")
        await wait_for(lambda: _n(client, 2), timeout=30, what="worker b up")
        (b_id,) = await ids(client) - {a_id}
        await client.start("deploy", 120.0, run_id="d-1")
        await wait_for(lambda: _started(workers), timeout=30, what="slow step started")

        rows = listed(store_url)
        assert [r["worker_id"] for r in rows] == [a_id, b_id], rows
        ra, rb = rows
        assert (ra["pid"], ra["version"], ra["queues"], ra["runs_held"], ra["live"]) == (
            a.pid, "v7", ["default"], 1, True), rows
        assert (rb["pid"], rb["version"], sorted(rb["queues"]), rb["runs_held"],
                rb["live"]) == (b.pid, None, ["other", "spare"], 0, True), rows
        assert ra["hostname"] == rb["hostname"] and ra["started_at"] <= rb["started_at"]
        assert all(r["heartbeat_at"] >= r["started_at"] for r in rows), rows
        assert steady(served_rows(http)) == steady(rows)
        for bad in ({"all": "maybe"}, {"al": "true"}):
            refused = http.get("/api/v1/workers", params=bad)
            assert refused.status_code == 400 and set(refused.json()) == {"error"}, bad

        table = tether_cli("workers", db=store_url)
        assert table.returncode == 0, table.stderr
        head, *lines = table.stdout.splitlines()
        assert head.split() == ["WORKER", "HOST", "PID", "VERSION", "UP", "SEEN", "HELD",
                                "QUEUES"], table.stdout
        assert lines[0].split()[0] == a_id and lines[0].split()[2:4] == [str(a.pid), "v7"]
        assert lines[0].split()[-2:] == ["1", "default"], table.stdout
        assert lines[1].split()[0] == b_id and lines[1].split()[3] == "-", table.stdout

        b.send_signal(signal.SIGKILL)
        b.wait(30)
        await wait_for(lambda: _gone(client, b_id), timeout=30, what="b found dead")
        assert [r["worker_id"] for r in listed(store_url)] == [a_id]
        assert [r["worker_id"] for r in listed(store_url, "--all")] == [a_id]

        a.send_signal(signal.SIGKILL)
        a.wait(30)
        # A minute later a's registration is still there (no worker left to find it
        # dead), its heartbeat as old: the row a's last heartbeat left, aged.
        (info,) = await client.store.worker_list()
        await client.store.worker_register(info=dataclasses.replace(
            info, started_at=info.started_at - 120, heartbeat_at=info.heartbeat_at - 120))
    assert listed(store_url) == [] == served_rows(http)
    none = tether_cli("workers", db=store_url)
    assert none.returncode == 0 and none.stdout == "no live workers\n", none
    (stale,) = listed(store_url, "--all")
    assert served_rows(http, all="true") == [stale]
    assert (stale["worker_id"], stale["live"], stale["runs_held"]) == (a_id, False, 1)
    shown = tether_cli("workers", "--all", db=store_url).stdout.splitlines()
    assert shown[0].split()[-2:] == ["STATE", "QUEUES"], shown
    assert shown[1].split()[0] == a_id and shown[1].split()[-2:] == ["stale", "default"]
    assert time.time() - stale["heartbeat_at"] > 60


async def _n(app: App, n: int) -> bool:
    return len(await app.store.worker_list()) >= n


async def _started(w: Workers) -> bool:
    return w.counts()["start slow"] >= 1


async def _gone(app: App, worker_id: str) -> bool:
    return worker_id not in await ids(app)
