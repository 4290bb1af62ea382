"""``tether show`` gives an LLM call's row as the run page does: "MODEL · N in / M out ·
$COST" (then "→ TOOL" when it asked for tools) and as much of the answer's text as
fits, where it printed the call record's JSON cut (``{"reply": {"text": ...``); and a
call that failed after paid attempts says what they were billed before its error, in a
pipe's full lines and on a terminal alike. A real worker, the scripted model server."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.cli.test_cli import tether_cli
from tests.cli.test_fit import on_terminal
from tests.engine.helpers import wait_for
from tether import App
from tether.ai import LLM, Agent, function_tool
from tether.testing.llm_server import Reply
from tether.testing.responses_api import ScriptedResponsesServer

ANSWER = "Five, and that is the whole of it: two and three make five."


@function_tool
def add(a: int, b: int) -> int:
    return a + b


async def _chunk_arrived(app: App, run_id: str) -> bool:
    events = await app.store.run_events_latest(run_id=run_id, kind="chunk")
    return any('"llm.chunk"' in (e.data or "") for e in events)


@pytest.fixture
async def ran(sqlite_url: str) -> tuple[str, dict[str, Any]]:
    """Run ``calc`` (a tool call, then an answer) and ``essayist`` (a call interrupted
    mid-answer, then a short one); the journals' LLM entries by what they are."""
    app = App(sqlite_url)
    async with ScriptedResponsesServer() as server:
        llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="test",
                  breaker=None)
        app.add_agent(Agent("calc", model=llm, tools=[add]))
        essayist = app.add_agent(Agent("essayist", model=llm, interruptible=True))
        try:
            async with app, app.worker():
                server.set_script([
                    Reply(tool_calls=[{"name": "add", "arguments": {"a": 2, "b": 3}}],
                          input_tokens=1200, output_tokens=9),
                    Reply(ANSWER, input_tokens=1300, output_tokens=15)])
                assert await (await app.start("calc", "2+3?", run_id="calc-1")).result(
                    timeout=20) == ANSWER
                server.set_script([Reply("a" * 399 + " " + "b" * 399, input_tokens=1000,
                                         output_tokens=50, chunk_delay=3600),
                                   Reply("Short.", input_tokens=10, output_tokens=2)])
                handle = await app.start("essayist", "Write it.", run_id="essay-1")
                await wait_for(lambda: _chunk_arrived(app, "essay-1"), timeout=20)
                await essayist.interrupt(app, "essay-1", "make it short")
                assert await handle.result(timeout=20) == "Short."
                calc = (await app.get_run("calc-1")).journal
                essay = (await app.get_run("essay-1")).journal
        finally:
            await llm.aclose()
    asked, answered = [e for e in calc if e["name"].startswith("llm:")]
    cut = next(e for e in essay if e["name"].startswith("llm:") and e["error"])
    return sqlite_url, {"asked": asked, "answered": answered, "cut": cut}


def _figures(e: dict[str, Any]) -> str:
    reply = e["result"]["reply"]
    return (f"{reply['model']} · {reply['usage']['input_tokens']:,} in / "
            f"{reply['usage']['output_tokens']:,} out · ${e['result']['cost_usd']:.4f}")


def _billed(e: dict[str, Any]) -> str:
    paid = e["error"]["attrs"]["failed_attempts"]
    assert paid["tokens"] > 0 and paid["estimated"] == paid["tokens"]  # (none told)
    return f"billed ~{paid['tokens']:,} tokens (estimated) · ${paid['usd']:.4f}"


def _row(shown: str, position: int) -> str:
    return next(line for line in shown.splitlines() if re.match(rf" *{position}  step ", line))


def test_a_pipes_rows_give_a_calls_figures_and_its_answer(
        ran: tuple[str, dict[str, Any]]) -> None:
    db, e = ran
    calc = tether_cli("show", "calc-1", db=db).stdout
    assert _row(calc, e["asked"]["position"]).endswith(f"  {_figures(e['asked'])} → add"), calc
    assert _row(calc, e["answered"]["position"]).endswith(
        f"  {_figures(e['answered'])} · {ANSWER}"), calc
    assert '{"reply"' not in calc
    essay = tether_cli("show", "essay-1", db=db).stdout
    cut = _row(essay, e["cut"]["position"])
    assert f"  openai:gpt-4.1-mini · {_billed(e['cut'])} · " in cut, essay
    assert "TurnInterrupted" in cut, essay
    # (--json is the document, unchanged: the call record as it is stored.)
    assert '"reply": {' in tether_cli("show", "calc-1", "--json", db=db).stdout


@pytest.mark.parametrize("columns", [120, 80])
def test_a_terminals_rows_keep_the_figures_whole(ran: tuple[str, dict[str, Any]],
                                                 columns: int) -> None:
    """At 120 columns the row holds them; at 80 the outcome goes under its row, whole
    as far as the line goes, rather than the figures cut in a narrow column."""
    db, e = ran
    calc = on_terminal("show", "calc-1", db=db, columns=columns)
    lines = calc.splitlines()
    assert any(f"{_figures(e['asked'])} → add" in line for line in lines), calc
    answered = next(line for line in lines if f"{_figures(e['answered'])} · Five" in line)
    assert len(answered) <= columns, calc
    essay = on_terminal("show", "essay-1", db=db, columns=columns)
    assert f"openai:gpt-4.1-mini · {_billed(e['cut'])}" in essay, essay


async def test_a_call_answered_without_usage_says_so_not_zero_tokens(sqlite_url: str) -> None:
    """A provider that answered without the usage of the call (no ``usage`` object) told
    no tokens: until 2026-12-06 its row read "0 in / 0 out", as if it had used none, and
    the metrics block counted it with the others without a word. The row says "usage not
    reported", the block how many calls did not tell it; ``--json`` keeps the record as
    stored, which says ``"usage_reported": false`` (and the run's metrics
    ``llm.unreported_calls``)."""
    from tether.testing.llm_server import ScriptedLLMServer

    app = App(sqlite_url)
    async with ScriptedLLMServer() as server:
        llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="test",
                  breaker=None)
        app.add_agent(Agent("quiet", model=llm))
        try:
            async with app, app.worker():
                server.set_script([Reply("Fine.", no_usage=True)])
                assert await (await app.start("quiet", "ok?", run_id="quiet-1")).result(
                    timeout=20) == "Fine."
                info = await app.get_run("quiet-1")
        finally:
            await llm.aclose()
    [call] = [e for e in info.journal if e["name"].startswith("llm:")]
    assert call["result"]["reply"]["usage_reported"] is False
    assert info.metrics["llm.unreported_calls"] == 1
    shown = tether_cli("show", "quiet-1", db=sqlite_url).stdout
    row = _row(shown, call["position"])
    assert row.endswith("  gpt-4.1-mini · usage not reported · $0 · Fine."), shown
    assert " in / " not in row
    assert ("LLM spent:        1 call, 0 input + 0 output tokens, $0.000000 (1 call without "
            "reported usage: its tokens unknown, counted 0)") in shown, shown
    assert "llm.unreported_calls" not in shown  # (in the block, not again as a metric)
    assert '"usage_reported": false' in tether_cli("show", "quiet-1", "--json",
                                                   db=sqlite_url).stdout
