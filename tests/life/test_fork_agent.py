"""Forking an agent run before its third LLM call: the first two calls come from the
copied journal (the scripted model server's request log shows no request for them), and
the fork continues with the model the current code names."""

from __future__ import annotations

from typing import Any

from tether import App
from tether.ai import LLM, user_message
from tether.testing.llm_server import Reply, ScriptedLLMServer


def build(url: str, server: ScriptedLLMServer, third_model: str) -> tuple[App, list[LLM]]:
    """A three-turn research agent; the code's third turn uses ``third_model``."""
    app = App(url)
    small = LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None)
    big = LLM(f"openai:{third_model}", base_url=server.base_url, breaker=None)

    @app.workflow
    async def research(task: str) -> str:
        messages: list[Any] = [user_message(task)]
        text = ""
        for turn in range(3):
            model = small if turn < 2 else big
            reply = await model.chat(messages)
            text = reply.text or ""
            messages += [reply.to_message(), user_message(f"go on ({turn + 1})")]
        return text

    return app, [small, big]


async def test_fork_before_the_third_llm_call_pays_only_from_there(store_url: str) -> None:
    async with ScriptedLLMServer([Reply("plan"), Reply("draft"), Reply("final, small"),
                                  Reply("final, big")]) as server:
        app, clients = build(store_url, server, "gpt-4.1-mini")
        async with app, app.worker():
            h = await app.start("research", "write a report", run_id="r-1")
            assert await h.result(timeout=30) == "final, small"
        for c in clients:
            await c.aclose()
        assert [r.model for r in server.requests] == ["gpt-4.1-mini"] * 3

        # The code now uses a bigger model for the third turn; fork before that call.
        app2, clients2 = build(store_url, server, "gpt-4.1")
        async with app2, app2.worker():
            before = (await app2.get_run("r-1")).journal
            assert [e["kind"] for e in before] == ["step"] * 3
            fork = await app2.fork("r-1", at=2, new_run_id="r-1-big")
            assert await fork.result(timeout=30) == "final, big"
            info = await app2.get_run("r-1-big")
        for c in clients2:
            await c.aclose()
        # One new request only: the third call, to the new model, with the first two
        # replies (from the copied journal) in its conversation.
        assert [r.model for r in server.requests] == ["gpt-4.1-mini"] * 3 + ["gpt-4.1"]
        sent = server.requests[-1].body["messages"]
        assert [m["content"] for m in sent if m["role"] == "assistant"] == ["plan", "draft"]
        assert (info.forked_from, info.forked_at) == ("r-1", 2)
        assert [e["name"] for e in info.journal] == [
            "llm:openai:gpt-4.1-mini", "llm:openai:gpt-4.1-mini", "llm:openai:gpt-4.1"]
        assert info.metrics.get("llm.calls") == 1
