"""Client side with real processes: a long remote MCP task (it works until the test
releases it, after the kill, so no wall-clock duration is waited for). The run holds no
worker while it waits (a worker with concurrency 1 finishes other runs meanwhile); the
worker is killed (SIGKILL) mid-wait and replaced; the replacement resumes polling the
same task id and the remote tool was called exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.procs import ROOT
from tests.mcp_server import client_apps
from tether import RunStatus

pytestmark = [pytest.mark.slow, pytest.mark.faults]

APP = "tests.mcp_server.client_apps:app"


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[asyncio.subprocess.Process] = []
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), REMOTE_LOG=str(tmp / "remote.log"),
                        TETHER_TEST_SIDE_FILE=str(tmp / "side.txt"),
                        REMOTE_RELEASE=str(tmp / "release"),
                        # Above the worker's sticky_wait (2 s): the run is released between
                        # two polls, so it holds no worker slot while it waits.
                        POLL_FLOOR="2.5", REMOTE_POLL_MS="300")

    async def start(self, *args: str, name: str, pipe: bool = False
                    ) -> asyncio.subprocess.Process:
        with open(self.tmp / f"{name}.log", "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *args, cwd=ROOT, env=self.env,
                stdout=asyncio.subprocess.PIPE if pipe else log, stderr=log)
        self.procs.append(proc)
        return proc

    async def stop_all(self) -> None:
        for p in self.procs:
            if p.returncode is None:
                p.terminate()
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 15)
            except TimeoutError:
                p.kill()
                await p.wait()

    def lines(self, name: str) -> list[list[str]]:
        path = self.tmp / name
        return [ln.split() for ln in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
async def procs(tmp_path: Path) -> AsyncIterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        await p.stop_all()


async def until(check: object, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.1)


async def test_long_remote_task_survives_a_worker_kill(procs: Procs, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    remote = await procs.start("-m", "tests.mcp_server.remote", name="remote", pipe=True)
    assert remote.stdout is not None
    url = (await asyncio.wait_for(remote.stdout.readline(), 60)).decode().strip()
    assert url.startswith("http://"), (tmp_path / "remote.log").read_text()
    procs.env["REMOTE_URL"] = url
    worker_args = ("-m", "tether", "worker", APP, "--db", db, "--concurrency", "1")
    first = await procs.start(*worker_args, name="worker-1")

    def gets() -> int:
        return sum(ln[0] == "get" for ln in procs.lines("remote.log"))

    app, _ = client_apps.build(db, remote_url=url)
    async with app:
        handle = await app.start("use_remote", "held_job", {"what": "report"})
        await until(lambda: any(ln[0] == "call" for ln in procs.lines("remote.log")), 30)

        # The only worker slot is free while the remote task runs: other runs finish.
        quick = [await app.start("quick", i) for i in range(5)]
        assert [await h.result(timeout=30) for h in quick] == [0, 1, 2, 3, 4]
        assert await handle.status() in (RunStatus.WAITING, RunStatus.RUNNING)
        assert sorted(ln[2] for ln in procs.lines("side.txt")) == ["0", "1", "2", "3", "4"]
        assert {ln[0] for ln in procs.lines("side.txt")} == {str(first.pid)}

        await until(lambda: gets() >= 1, 30)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        polls_before = gets()
        second = await procs.start(*worker_args, name="worker-2")
        # The replacement polls the task (still working) before the test lets it end.
        await until(lambda: gets() >= max(polls_before + 1, 3), 60)
        assert await handle.status() in (RunStatus.WAITING, RunStatus.RUNNING)
        (tmp_path / "release").touch()

        result = await handle.result(timeout=90)
        info = await app.get_run(handle.run_id)
    assert result == {"text": "done: report", "is_error": False}
    assert second.returncode is None
    lines = procs.lines("remote.log")
    calls = [ln for ln in lines if ln[0] == "call"]
    assert len(calls) == 1  # the remote tool was called exactly once
    task_id = calls[0][2]
    assert sum(ln == ["get", task_id] for ln in lines) > polls_before + 1  # polled after the kill
    [call] = [e for e in info.journal if e["name"] == "mcp:remote.call_tool"]
    assert call["result"]["task_id"] == task_id and call["attempts"] == 1
    polls = [e for e in info.journal if e["name"] == "mcp:remote.get_task"]
    # One journaled poll per durable timer (POLL_FLOOR apart or more), none sent twice.
    assert 3 <= len(polls) <= sum(ln[0] == "get" for ln in lines)
    assert all(task_id in str(e["args"]) for e in polls)
