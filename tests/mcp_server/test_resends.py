"""Resends under a key that was used already, through the MCP face, as the HTTP API
answers them: a ``tools/call`` under an idempotency key that names a run started with
other arguments is refused (the same arguments get the same task). Driven by the
official ``mcp`` SDK client over Streamable HTTP, on both stores."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

import tether
from tests.mcp_server import apps
from tests.mcp_server.host import poll, serve_http, tasks_client
from tether import App
from tether.ai import LLM
from tether.mcp_tasks import CreateTaskResult


@pytest.fixture
def side_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "side.txt"
    monkeypatch.setenv("TETHER_TEST_SIDE_FILE", str(path))
    return path


def lines(path: Path) -> list[str]:
    return [ln.split(" ", 1)[1] for ln in path.read_text().splitlines()] if path.exists() else []


def text_of(result: Any) -> str:
    return str(result.content[0].text)


@contextlib.asynccontextmanager
async def served(store_url: str, llm: LLM | None = None) -> AsyncIterator[tuple[App, str]]:
    """The test app (with ``relay``: a tool whose run asks through a child run) served
    over HTTP, no worker: each test runs one where it wants the runs to go on."""
    app = apps.build(store_url, llm=llm)

    @app.workflow(mcp=True)
    async def relay(question: str) -> str:
        """Ask a question through a child run."""
        return str(await tether.call("ask", question))

    async with serve_http(app) as url:
        yield app, url


async def test_a_key_reused_with_other_arguments_is_refused(
    store_url: str, side_file: Path
) -> None:
    """A tools/call under an idempotency key that names a run started with OTHER
    arguments was answered that run's task (a synchronous caller: its result) as its
    own. It is a tool error saying the key names a run of other arguments, for a task
    client and a plain one alike, and nothing starts. The same arguments compared as
    the schema validates them ("5" for 5, a default given or left out, an object's keys
    in another order) still get the same task."""
    async with served(store_url) as (app, url), app.worker(), tasks_client(url) as client:
        first = await client.session.call_tool(
            "slow_sum", {"numbers": [5]}, allow_claimed=True, meta={"idempotency_key": "k-1"}
        )
        same = await client.session.call_tool(
            "slow_sum",
            {"numbers": ["5"], "pause": 0},
            allow_claimed=True,
            meta={"idempotency_key": "k-1"},
        )
        other = await client.session.call_tool(
            "slow_sum", {"numbers": [7, 8]}, allow_claimed=True, meta={"idempotency_key": "k-1"}
        )
        assert isinstance(first, CreateTaskResult) and isinstance(same, CreateTaskResult)
        assert same.task_id == first.task_id
        assert not isinstance(other, CreateTaskResult)
        assert other.is_error
        assert text_of(other) == (
            f"tool 'slow_sum': the idempotency key 'k-1' names task {first.task_id}, a "
            "call of this tool with other arguments; nothing was started: call with a "
            "new key for a new call (or with that call's arguments to get its task)"
        )
        await poll(client, first.task_id, {"completed"})
        quoted = await client.session.call_tool(
            "quote",
            {"order": {"item": "tea", "quantity": 4}},
            allow_claimed=True,
            meta={"idempotency_key": "q"},
        )
        again = await client.session.call_tool(
            "quote",
            {"order": '{"quantity": "4", "item": "tea"}', "note": ""},
            allow_claimed=True,
            meta={"idempotency_key": "q"},
        )
        assert isinstance(quoted, CreateTaskResult) and isinstance(again, CreateTaskResult)
        assert again.task_id == quoted.task_id
        async with Client(url) as plain:  # without the Tasks extension: synchronous
            answered = await plain.call_tool(
                "slow_sum", {"numbers": [5]}, meta={"idempotency_key": "k-1"}
            )
            refused = await plain.call_tool(
                "slow_sum", {"numbers": [9]}, meta={"idempotency_key": "k-1"}
            )
            noted = await plain.call_tool(
                "quote",
                {"order": {"item": "tea", "quantity": 4}, "note": "rush"},
                meta={"idempotency_key": "q"},
            )
        runs = [r.workflow for r in await app.list_runs()]
    assert not answered.is_error and text_of(answered) == "5"
    assert refused.is_error and "names task " in text_of(refused)
    assert "with other arguments; nothing was started" in text_of(refused)
    assert noted.is_error and "with other arguments" in text_of(noted)
    assert sorted(runs) == ["quote", "slow_sum"]  # one run each: nothing else started
    assert lines(side_file) == ["add 0"]
