"""The pytest plugin's fixtures, used as a user would: ``app``, ``tether_env``,
``llm_server`` and ``mcp_server`` (a fake MCP server of plain functions)."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from typing import Any

import pytest

import tether
from tether import App
from tether.ai import LLM
from tether.ai.mcp import MCPToolset
from tether.testing import Reply, ScriptedLLMServer


def test_the_plugin_is_registered_for_pytest() -> None:
    points = importlib.metadata.entry_points(group="pytest11")
    assert any(p.name == "tether" and p.value == "tether.testing.pytest_plugin"
               for p in points)


def test_store_url_fixture_is_in_the_tests_temporary_directory(tether_store_url: str,
                                                               tmp_path: Any) -> None:
    # (The plugin's ``app`` fixture is overridden by this suite's conftest; the
    # examples of docs/testing.md, run outside it, use the plugin's.)
    assert tether_store_url == f"sqlite:///{tmp_path}/tether.db"


async def test_tether_env_fixture_skips_time(tether_env: Any) -> None:
    mine = App()

    @mine.workflow
    async def reminder() -> float:
        start = tether.now()
        await tether.sleep(30 * 86400)
        return (tether.now() - start).total_seconds()

    env = await tether_env(mine, start_time=0.0)
    assert await env.run(reminder) == 30 * 86400


async def test_llm_server_fixture(llm_server: ScriptedLLMServer) -> None:
    llm_server.set_script([Reply("pong")])
    async with LLM("openai:gpt-4.1-mini", base_url=llm_server.base_url, api_key="k") as llm:
        reply = await llm.chat([{"role": "user", "content": "ping"}])
    assert reply.text == "pong" and len(llm_server.requests) == 1


async def test_mcp_server_fixture_serves_plain_functions_durably(tether_env: Any,
                                                                 mcp_server: Any) -> None:
    notes: list[str] = []

    def record(note: str) -> str:
        """Record a note.

        Args:
            note: the text.
        """
        notes.append(note)
        return f"recorded {note!r}"

    server = await mcp_server([record], name="notes")
    mine = App()
    toolset = MCPToolset(mine, server.client())

    @mine.workflow
    async def take_note(text: str) -> str:
        result = await toolset.call("record", {"note": text})
        await tether.sleep(86400)  # released and replayed: the call is not sent again
        return result.text

    env = await tether_env(mine)
    try:
        assert await env.run(take_note, "buy milk") == "recorded 'buy milk'"
    finally:
        await toolset.server.aclose()
    assert notes == ["buy milk"]
    assert [(c.tool, c.arguments) for c in server.calls] == [("record", {"note": "buy milk"})]
    assert server.url.startswith("http://127.0.0.1:")


def test_no_fixture_left_environment_variables_behind() -> None:
    assert "127.0.0.1" not in os.environ.get("OPENAI_BASE_URL", "")


async def test_llm_server_fixture_answers_the_responses_api(
        llm_server: ScriptedLLMServer) -> None:
    # What the OpenAI Agents SDK and pydantic-ai's ``openai:`` models send by default,
    # and what the command-line server answers; the fixture answered 404.
    llm_server.set_script([Reply("pong")])
    async with LLM("openai:gpt-4.1-mini", base_url=llm_server.base_url, api_key="k",
                   api="responses") as llm:
        reply = await llm.chat([{"role": "user", "content": "ping"}])
    assert reply.text == "pong"
    assert [(r.path, r.status) for r in llm_server.requests] == [("/v1/responses", 200)]


async def test_the_fake_mcp_server_is_public_for_use_without_the_fixture() -> None:
    # What the ``mcp_server`` fixture returns (docs/testing.md names it), importable
    # from ``tether.testing`` for a test that builds its own (in ``TestEnv`` outside
    # pytest, a fixture of a wider scope); it was only in the private ``_mcp`` module.
    from tether.testing import FakeMCPServer, MCPCall, TestEnv

    def double(n: int) -> int:
        """Double a number.

        Args:
            n: the number.
        """
        return 2 * n

    mine = App()
    async with FakeMCPServer([double], name="calc") as server:
        toolset = MCPToolset(mine, server.client())

        @mine.workflow
        async def twice(n: int) -> str:
            return (await toolset.call("double", {"n": n})).text

        try:
            async with TestEnv(mine) as env:
                assert await env.run(twice, 21) == "42"
        finally:
            await toolset.server.aclose()
    assert server.calls == [MCPCall("double", {"n": 21})]


async def test_the_fake_mcp_server_without_the_mcp_extra_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the ``mcp`` extra (here: ``uvicorn`` not importable) the fake server and
    the ``mcp_server`` fixture say which extra to install; it said only "No module
    named 'uvicorn'"."""
    from tether.testing import FakeMCPServer

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # (as if it were not installed)
    with pytest.raises(ImportError, match=r"pip install 'tether\[mcp\]'"):
        await FakeMCPServer([]).start()


async def test_a_fake_tools_error_result_carries_the_exceptions_message() -> None:
    """A tool of the fake server that raises answers an error result whose text carries
    the exception's message, as the SDK's FastMCP of the 1.x releases answers: a test
    sees what its agent reads. It said "Error executing tool lookup" whatever was raised
    (the SDK's 2.x server keeps a crash's text to itself; its ``ToolError``'s it
    carries). An ``MCPError`` is still a JSON-RPC error, and a ``ToolError`` raised by
    the tool keeps its own text."""
    from mcp import MCPError
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp_types import INVALID_PARAMS

    from tether.testing import FakeMCPServer, MCPCall

    def lookup(city: str) -> str:
        """Find a city."""
        raise LookupError(f"no such city: {city}")

    async def fetch(url: str) -> str:
        raise TimeoutError()  # (no message: its type is said instead)

    def deliberate() -> str:
        raise ToolError("quota reached")

    def protocol() -> str:
        raise MCPError(INVALID_PARAMS, "bad params")

    async with FakeMCPServer([lookup, fetch, deliberate, protocol]) as server:
        client = server.client()
        try:
            found = await client.call_tool("lookup", {"city": "Atlantis"})
            fetched = await client.call_tool("fetch", {"url": "http://x"})
            chosen = await client.call_tool("deliberate")
            refused = await client.call_tool("protocol")
        finally:
            await client.aclose()
    assert found.is_error and found.text == "Error executing tool lookup: no such city: Atlantis"
    assert fetched.is_error and fetched.text == "Error executing tool fetch: TimeoutError"
    assert chosen.is_error and chosen.text == "Error executing tool deliberate: quota reached"
    assert refused.is_error and refused.text == f"MCP error {INVALID_PARAMS}: bad params"
    assert server.calls[0] == MCPCall("lookup", {"city": "Atlantis"})


_KEEPS = '''
import os

import pytest

import tether
from tether import App
from tether.testing import TestEnv

app = App()


@app.workflow
async def napper(tag: str) -> str:
    await tether.sleep(3600)
    return tag


async def _left_waiting(tether_env, tag):
    env = await tether_env(app, store_url=os.environ["KEEP_DB"], fresh_schema=True)
    with open(f"{tag}.schema", "w") as out:
        out.write(env.schema)
    await env.start(napper, tag)
    await env.settle()
    return env


async def test_fails(tether_env):
    env = await _left_waiting(tether_env, "failed")
    assert [r.status for r in await env.app.list_runs()] == ["completed"]


async def test_passes(tether_env):
    await _left_waiting(tether_env, "passed")


async def test_fails_inside_async_with():
    async with TestEnv(app, store_url=os.environ["KEEP_DB"], fresh_schema=True) as env:
        with open("failed_inside.schema", "w") as out:
            out.write(env.schema)
        await env.start(napper, "inside")
        await env.settle()
        assert [r.status for r in await env.app.list_runs()] == ["completed"]


async def test_expects_the_error_inside_async_with():
    with pytest.raises(ValueError):
        async with TestEnv(app, store_url=os.environ["KEEP_DB"], fresh_schema=True) as env:
            with open("expected.schema", "w") as out:
                out.write(env.schema)
            raise ValueError("expected")
'''


@pytest.mark.postgres
def test_tether_env_keeps_the_fresh_schema_of_a_failed_test(pg_url: str, tmp_path: Any) -> None:
    """``fresh_schema=True`` dropped the schema at close whatever the test's outcome, so
    the runs of a failed test could not be looked at. The ``tether_env`` fixture keeps
    it when its test failed, and the failure's report says which it is and the commands
    to look at it and to drop it; those commands work as written. A passing test's
    schema is dropped as before."""
    import re
    import shlex

    import psycopg

    from tests import forked

    (tmp_path / "test_keeps.py").write_text(_KEEPS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n"
                                         "asyncio_default_fixture_loop_scope = function\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTEST") and k != "TETHER_TEST_KEEP_SCHEMA"}
    env["KEEP_DB"] = pg_url
    out = forked.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                      "-p", "no:xdist", str(tmp_path)], cwd=tmp_path, env=env,
                     capture_output=True, text=True, timeout=120)
    assert "2 failed, 2 passed" in out.stdout, out.stdout[-4000:] + out.stderr[-2000:]
    failed = (tmp_path / "failed.schema").read_text()
    inside = (tmp_path / "failed_inside.schema").read_text()
    passed = (tmp_path / "passed.schema").read_text()
    expected = (tmp_path / "expected.schema").read_text()
    with psycopg.connect(pg_url) as conn:
        left = sorted(row[0] for row in conn.execute(
            "SELECT schema_name FROM information_schema.schemata "
            "WHERE schema_name LIKE 'tether_test_%'"))
    assert left == sorted([failed, inside])
    assert len({failed, inside, passed, expected}) == 4
    report = out.stdout.split("short test summary")[0]
    assert "Captured stdout teardown" in report, report
    # (a TestEnv of the test's own, closed by the failure leaving its block: a section
    # of the failure's report)
    assert re.search(r"-+ TestEnv: kept its schema -+\nTestEnv: kept its schema "
                     rf"{inside} \(keep_schema\): look at its runs", report), report
    notice = re.search(rf"TestEnv: kept its schema {failed} \(keep_schema\): look at its runs "
                       r"with `(tether runs --db '[^']+')` .*; drop it with `(psql [^`]+)`",
                       report)
    assert notice is not None, report
    runs = forked.run([sys.executable, "-m", *shlex.split(notice.group(1))], env=env,
                      capture_output=True, text=True, timeout=60)
    assert runs.returncode == 0 and " napper " in runs.stdout \
        and "waiting" in runs.stdout, runs.stdout + runs.stderr
    dropped = subprocess_run(shlex.split(notice.group(2)))
    assert dropped.returncode == 0, dropped.stderr
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {inside} CASCADE")
        assert conn.execute("SELECT count(*) FROM information_schema.schemata "
                            "WHERE schema_name LIKE 'tether_test_%'").fetchone() == (0,)


def subprocess_run(args: list[str]) -> Any:
    """``psql``, not a Python process: a new process of its own."""
    import subprocess

    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


_SHARING = '''
import asyncio
import os

from shared_db_apps import all_open, scenario

URL = os.environ["SHARED_DB"]


async def _two_at_once(worker_id):
    calls = []

    async def together():  # (all four open at once, across the processes; once)
        calls.append(1)
        if len(calls) <= 2:
            await all_open(URL, 4)

    await asyncio.gather(*(scenario(URL, f"{worker_id} {i}", together) for i in range(2)))
    with open(f"{worker_id}.{os.getpid()}.done", "w"):
        pass


async def test_one(worker_id):
    await _two_at_once(worker_id)


async def test_two(worker_id):
    await _two_at_once(worker_id)
'''


@pytest.mark.postgres
@pytest.mark.slow
def test_environments_of_xdist_processes_share_one_database(pg_url: str,
                                                            tmp_path: Any) -> None:
    """Tests on two pytest-xdist processes (``-n 2``), given one PostgreSQL database,
    each open two ``TestEnv(fresh_schema=True)`` at once (four at the same time, which
    each waits for), and run, signal and advance their runs as in one process: each
    environment keeps to its own. The guide said to give each process its own
    database, which was never needed with ``fresh_schema``."""
    from pathlib import Path

    import psycopg

    from tests import forked
    from tests.testing import shared_db_apps

    (tmp_path / "shared_db_apps.py").write_text(Path(shared_db_apps.__file__).read_text())
    (tmp_path / "test_sharing.py").write_text(_SHARING)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n"
                                         "asyncio_default_fixture_loop_scope = function\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["SHARED_DB"] = pg_url
    out = forked.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                      "-n", "2", str(tmp_path)], cwd=tmp_path, env=env,
                     capture_output=True, text=True, timeout=240)
    assert "2 passed" in out.stdout, out.stdout[-4000:] + out.stderr[-2000:]
    done = [p.name.split(".")[0] for p in tmp_path.glob("*.done")]
    assert sorted(done) == ["gw0", "gw1"], done
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.schemata "
                            "WHERE schema_name LIKE 'tether_test_%'").fetchone() == (0,)
