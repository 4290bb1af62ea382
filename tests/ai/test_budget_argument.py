"""``budget=`` takes a ``tether.ai.Budget`` (or None), and says so when given anything
else: ``Agent(budget=5)``, ``TetherAgent(..., budget=5)`` (both integrations),
``llm.chat(budget=5)`` and ``set_budget(5)`` were taken as given, and every LLM call of
the run then failed with ``AttributeError: 'int' object has no attribute 'usd'`` and was
retried for ever (the run never ended)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from tether import App
from tether.ai import LLM, Agent, Budget, set_budget, user_message
from tether.errors import ConfigError, RunFailed
from tether.testing.llm_server import Reply, ScriptedLLMServer


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as s:
        yield s


def test_agents_refuse_a_budget_that_is_not_a_budget() -> None:
    llm = LLM("openai:gpt-4.1-mini", base_url="http://127.0.0.1:9/v1")
    for bad in (5, 0.5, {"usd": 5}, "5"):
        with pytest.raises(ConfigError, match=r"budget= must be a tether.ai.Budget"):
            Agent("a", model=llm, budget=bad)
    assert Agent("a", model=llm, budget=Budget(usd=1.0)).budget == Budget(usd=1.0)
    assert Agent("a", model=llm).budget is None


def test_the_integrations_refuse_a_budget_that_is_not_a_budget() -> None:
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    from agents import Agent as SdkAgent
    from pydantic_ai import Agent as PydanticAgent
    from pydantic_ai.models.test import TestModel

    from tether.integrations import openai_agents, pydantic_ai

    app = App("sqlite:///:memory:")
    with pytest.raises(ConfigError, match=r"TetherAgent 'p': budget= must be a tether.ai"):
        pydantic_ai.TetherAgent(PydanticAgent(TestModel(), name="p"), app=app, budget=5)
    with pytest.raises(ConfigError, match=r"TetherAgent 'o': budget= must be a tether.ai"):
        openai_agents.TetherAgent(SdkAgent(name="o"), app=app, budget={"usd": 5})
    # Nothing was registered by the refused ones: the names are free.
    pydantic_ai.TetherAgent(PydanticAgent(TestModel(), name="p"), app=app,
                            budget=Budget(usd=1.0))
    openai_agents.TetherAgent(SdkAgent(name="o"), app=app, budget=Budget(tokens=100))


@pytest.mark.parametrize("how", ["chat", "set_budget"])
async def test_a_run_given_a_bad_budget_fails_at_once_and_sends_nothing(
        sqlite_url: str, server: ScriptedLLMServer, how: str) -> None:
    server.set_script([Reply("never sent")])
    app = App(sqlite_url)
    llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url)

    @app.workflow
    async def wf() -> str:
        if how == "chat":
            reply = await llm.chat([user_message("hi")], budget=5)  # type: ignore[arg-type]
        else:
            set_budget(5)  # type: ignore[arg-type]
            reply = await llm.chat([user_message("hi")])
        return reply.text

    try:
        async with app.worker():
            with pytest.raises(RunFailed, match=r"ConfigError: .*budget= must be a tether.ai"):
                await (await app.start(wf, run_id="bad-budget")).result(timeout=30)
        assert server.requests == []
    finally:
        await llm.aclose()
        await app.close()


def test_set_budget_refuses_a_budget_and_keywords_together() -> None:
    """``set_budget(Budget(...), tokens=5)`` took the Budget and dropped ``tokens=5``
    without a word; it is refused (before the run is looked for), naming the keyword."""
    for kwargs in ({"tokens": 5}, {"usd": 0.5}, {"on_exceed": "fail"}):
        with pytest.raises(ConfigError, match=r"set_budget: give a Budget or .*not both"):
            set_budget(Budget(usd=1.0), **kwargs)  # type: ignore[arg-type]
