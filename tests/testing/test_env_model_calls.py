"""``TestEnv`` explains a stuck durable model call of every kind a user can make: an
``LLM`` on either protocol (Chat Completions, Anthropic Messages), and an integration's
model (the OpenAI Agents SDK, pydantic-ai), whose requests its framework's own client
makes (``tether.ai.MeteredModel``), under a step name of its own.

Each test is the way a user meets it: a model built before the environment (at module
level, say) keeps its client's base URL, the provider's (here a closed port, a socket
that never answers, or a server of the test's own that refuses the environment's key,
not to reach the network); the wait on the run says why it cannot end, naming where the
call went. Until 2026-12-07 only ``tether.ai.LLM``'s calls were explained: an
integration's call that reached nothing was retried until the wait's timeout (or
``RunSpinning`` after a thousand attempts), which said only that a step kept failing
with "Connection error.", one that had no answer waited its client's 600 s, and a 401
from another endpoint said nothing of the environment.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import threading
import time
from typing import Any

import pytest

from tests.testing.test_env import _Silent
from tether import App, RunFailed
from tether.ai import LLM, Agent
from tether.testing import Fault, Reply, RunStuck, ScriptedLLMServer, TestEnv
from tether.testing._env import _UNANSWERED_AFTER

CLOSED = "http://127.0.0.1:9/v1"  # (nothing listens on the discard port)

#: The OpenAI clients the apps of a test built, closed after it (``_closed_clients``): a
#: client left open kept its pooled sockets to the test's servers until the garbage
#: collector met them, in whichever later test of the worker that was, which pytest then
#: failed on the "unclosed transport" ResourceWarnings.
_CLIENTS: list[Any] = []


@pytest.fixture(autouse=True)
async def _closed_clients() -> Any:
    yield
    while _CLIENTS:
        await _CLIENTS.pop().close()


def agents_sdk_app(base_url: str, api_key: str = "sk-built-before") -> tuple[App, Any]:
    """An app with an OpenAI Agents SDK agent ``helper`` whose model's client was built
    before any environment, at ``base_url``."""
    pytest.importorskip("agents")
    from agents import Agent as SDKAgent
    from agents import OpenAIChatCompletionsModel, set_tracing_disabled
    from openai import AsyncOpenAI

    from tether.integrations.openai_agents import TetherAgent

    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=base_url, api_key=api_key)
    _CLIENTS.append(client)
    app = App()
    TetherAgent(SDKAgent(name="helper", instructions="Help.",
                         model=OpenAIChatCompletionsModel("gpt-4.1-mini",
                                                          openai_client=client)), app=app)
    return app, client


def pydantic_ai_app(base_url: str, api_key: str = "sk-built-before") -> App:
    """An app with a pydantic-ai agent ``helper`` whose model's provider was built
    before any environment, at ``base_url``."""
    pytest.importorskip("pydantic_ai")
    from openai import AsyncOpenAI
    from pydantic_ai import Agent as PAIAgent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from tether.integrations.pydantic_ai import TetherAgent

    client = AsyncOpenAI(base_url=base_url, api_key=api_key)
    _CLIENTS.append(client)
    model = OpenAIChatModel("gpt-4.1-mini", provider=OpenAIProvider(openai_client=client))
    app = App()
    TetherAgent(PAIAgent(model, name="helper"), app=app)
    return app


def _step(kind: str) -> str:
    return {"agents": "openai_agents:model:gpt-4.1-mini",
            "pydantic_ai": "pydantic_ai:helper__model.request"}[kind]


def _app(kind: str, base_url: str, api_key: str = "sk-built-before") -> App:
    if kind == "agents":
        return agents_sdk_app(base_url, api_key)[0]
    return pydantic_ai_app(base_url, api_key)


# -- an LLM on Anthropic's protocol ------------------------------------------------------


async def test_an_anthropic_model_not_pointed_at_the_environment_ends_the_wait() -> None:
    """An Anthropic ``LLM`` built before the environment keeps its base URL: the wait
    ends with ``RunStuck`` naming it, as for an OpenAI-compatible one."""
    llm = LLM("anthropic:claude-sonnet-4-5", base_url=CLOSED)
    app = App()
    app.add_agent(Agent("astray", model=llm))
    try:
        async with TestEnv(app, llm=[Reply("ok")]) as env:
            handle = await env.start("astray", "hi")
            with pytest.raises(RunStuck, match=(
                    r"cannot reach its model: its LLM call \(step "
                    r"'llm:anthropic:claude-sonnet-4-5'\) failed \d+ attempts in a row, "
                    rf"nothing answering at {re.escape(CLOSED)}.*llms=\[llm\]")):
                await env.result(handle, timeout=30)
    finally:
        await llm.aclose()


async def test_an_anthropic_model_given_to_the_environment_says_a_hang_and_a_script_out(
        ) -> None:
    """An Anthropic ``LLM`` given as ``llms=`` is answered on the Messages protocol; a
    ``Fault.hang()`` it meets, and a script it outruns, are said as for Chat
    Completions."""
    llm = LLM("anthropic:claude-sonnet-4-5")
    app = App()
    app.add_agent(Agent("talker", model=llm))
    try:
        async with TestEnv(app, llm=[Fault.hang()], llms=[llm]) as env:
            handle = await env.start("talker", "hi")
            async with asyncio.timeout(30):
                while not any(r.outcome == "fault:hang" for r in env.llm.requests):
                    await asyncio.sleep(0.01)
            assert env.llm.requests[0].protocol == "anthropic"
            with pytest.raises(TimeoutError, match=r"holds 1 request\(s\) of a Fault.hang"):
                await handle.result(timeout=0.5)
        async with TestEnv(app, llm=[], llms=[llm]) as env:
            handle = await env.start("talker", "hi")
            async with asyncio.timeout(30):
                while not any(r.outcome == "exhausted" for r in env.llm.requests):
                    await asyncio.sleep(0.01)
            with pytest.raises(TimeoutError, match=r"script ran out: \d+ requests got 500"):
                await handle.result(timeout=0.5)
    finally:
        await llm.aclose()


# -- an integration's model ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["agents", "pydantic_ai"])
async def test_an_integrations_model_that_reaches_nothing_ends_the_wait(kind: str) -> None:
    """An integration's model whose client points at nothing (the provider's URL, no
    network): its calls were retried, each backoff skipped, until the wait's timeout
    said only that the step kept failing with "Connection error.". The wait ends now as an
    ``LLM``'s does, naming the step, the URL and how to point the model at the scripted
    server."""
    app = _app(kind, CLOSED)
    async with TestEnv(app, llm=[Reply("ok")]) as env:
        handle = await env.start("helper", "hi")
        with pytest.raises(RunStuck, match=(
                rf"run '{handle.run_id}' \(helper\) cannot reach its model: its LLM call "
                rf"\(step '{_step(kind)}'\) failed \d+ attempts in a row, nothing answering "
                rf"at {re.escape(CLOSED)}, and the environment's scripted LLM server is at "
                rf"{re.escape(env.llm.base_url)}: an integration's model whose client was "
                r"built before the environment .*base_url=env\.llm\.base_url")) as stuck:
            await env.result(handle, timeout=30)
        assert env.llm.requests == []
    assert "RunSpinning" not in type(stuck.value).__name__


@pytest.mark.parametrize("kind", ["agents", "pydantic_ai"])
async def test_an_integrations_model_whose_server_never_answers_ends_the_wait(
        kind: str) -> None:
    """An integration's model whose endpoint accepts the request and never answers: the
    call waited its client's own timeout (600 s for the OpenAI SDK) in real time, the
    wait its own (60 s). It ends now once the call has had no answer a short while."""
    silent = _Silent()
    try:
        app = _app(kind, silent.url)
        async with TestEnv(app, llm=[Reply("ok")]) as env:
            handle = await env.start("helper", "hi")
            with pytest.raises(RunStuck, match=(
                    rf"run '{handle.run_id}' \(helper\) cannot reach its model: its LLM "
                    rf"call \(step '{_step(kind)}'\) has had no answer from "
                    rf"{re.escape(silent.url)} for [\d.]+ s \(the endpoint accepted the "
                    r"connection and says nothing; the call waits its client's own timeout "
                    r"in real time.*an integration's model whose client")):
                await env.result(handle, timeout=30)
            assert env.llm.requests == []
            assert silent.accepted
    finally:
        silent.close()


@pytest.mark.parametrize("kind", ["agents", "pydantic_ai"])
async def test_an_integrations_model_whose_key_another_server_refuses_says_so(
        kind: str) -> None:
    """An integration's model whose client points at the real provider, which refuses
    the key (401): the run fails, and the failure says which endpoint refused it (as an
    ``LLM``'s does) and how to point the model at the scripted server; it said only
    "HTTP 401 ...: Incorrect API key provided"."""
    async with ScriptedLLMServer([Reply("never")], api_key="sk-the-real-one") as real:
        url = real.base_url.rstrip("/")
        app = _app(kind, real.base_url, api_key="sk-a-wrong-one")
        async with TestEnv(app, llm=[Reply("ok")]) as env:
            handle = await env.start("helper", "hi")
            with pytest.raises(RunFailed) as failed:
                await env.result(handle, timeout=30)
            assert env.llm.requests == []
            ours = env.llm.base_url
    assert re.search(rf"HTTP 401\b.*\(refused by {re.escape(url)}\)", str(failed.value))
    assert failed.value.__notes__[-1].startswith(
        f"run '{handle.run_id}' failed on its model's HTTP 401 from {url} (step "
        f"'{_step(kind)}'), not the environment's scripted LLM server (at {ours}), which "
        "refuses the environment's fake API key: an integration's model whose client was "
        "built before the environment")
    assert [r.status for r in real.requests] == [401]


async def test_a_wait_on_an_integrations_calls_that_go_elsewhere_says_so() -> None:
    """Without ``stuck_after`` the wait gives up at its timeout: it says the run retries
    model calls that never reached the scripted server (only ``llm:`` steps were
    told)."""
    app = _app("agents", CLOSED)
    async with TestEnv(app, llm=[Reply("ok")], stuck_after=None) as env:
        handle = await env.start("helper", "hi")
        async with asyncio.timeout(30):  # (its first attempt has failed, however slow)
            while not any(e.attempts > 0
                          for e in await env.app.store.journal_read(handle.run_id)):
                await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError, match=(
                r"did not end within 0.5 s; runs retry LLM calls \(step "
                r"'openai_agents:model:gpt-4.1-mini'\) but none reached the scripted LLM "
                r"server: an integration's model whose client was built before")):
            await handle.result(timeout=0.5)


async def test_an_integrations_model_on_a_hung_request_says_so() -> None:
    """An integration's model pointed at the scripted server that meets a
    ``Fault.hang()``: the wait that gives up says the server holds the request, and
    where the timeout to shorten is (its client's)."""
    app, client = agents_sdk_app("http://unused.invalid/v1")
    async with TestEnv(app, llm=[Fault.hang(), Reply("ok")]) as env:
        client.base_url = env.llm.base_url  # (pointed at it, as the test means to)
        handle = await env.start("helper", "hi")
        async with asyncio.timeout(30):
            while not any(r.outcome == "fault:hang" for r in env.llm.requests):
                await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError, match=r"holds 1 request\(s\) of a Fault.hang\(\) "
                           r"unanswered: .*its client's, AsyncOpenAI\(timeout=2\)"):
            await handle.result(timeout=0.5)


class _SlowStream:
    """A Chat Completions server of the test's own, in a thread of its own (no task of
    the test's), that streams each answer's first chunk at once, then says nothing for
    ``pause`` seconds (longer than the environment lets a call go unanswered) before it
    sends the rest."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.requests: list[dict[str, Any]] = []
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                served.requests.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                self._chunk({"role": "assistant", "content": "slow "}, None)
                time.sleep(served.pause)  # (answering: begun, and slow)
                self._chunk({"content": "but sure"}, "stop")
                self._send({"id": "c1", "object": "chat.completion.chunk", "created": 0,
                            "model": "gpt-4.1-mini", "choices": [],
                            "usage": {"prompt_tokens": 5, "completion_tokens": 3,
                                      "total_tokens": 8}})
                self.wfile.write(b"data: [DONE]\n\n")

            def _chunk(self, delta: dict[str, Any], finish: str | None) -> None:
                self._send({"id": "c1", "object": "chat.completion.chunk", "created": 0,
                            "model": "gpt-4.1-mini",
                            "choices": [{"index": 0, "delta": delta,
                                         "finish_reason": finish}]})

            def _send(self, event: dict[str, Any]) -> None:
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


def _streamed_app(kind: str, base_url: str) -> App:
    """An app whose workflow ``helper`` streams its model's answers: an OpenAI Agents SDK
    agent under ``Runner.run_streamed``, or a pydantic-ai agent (``TetherAgent``
    streams each request for the run's observers), its client at ``base_url``."""
    if kind == "pydantic_ai":
        return pydantic_ai_app(base_url)
    pytest.importorskip("agents")
    from agents import Agent as SDKAgent
    from agents import OpenAIChatCompletionsModel, Runner, set_tracing_disabled
    from openai import AsyncOpenAI

    from tether.integrations.openai_agents import durable, run_config

    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=base_url, api_key="sk-built-before")
    _CLIENTS.append(client)
    agent = durable(SDKAgent(name="helper", instructions="Help.",
                             model=OpenAIChatCompletionsModel("gpt-4.1-mini",
                                                              openai_client=client)))
    app = App()

    @app.workflow(name="helper")
    async def helper(text: str) -> str:
        streamed = Runner.run_streamed(agent, text, run_config=run_config())
        async for _ in streamed.stream_events():
            pass
        return str(streamed.final_output)

    return app


@pytest.mark.parametrize("kind", ["agents", "pydantic_ai"])
async def test_an_integrations_model_that_streams_slowly_is_not_stuck(kind: str) -> None:
    """An integration's model whose server (the test's own) streams the first chunk of
    its answer, then nothing for longer than the environment lets a call go unanswered:
    the call's answer had begun, but the integrations never said so, and the wait ended
    with ``RunStuck`` ("has had no answer ... for 2.0 s") on a model that was answering.
    The run completes now."""
    slow = _SlowStream(pause=_UNANSWERED_AFTER + 1.5)
    try:
        app = _streamed_app(kind, slow.url)
        async with TestEnv(app, llm=[Reply("never")]) as env:
            handle = await env.start("helper", "hi")
            assert await env.result(handle, timeout=60) == "slow but sure"
            assert env.llm.requests == []
        assert [r.get("stream") for r in slow.requests] == [True]
    finally:
        slow.close()


@pytest.mark.parametrize("where", ["closed", "silent"])
async def test_a_pydantic_ai_token_count_that_goes_nowhere_ends_the_wait(where: str) -> None:
    """pydantic-ai's token count (``UsageLimits(count_tokens_before_request=True)``), a
    free request that is journaled but not metered, to an endpoint that reaches nothing
    or never answers: it was not listed among the model calls in flight, so the wait
    said nothing of it (the count was retried, or waited its client's 600 s, until the
    wait's timeout). It ends now as a model request's does, naming the count's step."""
    pytest.importorskip("pydantic_ai")
    from openai import AsyncOpenAI
    from pydantic_ai import Agent as PAIAgent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.usage import UsageLimits

    from tether.integrations.pydantic_ai import TetherAgent

    silent = _Silent() if where == "silent" else None
    url = silent.url if silent is not None else CLOSED
    try:
        client = AsyncOpenAI(base_url=url, api_key="sk-built-before")
        _CLIENTS.append(client)
        model = OpenAIResponsesModel("gpt-4.1-mini",
                                     provider=OpenAIProvider(openai_client=client))
        tagent = TetherAgent(PAIAgent(model, name="counter"))
        app = App()
        limits = UsageLimits(input_tokens_limit=100_000, count_tokens_before_request=True)

        @app.workflow(name="counted")
        async def counted(prompt: str) -> str:
            return (await tagent.run(prompt, usage_limits=limits)).output

        said = (r"failed \d+ attempts in a row, nothing answering at" if silent is None
                else r"has had no answer from")
        async with TestEnv(app, llm=[Reply("ok")]) as env:
            handle = await env.start("counted", "hi")
            with pytest.raises(RunStuck, match=(
                    rf"run '{handle.run_id}' \(counted\) cannot reach its model: its LLM "
                    r"call \(step 'pydantic_ai:counter__model.count_tokens'\) "
                    rf"{said} {re.escape(url)}")):
                await env.result(handle, timeout=20)
            assert env.llm.requests == []
    finally:
        if silent is not None:
            silent.close()


def _sdk_agent(name: str, base_url: str, api: str = "chat") -> Any:
    """An OpenAI Agents SDK agent ``name`` whose model's client was built before any
    environment, at ``base_url``: on Chat Completions, or the Responses API."""
    pytest.importorskip("agents")
    from agents import Agent as SDKAgent
    from agents import OpenAIChatCompletionsModel, OpenAIResponsesModel, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=base_url, api_key="sk-built-before")
    _CLIENTS.append(client)
    model = (OpenAIChatCompletionsModel("gpt-4.1-mini", openai_client=client) if api == "chat"
             else OpenAIResponsesModel("gpt-4.1-mini", openai_client=client))
    return SDKAgent(name=name, instructions="Help.", model=model)


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_slow_unstreamed_answer_of_a_scripted_server_is_not_stuck(api: str) -> None:
    """An OpenAI Agents SDK agent run unstreamed (``Runner.run``) whose model is answered
    by a scripted LLM server of the test's own, its reply held longer than the
    environment lets a call go unanswered and than ``stuck_after``: a plain request's
    answer begins only when it arrives whole, so the wait ended with ``RunStuck`` ("has
    had no answer ... for 1.3 s") while the server was answering. The server says it is
    answering (``ScriptedLLMServer.answering``): the run completes."""
    from tether.integrations.openai_agents import TetherAgent
    from tether.testing.responses_api import ScriptedResponsesServer

    held = _UNANSWERED_AFTER + 1.5
    kind = ScriptedLLMServer if api == "chat" else ScriptedResponsesServer
    async with kind([Reply("slow but sure", delay=held)]) as own:
        app = App()
        TetherAgent(_sdk_agent("helper", own.base_url, api), app=app)
        async with TestEnv(app, llm=[Reply("never")], stuck_after=1.0) as env:
            handle = await env.start("helper", "hi")
            assert await env.result(handle, timeout=60) == "slow but sure"
            assert env.llm.requests == []
        assert [(r.outcome, r.stream) for r in own.requests] == [("reply", False)]
        assert own.answering == 0


async def test_a_dead_endpoint_is_stuck_while_a_scripted_server_answers() -> None:
    """A scripted server answering (another run's model, held) excuses the calls to it
    only: a run whose model's endpoint accepts the request and never answers (not the
    environment's server, nor a scripted one) still ends its wait with ``RunStuck``
    meanwhile, and so does a run whose request a scripted server holds with a
    ``Fault.hang()`` (scripted never to answer), once the other's answer is sent."""
    from tether.integrations.openai_agents import TetherAgent

    silent = _Silent()
    try:
        async with ScriptedLLMServer([Reply("slow", delay=60)]) as busy, \
                ScriptedLLMServer([Fault.hang()]) as hung:
            app = App()
            TetherAgent(_sdk_agent("slow", busy.base_url), app=app)
            TetherAgent(_sdk_agent("dead", silent.url), app=app)
            TetherAgent(_sdk_agent("hung", hung.base_url), app=app)
            async with TestEnv(app, llm=[Reply("never")], stuck_after=1.0) as env:
                slow = await env.start("slow", "hi")
                async with asyncio.timeout(30):
                    while not busy.answering:
                        await asyncio.sleep(0.01)
                dead = await env.start("dead", "hi")
                with pytest.raises(RunStuck, match=(
                        rf"run '{dead.run_id}' \(dead\) cannot reach its model: its LLM "
                        r"call \(step 'openai_agents:model:gpt-4.1-mini'\) has had no "
                        rf"answer from {re.escape(silent.url)} for [\d.]+ s")):
                    await env.result(dead, timeout=30)
                assert busy.answering == 1  # (the slow answer was under way throughout)
                assert silent.accepted
                hanging = await env.start("hung", "hi")
                with pytest.raises(RunStuck, match=(
                        rf"run '{hanging.run_id}' \(hung\) cannot reach its model: .*has "
                        rf"had no answer from {re.escape(hung.base_url)} for [\d.]+ s")):
                    await env.result(hanging, timeout=30)
                assert (hung.hanging, hung.answering) == (1, 0)
                await busy.stop()  # (the slow run's answer is never sent: not waited for)
                await env.app.cancel(slow.run_id)
    finally:
        silent.close()
