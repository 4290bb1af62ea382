"""OpenTelemetry: replay emits no span for an operation answered from the journal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tether.otel
from tests.web import webapp
from tests.web.helpers import start_worker

pytestmark = [pytest.mark.slow, pytest.mark.faults]


async def test_run_killed_after_step_3_and_resumed_emits_each_step_span_once(
        sqlite_url: str, tmp_path: Path) -> None:
    """A worker is killed (SIGKILL) while step 4 runs; another worker resumes the run.
    Steps 1-3 are answered from the journal: across both workers each step has exactly
    one span, and the resumed execution joins the run's trace."""
    spans_file = tmp_path / "spans.jsonl"
    app = webapp.make_app(sqlite_url)
    async with app:
        await app.start("steps", 6, run_id="otel-1")
        first = start_worker(sqlite_url, tmp_path, app="tests.web.otel_worker_app:app",
                             extra_env={"TETHER_TEST_SPANS": str(spans_file),
                                        "TETHER_TEST_GATE": str(tmp_path / "never")})
        try:
            async with asyncio.timeout(30):
                while True:
                    journal = await app.store.journal_read("otel-1")
                    if len([e for e in journal if e.status == "ok"]) == 3:
                        break
                    await asyncio.sleep(0.02)
            # Step 4 is running (blocked on its gate): its span has started, not ended.
            await asyncio.sleep(0.3)
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        observer = tether.otel.instrument(provider)
        try:
            async with app.worker(queues=["default"]):
                result = await app.handle("otel-1").result(timeout=30)
        finally:
            tether.otel.uninstrument(observer)
    assert result == [10, 20, 30, 40, 50, 60]

    before = [json.loads(line) for line in spans_file.read_text().splitlines()]
    after = [{"name": s.name, "attributes": dict(s.attributes or {}),
              "trace_id": s.get_span_context().trace_id} for s in exporter.get_finished_spans()]
    steps_before = sorted(s["attributes"]["tether.position"] for s in before
                          if s["name"] == "step work")
    steps_after = sorted(s["attributes"]["tether.position"] for s in after
                         if s["name"] == "step work")
    assert steps_before == [0, 1, 2]
    assert steps_after == [3, 4, 5], "replay emitted spans for journaled steps"
    runs_after = [s for s in after if s["name"] == "run steps"]
    # (and the killed execution's, which its worker never ended: see the next test)
    assert sorted(s["attributes"]["tether.outcome"] for s in runs_after) == [
        "crashed", "returned"]
    (attrs,) = [s["attributes"] for s in runs_after
                if s["attributes"]["tether.outcome"] == "returned"]
    assert attrs["tether.operations.replayed"] == 3
    assert attrs["tether.operations.executed"] == 3
    assert attrs["tether.outcome"] == "returned"
    trace_ids = {s["trace_id"] for s in before} | {s["trace_id"] for s in after}
    assert len(trace_ids) == 1, "the resumed run did not join the run's trace"


async def test_llm_span_follows_genai_conventions_and_children_join_the_trace(
        sqlite_url: str) -> None:
    """A durable LLM call's span carries the GenAI attributes; a child run's spans are in
    its parent's trace, under the span that started it."""
    from tether import App, call
    from tether.ai import LLM, user_message
    from tether.testing import Reply, ScriptedLLMServer

    app = App(sqlite_url)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with ScriptedLLMServer([Reply("four", input_tokens=12, output_tokens=3,
                                        model="gpt-4.1-mini-2025")]) as server:
        llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="k")

        @app.workflow
        async def ask(q: str) -> str:
            return (await llm.chat([user_message(q)])).text or ""

        @app.workflow
        async def boss(q: str) -> str:
            return str(await call(ask, q))

        observer = tether.otel.instrument(provider)
        try:
            async with app, app.worker(queues=["default"]):
                handle = await app.start(boss, "2+2?", run_id="boss")
                assert await handle.result(timeout=30) == "four"
        finally:
            tether.otel.uninstrument(observer)
            await llm.aclose()
    spans = exporter.get_finished_spans()
    chat = [s for s in spans if s.name == "chat gpt-4.1-mini"]
    assert len(chat) == 1
    a = dict(chat[0].attributes or {})
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-4.1-mini"
    assert a["gen_ai.response.model"] == "gpt-4.1-mini-2025"
    assert a["gen_ai.provider.name"] == "openai"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 3)
    runs = {s.name: s for s in spans if s.name.startswith("run ")}
    assert {"run boss", "run ask"} <= set(runs)
    assert {s.get_span_context().trace_id for s in spans} == {
        runs["run boss"].get_span_context().trace_id}
    child_parent = runs["run ask"].parent
    assert child_parent is not None
    assert child_parent.span_id in {s.get_span_context().span_id for s in spans
                                    if s.name == "run boss"}


async def test_run_span_outcome_of_a_cancelled_run_and_of_continue_as_new(
        sqlite_url: str) -> None:
    """A run ended by a cancel request is ``cancelled`` (not a failed span with status
    ERROR); an execution that continues as new is ``continued``."""
    import tether
    from tether import App

    app = App(sqlite_url)

    @app.workflow
    async def generations(i: int) -> int:
        if i < 1:
            tether.continue_as_new(i + 1)
        return i

    @app.workflow
    async def waiter() -> None:
        await tether.wait_for_signal("never")

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = tether.otel.instrument(provider)
    try:
        async with app, app.worker(sticky_wait=0, poll_interval=0.05):
            assert await (await app.start(generations, 0)).result(timeout=30) == 1
            handle = await app.start(waiter, run_id="w1")
            while (await app.get_run("w1")).status != "waiting":
                await asyncio.sleep(0.02)
            await app.cancel("w1")
            while (await app.get_run("w1")).status != "cancelled":
                await asyncio.sleep(0.02)
            assert handle.run_id == "w1"
    finally:
        tether.otel.uninstrument(observer)
    outcomes = [(s.name, (s.attributes or {}).get("tether.outcome"), s.status.status_code.name)
                for s in exporter.get_finished_spans()]
    assert ("run generations", "continued", "UNSET") in outcomes
    assert ("run generations", "returned", "UNSET") in outcomes
    assert outcomes[-1] == ("run waiter", "cancelled", "UNSET"), outcomes


async def test_spans_of_an_app_with_a_payload_hook_hold_no_error_message(
        sqlite_url: str) -> None:
    """With a payload hook (encryption, redaction) the logs name only a failed step's
    error type, never its message, which may hold what the hook protects; the spans
    recorded the message three times (status, ``exception.message`` and the stack trace's
    last line, of the step's span and the failed run's), and exported it in clear to the
    tracing backend. Now they name the type and the frames; without a hook the message
    is recorded as before."""
    import tether
    from tether import App
    from tether.encryption import AesGcm

    secret = "sk-canary-5f3a9c1e7b2d4680"

    def build(hook: AesGcm | None) -> App:
        app = App(sqlite_url, payload_hook=hook)

        @app.step(retry=tether.RetryPolicy(max_attempts=1))
        async def leaky() -> None:
            try:
                raise KeyError(f"cause {secret}")
            except KeyError as exc:
                raise RuntimeError(f"provider said no to {secret}") from exc

        @app.workflow
        async def fails() -> None:
            await leaky()

        return app

    def spans_text(exporter: InMemorySpanExporter) -> list[tuple[str, str, str]]:
        return [(s.name, s.status.status_code.name, repr(dict(s.attributes or {}))
                 + repr(s.status.description)
                 + repr([(e.name, dict(e.attributes or {})) for e in s.events]))
                for s in exporter.get_finished_spans()]

    for hook in (AesGcm({"k1": bytes(range(32))}), None):
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        observer = tether.otel.instrument(provider)
        try:
            app = build(hook)
            async with app, app.worker(poll_interval=0.05):
                run_id = f"f-{hook is None}"
                with pytest.raises(tether.RunFailed):
                    await (await app.start("fails", run_id=run_id)).result(timeout=30)
        finally:
            tether.otel.uninstrument(observer)
        spans = spans_text(exporter)
        failed = [(name, text) for name, status, text in spans if status == "ERROR"]
        assert {name for name, _ in failed} == {"step leaky", "run fails"}, spans
        # Each an error.type, the run's too (only the step's had one until 2026-12-06).
        types = {s.name: (s.attributes or {}).get("error.type")
                 for s in exporter.get_finished_spans() if s.status.status_code.name == "ERROR"}
        assert types == {"step leaky": "RuntimeError",
                         "run fails": "StepError[RuntimeError]"}, types
        for name, text in failed:
            assert "RuntimeError" in text, (name, text)  # the type and frames stay
            assert "leaky" in text, (name, text)
            assert (secret in text) == (hook is None), (name, text)


async def test_instrument_called_twice_for_one_provider_makes_each_span_once(
        sqlite_url: str) -> None:
    """``instrument()`` called again (a module imported twice, each app's setup calling
    it) installed a second observer: every step and run span was made twice. Now it
    returns the observer installed for that provider; another provider gets its own."""
    from tether import App

    app = App(sqlite_url)

    @app.step
    async def one() -> int:
        return 1

    @app.workflow
    async def wf() -> int:
        return await one()

    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    providers = [TracerProvider(), TracerProvider()]
    for provider, exporter in zip(providers, (first, second), strict=True):
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = tether.otel.instrument(providers[0])
    try:
        assert tether.otel.instrument(providers[0]) is observer
        other = tether.otel.instrument(providers[1])
        assert other is not observer
        async with app, app.worker():
            assert await (await app.start(wf)).result(timeout=30) == 1
    finally:
        tether.otel.uninstrument()
    # (The run's start span is the first observer's: it records the run's trace first.)
    for exporter, start in ((first, ["start wf"]), (second, [])):
        assert sorted(s.name for s in exporter.get_finished_spans()) == [
            "run wf", *start, "step one"]


async def test_step_spans_of_a_postponed_a_cancelled_and_an_own_cancel_attempt(
        sqlite_url: str) -> None:
    """The engine records a postponed attempt (``Postpone``: an open circuit breaker, a
    rate limit) as postponed, not failed, and a step interrupted by a cancel request as
    cancelled (the run's span is ``cancelled``, not an error); a step whose code raised
    CancelledError itself as a CancelledError. Their spans said otherwise: status ERROR
    with the internal types ``_Interrupted`` and ``_OwnCancel`` as ``error.type``, so
    every postpone and every cancel counted as an error in the tracing backend."""
    import tether
    from tether import App
    from tether.errors import Postpone

    app = App(sqlite_url)
    postponed = [False]
    running = asyncio.Event()

    @app.step(retry=tether.RetryPolicy(max_attempts=1))
    async def own() -> None:
        raise asyncio.CancelledError

    @app.step
    async def later() -> int:
        if not postponed[0]:
            postponed[0] = True
            raise Postpone(0.01, "breaker open")
        return 1

    @app.step
    async def slow() -> int:
        running.set()
        await asyncio.Event().wait()
        return 1

    @app.workflow
    async def wf() -> int:
        with contextlib.suppress(Exception):
            await own()
        return await later() + await slow()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = tether.otel.instrument(provider)
    try:
        async with app, app.worker(poll_interval=0.05):
            await app.start(wf, run_id="c")
            await asyncio.wait_for(running.wait(), 30)
            await app.cancel("c")
            with pytest.raises(tether.RunFailed, match="cancelled"):
                await app.handle("c").result(timeout=30)
    finally:
        tether.otel.uninstrument(observer)
    seen = [(s.name, s.status.status_code.name, (s.attributes or {}).get("error.type"),
             (s.attributes or {}).get("tether.postponed_seconds"),
             (s.attributes or {}).get("tether.cancelled"))
            for s in exporter.get_finished_spans() if s.name != "start wf"]
    assert seen == [("step own", "ERROR", "CancelledError", None, None),
                    ("step later", "UNSET", None, 0.01, None),
                    ("step later", "UNSET", None, None, None),
                    ("step slow", "UNSET", None, None, True),
                    ("run wf", "UNSET", None, None, None)], seen


async def test_a_blocked_runs_span_is_an_error_with_the_reason(sqlite_url: str) -> None:
    """A run that ends blocked needs an operator, as a failed one needs a fix: its span
    had status UNSET (the engine's non-determinism check), or said ``returned`` (code
    that returned with recorded entries it no longer asks for, which the worker blocks
    after the code), and a run whose input this worker refused (clear text where the
    payload hook expects ciphertext) had no span at all. Each is now ``blocked``, status
    ERROR with the reason, the error recorded."""
    import tether
    from tether import App
    from tether.encryption import AesGcm

    app = App(sqlite_url)
    version = [1]

    @app.step
    async def one() -> int:
        return 1

    @app.step
    async def two() -> int:
        return 2

    @app.workflow
    async def renamed() -> int:
        first = await (one() if version[0] == 1 else two())
        await tether.wait_for_signal("go")
        return first

    @app.workflow
    async def shortened() -> int:
        total = await one()
        if version[0] == 1:
            total += await two()
            await tether.wait_for_signal("go")
        return total

    keyed = App(sqlite_url, payload_hook=AesGcm({"k1": bytes(range(32))}))

    @keyed.workflow
    async def sealed(name: str) -> str:
        return name

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = tether.otel.instrument(provider)
    try:
        async with app, keyed:
            async with app.worker(poll_interval=0.05):
                handles = [await app.start(wf, run_id=wf.__name__)
                           for wf in (renamed, shortened)]
                for h in handles:
                    async with asyncio.timeout(30):
                        while (await h.status()) != tether.RunStatus.WAITING:
                            await asyncio.sleep(0.02)
                version[0] = 2  # (the code changed, then the runs resume)
                for h in handles:
                    await app.signal(h.run_id, "go")
                    with pytest.raises(tether.RunFailed, match="blocked"):
                        await h.result(timeout=30)
            # Started without the hook: its input is clear text, which `keyed` refuses.
            plain = await app.start("sealed", "ada", run_id="plain")
            async with keyed.worker(poll_interval=0.05):
                with pytest.raises(tether.RunFailed, match="blocked"):
                    await keyed.handle(plain.run_id).result(timeout=30)
    finally:
        tether.otel.uninstrument(observer)
    runs = [s for s in exporter.get_finished_spans() if s.name.startswith("run ")]
    ended = {s.name: s for s in runs
             if (s.attributes or {}).get("tether.outcome") not in ("released", None)}
    reasons = {"run renamed": "NonDeterminismError: non-determinism in run 'renamed' at "
                              "position 0",
               "run shortened": "NonDeterminismError: non-determinism in run 'shortened' at "
                                "position 1",
               "run sealed": "PayloadNotEncryptedError"}
    for name in reasons:
        span = ended.get(name)
        assert span is not None, (name, [(s.name, dict(s.attributes or {})) for s in runs])
        assert (span.attributes or {})["tether.outcome"] == "blocked", name
        assert span.status.status_code.name == "ERROR", name
        assert (span.status.description or "").startswith(reasons[name]), (
            name, span.status.description)
        assert [e.name for e in span.events] == ["exception"], name
        # error.type, as a failed step's span has it (a run's had none until 2026-12-06).
        assert (span.attributes or {})["error.type"] == reasons[name].split(":")[0], name
    assert sorted(ended) == sorted(reasons)


async def test_a_block_the_store_ends_cancelled_has_a_cancelled_span(sqlite_url: str) -> None:
    """A cancel that commits after the worker last heard of cancels and before it
    records its replay's block: the store ends the run ``cancelled``. The span's outcome
    is the status the store took, so the span ends once the end is recorded: it said
    ``blocked``, ended before the worker wrote anything. Still an error, with the
    block's reason (the run's error)."""

    import tether
    from tether import App

    app = App(sqlite_url)
    version = [1]

    @app.step
    async def one() -> int:
        return 1

    @app.step
    async def two() -> int:
        return 2

    @app.workflow
    async def renamed() -> int:
        first = await (one() if version[0] == 1 else two())
        await tether.wait_for_signal("go")
        return first

    canceller = App(sqlite_url)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = tether.otel.instrument(provider)
    try:
        async with app, canceller:
            real_finish = app.store.run_finish

            async def cancel_first(**kwargs: Any) -> str:
                if kwargs["status"] == "blocked":  # another process's cancel, now
                    await canceller.cancel(kwargs["lease"].run_id)
                ended: str = await real_finish(**kwargs)
                return ended

            app.store.run_finish = cancel_first  # type: ignore[method-assign]
            async with app.worker(poll_interval=0.05):
                h = await app.start(renamed, run_id="raced")
                async with asyncio.timeout(30):
                    while (await h.status()) != tether.RunStatus.WAITING:
                        await asyncio.sleep(0.02)
                version[0] = 2
                await app.signal(h.run_id, "go")
                with pytest.raises(tether.RunFailed, match="ended cancelled"):
                    await h.result(timeout=30)
    finally:
        tether.otel.uninstrument(observer)
    runs = [s for s in exporter.get_finished_spans() if s.name == "run renamed"]
    outcomes = [(s.attributes or {}).get("tether.outcome") for s in runs]
    assert outcomes == ["released", "cancelled"], outcomes
    assert runs[-1].status.status_code.name == "ERROR"
    assert (runs[-1].status.description or "").startswith(
        "NonDeterminismError: non-determinism in run 'raced' at position 0")


async def test_a_tool_served_by_a_child_run_has_an_execute_tool_span_over_the_wait(
        sqlite_url: str) -> None:
    """An agent's function tool has an ``execute_tool`` span (its step); a tool served by
    a child run (a workflow tool, an agent as a tool) had none. It has one now, with the
    function tool's name and attributes, from the child's start to its result although
    the agent was released meanwhile (made once, by the execution that takes the
    result), linked to the child's first run span; an error if the child failed."""
    from tests.engine.helpers import status_is, wait_for
    from tether import App
    from tether.ai import LLM, Agent, function_tool, workflow_tool
    from tether.testing import Reply, ScriptedLLMServer

    app = App(sqlite_url)
    go = asyncio.Event()

    @function_tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @app.workflow(queue="tools")
    async def lookup(term: str) -> str:
        """Look a term up."""
        await go.wait()  # (the agent waits for it released)
        return f"{term}: found"

    @app.workflow(queue="tools")
    async def broken(term: str) -> str:
        """Fail."""
        raise RuntimeError(f"no {term}")

    calls = [{"name": "add", "arguments": {"a": 2, "b": 3}},
             {"name": "lookup", "arguments": {"term": "t"}},
             {"name": "broken", "arguments": {"term": "t"}}]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with ScriptedLLMServer([Reply(tool_calls=calls), Reply("done")]) as server, \
            LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None) as llm:
        app.add_agent(Agent("helper", model=llm,
                            tools=[add, workflow_tool(lookup), workflow_tool(broken)]))
        observer = tether.otel.instrument(provider)
        try:
            async with app, app.worker(queues=["default", "tools"], poll_interval=0.05):
                handle = await app.start("helper", "go", run_id="agent")
                await wait_for(lambda: status_is(app, "agent", "waiting"), timeout=30)
                go.set()
                assert await handle.result(timeout=30) == "done"
                served = await app.store.run_get("agent.2")
        finally:
            tether.otel.uninstrument(observer)
    assert served is not None and served.finished_at is not None
    spans = exporter.get_finished_spans()
    tools = {s.name: s for s in spans if s.name.startswith("execute_tool ")}
    assert sorted(s.name for s in spans if s.name.startswith("execute_tool ")) == [
        "execute_tool add", "execute_tool broken", "execute_tool lookup"]
    fn, child = (dict(tools[n].attributes or {}) for n in ("execute_tool add",
                                                           "execute_tool lookup"))
    shared = {"gen_ai.operation.name", "gen_ai.tool.name", "tether.run_id", "tether.position"}
    assert shared <= set(fn) and shared <= set(child)
    assert (child["gen_ai.operation.name"], child["gen_ai.tool.name"], child["tether.run_id"],
            child["tether.child_run_id"]) == ("execute_tool", "lookup", "agent", "agent.2")
    assert child["tether.position"] == 3  # (the wait; the child's start is at 2)
    runs = {}
    for s in spans:
        if s.name.startswith("run "):
            runs.setdefault((s.attributes or {})["tether.run_id"], []).append(s)
    assert len(runs["agent"]) >= 2  # released to wait, woken by a child's end (each)
    span = tools["execute_tool lookup"]
    first = min(runs["agent.2"], key=lambda s: s.start_time or 0)
    assert span.start_time is not None and span.end_time is not None
    assert span.start_time <= (first.start_time or 0)
    # It ends when the agent takes the child's result: after the child's end was
    # recorded and every execution of the child began. (Not after the child's last run
    # span ends: its worker ends it once the end is recorded, and the agent, woken by
    # that record, may take the result first; under load it did, 2 runs in 40.)
    assert span.end_time >= int(served.finished_at * 1e9)
    assert span.end_time >= max(s.start_time or 0 for s in runs["agent.2"])
    assert [link.context.span_id for link in span.links] == [first.context.span_id]
    assert span.context.trace_id == first.context.trace_id
    assert span.status.status_code.name == "UNSET"
    failed = tools["execute_tool broken"]
    assert failed.status.status_code.name == "ERROR"
    assert (failed.attributes or {})["error.type"] == "RunFailed"
    assert "agent.4" in (failed.status.description or "")


async def test_a_run_spans_queue_is_the_runs_own(sqlite_url: str) -> None:
    """A run started on another queue than its workflow's (``App.start(queue=)``,
    ``POST /api/v1/runs`` with ``queue``): its span's ``tether.queue`` named the
    workflow's queue (``default``) while a worker of ``bulk`` ran it, until
    2026-12-06."""
    import tether
    from tether import App

    app = App(sqlite_url)

    @app.workflow
    async def job(n: int) -> int:
        return n

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = tether.otel.instrument(provider)
    try:
        async with app, app.worker(queues=["bulk", "default"], poll_interval=0.05):
            assert await (await app.start(job, 1, queue="bulk")).result(timeout=30) == 1
            assert await (await app.start(job, 2)).result(timeout=30) == 2
    finally:
        tether.otel.uninstrument(observer)
    queues = sorted((s.attributes or {})["tether.queue"]
                    for s in exporter.get_finished_spans() if s.name == "run job")
    assert queues == ["bulk", "default"], queues


@pytest.mark.parametrize("traceparent", [False, True], ids=["own-trace", "caller-trace"])
async def test_a_runs_trace_has_no_orphan_when_its_first_worker_is_killed(
        sqlite_url: str, tmp_path: Path, traceparent: bool) -> None:
    """The run is started in this process (instrumented, as a Temporal client is), over
    the HTTP API with or without a caller's ``traceparent``; its first worker is killed
    (SIGKILL) in step 4, with its ``run`` span open, and a second worker ends the run.
    Every exported span's parent is an exported span or the caller's: the first
    execution's span, which no backend receives, parents nothing (it was the trace's
    root, and the second execution's parent, until 2026-12-06)."""
    from tests.web.test_api import _api

    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    spans_file = tmp_path / "spans.jsonl"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = tether.otel.instrument(provider)
    try:
        async for api in _api(sqlite_url, None):
            headers = ({"traceparent": f"00-{caller_trace}-{caller_span}-01"}
                       if traceparent else {})
            r = await api.http.post("/api/v1/runs", headers=headers, json={
                "workflow": "steps", "input": [6], "run_id": "orphan"})
            assert r.status_code == 201, r.text
    finally:
        tether.otel.uninstrument(observer)

    app = webapp.make_app(sqlite_url)
    env = {"TETHER_TEST_SPANS": str(spans_file)}
    async with app:
        first = start_worker(sqlite_url, tmp_path, app="tests.web.otel_worker_app:app",
                             extra_env={**env, "TETHER_TEST_GATE": str(tmp_path / "never")})
        try:
            async with asyncio.timeout(30):
                while len([e for e in await app.store.journal_read("orphan")
                           if e.status == "ok"]) < 3:
                    await asyncio.sleep(0.02)
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
        second = start_worker(sqlite_url, tmp_path, app="tests.web.otel_worker_app:app",
                              extra_env=env)
        try:
            assert await app.handle("orphan").result(timeout=30) == [
                10, 20, 30, 40, 50, 60]
        finally:
            second.send_signal(signal.SIGTERM)  # (ends gracefully: its spans are written)
            second.wait(30)

    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    spans += [{"name": s.name, "attributes": dict(s.attributes or {}),
               "trace_id": s.get_span_context().trace_id,
               "span_id": s.get_span_context().span_id,
               "parent_id": s.parent.span_id if s.parent else None,
               "parent_remote": bool(s.parent and s.parent.is_remote)}
              for s in exporter.get_finished_spans()]
    exported = {s["span_id"] for s in spans}
    allowed = exported | ({int(caller_span, 16)} if traceparent else set())
    dangling = [(s["name"], format(s["parent_id"], "016x")) for s in spans
                if s["parent_id"] is not None and s["parent_id"] not in allowed]
    assert dangling == [], "spans whose parent no exporter received"
    runs = {s["attributes"]["tether.outcome"]: s for s in spans if s["name"] == "run steps"}
    # The killed execution's span, which its worker never ended, is emitted by the one
    # that took the run over, with the ids its steps' spans name as their parent's.
    assert sorted(runs) == ["crashed", "returned"]
    for outcome, positions in (("crashed", [0, 1, 2]), ("returned", [3, 4, 5])):
        assert sorted(s["attributes"]["tether.position"] for s in spans
                      if s["name"] == "step work"
                      and s["parent_id"] == runs[outcome]["span_id"]) == positions
    # Their parent: the caller's span, or the start span this process made and exported.
    starts = [s for s in spans if s["name"] == "start steps"]
    assert len(starts) == (0 if traceparent else 1)
    assert {runs["crashed"]["parent_id"], runs["returned"]["parent_id"]} == {
        int(caller_span, 16) if traceparent else starts[0]["span_id"]}
    assert len({s["trace_id"] for s in spans}) == 1
    if traceparent:
        assert format(spans[0]["trace_id"], "032x") == caller_trace
        assert all(s["parent_remote"] for s in spans if s["parent_id"] not in exported)
    else:
        assert [s["name"] for s in spans if s["parent_id"] is None] == ["start steps"]


async def test_start_spans_of_start_start_many_and_fork_parent_each_runs_executions(
        sqlite_url: str) -> None:
    """``App.start`` under a span of the caller makes the run's ``start`` span its child;
    ``start_many`` makes one per run, ``fork`` one for the fork and a schedule's
    trigger one for its run; each run's ``run`` span is the child of its own ``start``
    span. A start of a run that exists makes none."""
    from tether import App
    from tether._lifecycle import trigger_schedule

    app = App(sqlite_url)

    @app.workflow
    async def wf(i: int) -> int:
        return i

    @app.workflow
    async def job() -> int:
        return 0

    app.schedule(job, cron="0 * * * *", name="hourly")

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("caller")
    observer = tether.otel.instrument(provider)
    try:
        async with app:
            with tracer.start_as_current_span("caller") as caller:
                await app.start(wf, 1, run_id="one")
            await app.start_many(wf, [[2], [3]], run_ids=["two", "three"])
            await app.start(wf, 1, run_id="one")  # (exists: no span)
            async with app.worker():
                for run_id in ("one", "two", "three"):
                    await app.handle(run_id).result(timeout=30)
                fork = await app.fork("one", at=0, new_run_id="one-fork")
                await fork.result(timeout=30)
                hourly = await app.store.schedule_get("hourly")
                assert hourly is not None
                ticked = await trigger_schedule(app, app.store, hourly, app.clock.now())
                await app.handle(ticked).result(timeout=30)
    finally:
        tether.otel.uninstrument(observer)
    spans = exporter.get_finished_spans()
    starts = {(s.attributes or {})["tether.run_id"]: s for s in spans
              if s.name == "start wf"}
    assert sorted(starts) == ["one", "one-fork", "three", "two"]
    assert len([s for s in spans if s.name == "start wf"]) == 4
    one = starts["one"]
    assert one.parent is not None
    assert one.parent.span_id == caller.get_span_context().span_id
    assert one.get_span_context().trace_id == caller.get_span_context().trace_id
    assert all(starts[r].parent is None for r in ("two", "three", "one-fork"))
    (tick,) = [s for s in spans if s.name == "start job"]
    assert (tick.attributes or {})["tether.run_id"] == ticked and tick.parent is None
    starts[ticked] = tick
    for s in spans:
        if s.name in ("run wf", "run job"):
            start = starts[(s.attributes or {})["tether.run_id"]]
            assert s.parent is not None
            assert s.parent.span_id == start.get_span_context().span_id



async def _spans_of_a_run_whose_lease_is_taken(url: str) -> list[Any]:
    """The spans of a run whose step holds while its lease expires in the store and a
    thief claims the run (in production: its worker stalled past its lease, SIGSTOP, a
    long pause): the worker's heartbeat finds the lease gone and cancels the run's
    task, cutting the step off."""
    import tether
    from tether import App

    app = App(url)
    started = asyncio.Event()

    @app.step
    async def hold() -> None:
        started.set()
        await asyncio.sleep(30)

    @app.workflow
    async def wf() -> None:
        await hold()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = tether.otel.instrument(provider)
    try:
        async with app:
            store = app.store
            await app.start(wf, run_id="taken")
            async with app.worker(lease_seconds=2.0, concurrency=1) as worker:
                await asyncio.wait_for(started.wait(), 30)
                await store.lease_expire_owner(worker_id=worker.worker_id,
                                               now=app.clock.now())
                claimed = await store.run_claim(worker_id="thief", queues=["default"],
                                                limit=1, now=app.clock.now(),
                                                lease_seconds=60)
                assert [c.run.run_id for c in claimed] == ["taken"]
                for _ in range(400):
                    if any(s.name == "run wf" for s in exporter.get_finished_spans()):
                        break
                    await asyncio.sleep(0.05)
                assert worker.counts.leases_lost == 1
    finally:
        tether.otel.uninstrument(observer)
    return list(exporter.get_finished_spans())


async def test_the_span_of_an_execution_whose_lease_was_taken_ends_lost(
        sqlite_url: str) -> None:
    """A worker whose run another worker took drops the run: its heartbeat finds the
    lease gone and cancels the run's task. The execution's span said ``interrupted``
    (the word for a worker that is stopping), not ``lost``, which the docs give for a
    lease taken by another worker; an SRE looking for stalled workers in the traces
    could not find them."""
    spans = await _spans_of_a_run_whose_lease_is_taken(sqlite_url)
    (run,) = [s for s in spans if s.name == "run wf"]
    assert (run.attributes or {})["tether.outcome"] == "lost", run.attributes


async def test_a_step_attempt_the_worker_cut_off_says_so(sqlite_url: str) -> None:
    """The step attempt a worker cuts off (its run's lease taken, as here, or the worker
    stopping past its grace) is no failure of the step, and it did not end well: the
    attempt runs again elsewhere. Its span read as an attempt that ended well (status
    unset, nothing more), so the trace showed the step done twice at its position; it
    has ``tether.interrupted`` now, as a cancel request's has ``tether.cancelled``."""
    spans = await _spans_of_a_run_whose_lease_is_taken(sqlite_url)
    (step,) = [s for s in spans if s.name == "step hold"]
    assert step.status.status_code.name == "UNSET"
    assert (step.attributes or {}).get("tether.interrupted") is True, step.attributes
    assert "error.type" not in (step.attributes or {})


async def test_a_step_that_raised_systemexit_has_an_error_span(sqlite_url: str) -> None:
    """A step whose code raised ``SystemExit`` (a library's ``sys.exit()``) or
    ``KeyboardInterrupt`` is a failed attempt, as the engine records it and the worker's
    metrics count it; its span was no error (neither status nor ``error.type``): only
    an ``Exception`` made one."""
    import tether
    from tether import App

    app = App(sqlite_url)

    @app.step(retry=tether.RetryPolicy(max_attempts=1))
    async def exits() -> None:
        raise SystemExit(3)

    @app.workflow
    async def wf() -> None:
        await exits()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = tether.otel.instrument(provider)
    try:
        async with app, app.worker(poll_interval=0.05):
            with pytest.raises(tether.RunFailed):
                await (await app.start(wf, run_id="x")).result(timeout=30)
    finally:
        tether.otel.uninstrument(observer)
    (step,) = [s for s in exporter.get_finished_spans() if s.name == "step exits"]
    assert step.status.status_code.name == "ERROR", step.status
    assert (step.attributes or {}).get("error.type") == "SystemExit", step.attributes


async def test_a_superseded_step_attempt_says_so(sqlite_url: str) -> None:
    """A step attempt that returned after another worker had taken its run over (its
    worker stalled past its lease) is superseded: its result is refused, the step runs
    again under the new lease, and its side effects may have happened twice. Its span
    read as an attempt that ended well (status unset, nothing more); it has
    ``tether.superseded`` and status ERROR now, ended when the attempt returned. An
    attempt whose result stands ends as before."""
    import tether
    from tether import App

    app = App(sqlite_url)
    started, go = asyncio.Event(), asyncio.Event()

    @app.step
    async def first() -> int:
        return 1

    @app.step
    async def hold() -> int:
        started.set()
        await go.wait()
        return 2

    @app.workflow
    async def wf() -> int:
        return await first() + await hold()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = tether.otel.instrument(provider)
    try:
        async with app:
            store = app.store
            await app.start(wf, run_id="stalled")
            # (a lease the heartbeat renews only every 20 s: it does not see the loss
            # before the step returns; the refused write does)
            async with app.worker(lease_seconds=60.0, concurrency=1) as worker:
                await asyncio.wait_for(started.wait(), 30)
                await store.lease_expire_owner(worker_id=worker.worker_id,
                                               now=app.clock.now())
                claimed = await store.run_claim(worker_id="thief", queues=["default"],
                                                limit=1, now=app.clock.now(),
                                                lease_seconds=60)
                assert [c.run.run_id for c in claimed] == ["stalled"]
                go.set()
                for _ in range(400):
                    if any(s.name == "run wf" for s in exporter.get_finished_spans()):
                        break
                    await asyncio.sleep(0.05)
                assert worker.counts.leases_lost == 1
            info = await app.get_run("stalled")
    finally:
        tether.otel.uninstrument(observer)
    assert [a["status"] for a in info.attempts] == ["ok", "superseded"], info.attempts
    spans = exporter.get_finished_spans()
    (run,) = [s for s in spans if s.name == "run wf"]
    assert (run.attributes or {})["tether.outcome"] == "lost", run.attributes
    (stood,) = [s for s in spans if s.name == "step first"]
    assert stood.status.status_code.name == "UNSET"
    assert "tether.superseded" not in (stood.attributes or {})
    (refused,) = [s for s in spans if s.name == "step hold"]
    assert (refused.attributes or {}).get("tether.superseded") is True, refused.attributes
    assert refused.status.status_code.name == "ERROR"
    assert "result was refused" in (refused.status.description or "")
    assert refused.end_time is not None and run.end_time is not None
    assert refused.end_time <= run.end_time
