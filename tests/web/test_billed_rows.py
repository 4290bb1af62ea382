"""A cut or interrupted LLM call's timeline row says what its paid attempts were
billed, as an answered call's row gives its tokens and cost: the run's head counts
them (its *estimated* tokens), the row used to show only the error
(``TurnInterrupted``). The figures come from the error's ``failed_attempts``
(docs/llm.md, "Across executions")."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.engine.helpers import wait_for
from tests.web.helpers import ADMIN, READ
from tests.web.test_ui_and_cli import login
from tether import App
from tether.ai import LLM, Agent
from tether.serve._ui import billed
from tether.testing.llm_server import Reply
from tether.testing.responses_api import ScriptedResponsesServer


async def _chunk_arrived(app: App, run_id: str) -> bool:
    events = await app.store.run_events_latest(run_id=run_id, kind="chunk")
    return any('"llm.chunk"' in (e.data or "") for e in events)


async def _page(app: App, run_id: str) -> str:
    from tether.serve import Tokens, create_app

    asgi = create_app(app, tokens=Tokens({ADMIN: "admin", READ: "read"}), mcp=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://127.0.0.1") as http:
        await login(http, ADMIN)
        return (await http.get(f"/runs/{run_id}")).text


@pytest.mark.parametrize("api", ["chat", "anthropic"])
async def test_an_interrupted_calls_row_says_what_it_was_billed(sqlite_url: str,
                                                               api: str) -> None:
    app = App(sqlite_url)
    async with ScriptedResponsesServer() as server:
        server.set_script([Reply("a" * 399 + " " + "b" * 399, input_tokens=1000,
                                 output_tokens=50, chunk_delay=3600),
                           Reply("Short.", input_tokens=10, output_tokens=2)])
        llm = (LLM("anthropic:claude-sonnet-4-5", base_url=server.anthropic_base_url,
                   api_key="test", breaker=None) if api == "anthropic" else
               LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="test",
                   breaker=None))
        agent = app.add_agent(Agent("essayist", model=llm, interruptible=True))
        try:
            async with app, app.worker():
                handle = await app.start("essayist", "Write it.", run_id=f"i-{api}")
                await wait_for(lambda: _chunk_arrived(app, f"i-{api}"), timeout=20)
                await agent.interrupt(app, f"i-{api}", "make it short")
                assert await handle.result(timeout=20) == "Short."
                info = await app.get_run(f"i-{api}")
                page = await _page(app, f"i-{api}")
        finally:
            await llm.aclose()
    cut = next(e for e in info.journal if e["name"].startswith("llm:") and e["error"])
    paid = cut["error"]["attrs"]["failed_attempts"]
    assert paid["tokens"] > 0 and paid["estimated"] > 0
    if api == "anthropic":  # (the provider told the input tokens: part is estimated)
        assert paid["estimated"] < paid["tokens"]
        text = (f"billed {paid['tokens']:,} tokens ({paid['estimated']:,} estimated)"
                f" · ${paid['usd']:.4f}")
    else:  # (nothing told: all of it estimated)
        assert paid["estimated"] == paid["tokens"]
        text = f"billed ~{paid['tokens']:,} tokens (estimated) · ${paid['usd']:.4f}"
    assert billed(cut["error"]) == text
    [row] = [r for r in re.findall(r'<tr class="op .*?</tr>', page, re.S)
             if "TurnInterrupted" in r]
    assert f"<b>{cut['name'][4:]}</b> · {text}</span>" in row, row
    # (The answered call's row keeps its tokens and cost.)
    assert " in / " in page


def test_an_error_that_carries_nothing_paid_says_nothing() -> None:
    assert billed({"type": "x.TurnInterrupted", "message": "m"}) is None
    assert billed({"type": "E", "attrs": {"failed_attempts": {"tokens": 0, "usd": 0}}}) is None
    assert billed({"type": "E", "attrs": {"failed_attempts": "?"}}) is None
    assert billed(None) is None
    assert billed({"attrs": {"failed_attempts": {"tokens": 1002, "usd": 0.5}}}) == (
        "billed 1,002 tokens · $0.50")


async def test_a_call_answered_without_usage_says_so_not_zero_tokens(sqlite_url: str) -> None:
    """A provider that answered without the usage of the call told no tokens: the row
    read "0 in / 0 out" until 2026-12-06, as if it had used none. It says "usage not
    reported", and the run's head how many calls did not tell it."""
    from tether.testing.llm_server import ScriptedLLMServer

    app = App(sqlite_url)
    async with ScriptedLLMServer() as server:
        server.set_script([Reply("Fine.", no_usage=True)])
        llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="test",
                  breaker=None)
        app.add_agent(Agent("quiet", model=llm))
        try:
            async with app, app.worker():
                assert await (await app.start("quiet", "ok?", run_id="q-1")).result(
                    timeout=20) == "Fine."
                page = await _page(app, "q-1")
        finally:
            await llm.aclose()
    [row] = [r for r in re.findall(r'<tr class="op .*?</tr>', page, re.S) if "Fine." in r]
    assert "usage not reported</span> · $0</span>" in row, row
    assert " in / " not in row
    assert "1 call without reported usage</span>" in page
