"""pytest fixtures for code built on Tether, loaded automatically once Tether is
installed (entry point ``pytest11``: ``tether``). Async fixtures need pytest-asyncio
(``pip install 'tether[testing]'``).

- ``app``: a fresh ``tether.App`` on a temporary SQLite file, closed after the test
  (for workflows defined in the test itself).
- ``tether_env``: a factory, ``env = await tether_env(my_app, **options)``: a
  ``TestEnv`` (time skipping, worker, scripted LLM server) closed after the test; one
  of ``fresh_schema=True`` keeps its schema when the test failed (``keep_schema``), and
  the test's report says which and how to look at it. So does an ``async with
  TestEnv(..., fresh_schema=True)`` block that the test's failure leaves (its schema
  dropped after the test if it passed: the error was expected).
- ``llm_server``: a started ``ScriptedLLMServer`` with an empty script
  (``llm_server.set_script([...])``), stopped after the test; it answers the OpenAI
  Responses API too (a ``ScriptedResponsesServer``).
- ``mcp_server``: a factory, ``server = await mcp_server([tool_fn, ...])``: a started
  ``FakeMCPServer`` (needs the ``mcp`` extra), stopped after the test.

A fixture of the same name in a ``conftest.py`` or test module overrides these.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tether._app import App
from tether.testing import _env
from tether.testing._env import TestEnv
from tether.testing._mcp import FakeMCPServer
from tether.testing.llm_server import ScriptedLLMServer
from tether.testing.responses_api import ScriptedResponsesServer

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - depends on the environment
    pytest_asyncio = None  # type: ignore[assignment]

_NEEDS = "Tether's async fixtures need pytest-asyncio: pip install 'tether[testing]'"

#: The reports of a test's phases (``setup``, ``call``), by phase, for its fixtures'
#: teardown to tell whether it failed (pytest's own pattern for that).
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_configure(config: pytest.Config) -> None:
    # (a TestEnv(fresh_schema=True) closed by an error leaving its ``async with`` hands
    # its schema to the report below instead of dropping it)
    if _env.DEFERRED_DROPS is None:
        _env.DEFERRED_DROPS = []


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    _settle_schemas(report)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    # (an environment closed on an error after the last report: no failure to show)
    for url, schema in _env.DEFERRED_DROPS or ():
        _env.drop_schema_now(url, schema)
    if _env.DEFERRED_DROPS:
        _env.DEFERRED_DROPS.clear()


def _settle_schemas(report: pytest.TestReport) -> None:
    """The fresh schemas of the environments that closed on an error during this phase
    of the test: kept, and named in the failure's report (a section of its own), if it
    failed; dropped if it passed (the test expected that error)."""
    pending = _env.DEFERRED_DROPS
    if not pending:
        return
    schemas, pending[:] = list(pending), []
    for url, schema in schemas:
        if report.failed:
            report.sections.append(("TestEnv: kept its schema",
                                    _env.kept_schema_notice(url, schema)))
        else:
            _env.drop_schema_now(url, schema)


def _failed(node: pytest.Item) -> bool:
    """Whether the test's setup or call failed (so far: its teardown runs)."""
    return any(report.failed for report in node.stash.get(_REPORTS, {}).values())


def _async_fixture(fn: Callable[..., Any]) -> Any:
    if pytest_asyncio is not None:
        return pytest_asyncio.fixture(fn)

    @pytest.fixture(name=fn.__name__)
    def missing() -> None:  # pragma: no cover - depends on the environment
        pytest.fail(_NEEDS, pytrace=False)

    return missing


@pytest.fixture
def tether_store_url(tmp_path: Path) -> str:
    """A SQLite store URL in the test's temporary directory."""
    return f"sqlite:///{tmp_path}/tether.db"


@_async_fixture
async def app(tether_store_url: str) -> AsyncIterator[App]:
    """A fresh ``App`` on a temporary SQLite store, closed after the test."""
    fresh = App(tether_store_url)
    try:
        yield fresh
    finally:
        await fresh.close()


@_async_fixture
async def tether_env(request: pytest.FixtureRequest,
                     ) -> AsyncIterator[Callable[..., Awaitable[TestEnv]]]:
    """``env = await tether_env(app, **options)``: an open ``TestEnv``, closed after.
    One of ``fresh_schema=True`` keeps its schema when the test failed: its name and
    the commands to look at it and to drop it are printed (the test's report shows
    them, under "Captured stdout teardown")."""
    envs: list[TestEnv] = []

    async def make(target: App, **options: Any) -> TestEnv:
        env = TestEnv(target, **options)
        await env.open()
        envs.append(env)
        return env

    try:
        yield make
    finally:
        failed = _failed(request.node)
        for env in reversed(envs):
            schema, url = env.schema, env.store_url
            if failed and schema is not None:
                env.keep_schema = True
            env._say_kept = False  # (said once, below: the report shows it)
            await env.close()
            if schema is not None and (env.keep_schema or _env._keep_env()):
                print(_env.kept_schema_notice(url, schema))


@_async_fixture
async def llm_server() -> AsyncIterator[ScriptedLLMServer]:
    """A started ``ScriptedLLMServer`` (empty script), stopped after the test. It is a
    ``ScriptedResponsesServer``: the OpenAI Responses API (``/v1/responses``), which
    the OpenAI Agents SDK and pydantic-ai's ``openai:`` models send by default, is
    answered too."""
    async with ScriptedResponsesServer() as server:
        yield server


@_async_fixture
async def mcp_server() -> AsyncIterator[Callable[..., Awaitable[FakeMCPServer]]]:
    """``server = await mcp_server([fn, ...], name="notes")``: a started
    ``FakeMCPServer``, stopped after the test."""
    servers: list[FakeMCPServer] = []

    async def make(tools: Any = (), **options: Any) -> FakeMCPServer:
        server = FakeMCPServer(tools, **options)
        await server.start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in reversed(servers):
            await server.stop()
