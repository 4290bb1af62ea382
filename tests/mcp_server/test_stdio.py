"""``tether mcp MODULE:APP`` serves over stdio: the official SDK client launches it,
calls a workflow tool as a task and reads the result; bad invocations fail in one
line."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from mcp import Client, StdioServerParameters

from tests import forked
from tests.faults.procs import ROOT
from tests.mcp_server.host import poll
from tether.mcp_tasks import CreateTaskResult, TasksClientExtension

#: The server's import path: this checkout's sources first (a new interpreter would
#: otherwise import whatever Tether the environment has installed), then the tests.
SERVER_PATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])


def tether_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return forked.run([sys.executable, "-m", "tether", *args], cwd=ROOT, text=True,
                      capture_output=True, timeout=60,
                      env=dict(os.environ, PYTHONPATH=str(ROOT)))


async def test_stdio_server_runs_a_task(tmp_path: Path) -> None:
    """The stdio server lists the tools, answers a task call, and its in-process worker
    runs the workflow to completion."""
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "tether", "mcp", "tests.mcp_server.apps:app",
                                      "--db", db, "--poll-interval", "250"],
        cwd=str(ROOT), env={"PYTHONPATH": SERVER_PATH, "PATH": os.environ.get("PATH", "")})
    async with Client(params, extensions=[TasksClientExtension()]) as client:
        # The server names itself and its version (an MCP client shows both).
        assert client.server_info.name == "tether"
        assert client.server_info.version == importlib.metadata.version("tether")
        names = sorted(t.name for t in (await client.list_tools()).tools)
        assert names == ["ask", "explode", "quote", "slow_sum"]
        created = await client.session.call_tool("slow_sum", {"numbers": [4, 5]},
                                                 allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        assert created.poll_interval_ms == 250
        done = await poll(client, created.task_id, {"completed", "failed"})
    assert done.result is not None
    assert done.result["content"][0]["text"] == "9"


async def test_stdio_requests_fail_fast_and_its_worker_does_not(tmp_path: Path) -> None:
    """Over stdio, as behind `tether serve`, an MCP request's store calls fail at once
    while the store is known to be down (FAIL_FAST is set where a tool call starts its
    run); the worker the same process runs does not inherit it (its runs ride through
    a short outage, waiting for the pool)."""
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    side = tmp_path / "side.txt"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "tether", "mcp",
                                      "tests.mcp_server.failfast_app:app", "--db", db],
        cwd=str(ROOT), env={"PYTHONPATH": SERVER_PATH, "PATH": os.environ.get("PATH", ""),
                            "TETHER_TEST_SIDE_FILE": str(side)})
    async with Client(params, extensions=[TasksClientExtension()]) as client:
        created = await client.session.call_tool("where", {}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult)
        done = await poll(client, created.task_id, {"completed", "failed"})
    assert done.result is not None, done.error
    assert done.result["structuredContent"] == {"workflow": False, "step": False}
    assert side.read_text().splitlines() == ["start fail_fast=True"]


def test_stdio_command_errors(tmp_path: Path) -> None:
    """An app that exposes nothing, and a bad flag value, are one-line errors."""
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    out = tether_cmd("mcp", "tests.cli.cli_app:app", "--db", db)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("tether: error: tests.cli.cli_app:app "
                                                          "exposes no workflow")
    assert out.stdout == ""
    out = tether_cmd("mcp", "tests.mcp_server.apps:app", "--poll-interval", "0")
    assert out.returncode == 2
    assert "--poll-interval" in out.stderr
