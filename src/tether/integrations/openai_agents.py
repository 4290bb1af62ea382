"""The OpenAI Agents SDK made durable by Tether (extra ``openai-agents``).

Inside a Tether workflow, an ``agents.Agent`` run through ``TetherAgent`` (or through
``Runner.run`` on an agent prepared by ``durable(agent)`` with ``run_config()``) is
journaled operation by operation:

- each **model request** (Chat Completions or Responses, streamed or not) is one step
  named ``openai_agents:model:<model>`` through ``tether.ai.MeteredModel``: the run's
  budget, the provider's shared circuit breaker, RPM/TPM limits and the cost ledger
  (``tether show``, ``tether budget``), its result the SDK's ``ModelResponse`` as JSON;
  it carries ``Idempotency-Key: <run id>:<position>`` (``ModelSettings.extra_headers``),
  the same on every attempt and after a crash, as ``tether.ai``'s requests do; each
  attempt is one HTTP request (the OpenAI client's own retries are off in the step);
- each **function tool** call is one step ``openai_agents:tool:<name>`` (an agent used
  as a tool stays in workflow code, so its own model requests are steps and metered);
- a tool can be a **child workflow** on its own queue (``workflow_tool``), bounded by
  the run's budget and rolled up into its spend (``tether.ai.call_child``);
- **sessions** (``TetherSession``): reads and writes of the conversation store are
  steps, so replay sees the history as it was and writes nothing twice.

Handoffs, guardrails and ``output_type`` are the SDK's own workflow-side logic over
those recorded results: replay takes the same handoffs, runs the same guardrails over
the same inputs and validates the same final output.

Tracing under replay: the SDK makes a model call's span (``generation`` for Chat
Completions, ``response`` for the Responses API) inside the wrapped model, which runs
only in the step's body; a model call answered from the journal therefore exports no
span again, and an attempt that really reached the provider exports one. The spans the
SDK's runner makes in workflow code (the trace itself, ``agent``, ``function`` for a
tool answered from the journal, ``handoff``, ``guardrail``) are made again by each
execution of the run's code (after a release or a crash): they mark where the run
went, not work done again. See ``docs/integrations-openai-agents.md``.
"""

from __future__ import annotations

import ast
import asyncio
import atexit
import contextlib
import copy
import dataclasses
import functools
import inspect
import json
import os
import re
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Generic, cast

import httpx
import httpx2
import openai
import pydantic
from agents import (
    Agent,
    FunctionTool,
    Handoff,
    Model,
    ModelProvider,
    ModelResponse,
    ModelSettings,
    MultiProvider,
    OpenAIProvider,
    RunConfig,
    Runner,
    RunResult,
    RunState,
    Tool,
    function_tool,
)
from agents.agent_output import AgentOutputSchemaBase
from agents.exceptions import ModelBehaviorError
from agents.items import TResponseInputItem, TResponseStreamEvent
from agents.memory import Session, SessionABC
from agents.models import _openai_shared, get_default_model
from agents.models._retry_runtime import provider_managed_retries_disabled
from agents.models.interface import ModelTracing
from agents.usage import Usage as AgentsUsage
from openai.types.responses import Response, ResponseCompletedEvent
from typing_extensions import TypeVar

import tether
import tether.ai
from tether import App, ConfigError, RetryPolicy, RunHandle, ext
from tether.ai import (
    DEFAULT_LLM_RETRY,
    Budget,
    CircuitBreaker,
    MeteredModel,
    PriceTable,
    ProviderError,
    RetryableProviderError,
    Usage,
    error_for_status,
    error_in_answer,
    idempotency_headers,
    set_budget,
    split_budget,
)
from tether.errors import NonDeterminismError

__all__ = [
    "TetherAgent",
    "TetherModel",
    "TetherModelProvider",
    "TetherSession",
    "durable",
    "durable_tool",
    "run_config",
    "workflow_tool",
]

OutputT = TypeVar("OutputT", default=Any)

#: Retries of a function tool's step (its exceptions that the SDK did not turn into a
#: message for the model).
DEFAULT_TOOL_RETRY = RetryPolicy(initial_interval=1.0, backoff=2.0, max_interval=30.0,
                                 max_attempts=3)

_RESPONSE = pydantic.TypeAdapter(ModelResponse)



@dataclasses.dataclass(slots=True)
class _LastResponse:
    """Per execution of a run (``ext.Run.memory``): the operation whose recorded
    response the run's last model request got from the journal, or ``None`` if it was
    asked of the provider in this execution. (The SDK asks its model in tasks of its
    own, so a context variable would not reach ``TetherAgent.run``.)"""

    replayed: str | None = None


def _last_response() -> _LastResponse | None:
    run = ext.current_run()
    return None if run is None else run.memory(_LastResponse, _LastResponse)

#: How the SDK says a model response calls a tool the agent does not have.
_TOOL_NOT_FOUND = re.compile(r"^Tool (?P<tool>\S+) not found in agent (?P<agent>.+)$")
_USAGE = pydantic.TypeAdapter(AgentsUsage)


def _load_model_response(payload: Mapping[str, Any]) -> ModelResponse:
    """A journaled ``ModelResponse``, rebuilt as leniently as the OpenAI SDK builds what
    the API sent (its output items are constructed, not validated: a field the API
    left out is ``None`` in the record, which strict validation would refuse)."""
    output = Response.model_construct(output=payload.get("output") or []).output
    return ModelResponse(output=output, usage=_USAGE.validate_python(payload.get("usage") or {}),
                         response_id=payload.get("response_id"),
                         request_id=payload.get("request_id"),
                         raw_usage=payload.get("raw_usage"))


@dataclasses.dataclass(frozen=True, slots=True)
class _Metering:
    prices: PriceTable
    retry: RetryPolicy
    rpm: float | None
    tpm: float | None
    breaker: CircuitBreaker | None


class TetherModel(Model):
    """An Agents SDK ``Model`` whose requests are durable, metered operations inside a
    Tether workflow (a plain call of the wrapped model outside one).

    Args:
        model: the SDK model (``OpenAIChatCompletionsModel``, ``OpenAIResponsesModel``,
            any ``Model``), or a model name looked up in ``provider`` at first use.
        provider: where a model name is looked up (default ``agents.OpenAIProvider()``,
            made per event loop as ``TetherModelProvider`` makes it, as is one given
            that is the SDK's default as made).
        name: the model's name in operation names and prices (default: the model's).
        prices: as for ``tether.ai.LLM``.
        retry: as for ``tether.ai.LLM``.
        rpm: as for ``tether.ai.LLM``.
        tpm: as for ``tether.ai.LLM``.
        breaker: as for ``tether.ai.LLM``.
    """

    def __init__(self, model: Model | str, *, provider: ModelProvider | None = None,
                 name: str | None = None,
                 prices: PriceTable | Mapping[str, tuple[float, ...]] | None = None,
                 retry: RetryPolicy = DEFAULT_LLM_RETRY, rpm: float | None = None,
                 tpm: float | None = None,
                 breaker: CircuitBreaker | None = CircuitBreaker()) -> None:
        if isinstance(model, TetherModel):
            raise ConfigError("TetherModel(...) of a TetherModel: wrap the SDK model once")
        if not isinstance(model, (Model, str)):
            raise ConfigError(f"TetherModel needs an agents Model or a model name, got "
                              f"{type(model).__name__}")
        self._model_name = model if isinstance(model, str) else None
        #: The model given, or where its name is looked up (per event loop for the SDK's
        #: default provider).
        self._source: Model | _Scopes = _Scopes(provider) if isinstance(model, str) \
            else model
        self.name = name or self._model_name or str(getattr(model, "model", "")) or \
            type(model).__name__
        self._metering = _Metering(
            prices if isinstance(prices, PriceTable) else PriceTable(prices), retry, rpm, tpm,
            breaker)
        #: By the endpoint of the wrapped model's client.
        self._meters: dict[str, MeteredModel] = {}
        #: Made durable in place inside an agent used as a tool (``durable``): plain in
        #: runs recorded before that (``AGENT_TOOL_PATCH``).
        self._in_agent_tool = False
        if rpm is not None or tpm is not None:
            MeteredModel("check", rpm=rpm, tpm=tpm)  # bad limits fail here

    def __repr__(self) -> str:
        return f"TetherModel({self.name!r})"

    @classmethod
    def _looked_up(cls, model_name: str | None, scopes: _Scopes,
                   options: Mapping[str, Any]) -> TetherModel:
        """A ``TetherModel`` of ``model_name`` (None: the SDK's default model) looked up
        in ``scopes`` at each use, named as ``TetherModelProvider.get_model`` names the
        model it makes in an event loop (the name, else the default model's)."""
        made = cls(model_name or get_default_model(), **options)
        made._model_name = model_name
        made._source = scopes
        return made

    @property
    def wrapped(self) -> Model:
        """The SDK model that makes the requests (for a model name, this event loop's)."""
        if isinstance(self._source, Model):
            return self._source
        provider, models = self._source.current()
        found = models.get(self._model_name)
        if found is None:
            found = models[self._model_name] = provider.get_model(self._model_name)
        return found

    def _metered(self) -> MeteredModel:
        client = getattr(self.wrapped, "_client", None)
        base_url = str(getattr(client, "base_url", "") or "")
        found = self._meters.get(base_url)
        if found is None:
            m = self._metering
            found = self._meters[base_url] = MeteredModel(
                "openai", base_url=base_url, prices=m.prices, retry=m.retry, rpm=m.rpm,
                tpm=m.tpm, breaker=m.breaker)
        return found

    async def close(self) -> None:
        if isinstance(self._source, Model):
            await self._source.close()
            return
        for _, models in self._source.all():
            for model in models.values():
                await model.close()

    async def get_response(self, system_instructions: str | None,
                           input: str | list[TResponseInputItem],
                           model_settings: ModelSettings, tools: list[Tool],
                           output_schema: AgentOutputSchemaBase | None, handoffs: list[Handoff],
                           tracing: ModelTracing, *, previous_response_id: str | None,
                           conversation_id: str | None, prompt: Any) -> ModelResponse:
        def call(settings: ModelSettings = model_settings) -> Awaitable[ModelResponse]:
            return self.wrapped.get_response(
                system_instructions, input, settings, tools, output_schema, handoffs,
                tracing, previous_response_id=previous_response_id,
                conversation_id=conversation_id, prompt=prompt)

        if not ext.in_workflow() or (self._in_agent_tool and not _agent_tools_durable()):
            return await call()
        fresh: list[bool] = []  # (the step's body ran in this execution)

        async def request() -> Any:
            fresh.append(True)
            with _provider_errors(), _sent_once():
                response = await call(_keyed(model_settings))
            return _RESPONSE.dump_python(response, mode="json")

        operation = f"openai_agents:model:{self.name}"
        payload = await self._metered().call(
            operation, request, model=self.name, usage=_usage_of,
            estimate_tokens=_estimate(system_instructions, input),
            max_output_tokens=model_settings.max_tokens or 0,
            args={"model": self.name, "stream": False})
        _note_response(operation, fresh)
        _split_between_children(payload, tools)
        return _load_model_response(payload)

    async def stream_response(
            self, system_instructions: str | None, input: str | list[TResponseInputItem],
            model_settings: ModelSettings, tools: list[Tool],
            output_schema: AgentOutputSchemaBase | None, handoffs: list[Handoff],
            tracing: ModelTracing, *, previous_response_id: str | None,
            conversation_id: str | None, prompt: Any) -> AsyncIterator[TResponseStreamEvent]:
        """Outside a workflow, the wrapped model's stream. Inside one, the stream is read
        in the step (its text deltas published to the run's observers as ``llm.chunk``
        events) and the SDK receives the journaled final response as one
        ``response.completed`` event, live and on replay alike."""

        def stream(settings: ModelSettings = model_settings
                   ) -> AsyncIterator[TResponseStreamEvent]:
            return self.wrapped.stream_response(
                system_instructions, input, settings, tools, output_schema, handoffs,
                tracing, previous_response_id=previous_response_id,
                conversation_id=conversation_id, prompt=prompt)

        if not ext.in_workflow() or (self._in_agent_tool and not _agent_tools_durable()):
            async for event in stream():
                yield event
            return

        fresh: list[bool] = []  # (the step's body ran in this execution)

        async def request() -> Any:
            fresh.append(True)
            run = ext.current_run()
            final: Response | None = None
            #: Characters of answer the stream delivered, once it began (an event came):
            #: a stream cut after that was billed (ProviderError.delivered).
            delivered: int | None = None
            try:
                with _provider_errors(), _sent_once():
                    async for event in stream(_with_usage(_keyed(model_settings))):
                        if delivered is None:  # (answering, however slowly it goes on)
                            MeteredModel.began()
                        delta = getattr(event, "delta", None)
                        delivered = (delivered or 0) + (len(delta) if isinstance(delta, str)
                                                        else 0)
                        if event.type == "response.output_text.delta" and run is not None:
                            await _publish(run, {"type": "llm.chunk", "text": event.delta})
                        elif isinstance(event, ResponseCompletedEvent):
                            final = event.response
                if final is None:
                    raise RetryableProviderError(
                        "the stream ended without a completed response", provider="openai")
            except ProviderError as exc:
                exc.delivered = delivered
                raise
            except (openai.APIError, httpx.HTTPError, ModelBehaviorError) as exc:
                if delivered is None:
                    raise
                # (Cut midway: the SDK lets the transport's error through as it is, and
                # an error event ends the stream with ModelBehaviorError. Begun, so
                # billed: counted, and retried.)
                cut = RetryableProviderError(
                    f"the stream was cut midway ({type(exc).__name__}: {exc})",
                    provider="openai")
                cut.delivered = delivered
                raise cut from exc
            if run is not None:
                await _publish(run, {"type": "llm.end"})
            return final.model_dump(mode="json")

        operation = f"openai_agents:model:{self.name}"
        payload = await self._metered().call(
            operation, request, model=self.name, usage=_usage_of,
            estimate_tokens=_estimate(system_instructions, input),
            max_output_tokens=model_settings.max_tokens or 0,
            args={"model": self.name, "stream": True})
        _note_response(operation, fresh)
        _split_between_children(payload, tools)
        yield ResponseCompletedEvent(type="response.completed", sequence_number=0,
                                     response=Response.model_construct(**payload))


def _keyed(settings: ModelSettings) -> ModelSettings:
    """``settings`` with the step's ``Idempotency-Key`` (run id and position, the same on
    every attempt and after a crash: ``tether.ai.idempotency_headers``) among its
    ``extra_headers``, which the SDK's OpenAI models send with the request; one the
    settings give already is kept."""
    key = idempotency_headers()
    headers = dict(settings.extra_headers or {})
    if not key or any(str(name).lower() == "idempotency-key" for name in headers):
        return settings
    return dataclasses.replace(settings, extra_headers={**headers, **key})


def _sent_once() -> contextlib.AbstractContextManager[None]:
    """Around a step's model request: the SDK's OpenAI models (Chat Completions,
    Responses; LiteLLM's too) send it once, through a copy of their client with
    ``max_retries=0`` that shares its connections (the SDK's own switch, which its
    runner sets for the retries it manages), the client itself left as it is. Each
    attempt of the step is then one HTTP request: its error journaled, classified,
    counted by the breaker, its ``Retry-After`` honoured, and the next try spaced by
    the step's policy. (The OpenAI client's 2 retries of its own ran inside one attempt,
    unseen by all of that, until 2026-12-06.)"""
    return provider_managed_retries_disabled(True)


def _with_usage(settings: ModelSettings) -> ModelSettings:
    """``settings`` asking a streamed Chat Completions request for its usage
    (``include_usage``, ``stream_options.include_usage``) when they do not say: the SDK
    asks for it only from api.openai.com, and a compatible endpoint's stream (Azure,
    OpenRouter, vLLM...) then ended without it, so the ledger counted the request 0
    tokens and $0 and the budget never saw it (until 2026-12-06). ``tether.ai.LLM``
    asks for it on every stream too; ``include_usage=False`` opts out."""
    if settings.include_usage is not None:
        return settings
    return dataclasses.replace(settings, include_usage=True)


#: A provider and the models it made, by model name.
_Scope = tuple[ModelProvider, dict[str | None, Model]]

#: The SDK's providers whose defaults are made again per event loop (``_Scopes``).
_SDK_PROVIDERS: tuple[type[ModelProvider], ...] = (MultiProvider, OpenAIProvider)


def _sdk_default(provider: ModelProvider) -> Callable[..., ModelProvider] | None:
    """The class of ``provider`` when it is the SDK's default provider as made and not
    used since (``MultiProvider()``, ``RunConfig()``'s, ``OpenAIProvider()``): its state
    the same as a new one's, field by field (no client, key, URL, provider map or option
    of yours, no client or model made yet), so a new one does what it would. None for
    any other provider, which is used as it is."""
    kind = type(provider)
    return kind if kind in _SDK_PROVIDERS and _same_state(provider, kind()) else None


def _same_state(mine: object, fresh: object) -> bool:
    """Whether ``mine`` holds what ``fresh``, made new, holds (an SDK provider: each of
    its fields so)."""
    if type(mine) is not type(fresh):
        return False
    if type(mine) in _SDK_PROVIDERS:  # (MultiProvider's OpenAIProvider)
        fields, new = vars(mine), vars(fresh)
        return fields.keys() == new.keys() and all(
            _same_state(value, new[name]) for name, value in fields.items())
    try:
        return bool(mine == fresh)
    except Exception:  # (a field that cannot say: not the default)
        return False


class _Scopes:
    """Where models are looked up by name: ``provider`` as it is, or, when it is the
    SDK's default (none given, or one as made: ``_sdk_default``), a new default provider
    per event loop and per ``OPENAI_BASE_URL``/``OPENAI_API_KEY``, its OpenAI client on
    that loop's HTTP client (``_loop_http``), closed as the loop shuts down. The SDK's
    default provider reads those settings once, at its first request, and its client
    stays bound to that loop and to the SDK's HTTP client for the process: one made for
    a whole process answered a later event loop (each test's, under pytest-asyncio) with
    "Event loop is closed", sent every request to the first ``OPENAI_BASE_URL`` (a
    ``TestEnv``'s server long gone), and left each ended loop's connections open in its
    pool."""

    def __init__(self, provider: ModelProvider | None) -> None:
        self.provider = provider or OpenAIProvider()
        #: Makes a provider of the SDK's defaults again (given its client with
        #: ``openai_client=``); None for a provider of yours.
        self._fresh = OpenAIProvider if provider is None else _sdk_default(provider)
        #: ``provider``'s models (outside a running event loop too).
        self._models: dict[str | None, Model] = {}
        #: With ``_fresh``: per event loop, per (OPENAI_BASE_URL, OPENAI_API_KEY), a
        #: provider and its models.
        self._scoped: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[
            tuple[str | None, str | None], _Scope]] = weakref.WeakKeyDictionary()

    def current(self) -> _Scope:
        """The provider and models of this event loop and OpenAI settings."""
        if self._fresh is None:
            return self.provider, self._models
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self.provider, self._models
        settings = (os.environ.get("OPENAI_BASE_URL"), os.environ.get("OPENAI_API_KEY"))
        scopes = self._scoped.setdefault(loop, {})
        found = scopes.get(settings)
        if found is None:
            client = _client_of_defaults(loop)
            provider = self._fresh() if client is None else self._fresh(openai_client=client)
            found = scopes[settings] = (provider, {})
        return found

    @property
    def per_loop(self) -> bool:
        """Whether models are looked up per event loop (the SDK's default provider)."""
        return self._fresh is not None

    def alike(self) -> _Scopes:
        """Scopes of the same provider, looked up the same way, with models of their
        own (a ``TetherModel`` of a name keeps the SDK's models, a
        ``TetherModelProvider`` its ``TetherModel``s)."""
        twin = copy.copy(self)
        twin._models = {}
        twin._scoped = weakref.WeakKeyDictionary()
        return twin

    def all(self) -> list[_Scope]:
        """Every provider (each once) and its models."""
        found = {id(self.provider): (self.provider, self._models)}
        for scopes in list(self._scoped.values()):
            found.update((id(scope[0]), scope) for scope in scopes.values())
        return list(found.values())


class TetherModelProvider(ModelProvider):
    """A ``ModelProvider`` whose models are ``TetherModel``s (for agents whose model is
    a name, or none): ``RunConfig(model_provider=TetherModelProvider())``.

    Without ``provider``, or with the SDK's default as made (``MultiProvider()``,
    ``OpenAIProvider()``, nothing of yours in it and not used yet), the SDK's default
    provider is made per event loop and per ``OPENAI_BASE_URL``/``OPENAI_API_KEY``; their
    OpenAI clients share one HTTP client per event loop (``_loop_http``), closed as the
    loop shuts down (the end of ``asyncio.run``, of an ``asyncio.Runner``, of a
    pytest-asyncio test's loop), or, for a loop closed by hand without
    ``shutdown_asyncgens()``, at the next use of such a provider on another loop.
    ``aclose()`` is the SDK's: it closes the providers' cached models (websocket
    connections). Any other ``provider`` is used as it is, and is yours to close.

    Args:
        provider: where names are looked up (default ``agents.OpenAIProvider()``).
        options: ``TetherModel`` options (prices, retry, rpm, tpm, breaker).
    """

    def __init__(self, provider: ModelProvider | None = None, **options: Any) -> None:
        self._scopes = _Scopes(provider)
        self.provider = self._scopes.provider
        self.options = options
        #: The models asked for with no event loop running (``get_model``).
        self._unbound: dict[str | None, TetherModel] = {}

    def get_model(self, model_name: str | None) -> Model:
        """The ``TetherModel`` of ``model_name`` (None: the SDK's default model) for the
        running event loop. Asked with no event loop running (at import, in
        synchronous code; the SDK's runner asks in its loop), and the provider is the
        SDK's default: a ``TetherModel`` of the name that finds the model of the loop it
        runs in at each use, as a ``TetherModel`` of a name does (the SDK's provider
        would give a model on its client for the whole process and the
        ``OPENAI_BASE_URL`` of the moment, used by every later loop)."""
        if self._scopes.per_loop and not _loop_running():
            unbound = self._unbound.get(model_name)
            if unbound is None:
                unbound = self._unbound[model_name] = TetherModel._looked_up(
                    model_name, self._scopes.alike(), self.options)
            return unbound
        provider, models = self._scopes.current()
        found = models.get(model_name)
        if found is None:
            inner = provider.get_model(model_name)
            found = TetherModel(inner, name=model_name or getattr(inner, "model", None),
                                **self.options)
            models[model_name] = found
        return found

    async def aclose(self) -> None:
        for provider, _ in self._scopes.all():
            await provider.aclose()
        for model in self._unbound.values():
            await model.close()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _client_of_defaults(loop: asyncio.AbstractEventLoop) -> openai.AsyncOpenAI | None:
    """The OpenAI client the SDK's default provider makes (the key of
    ``set_default_openai_key``, else ``OPENAI_API_KEY``; ``OPENAI_BASE_URL``;
    ``OPENAI_WEBSOCKET_BASE_URL``), on ``loop``'s HTTP client: the SDK's share one HTTP
    client in the process, whose pool kept each loop's connections, open, after the
    loop had ended (a later loop's request closing them there met "Event loop is
    closed"; the garbage collector closed their sockets with a ``ResourceWarning``)
    until 2026-12-06. None when the SDK has a client of yours
    (``set_default_openai_client``: its provider uses that) or no key (its provider
    says so at its first request, as before)."""
    if _openai_shared.get_default_openai_client() is not None:
        return None
    try:
        return openai.AsyncOpenAI(
            api_key=_openai_shared.get_default_openai_key(),
            websocket_base_url=os.environ.get("OPENAI_WEBSOCKET_BASE_URL"),
            http_client=_loop_http(loop))
    except openai.OpenAIError:
        return None


class _LoopHTTP:
    """An event loop's HTTP client for OpenAI clients, closed as the loop shuts down:
    by an async generator of the loop (``_until_closed``), which
    ``loop.shutdown_asyncgens()`` closes, as ``asyncio.run``, ``asyncio.Runner`` and
    pytest-asyncio do before they close the loop. (A loop closed without it drops the
    generator unrun: ``close_now``.)"""

    def __init__(self) -> None:
        self.client: httpx2.AsyncClient = openai.DefaultAsyncHttpx2Client()
        self._closing = self._until_closed()
        _first_step(self._closing)

    async def _until_closed(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            _LOOP_HTTP.pop(asyncio.get_running_loop(), None)
            await self.client.aclose()

    def close_now(self) -> None:
        """Close the client's sockets now, without its loop, closed by hand before it
        could close them: their ``aclose()`` has the loop end each transport, which it
        refuses ("Event loop is closed"), and a socket left open is closed by the
        garbage collector with a ``ResourceWarning``. (No public way leads through
        httpx2's pool to asyncio's transports: a layout not known here is left as it
        is.)"""
        pool = getattr(getattr(self.client, "_transport", None), "_pool", None)
        for connection in getattr(pool, "connections", ()):
            stream = getattr(getattr(getattr(connection, "_connection", None),
                                     "_network_stream", None), "_stream", None)
            stream = getattr(stream, "transport_stream", stream)  # (under TLS)
            transport = getattr(stream, "_transport", None)
            if isinstance(transport, asyncio.Transport):
                try:
                    transport.abort()
                except RuntimeError:  # (the loop closed: what abort() would have it run)
                    getattr(transport, "_call_connection_lost", lambda _: None)(None)


#: Per event loop, the HTTP client of the OpenAI clients made for it.
_LOOP_HTTP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopHTTP] = \
    weakref.WeakKeyDictionary()


def _loop_http(loop: asyncio.AbstractEventLoop) -> httpx2.AsyncClient:
    found = _LOOP_HTTP.get(loop)
    if found is None:
        _close_closed_loops()
        found = _LOOP_HTTP[loop] = _LoopHTTP()
    return found.client


def _close_closed_loops() -> None:
    """Close at once the HTTP clients of event loops closed by hand since (a loop shut
    down closed its own), and let go of them."""
    for ref in _LOOP_HTTP.keyrefs():  # (a copy: loops of other threads come and go)
        loop = ref()
        found = _LOOP_HTTP.pop(loop, None) if loop is not None and loop.is_closed() else None
        if found is not None:
            found.close_now()


atexit.register(_close_closed_loops)


def _first_step(generator: AsyncGenerator[None, None]) -> None:
    """Run ``generator`` to its first ``yield`` now, outside any task (it awaits
    nothing before): the running loop's hook registers it on the way, for
    ``shutdown_asyncgens()`` to close."""
    try:
        generator.asend(None).send(None)
    except StopIteration:
        return
    raise RuntimeError(f"{generator!r} awaited before its first yield")


def durable_tool(tool: FunctionTool, *, retry: RetryPolicy = DEFAULT_TOOL_RETRY,
                 name: str | None = None) -> FunctionTool:
    """A copy of ``tool`` whose calls are steps (``openai_agents:tool:<name>``) inside a
    workflow: the arguments and the result are journaled, replay returns the result.
    The result must be JSON (a pydantic model is journaled as its JSON; anything else
    as its ``str()``). The SDK is given the result as the journal gives it back, live as
    after a replay (``ext.step`` returns the decoded record): a tuple is a list then,
    so the model reads the same text both times. An agent used as a tool is returned as
    it is (its model requests are steps already)."""
    return _durable_tool(tool, retry=retry, name=name)


def _durable_tool(tool: FunctionTool, *, retry: RetryPolicy = DEFAULT_TOOL_RETRY,
                  name: str | None = None, operation: str | None = None,
                  gates: tuple[Callable[[], bool], ...] = ()) -> FunctionTool:
    """``durable_tool``; ``gates``: journal markers asked in order at each call, each of
    which must hold for the call to be a step (else a plain call, as in a run recorded
    before the behaviour they mark: ``_gates``)."""
    if getattr(tool, "_is_agent_tool", False) or getattr(tool, "__tether_durable__", False):
        return tool
    invoke = tool.on_invoke_tool
    operation = operation or f"openai_agents:tool:{name or tool.name}"

    async def on_invoke_tool(ctx: Any, arguments: str) -> Any:
        if not ext.in_workflow() or not all(gate() for gate in gates):
            return await invoke(ctx, arguments)

        async def body(args: str) -> Any:
            return _jsonable(await invoke(ctx, args))

        return await ext.step(operation, body, arguments, retry=retry)

    copy = dataclasses.replace(tool, on_invoke_tool=on_invoke_tool)
    copy.__tether_durable__ = True  # type: ignore[attr-defined]
    return copy


def workflow_tool(workflow: Callable[..., Awaitable[Any]], *, name: str | None = None,
                  description: str | None = None) -> FunctionTool:
    """A Tether workflow as an agent's tool: each call is a child run on the workflow's
    own queue (served by its own workers), awaited durably (the parent is released
    while it waits if the child takes long). The tool's schema is the workflow's
    signature; its description the docstring (or ``description``). The run's budget
    bounds the child (``tether.ai.call_child``): a share of what is left with its
    input, split evenly between the workflow tool calls of one model response, and
    its spend rolled up into the run's once it ended.

    Raises:
        ConfigError: ``workflow`` is not a registered workflow.
    """
    if getattr(workflow, "__tether_workflow__", None) is None:
        raise ConfigError(f"{getattr(workflow, '__name__', workflow)!r} is not a workflow: "
                          "decorate it with @app.workflow")

    tool_name: list[str] = []

    @functools.wraps(workflow)
    async def call_child(*args: Any, **kwargs: Any) -> Any:
        if not _children_bounded():  # (a run recorded before: as it was)
            return _jsonable(await tether.call(workflow, *args, **kwargs))
        return _jsonable(await tether.ai.call_child(workflow, args, kwargs,
                                                    tool=tool_name[0], owner="openai_agents"))

    tool = function_tool(call_child, name_override=name, description_override=description)
    tool_name.append(tool.name)
    tool.__tether_durable__ = True  # type: ignore[attr-defined]
    tool.__tether_child__ = True  # type: ignore[attr-defined]
    return tool


#: The journal's marker of a run whose workflow tools' children are bounded by its
#: budget and rolled up (``tether.ai.call_child``), once per run, at its first
#: workflow tool call: a run whose journal predates it calls them as it did.
CHILD_BUDGET_PATCH = "openai_agents.child-budget"


#: The journal's marker of a run whose agents used as tools (``as_tool``) make durable
#: requests and tool calls (``durable``), once per run, at the first of them: in a
#: run whose journal predates it they are plain calls, as they were (their steps would
#: take positions the journal gave to the run's later operations).
AGENT_TOOL_PATCH = "openai_agents.agent-tool-durable"


@dataclasses.dataclass(slots=True)
class _Markers:
    """Per execution of a run: the answer of each of this integration's journal
    markers asked so far (``tether.patched``, asked at the first operation it gates)."""

    seen: dict[str, bool] = dataclasses.field(default_factory=dict)


def _marked(patch: str) -> bool:
    """Whether the run's journal has (or now takes) the marker ``patch``: the behaviour
    it gates is the run's; False in a run recorded before it. True outside a workflow."""
    run = ext.current_run()
    if run is None or not ext.in_workflow():
        return True
    seen = run.memory(_Markers, _Markers).seen
    if patch not in seen:
        seen[patch] = tether.patched(patch)
    return seen[patch]


def _agent_tools_durable() -> bool:
    return _marked(AGENT_TOOL_PATCH)


#: The journal's marker of a run whose agents' MCP tool calls (``Agent(mcp_servers=)``)
#: are steps, once per run, at the first of them: in a run whose journal predates it
#: they are plain calls, as they were.
MCP_TOOL_PATCH = "openai_agents.mcp-tool-durable"


def _mcp_tools_durable() -> bool:
    return _marked(MCP_TOOL_PATCH)


def _durable_mcp(agent: Agent[Any], in_agent_tool: bool) -> None:
    """Make the MCP tools ``agent`` lists at each run (``Agent.get_mcp_tools``, called
    by the runner for every turn) durable: each call a step
    ``openai_agents:mcp:<server>:<tool>``, whose result replay returns without calling
    the server again. The tool list itself is asked of the servers again at each replay
    (a recorded response calling a tool the server no longer lists fails as a changed
    tool does)."""
    if not agent.mcp_servers or getattr(agent, "__tether_mcp__", False):
        return
    fetch = agent.get_mcp_tools

    async def get_mcp_tools(run_context: Any) -> list[Tool]:
        tools = await fetch(run_context)
        return [_durable_tool(t, gates=(*_gates(in_agent_tool), _mcp_gate),
                              operation=f"openai_agents:mcp:{_mcp_server_of(t)}:{t.name}")
                if isinstance(t, FunctionTool) else t for t in tools]

    agent.get_mcp_tools = get_mcp_tools  # type: ignore[method-assign]
    agent.__tether_mcp__ = True


def _mcp_gate() -> bool:
    return _mcp_tools_durable()  # (looked up at each call)


def _agent_tool_gate() -> bool:
    return _agent_tools_durable()  # (looked up at each call)


def _gates(in_agent_tool: bool) -> tuple[Callable[[], bool], ...]:
    """The markers a tool's calls are steps under: a tool of an agent used as a tool is
    a plain call in runs recorded before such tools were durable (``AGENT_TOOL_PATCH``)."""
    return (_agent_tool_gate,) if in_agent_tool else ()


def _mcp_server_of(tool: FunctionTool) -> str:
    origin = getattr(tool, "_tool_origin", None)
    return str(getattr(origin, "mcp_server_name", None) or "mcp")


def _children_bounded() -> bool:
    return _marked(CHILD_BUDGET_PATCH)


def _split_between_children(payload: Mapping[str, Any], tools: list[Tool]) -> None:
    """The model's response calls workflow tools at once (the SDK runs a response's
    tool calls together): their children split what is left of the run's budget
    evenly (``tether.ai.split_budget``), from the journaled response, so every
    execution splits the same."""
    children = {t.name for t in tools if getattr(t, "__tether_child__", False)}
    if not children:
        return
    output = payload.get("output")
    calls = sum(1 for item in output if isinstance(item, Mapping)
                and item.get("type") == "function_call" and item.get("name") in children
                ) if isinstance(output, list) else 0
    split_budget(calls)


def durable(agent: Agent[Any], **model_options: Any) -> Agent[Any]:
    """A copy of ``agent`` (and of the agents it hands off to, cycles included) whose
    function tools are ``durable_tool``s and whose model, if it is a ``Model`` object,
    is a ``TetherModel``. Agents whose model is a name get their ``TetherModel`` from
    ``run_config()``'s provider. ``model_options`` go to the ``TetherModel``s.

    An agent used as a tool (``helper.as_tool(...)``) is made durable where it is, not
    copied: the SDK's tool holds that agent object and runs it. Its model becomes a
    ``TetherModel`` and its function tools ``durable_tool``s, which are plain calls
    outside a workflow; so its requests are journaled, metered steps of the run and
    replay does not send them again."""
    return _Durable(model_options).agent(agent)


class _Durable:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        #: Durable copies by id of the agent, and whether reached through an agent tool.
        self.done: dict[tuple[int, bool], Agent[Any]] = {}
        self.in_place: set[int] = set()

    def agent(self, agent: Agent[Any], in_agent_tool: bool = False) -> Agent[Any]:
        found = self.done.get((id(agent), in_agent_tool))
        if found is not None:
            return found
        copy = agent.clone(model=self.model(agent.model, in_agent_tool))
        self.done[(id(agent), in_agent_tool)] = copy
        copy.tools = [self.tool(t, in_agent_tool) for t in agent.tools]
        copy.handoffs = [self.agent(h, in_agent_tool) if isinstance(h, Agent) else h
                         for h in agent.handoffs]
        _durable_mcp(copy, in_agent_tool)
        return copy

    def model(self, model: Any, in_agent_tool: bool) -> Any:
        if isinstance(model, Model) and not isinstance(model, TetherModel):
            model = TetherModel(model, **self.options)
            model._in_agent_tool = in_agent_tool
        return model

    def tool(self, tool: Any, in_agent_tool: bool) -> Any:
        if not isinstance(tool, FunctionTool):
            return tool
        inner = getattr(tool, "_agent_instance", None)
        if getattr(tool, "_is_agent_tool", False) and isinstance(inner, Agent):
            # ``agent.as_tool()``: the SDK's tool runs the agent object it was made from
            # (its closure holds it, so a copy could not take its place). That agent is
            # made durable where it is: its model a ``TetherModel``, its function tools
            # durable, its handoffs durable copies. Both are plain calls outside a
            # workflow, so it behaves as before there. (Left as it was, its requests
            # and tool calls were neither journaled nor metered: sent again at every
            # replay, outside the ledger and the budget.)
            self.agent_in_place(inner)
            return tool
        return _durable_tool(tool, gates=_gates(in_agent_tool))

    def agent_in_place(self, agent: Agent[Any]) -> None:
        if id(agent) in self.in_place:
            return
        self.in_place.add(id(agent))
        agent.model = self.model(agent.model, True)
        agent.tools = [self.tool(t, True) for t in agent.tools]
        agent.handoffs = [self.agent(h, True) if isinstance(h, Agent) else h
                          for h in agent.handoffs]
        _durable_mcp(agent, True)


def run_config(config: RunConfig | None = None, **model_options: Any) -> RunConfig:
    """``config`` (or a new ``RunConfig``) with a ``TetherModelProvider`` around its model
    provider, so agents whose model is a name get durable models. Its provider when it
    is the SDK's default (``RunConfig``'s own ``MultiProvider()``) is made per event
    loop, as ``TetherModelProvider`` says."""
    config = config or RunConfig()
    if isinstance(config.model_provider, TetherModelProvider):
        return config
    return dataclasses.replace(config, model_provider=TetherModelProvider(
        config.model_provider, **model_options))


class TetherSession(SessionABC):
    """A session whose reads and writes are steps inside a workflow: replay reads the
    history as it was and writes nothing twice. Outside a workflow it is ``session``.

    Args:
        session: the SDK session (``SQLiteSession``, ``RedisSession``, ...).
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.session_id = session.session_id
        self.session_settings = getattr(session, "session_settings", None)

    def _op(self, what: str) -> str:
        return f"openai_agents:session.{what}"

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        async def body(n: int | None) -> Any:
            return _jsonable(await self.session.get_items(n))

        if not ext.in_workflow():
            return await self.session.get_items(limit)
        return cast(list[TResponseInputItem],
                    await ext.step(self._op("get_items"), body, limit))

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        if not ext.in_workflow():
            await self.session.add_items(items)
            return
        plain = _jsonable(items)

        async def body(count: int) -> None:
            await self.session.add_items(items)

        # The items are not journaled twice: the count identifies the write.
        await ext.step(self._op("add_items"), body, len(plain))

    async def pop_item(self) -> TResponseInputItem | None:
        async def body() -> Any:
            return _jsonable(await self.session.pop_item())

        if not ext.in_workflow():
            return await self.session.pop_item()
        return cast("TResponseInputItem | None", await ext.step(self._op("pop_item"), body))

    async def clear_session(self) -> None:
        if not ext.in_workflow():
            await self.session.clear_session()
            return
        await ext.step(self._op("clear_session"), self.session.clear_session)


def _turns(name: str, max_turns: object) -> int:
    """``max_turns`` checked as ``tether.ai.Agent`` checks it: an int of 1 or more (0 or
    a negative was taken, and every run failed with the SDK's "Max turns (0) exceeded";
    ``run(max_turns=0)`` fell back to the agent's own value without a word).

    Raises: ConfigError."""
    if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
        raise ConfigError(f"TetherAgent {name!r}: max_turns must be an int >= 1, got "
                          f"{max_turns!r}")
    return max_turns


class TetherAgent(Generic[OutputT]):
    """An Agents SDK ``Agent`` as a Tether workflow.

    ``TetherAgent(agent, app=app)`` registers a workflow named after the agent (or
    ``name=``) that takes the input text and returns the run's ``final_output``, typed
    as the agent's ``output_type`` (a pydantic model comes back as that model). Start
    it with ``await tagent.start("...")``, by name (``tether start NAME '"..."'``), over
    the HTTP API or as an MCP task; there a tool call awaiting approval
    (``needs_approval``) waits for a human's Tether approval (``tether approve``). In
    your own workflows, ``await tagent.run(input, ...)`` runs it durably with
    ``Runner.run``'s arguments.

    Args:
        agent: the starting agent (its handoffs and tools are made durable too).
        app: register on this app now (else ``app.add_agent(tagent)`` later).
        name: the workflow's name (default ``agent.name``).
        queue: the workflow's task queue.
        retention: the workflow's own retention policy, as ``@app.workflow(retention=)``
            takes it (a duration, a ``tether.Retention``, ``"forever"``; None: the
            app's).
        budget: a budget set at the start of each run.
        session: a factory ``(run_id) -> Session`` for runs started by name (wrapped in
            ``TetherSession``).
        max_turns: the SDK's turn limit.
        config: a base ``RunConfig``.
        model_options: ``TetherModel`` options (prices, retry, rpm, tpm, breaker).

    Raises:
        ConfigError: an empty name.
    """

    def __init__(self, agent: Agent[Any], *, app: App | None = None, name: str | None = None,
                 queue: str = "default", budget: Budget | None = None,
                 session: Callable[[str], Session] | None = None, max_turns: int = 10,
                 config: RunConfig | None = None, retention: Any = None,
                 **model_options: Any) -> None:
        wname = name or agent.name
        if not wname:
            raise ConfigError("TetherAgent needs a name: give the Agent a name or pass name=")
        self.agent = agent
        self.durable_agent = durable(agent, **model_options)
        self.name = wname
        self.queue = queue
        self.retention = retention  # (checked by app.workflow when registered)
        if budget is not None and not isinstance(budget, Budget):
            # (budget=5 was taken as given: every model request then failed with
            # AttributeError and was retried for ever.)
            raise ConfigError(f"TetherAgent {wname!r}: budget= must be a tether.ai.Budget "
                              f"(e.g. Budget(usd=5.0)) or None, got {budget!r}")
        self.budget = budget
        self.max_turns = _turns(wname, max_turns)
        self._session = session
        self.config = run_config(config, **model_options)
        self.app: App | None = None
        self.workflow: Callable[..., Awaitable[Any]] | None = None
        if app is not None:
            app.add_agent(self)

    def __repr__(self) -> str:
        return f"TetherAgent({self.name!r}, queue={self.queue!r})"

    @property
    def description(self) -> str:
        """The agent's ``handoff_description`` (what it does, for a model choosing it):
        the description of its MCP tool (``app.add_agent(tagent, mcp=True)``)."""
        return str(self.agent.handoff_description or "")

    def register(self, app: App) -> TetherAgent[OutputT]:
        """Register the workflow on ``app`` (``app.add_agent(tagent)`` calls this).

        Raises:
            ConfigError: registered on another app already.
        """
        if self.app is app:
            return self
        if self.app is not None:
            raise ConfigError(f"agent {self.name!r} is already registered on another app")

        async def run_agent(input: str) -> Any:
            if not isinstance(input, (str, list)):
                # (it failed deep in the SDK: "'int' object has no attribute 'copy'")
                raise ConfigError(f"agent {self.name!r} takes its input as a string (or a "
                                  f"list of input items), got {input!r}")
            session = None
            if self._session is not None:
                session = self._session(tether.run_id())
            result = await self._approved(await self.run(input, session=session), session)
            return _jsonable(result.final_output) if not isinstance(
                result.final_output, pydantic.BaseModel) else result.final_output

        output = self.agent.output_type
        ret = output if isinstance(output, type) else Any
        run_agent.__name__ = run_agent.__qualname__ = self.name
        run_agent.__annotations__ = {"input": str, "return": ret}
        run_agent.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("input", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               annotation=str)], return_annotation=ret)
        self.workflow = app.workflow(name=self.name, queue=self.queue,
                                     retention=self.retention)(run_agent)
        self.app = app
        return self

    async def run(self, input: str | list[TResponseInputItem] | RunState[Any], *,
                  session: Session | None = None, context: Any = None,
                  max_turns: int | None = None, **kwargs: Any) -> RunResult:
        """``Runner.run`` on the durable copy of the agent: inside a workflow each model
        request, tool call and session access is a journaled operation. ``input`` may be
        the SDK's ``RunState`` of an earlier result (``result.to_state()``, its tool
        calls approved or rejected), to resume that run."""
        if self.budget is not None and ext.in_workflow():
            set_budget(self.budget)
        if session is not None and not isinstance(session, TetherSession):
            session = TetherSession(session)
        config = kwargs.pop("run_config", None)
        try:
            return await Runner.run(self.durable_agent, input, session=session,
                                    context=context,
                                    max_turns=(self.max_turns if max_turns is None
                                               else _turns(self.name, max_turns)),
                                    run_config=run_config(config) if config else self.config,
                                    **kwargs)
        except ModelBehaviorError as exc:
            raise _code_changed(exc) from exc

    async def start(self, input: str, *, run_id: str | None = None) -> RunHandle[OutputT]:
        """Start a run of the registered workflow (returns at once).

        Raises:
            ConfigError: not registered on an app.
        """
        if self.app is None or self.workflow is None:
            raise ConfigError(f"agent {self.name!r} is not registered: pass app= or call "
                              "app.add_agent(tagent) first")
        handle: RunHandle[OutputT] = await self.app.start(self.workflow, input, run_id=run_id)
        return handle

    async def _approved(self, result: RunResult, session: Session | None) -> RunResult:
        """``result`` once every tool call awaiting approval (``needs_approval``) was
        decided by a human: each is a Tether approval (``tether approvals``,
        ``tether approve``; the run released meanwhile), the SDK's run state approved or
        rejected accordingly, and the run resumed from it. A run started by name ended
        ``completed`` with ``null`` here, the tool never called nor anyone asked."""
        asked = 0  # (ids for calls without one: the same on every replay)
        while result.interruptions:
            state = result.to_state()
            for item in result.interruptions:
                tool, asked = item.name or "tool", asked + 1
                decision = await tether.ai.request_approval(
                    tool, _call_arguments(item.arguments), _approval_reason(item, tool),
                    approval_id=str(item.call_id or f"{tool}.{asked}"),
                    call_id=str(item.call_id or ""), status={"agent": self.name})
                if decision.approved:
                    state.approve(item)
                else:
                    state.reject(item, rejection_message=(
                        "rejected by a human: " + decision.note if decision.note
                        else "rejected by a human (no note given)"))
            # (answered: clear the approval status, else shown until the run ends)
            tether.set_status(None)
            result = await self.run(state, session=session)
        return result


# -- helpers ------------------------------------------------------------------------------


def _call_arguments(raw: str | None) -> dict[str, Any]:
    """A tool call's arguments (the model's JSON text) as the approval shows them."""
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {"arguments": raw}
    return value if isinstance(value, dict) else {"arguments": value}


def _approval_reason(item: Any, tool: str) -> str:
    """What the human is asked: the tool's description, as ``tether.ai.Agent`` asks."""
    for candidate in getattr(item.agent, "tools", None) or ():
        if getattr(candidate, "name", None) == tool and getattr(candidate, "description", ""):
            return str(candidate.description)
    return f"call {tool}"


def _note_response(operation: str, fresh: list[bool]) -> None:
    last = _last_response()
    if last is not None:
        last.replayed = None if fresh else operation


def _code_changed(exc: ModelBehaviorError) -> Exception:
    """``exc``, or a ``NonDeterminismError`` when it says a model response calls a tool
    the agent does not have and that response came from the journal: the model did not
    err (the run went on past it when it was recorded), the code changed since (a tool or
    handoff renamed or removed). The run then stops as ``blocked``, as for a renamed
    model or a pydantic-ai tool, instead of failing (its parent and MCP task with it):
    an operator puts the tool back and resumes it. A live response calling an unknown
    tool is the model's error, and stays the SDK's ``ModelBehaviorError``."""
    found = _TOOL_NOT_FOUND.match(str(exc))
    last, run = _last_response(), ext.current_run()
    operation = last.replayed if last is not None else None
    if found is None or operation is None or run is None:
        return exc
    return NonDeterminismError(
        run.run_id, -1, ("step", operation), None,
        detail=(f"the recorded response of step {operation!r} calls the tool "
                f"{found['tool']!r}, which agent {found['agent']!r} no longer has (a tool "
                "or handoff renamed or removed since the run started): put it back (or "
                "keep its old name with name_override=), then resume the run"))


class _provider_errors:
    """Maps the OpenAI SDK's errors to tether.ai's provider errors (which the breaker
    counts and the retry policy understands)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        if isinstance(exc, openai.APIStatusError):
            raise error_for_status("openai", exc.status_code, exc.message,
                                   headers=exc.response.headers,
                                   request_id=exc.request_id,
                                   code=getattr(exc, "code", None),
                                   error_type=getattr(exc, "type", None)) from exc
        if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError)):
            raise RetryableProviderError(str(exc), provider="openai") from exc
        if isinstance(exc, ModelBehaviorError):
            error = _error_payload(exc)
            if error is not None:
                raise error_in_answer("openai", {"error": error}) from exc
        if isinstance(exc, openai.APIError) and isinstance(exc.body, Mapping) and str(
                exc.body.get("code")).isdigit():
            # (An error event in a 200 stream whose code is the HTTP status a gateway
            # meant, ``{"error": {"code": 400, ...}}``: that status's error; it was
            # retried for as long as the policy allowed, a bad request too.)
            raise error_in_answer("openai", {"error": exc.body}) from exc


#: The SDK's error for a 200 answer without choices, which names the body's ``error``.
_ERROR_PAYLOAD = re.compile(
    r"ChatCompletion response has no choices \(possible provider error payload\): (\{.*\})$",
    re.DOTALL)


def _error_payload(exc: ModelBehaviorError) -> dict[str, Any] | None:
    """The provider's error an HTTP 200 answer carried (a gateway's ``{"error": {"code":
    400, ...}}``), as the SDK's ``ModelBehaviorError`` quotes it (a Python literal);
    ``None`` for any other. That error was retried as a misbehaving model for as long as
    the retry policy allowed, a bad request too (until 2026-12-06): it is the error the
    body names, as for ``tether.ai.LLM`` (``tether.ai.error_in_answer``)."""
    found = _ERROR_PAYLOAD.match(str(exc))
    if found is None:
        return None
    try:
        error = ast.literal_eval(found[1])
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return error if isinstance(error, dict) else None


async def _publish(run: ext.Run, event: dict[str, Any]) -> None:
    step = ext.current_step()
    if step is not None:
        event = {**event, "position": step.position, "attempt": step.attempt}
    try:
        await run.publish(event)
    except Exception:  # observers are best effort
        pass


def _usage_of(result: Any) -> tuple[Usage, str | None]:
    if not isinstance(result, Mapping):
        return Usage(), None
    usage = result.get("usage") or {}
    details = usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else 0
    model = result.get("model")
    return (Usage.reported(usage.get("input_tokens"), usage.get("output_tokens")).cached(cached),
            model if isinstance(model, str) and model else None)


def _estimate(system: str | None, input: str | list[TResponseInputItem]) -> int:
    try:
        size = len(system or "") + len(json.dumps(input, default=str))
    except (TypeError, ValueError):
        size = len(system or "")
    return size // 4 + 1


def _jsonable(value: Any) -> Any:
    """``value`` as the journal can hold it: JSON as it is, a pydantic model as its JSON,
    a list item by item, a dataclass as its fields, anything else as its ``str()``.
    (NaN and infinity are no JSON: the journal refuses them, though ``json.dumps``
    writes them by default.)"""
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        if isinstance(value, list):
            return [_jsonable(v) for v in value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return _jsonable(dataclasses.asdict(value))
        return str(value)
    return value

