"""The replay check's ``compare_args`` on a durable LLM call whose prompt changed: the
journal keeps the conversation's digest, so the check reads the recorded messages from
the store the run ran on and says which message differs and how; from a history file
alone (no prompts in it) it says what the digests still tell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import tether
from tests import forked
from tether.ai import LLM, function_tool, system_message, user_message
from tether.testing import Reply, ScriptedLLMServer, TestEnv, export_history, load_history, replay
from tether.testing._replayer import check_history

from . import prompt_apps

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as srv:
        yield srv


LLMS: list[LLM] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while LLMS:
        await LLMS.pop().aclose()


def make(server: ScriptedLLMServer, prompt: str, *, follow_up: bool = False) -> tether.App:
    """A workflow asking a model one question; ``prompt`` words it, ``follow_up`` adds a
    message after it."""
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="test-key")
    LLMS.append(llm)
    app = tether.App()

    @app.workflow(name="summarise")
    async def summarise(topic: str) -> str:
        messages = [system_message("You write short, plain summaries."),
                    user_message(prompt.format(topic=topic))]
        if follow_up:
            messages.append(user_message("Keep it under fifty words."))
        reply = await llm.chat(messages)
        return reply.text or ""

    return app


async def test_a_changed_prompt_is_told_message_by_message(
        server: ScriptedLLMServer) -> None:
    server.set_script([Reply("Replay answers each step from the journal.")])
    v1 = make(server, "Summarise the design of {topic}.")
    reworded = make(server, "Summarise the design of {topic} in French.")
    grown = make(server, "Summarise the design of {topic}.", follow_up=True)
    async with TestEnv(v1) as env:
        handle = await env.start("summarise", "tether", run_id="s1")
        assert await handle.result() == "Replay answers each step from the journal."
        doc = await export_history(env.app, "s1")
        blob_get = env.app.store.blob_get
        history = load_history(doc)

        # With the store the run ran on: which message, and the words around the change.
        result = await check_history(reworded, history, compare_args=True,
                                     blob_get=blob_get)
        assert not result.compatible
        [change] = result.changed_args
        assert change.name == "llm:openai:gpt-4.1-mini"
        assert change.prompt == ('the prompt changed: message 2 of 2 differs (user: '
                                 '"…design of tether." -> "…design of tether in French.")')
        assert result.message == ("position 0: step 'llm:openai:gpt-4.1-mini' arguments "
                                  f"changed ({change.prompt})")
        assert change.to_dict()["prompt"] == change.prompt

        [result] = await replay(grown, doc, compare_args=True, blob_get=blob_get)
        [change] = result.changed_args
        assert change.prompt == "the prompt changed: message 3 of 3 added"

        # The same code: no change, no prompt to tell.
        same = await check_history(v1, history, compare_args=True, blob_get=blob_get)
        assert same.compatible and same.changed_args == ()

    # A history file carries the texts its LLM calls name (``texts``): from the file
    # alone, a changed prompt is told message by message, as against the store.
    assert doc["texts"] and set(doc["texts"]) >= {
        doc["journal"][0]["args"][0]["messages"]}
    [result] = await replay(reworded, doc, compare_args=True)
    [change] = result.changed_args
    assert change.prompt == ('the prompt changed: message 2 of 2 differs (user: '
                             '"…design of tether." -> "…design of tether in French.")')
    [result] = await replay(grown, doc, compare_args=True)
    assert result.changed_args[0].prompt == "the prompt changed: message 3 of 3 added"
    [same] = await replay(v1, doc, compare_args=True)
    assert same.compatible and same.changed_args == ()

    # A file written before (no ``texts``) still loads and replays. A prompt that grew
    # still names the recorded messages (the same chain, from the code's own texts); a
    # reworded one is told as changed, with where to look for which message.
    old = {k: v for k, v in doc.items() if k != "texts"}
    [same] = await replay(v1, old, compare_args=True)
    assert same.compatible and same.changed_args == ()
    [result] = await replay(grown, old, compare_args=True)
    [change] = result.changed_args
    assert change.prompt == "the prompt changed: message 3 of 3 added"
    [result] = await replay(reworded, old, compare_args=True)
    [change] = result.changed_args
    assert change.prompt is not None
    assert change.prompt.startswith("the prompt changed (2 messages recorded, 2 now; the "
                                    "journal keeps its digest only, and a history file "
                                    "holds no prompts: check against the store")
    assert "messages: " not in result.message  # (no bare digests when words say it)


def tether_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TETHER_DATABASE_URL", None)
    return forked.run([sys.executable, "-m", "tether", *args], cwd=ROOT, env=env,
                      capture_output=True, text=True, timeout=60)


async def test_export_then_replay_from_the_file_tells_the_changed_message(
        server: ScriptedLLMServer, tmp_path: Path) -> None:
    """``tether export`` writes the prompt texts with the journal, and ``tether replay
    --compare-args FILE`` tells the changed message from that file alone, in the words
    it uses against the store. It used to say only that the prompt changed (the file
    held the digests, not the texts). A file without them (written before) replays."""
    server.set_script([Reply("Replay answers each step from the journal.")])
    db = f"sqlite:///{tmp_path}/store.db"
    app, llm = prompt_apps.make(prompt_apps.V1_PROMPT, server.base_url)
    LLMS.append(llm)
    async with TestEnv(app, store_url=db) as env:
        handle = await env.start("summarise", "tether", run_id="p1")
        assert await handle.result() == "Replay answers each step from the journal."
    out = tether_cli("export", "p1", "--db", db)
    assert out.returncode == 0, out.stderr
    exported = tmp_path / "p1.json"
    exported.write_text(out.stdout)
    assert json.loads(out.stdout)["texts"]

    from_file = tether_cli("replay", "--check", "tests.testing.prompt_apps:reworded",
                           "--compare-args", "--json", str(exported))
    from_store = tether_cli("replay", "--check", "tests.testing.prompt_apps:reworded",
                            "--compare-args", "--json", "--db", db, "--workflow",
                            "summarise")
    assert from_file.returncode == from_store.returncode == 1, from_file.stderr
    [by_file], [by_store] = json.loads(from_file.stdout), json.loads(from_store.stdout)
    assert by_file["changed_args"][0]["prompt"] == by_store["changed_args"][0]["prompt"] == (
        'the prompt changed: message 2 of 2 differs (user: "…design of tether." -> '
        '"…design of tether in French.")')
    assert by_file["message"] == by_store["message"]

    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in json.loads(out.stdout).items()
                               if k != "texts"}))
    same = tether_cli("replay", "--check", "tests.testing.prompt_apps:v1", "--compare-args",
                      str(old))
    assert same.returncode == 0, same.stdout + same.stderr
    changed = tether_cli("replay", "--check", "tests.testing.prompt_apps:reworded",
                         "--compare-args", "--json", str(old))
    assert changed.returncode == 1
    assert "a history file holds no prompts" in json.loads(changed.stdout)[0]["message"]


def lookup(order_id: str) -> str:
    """Look an order up.

    Args:
        order_id: the order's id.
    """
    return order_id


def lookup_v2(order_id: str) -> str:
    """Look an order up, with its lines.

    Args:
        order_id: the order's id.
    """
    return order_id


def refund(order_id: str) -> str:
    """Refund an order.

    Args:
        order_id: the order's id.
    """
    return order_id


def cancel(order_id: str) -> str:
    """Cancel an order.

    Args:
        order_id: the order's id.
    """
    return order_id


def with_tools(server: ScriptedLLMServer, tools: list[Any]) -> tether.App:
    """A workflow asking a model one question, offering it ``tools``."""
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="test-key")
    LLMS.append(llm)
    app = tether.App()

    @app.workflow(name="support")
    async def support(question: str) -> str:
        reply = await llm.chat([user_message(question)], tools=tools)
        return reply.text or ""

    return app


async def test_changed_tools_are_told_by_name(server: ScriptedLLMServer) -> None:
    """An LLM call's tools are journaled by digest, like its prompt: ``compare_args``
    names the tools added, removed and changed (read from the history's texts, or the
    store), where it showed two digests ("tools: "036ffdb8…" -> "d09e90b1…"")."""
    server.set_script([Reply("Order 7 is on its way.")])
    v1 = with_tools(server, [function_tool(lookup, name="lookup"), function_tool(refund)])
    v2 = with_tools(server, [function_tool(lookup_v2, name="lookup"), function_tool(cancel)])
    async with TestEnv(v1) as env:
        handle = await env.start("support", "Where is order 7?", run_id="t1")
        assert await handle.result() == "Order 7 is on its way."
        doc = await export_history(env.app, "t1")
        blob_get = env.app.store.blob_get
        from_store = await check_history(v2, load_history(
            {k: v for k, v in doc.items() if k != "texts"}), compare_args=True,
            blob_get=blob_get)
    told = ('the tools changed: "cancel" added; "refund" removed; "lookup" changed '
            '(description)')
    [from_file] = await replay(v2, doc, compare_args=True)
    for result in (from_file, from_store):
        assert not result.compatible
        [change] = result.changed_args
        assert change.tools == told
        assert change.to_dict()["tools"] == told
        assert result.message == ("position 0: step 'llm:openai:gpt-4.1-mini' arguments "
                                  f"changed ({told})")
    [same] = await replay(v1, doc, compare_args=True)
    assert same.compatible and same.changed_args == ()
    # Without the recorded texts (an old file, no store), the digests as before.
    [blind] = await replay(v2, {k: v for k, v in doc.items() if k != "texts"},
                           compare_args=True)
    assert blind.changed_args[0].tools is None and "tools: " in blind.message
