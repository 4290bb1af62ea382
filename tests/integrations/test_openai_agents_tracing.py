"""The OpenAI Agents SDK's tracing under replay: the spans of model calls (the SDK's
``generation``/``response`` spans) are made inside the wrapped model, which only runs in
the step's body, so a model call answered from the journal exports no span again. The
spans the SDK's runner makes in workflow code (the trace, ``agent``, ``function``,
``handoff``) are made again by each execution of the run (see the doc page)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import OpenAIChatCompletionsModel, set_trace_processors, set_tracing_disabled
from agents.tracing import Span, Trace, TracingProcessor

import tether
from tests.engine.helpers import status_is, wait_for
from tests.integrations.test_openai_agents import model, server, triage_agents, triage_script
from tether import App
from tether.integrations.openai_agents import TetherAgent
from tether.testing.llm_server import ScriptedLLMServer

__all__ = ["model", "server"]  # fixtures


class Collector(TracingProcessor):
    """Keeps every finished span in memory (nothing leaves the process)."""

    def __init__(self) -> None:
        self.spans: list[Span[Any]] = []
        self.traces: list[Trace] = []

    def on_trace_start(self, trace: Trace) -> None:
        self.traces.append(trace)

    def on_trace_end(self, trace: Trace) -> None:
        pass

    def on_span_start(self, span: Span[Any]) -> None:
        pass

    def on_span_end(self, span: Span[Any]) -> None:
        self.spans.append(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self) -> None:
        pass

    def kinds(self) -> list[str]:
        return [str(s.span_data.type) for s in self.spans]


@pytest.fixture
def collector() -> Iterator[Collector]:
    found = Collector()
    set_trace_processors([found])
    set_tracing_disabled(False)
    try:
        yield found
    finally:
        set_tracing_disabled(True)
        set_trace_processors([])


async def test_replayed_model_calls_export_no_span(
        sqlite_url: str, server: ScriptedLLMServer, model: OpenAIChatCompletionsModel,
        collector: Collector) -> None:
    """The run executes twice (a release after the agent, then a replay): the model's
    generation spans are exported once per request actually sent, not per execution."""
    server.set_script(triage_script())
    triage, _ = triage_agents(model, [])
    tagent = TetherAgent(triage)
    app = App(sqlite_url)
    executions: list[int] = []

    @app.workflow
    async def ask(question: str) -> str:
        result = await tagent.run(question)
        executions.append(1)
        await tether.wait_for_signal("go")
        return str(result.final_output.city)

    async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
        handle = await app.start(ask, "Eiffel tower?", run_id="t1")
        await wait_for(lambda: status_is(app, "t1", "waiting"), timeout=20)
        await app.signal("t1", "go")
        assert await handle.result(timeout=20) == "Paris"
    assert len(executions) == 2 and len(server.requests) == 3
    kinds = collector.kinds()
    assert kinds.count("generation") == 3  # one per request sent, none for the replay
    # What the runner makes in workflow code comes again with the replay.
    assert kinds.count("agent") == 2 * 2 and len(collector.traces) == 2
