"""pydantic-ai agents made durable by Tether (extra ``pydantic-ai``).

Built on pydantic-ai's public engine interface (``pydantic_ai.durable_exec``), as its
Temporal, DBOS and Prefect backends are: ``TetherDurability`` is a durability
capability whose durable unit is a Tether step built at call time (``tether.ext.step``).
Inside a Tether workflow every model request, model stream, tool call, MCP call, tool
discovery and event-handler call of the agent is one journaled operation; after a crash
replay returns the recorded results and the run goes on where it stopped. Outside a
workflow the capability is transparent. An agent run inside a step (pydantic-ai's agent
delegation from a tool that is a step) is plain there too, but its requests are counted
in the run's ledger and a warning says how to make them steps (``durable=False`` on the
tool).

Model requests also go through ``tether.ai.MeteredModel``: the run's budget
(``tether.ai.set_budget`` or ``TetherAgent(budget=)``), the provider's shared circuit
breaker, RPM/TPM limits, and the cost ledger (``llm.calls``, ``tokens.*``, ``cost.usd``,
and ``saved.*`` for what replay answered), so ``tether show`` and ``tether budget`` work
as for ``tether.ai.Agent``. A request in OpenAI's background mode is one call: the
request that queues the job is metered (its queued answer, without usage yet, warns of
none), and each poll of the job (a request continuing the suspended response) counts
the usage it tells beyond the polled response's, but no call and no budget refusal
(``MeteredModel.call(polls=True)``). Streamed in background mode, the create's step ends at
the job's ``response.created`` (journaled before any text), and the job's stream is read
by polls, a cut one resumed after its last event (``_durable_events``): the request is
sent once, through a crash too. A create (streamed or not) whose connection fails after
it was sent, before the job's id came, fails its step at once (``_unanswered_create``):
the Responses API finds a job by its id only, and sent again the request could run and
bill a second job. A streamed request cut after its first event (pydantic-ai
raises ``ModelConnectionError`` for a dropped connection, ``ModelServerError`` for an
error event) becomes a ``RetryableProviderError`` whose ``delivered`` is the characters
of text, thinking and tool calls its events carried: the attempt was billed, and
``MeteredModel`` counts an estimate of it. Each model request of a step carries the
header ``Idempotency-Key: <run id>:<position>`` (``tether.ai.idempotency_headers``, the
same on every attempt and after a crash), as ``tether.ai``'s own requests do, through
pydantic-ai's ``extra_headers`` setting; a key the settings give already is kept, and a
model that ignores ``extra_headers`` (Cohere, Hugging Face) is sent none. It also carries
``max_retries=0`` (unless the settings give one, or the model ignores it), so the SDK
client under the model (OpenAI, Anthropic, ...) sends it once, through a copy of the
client for that request: each attempt of the step is one HTTP request, retried by the
step's policy, and the user's client is left as it is for its other uses. pydantic-ai's
other model operations, a token count, a message compaction and the cancellation of a
suspended response, are steps sent the same way, their errors classified as a
request's (a 401 fails the run at once, a 5xx is retried); the two whose pydantic-ai
call drops or takes no settings (the Responses API's compaction, the cancellation) get
the key and the single try from a copy of the model's client (``_sent_once``). A
compaction (a billed request) is metered as a model request is; a token count and a
cancellation, free, are not (neither the breaker nor the ledger nor the budget counts
them), but a test environment watches their attempts as a request's
(``MeteredModel.watched``). Each request says when its streamed answer began
(``MeteredModel.began``), so a test environment leaves a slow stream to finish.

``TetherAgent(agent, app=app)`` registers the agent as a workflow named after it (a
prompt in, the typed output out), startable by name from the CLI (``tether start NAME
'"prompt"'``), the API and as an MCP task. See ``docs/integrations-pydantic-ai.md``.
"""

from __future__ import annotations

import contextvars
import copy
import inspect
import itertools
import json
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, cast

from pydantic_ai.agent import EventStreamHandler
from pydantic_ai.agent.abstract import AbstractAgent
from pydantic_ai.durable_exec import (
    JSON_CODEC,
    BaseDurabilityCapability,
    DurabilityEngineSpec,
    DurableOperationId,
    JournalCallableOperationBackend,
    ModelCompactMessagesId,
    ModelRequestId,
    ModelRequestParams,
    RoleBasedOperationConfig,
    conversation_id_from_run_id,
)
from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError
from pydantic_ai.messages import (
    AgentStreamEvent,
    BaseToolCallPart,
    ModelMessagesTypeAdapter,
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPartDelta,
)
from pydantic_ai.models import Model, ModelRequestContext
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import (
    AgentDepsT,
    DeferredToolRequests,
    DeferredToolResults,
    RunContext,
    ToolDenied,
)
from typing_extensions import TypeVar

if TYPE_CHECKING:  # (pydantic-ai 2.60, which the extra allows, does not export them)
    from pydantic_ai.durable_exec import (
        ModelCancelSuspendedResponseParams,
        ModelCompactMessagesParams,
    )

import tether
from tether import App, Cancelled, ConfigError, NonRetryable, RetryPolicy, RunHandle, ext
from tether.ai import (
    DEFAULT_LLM_RETRY,
    Budget,
    CircuitBreaker,
    FatalProviderError,
    MeteredModel,
    PriceTable,
    ProviderBillingError,
    ProviderError,
    RetryableProviderError,
    Usage,
    error_for_status,
    error_in_answer,
    idempotency_headers,
    request_approval,
    set_budget,
)

__all__ = ["TetherAgent", "TetherDurability", "TetherStepConfig"]

log = logging.getLogger("tether.integrations.pydantic_ai")

OutputT = TypeVar("OutputT", default=Any)

#: Retries of a tool call, MCP call or discovery step (the tool's own exceptions).
DEFAULT_TOOL_RETRY = RetryPolicy(initial_interval=1.0, backoff=2.0, max_interval=30.0,
                                 max_attempts=3)


@dataclass(frozen=True, slots=True)
class TetherStepConfig:
    """How one kind of durable unit runs: its retry policy."""

    retry: RetryPolicy


@dataclass(frozen=True, slots=True)
class _ModelStepConfig(TetherStepConfig):
    """The config of pydantic-ai's model role: its operations (requests, token counts,
    compactions, cancellations of a suspended response) are provider requests."""


class _ModelOperationId(Protocol):
    """What a model operation's id tells (``ModelRequestId``, and pydantic-ai's ids of a
    token count, a compaction, a cancellation)."""

    @property
    def model_id(self) -> str | None: ...

    @property
    def model_name(self) -> str: ...


class _NotSerializable(NonRetryable):
    """A durable unit's result could not be journaled as JSON (never retried)."""


def _serialization_failure(exc: Exception) -> BaseException:
    return _NotSerializable(f"pydantic-ai value cannot be journaled as JSON: {exc}")


class _Delivery:
    """What one attempt of a model request received of its streamed answer: the
    characters of text, thinking and tool calls (name and arguments) its events carried,
    ``None`` until the first event came. A stream cut after that was accepted by the
    provider and billed (``ProviderError.delivered``, which ``MeteredModel`` counts)."""

    __slots__ = ("chars",)

    def __init__(self) -> None:
        self.chars: int | None = None

    def saw(self, event: AgentStreamEvent) -> None:
        self.chars = (self.chars or 0) + _delivered_chars(event)

    def mark(self, exc: ProviderError) -> ProviderError:
        """``exc`` with what was delivered, when the answer began (else as it is)."""
        if self.chars is not None:
            exc.delivered = self.chars
        return exc


def _delivered_chars(event: AgentStreamEvent) -> int:
    """Characters of answer (text, thinking, a tool call's name and arguments) that one
    event of a model stream carries."""
    if isinstance(event, PartStartEvent):
        part = event.part
        if isinstance(part, (TextPart, ThinkingPart)):
            return len(part.content)
        if isinstance(part, BaseToolCallPart):
            return len(part.tool_name) + _args_chars(part.args)
        return 0
    if isinstance(event, PartDeltaEvent):
        delta = event.delta
        if isinstance(delta, (TextPartDelta, ThinkingPartDelta)):
            return len(delta.content_delta or "")
        if isinstance(delta, ToolCallPartDelta):
            return len(delta.tool_name_delta or "") + _args_chars(delta.args_delta)
    return 0


def _args_chars(args: str | Mapping[str, Any] | None) -> int:
    if isinstance(args, str):
        return len(args)
    if isinstance(args, Mapping) and args:
        try:
            return len(json.dumps(args, separators=(",", ":"), default=str))
        except (TypeError, ValueError):
            return 0
    return 0


#: What the model request attempt executing in this task received of its stream.
_DELIVERY: contextvars.ContextVar[_Delivery | None] = contextvars.ContextVar(
    "tether_pydantic_ai_delivery", default=None)


class _LivePublisher:
    """Publishes one model request's text deltas to the run's observers (``llm.chunk``,
    then ``llm.end`` or ``llm.error``, as ``tether.ai.LLM.stream`` does). Best effort:
    a failing event channel never fails the request."""

    def __init__(self, *, user_events: bool) -> None:
        step = ext.current_step()
        self.run = ext.current_run()
        self.position = step.position if step is not None else -1
        self.attempt = step.attempt if step is not None else 0
        #: Whether the run's own event_stream_handler gets the model's events too (it
        #: does for a streamed request, not for a request streamed only for observers).
        self.user_events = user_events
        #: Whether a chunk was published (a failed stream then cannot be asked again).
        self.sent = False
        self._failed = False

    async def event(self, event: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            await self.run.publish({**event, "position": self.position,
                                    "attempt": self.attempt})
        except Exception as exc:  # observers are best effort
            if not self._failed:
                self._failed = True
                log.warning("cannot publish stream events of run %s: %s", self.run.run_id, exc)

    async def text(self, event: AgentStreamEvent) -> None:
        text = _text_delta(event)
        if text:
            self.sent = True
            await self.event({"type": "llm.chunk", "text": text})


def _teed(user: EventStreamHandler[Any] | None, publisher: _LivePublisher | None,
          delivery: _Delivery | None) -> EventStreamHandler[Any]:
    """An event stream handler that says the answer began (``MeteredModel.began``: the
    stream opened, so a slow one is not taken for an endpoint that says nothing), sees
    each model event first (counts what it delivered, publishes its text), then hands it
    to ``user``; it drains what ``user`` leaves, so every event is counted."""

    async def handler(ctx: RunContext[Any], events: AsyncIterable[AgentStreamEvent]) -> None:
        async def tee() -> AsyncIterator[AgentStreamEvent]:
            async for event in events:
                if delivery is not None:
                    delivery.saw(event)
                if publisher is not None:
                    await publisher.text(event)
                yield event

        # (the stream opened: the endpoint answers, however slowly it goes on)
        MeteredModel.began()
        seen = tee()
        if user is not None:
            await user(ctx, seen)
        async for _ in seen:
            pass

    return handler


def _text_delta(event: AgentStreamEvent) -> str | None:
    if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
        return event.part.content
    if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
        return event.delta.content_delta
    return None


@dataclass(frozen=True, slots=True)
class _StepRequest:
    """What the model step running (a request, a token count, a compaction) adds to its
    request's settings."""

    #: Its ``Idempotency-Key`` header (None for a model that ignores ``extra_headers``).
    key: dict[str, str] | None
    #: Whether to send it once (``max_retries=0``): the step's retry policy retries it,
    #: not the provider SDK's client (False for a model that ignores ``max_retries``).
    once: bool
    #: Whether it is a request streamed in OpenAI's background mode, whose stream is
    #: read through ``_resuming_client`` (a create's ends once the job is queued, a cut
    #: one is resumed after its last event).
    resumable: bool = False


#: The model step running (set in its body, by ``_provider_attempt``): None in any other
#: operation or outside a step.
_STEP_REQUEST: contextvars.ContextVar[_StepRequest | None] = contextvars.ContextVar(
    "tether_pydantic_ai_step_request", default=None)


def _for_step(params: ModelRequestParams) -> ModelRequestParams:
    """``params`` with what the model step running adds to its settings: its
    ``Idempotency-Key`` among the ``extra_headers`` (one already there, in any case, is
    kept) and ``max_retries=0`` (one the settings give is kept), so that the OpenAI,
    Anthropic (and other SDK) clients under pydantic-ai send the request once, through
    a copy of the client for this request (``client.with_options``, sharing its
    connections): each attempt is then one journaled attempt of the step, its error
    classified and its ``Retry-After`` honoured by Tether (and, for a model request or a
    compaction, counted by the breaker). ``params``: a model request's, or a token count's."""
    settings = _step_settings(params.model_settings)
    if settings is None:
        return params
    return replace(params, model_settings=settings)  # type: ignore[arg-type]


def _step_settings(given: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``given`` settings with the step's ``Idempotency-Key`` and ``max_retries=0`` (see
    ``_for_step``), or None outside a model step (then they are sent as given)."""
    step = _STEP_REQUEST.get()
    if step is None:
        return None
    settings: dict[str, Any] = dict(given or {})
    headers = dict(settings.get("extra_headers") or {})
    if step.key and not any(name.lower() == "idempotency-key" for name in headers):
        settings["extra_headers"] = {**headers, **step.key}
    if step.once:
        settings.setdefault("max_retries", 0)
    return settings


def _sent_once(model: Model, *, resuming: bool = False) -> Model:
    """``model`` for an operation of the model step running whose pydantic-ai call takes
    no settings (the cancellation of a suspended response: ``responses.cancel(id)``)
    or drops the headers they give (the Responses API's compaction): a copy of it whose
    SDK client is a copy of the provider's (``client.with_options``, sharing its
    connections) that sends once (``max_retries=0``) with the step's
    ``Idempotency-Key`` as a default header, as ``_for_step`` has a request sent. The
    model and its provider are copied, never changed (other runs use them meanwhile);
    a wrapper (``WrapperModel``) is copied around its model's copy. ``model`` as it is
    outside a model step, and for a model whose client is not an OpenAI SDK client (the
    only ones whose calls need it: Anthropic's compaction sends the settings' headers
    and retries, and no other model cancels a suspended response through its client):
    it then sends as its client does. With ``resuming`` (a request streamed in OpenAI's
    background mode), the copy of the client is also a ``_resuming_client``."""
    step = _STEP_REQUEST.get()
    if step is None or (step.key is None and not step.once and not resuming):
        return model
    if isinstance(model, WrapperModel):
        inner = _sent_once(model.wrapped, resuming=resuming)
        if inner is model.wrapped:
            return model
        wrapper = copy.copy(model)
        wrapper.wrapped = inner
        return wrapper
    provider: Any = getattr(model, "_provider", None)
    client: Any = getattr(provider, "client", None)
    try:
        from openai import AsyncOpenAI
    except ImportError:  # (no OpenAI model then)
        return model
    if provider is None or not isinstance(client, AsyncOpenAI):
        return model  # (the Anthropic models send both from their settings)
    with_options = client.with_options
    options: dict[str, Any] = {"http_client": client._client}
    if step.once:
        options["max_retries"] = 0
    given = getattr(client, "default_headers", None) or {}
    if step.key and not any(str(name).lower() == "idempotency-key" for name in given):
        options["default_headers"] = step.key
    try:
        sent = with_options(**options)
        if resuming:
            sent.__class__ = _resuming_client(type(sent))
        clone = copy.copy(model)
        steps_provider = copy.copy(provider)
        steps_provider.__class__ = _client_given(type(provider))
        steps_provider._tether_step_client = sent
        clone._provider = steps_provider
    except (TypeError, AttributeError, ValueError):  # (a client or provider of its own)
        return model
    return clone if getattr(clone, "client", None) is sent else model


_CLIENT_GIVEN: dict[type, type] = {}


def _client_given(kind: type) -> type:
    """The subclass of provider class ``kind`` whose ``client`` is the one a copy of a
    provider was given for a step (``_sent_once``); the copy is otherwise the provider
    (its class checks, base URL, name)."""
    found = _CLIENT_GIVEN.get(kind)
    if found is None:
        found = type(kind.__name__, (kind,), {
            "__module__": kind.__module__,
            "client": property(lambda self: self._tether_step_client)})
        _CLIENT_GIVEN[kind] = found
    return found


_RESUMING_CLIENT: dict[type, type] = {}


def _resuming_client(kind: type) -> type:
    """The subclass of OpenAI SDK client class ``kind`` whose event streams are those of
    a request streamed in OpenAI's background mode read durably (``_durable_events``).
    Its copies (``with_options``, which pydantic-ai makes to send ``max_retries``) keep
    the class."""
    found = _RESUMING_CLIENT.get(kind)
    base: Any = kind  # (an openai.AsyncOpenAI subclass)
    if found is None:
        async def request(self: Any, cast_to: Any, options: Any, *, stream: bool = False,
                          stream_cls: Any = None) -> Any:
            resumable = _RETRIEVED.fullmatch(str(options.url)) is not None
            try:
                got = await base.request(self, cast_to, options, stream=stream,
                                         stream_cls=stream_cls)
            except Exception as exc:
                if stream and not resumable and _sent_unanswered(exc):
                    raise _CreateUnanswered(exc) from exc
                raise
            iterator = getattr(got, "_iterator", None) if stream else None
            if iterator is not None:  # (an openai.AsyncStream)
                async def resume(after: int) -> AsyncIterator[Any]:
                    again = options.model_copy(update={
                        "params": {**(options.params or {}), "starting_after": after}})
                    return cast(AsyncIterator[Any], await base.request(
                        self, cast_to, again, stream=True, stream_cls=stream_cls))

                got._iterator = _durable_events(iterator, resume if resumable else None)
            return got

        found = type(kind.__name__, (kind,), {"__module__": kind.__module__,
                                              "request": request})
        _RESUMING_CLIENT[kind] = found
    return found


#: The path of a background response's retrieve (``GET /responses/{id}``).
_RETRIEVED = re.compile(r"/?responses/[^/?]+")


async def _durable_events(events: AsyncIterator[Any],
                          resume: Callable[[int], Awaitable[AsyncIterator[Any]]] | None
                          ) -> AsyncIterator[Any]:
    """The events of a stream in OpenAI's background mode, as a step reads them. A
    create's stream ends after its ``response.created``: the job is queued, its id and
    sequence number the step's record, journaled at once, and pydantic-ai streams the
    job (``retrieve(id, stream=True, starting_after=N)``) in a step of its own, a poll,
    so that a crash, or a failed attempt, resumes the job instead of sending the
    request again (a second job billed). A retrieved stream cut after an event
    (``APIConnectionError``) is resumed (``resume``) after the last event's
    ``sequence_number``, in the same attempt: pydantic-ai reads one stream, each event
    once. A retrieved stream cut before any event fails as it did (the step's attempt
    fails; its next attempt streams from the step's start again). A create's stream
    cut before its first event (``response.created``) fails the step at once
    (``_CreateUnanswered``): the job may run at the provider, and its id never came."""
    last: Any = None
    try:
        while True:
            try:
                event = await events.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                from openai import APIConnectionError
                if resume is None and last is None and _sent_unanswered(exc):
                    raise _CreateUnanswered(exc) from exc
                after = getattr(last, "sequence_number", None)
                if resume is None or not isinstance(after, int) \
                        or not isinstance(exc, APIConnectionError):
                    raise
                log.info("a background response's stream was cut (%s): resumed after its "
                         "event %d", exc, after)
                await _closed(events)
                events = await resume(after)
                last = None  # (a resumed stream cut before its first event fails)
                continue
            last = event
            yield event
            if _job_created(event):
                return
    finally:
        await _closed(events)


async def _closed(events: AsyncIterator[Any]) -> None:
    closing = getattr(events, "aclose", None) or getattr(events, "close", None)
    if closing is not None:
        await closing()


def _sent_unanswered(exc: BaseException) -> bool:
    """Whether ``exc`` (the OpenAI SDK's, or the transport's under it) is a connection
    that failed after the request may have reached the provider: reset, dropped, timed
    out reading. Not one that failed to connect (refused, no such host, a connect or
    pool timeout): nothing was sent then."""
    import httpx
    from openai import APIConnectionError

    cause: BaseException | None = exc
    if isinstance(exc, APIConnectionError):
        cause = exc.__cause__
    if isinstance(cause, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                          httpx.UnsupportedProtocol)):
        return False
    return isinstance(exc, (APIConnectionError, httpx.TransportError))


class _CreateUnanswered(Exception):
    """The create of a request streamed in OpenAI's background mode was sent and its
    connection failed before ``response.created``: the job may run at the provider,
    and its id, the only way the Responses API finds a response, never came
    (``_provider_attempt`` fails the step at once with it)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause


def _unanswered_create(provider: str, cause: BaseException, *,
                       streamed: bool) -> FatalProviderError:
    """The step's error for a create in OpenAI's background mode whose connection
    failed (``cause``) after it was sent, before the job's id came: fatal (not sent
    again), saying what may run at the provider and what to do."""
    cut = ("its stream cut before response.created" if streamed
           else "its answer lost before the job's id came")
    return FatalProviderError(
        f"the request in OpenAI's background mode was sent, and {cut} "
        f"({type(cause).__name__}: {cause}): the provider may have "
        "queued the job, which then runs and is billed, and its id never came; the "
        "Responses API finds a response by its id only (it lists none, and honours no "
        "Idempotency-Key that OpenAI documents), so the request is not sent again, "
        "which could run and bill a second job. Look for the job in the provider's "
        "dashboard (its logs; cancel it there if it is not wanted), and start the run "
        "again to send the request anew", provider=provider)


def _job_created(event: Any) -> bool:
    """Whether ``event`` is the ``response.created`` of a background job still to run."""
    response = getattr(event, "response", None)
    return (getattr(event, "type", None) == "response.created"
            and bool(getattr(response, "background", False))
            and getattr(response, "status", None) in ("queued", "in_progress"))


async def _provider_attempt(provider: str, body: Callable[[], Awaitable[object]], *,
                            keyed: bool, once: bool, resumable: bool = False,
                            creates_job: bool = False) -> object:
    """One attempt of a model step (a request, a token count, a compaction): ``body`` with
    the step's ``Idempotency-Key`` (``keyed``) and sent once (``once``; ``_for_step``),
    its provider errors classified (``_provider_error``: a 400 or 401 fails the step at
    once, a 429 or 5xx is retried honouring ``Retry-After``). A request that creates a
    job in OpenAI's background mode (``creates_job``) whose connection failed after it
    was sent, before the job's id came, fails the step at once
    (``_unanswered_create``): sent again, it could run and bill a second job."""
    # A streamed attempt counts the characters its events deliver: cut after it began (a
    # reset, an error event: pydantic-ai raises ModelConnectionError, ModelServerError),
    # it was billed, and the error says so (delivered).
    delivery = _Delivery()
    token = _DELIVERY.set(delivery)
    # The step's key goes with the request (``_for_step``): a provider that honours
    # Idempotency-Key answers a retry after a crash without a second charge. The request
    # is sent once: the step's policy retries it, each try journaled.
    step_token = _STEP_REQUEST.set(_StepRequest(idempotency_headers() if keyed else None, once,
                                                resumable))
    try:
        return await body()
    except _CreateUnanswered as exc:
        raise _unanswered_create(provider, exc.cause, streamed=True) from exc.cause
    except ModelHTTPError as exc:
        raise delivery.mark(_provider_error(provider, exc, exc.status_code)) from exc
    except ModelAPIError as exc:
        cause = exc.__cause__
        if creates_job and delivery.chars is None and cause is not None \
                and _sent_unanswered(cause):
            raise _unanswered_create(provider, cause, streamed=resumable) from exc
        raise delivery.mark(_provider_error(provider, exc, None)) from exc
    finally:
        _STEP_REQUEST.reset(step_token)
        _DELIVERY.reset(token)


#: The publisher of the model request executing in this task, if any.
_LIVE: contextvars.ContextVar[_LivePublisher | None] = contextvars.ContextVar(
    "tether_pydantic_ai_live", default=None)


class _Backend(JournalCallableOperationBackend[TetherStepConfig]):
    """Runs each operation as a Tether step built at call time; model requests metered."""

    def __init__(self, durability: TetherDurability[Any], *, agent_name: str,
                 default_model_id: str | None,
                 config: RoleBasedOperationConfig[TetherStepConfig]) -> None:
        super().__init__(agent_name=agent_name, default_model_id=default_model_id,
                         config=config)
        self._durability = durability

    async def execute(self, *, operation_id: DurableOperationId, name: str,
                      body: Callable[[], Awaitable[object]], cache_key: tuple[object, ...],
                      config: TetherStepConfig) -> object:
        step_name = f"pydantic_ai:{name}"
        if isinstance(operation_id, ModelRequestId):
            return await self._durability._model_step(operation_id, step_name, body,
                                                      cache_key, config)
        if isinstance(operation_id, ModelCompactMessagesId):
            return await self._durability._compaction_step(operation_id, step_name, body,
                                                           cache_key)
        if isinstance(config, _ModelStepConfig):  # (a token count, a cancellation)
            return await self._durability._model_operation_step(
                cast(_ModelOperationId, operation_id), step_name, body, config)
        return await ext.step(step_name, body, retry=config.retry)


#: (agent, step) pairs whose "agent runs inside a step" warning was logged.
_SAID_IN_STEP: set[tuple[str | None, str]] = set()


class TetherDurability(BaseDurabilityCapability[AgentDepsT]):
    """Capability that makes a pydantic-ai agent durable inside Tether workflows.

    Attach it to the agent (``Agent(..., name="x", capabilities=[TetherDurability()])``)
    or let ``TetherAgent`` attach it to each run. Call ``agent.run()`` inside a Tether
    workflow (``TetherAgent`` registers one); outside a workflow it changes nothing.

    Args:
        name: the name in the agent's operation names (default: the agent's ``name``).
            Operation names are journal data: keep them stable across deploys.
        models: more models by id, for ``agent.run(model=...)`` switching.
        event_stream_handler: receives the run's events; model events are delivered
            live inside the model-request step, tool events each in their own step.
        model_retry: retry policy of model requests, token counts, compactions and
            cancellations of a suspended response (default: forever, backoff to 60 s),
            each attempt one HTTP request (the SDK client's own retries off); a 4xx
            other than 408, 409, 429 fails at once.
        tool_retry: retry policy of tool calls, MCP calls and discovery.
        prices: a ``PriceTable`` or ``{model: (usd_in, usd_out)}`` per 1M tokens.
        rpm: requests per minute per provider endpoint, across workers.
        tpm: tokens per minute per provider endpoint, across workers.
        breaker: the provider circuit breaker's settings, or ``None`` for none.
        live: publish the text of each model request to the run's observers as it
            arrives (``llm.chunk`` events of ``App.events``, ``tether serve``'s run page
            and SSE stream). A plain request is then streamed over HTTP, but journaled
            as before (``model.request`` with the final ``ModelResponse``), so runs
            recorded without it replay; a request answered from the journal publishes
            nothing.
    """

    engine_spec: ClassVar[DurabilityEngineSpec] = DurabilityEngineSpec(
        engine_name="Tether",
        durable_unit_noun="step",
        durable_unit_plural="steps",
        durable_container_noun="workflow",
        codec=JSON_CODEC,
        serialization_failure=_serialization_failure,
        wrapped_toolset_kinds=frozenset({"function", "mcp", "dynamic"}),
        toolset_lifecycles={"function": "enter-always", "mcp": "enter-in-durable-unit",
                            "dynamic": "enter-never"},
        journal_discovery=True,
        # A step takes the run's next journal position when it is called; tool calls run
        # one after the other so that order never depends on scheduling.
        sequential_tools_in_durable_context=True,
        unsupported_runtime_toolset_kinds=frozenset({"mcp", "dynamic"}),
        cancellation_error_types=(Cancelled,),
    )

    def __init__(self, *, name: str | None = None, models: Mapping[str, Model] | None = None,
                 event_stream_handler: EventStreamHandler[AgentDepsT] | None = None,
                 model_retry: RetryPolicy = DEFAULT_LLM_RETRY,
                 tool_retry: RetryPolicy = DEFAULT_TOOL_RETRY,
                 prices: PriceTable | Mapping[str, tuple[float, ...]] | None = None,
                 rpm: float | None = None, tpm: float | None = None,
                 breaker: CircuitBreaker | None = CircuitBreaker(), live: bool = True) -> None:
        super().__init__(models=models, event_stream_handler=event_stream_handler, name=name)
        self._live = live
        self._model_retry = model_retry
        self._tool_retry = tool_retry
        self._prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self._rpm, self._tpm, self._breaker = rpm, tpm, breaker
        self._meters: dict[str, MeteredModel] = {}
        self._backend: _Backend | None = None
        if rpm is not None or tpm is not None:
            MeteredModel("check", rpm=rpm, tpm=tpm)  # bad limits fail here, not at a call

    # -- what the base asks of an engine -------------------------------------------------

    @property
    def in_durable_context(self) -> bool:
        return ext.in_workflow()

    def _bind_to_agent(self, agent: AbstractAgent[AgentDepsT, Any]) -> None:
        self._meters = {}
        config = RoleBasedOperationConfig(
            model=_ModelStepConfig(self._model_retry), event=TetherStepConfig(self._tool_retry),
            capability=TetherStepConfig(self._tool_retry),
            tool=TetherStepConfig(self._tool_retry))
        self._backend = _Backend(self, agent_name=self.name,
                                 default_model_id=self.default_model_id, config=config)
        self._register_toolsets(agent)

    async def before_run(self, ctx: RunContext[AgentDepsT]) -> None:
        await super().before_run(ctx)
        step = ext.current_step()
        if step is None or ext.current_run() is None:
            return
        if (self.name, step.name) in _SAID_IN_STEP:
            return  # (once per process and agent and step: a deliberate one is no news)
        _SAID_IN_STEP.add((self.name, step.name))
        # Inside a step of a run (agent delegation from a tool that is a step, pydantic-
        # ai's default, or the user's own step) the agent runs plainly: its requests are
        # neither journaled nor budgeted, and a retry of the step sends them again. Said;
        # the journal is unchanged (the step's recorded result replays as it ran).
        if step.name.startswith("pydantic_ai:") and ".call_tool:" in step.name:
            fix = ("declare the tool that calls it durable=False "
                   "(@agent.tool(durable=False)) to make each of them a step of the run")
        else:
            fix = "run the agent from workflow code to make each of them a step of the run"
        log.warning("agent %r runs inside step %r of run %s: its model requests are "
                    "counted in the run's ledger but neither journaled nor budgeted, and "
                    "are sent again if that step is retried; %s "
                    "(docs/integrations-pydantic-ai.md, Agent delegation)",
                    self.name, step.name, step.run_id, fix)

    async def after_model_request(self, ctx: RunContext[AgentDepsT], *,
                                  request_context: ModelRequestContext,
                                  response: ModelResponse) -> ModelResponse:
        response = await super().after_model_request(
            ctx, request_context=request_context, response=response)
        run = ext.current_run()
        if run is not None and ext.current_step() is not None:
            # A request made inside a step (see before_run): not a step of its own, but
            # paid, so the run's ledger counts it (each time the step's body runs).
            self._count_in_step(run, request_context.model, response)
        return response

    def _count_in_step(self, run: ext.Run, model: Model, response: ModelResponse) -> None:
        asked = model.model_name if isinstance(model, Model) else "unknown"
        answered = response.model_name or asked
        price = self._prices.price(answered)
        if not price.known:
            price = self._prices.price(asked)
        used = Usage.reported(response.usage.input_tokens, response.usage.output_tokens)
        deltas = {"llm.calls": 1.0, "tokens.input": float(used.input_tokens),
                  "tokens.output": float(used.output_tokens), "cost.usd": price.cost(used)}
        if not price.known:
            deltas["llm.unpriced_calls"] = 1.0
        run.add_metrics(deltas)

    def get_durable_operation_backend(self) -> _Backend:
        if self._backend is None:
            raise ConfigError("TetherDurability is not bound to an agent yet")
        return self._backend

    def get_default_run_id(self) -> str | None:
        run = ext.current_run()
        if run is None or not ext.in_workflow():
            return None
        counter = run.memory(("pydantic_ai.runs", self.name), itertools.count)
        n = next(counter)
        # Replay rebuilds the counter from zero, so the n-th agent run gets the same id.
        return f"{run.run_id}:{self.name}:{n}"

    def get_default_conversation_id(self, run_id: str) -> str | None:
        return conversation_id_from_run_id(run_id) if self.in_durable_context else None

    async def get_run_start_time(self, run_id: str) -> datetime | None:
        # Journaled: a recovered run counts its timeout= from when it first started.
        return tether.now() if self.in_durable_context else None

    # -- live text for the run's observers ------------------------------------------------

    async def _model_request_operation(self, params: ModelRequestParams) -> ModelResponse:
        params = _for_step(params)
        if not self._live or ext.current_step() is None \
                or _background(params.run_context.model, params.model_settings):
            # (a request in OpenAI's background mode is asked plainly: queued at once,
            # then polled, each a step of its own; the live text of a streamed one
            # starts after its create step, _durable_events)
            return await super()._model_request_operation(params)
        # Streamed for the observers; the step records the same ModelResponse.
        return await self._published(params, user_events=False)

    async def _model_request_stream_operation(self, params: ModelRequestParams
                                              ) -> ModelResponse:
        params = _for_step(params)
        if not self._live or ext.current_step() is None:
            return await super()._model_request_stream_operation(params)
        return await self._published(params, user_events=True)

    async def _published(self, params: ModelRequestParams, *, user_events: bool
                         ) -> ModelResponse:
        publisher = _LivePublisher(user_events=user_events)
        token = _LIVE.set(publisher)
        cannot_stream = False
        try:
            response = await super()._model_request_stream_operation(params)
        except (NotImplementedError, AssertionError):
            # A model that cannot stream (a FunctionModel without stream_function, a
            # custom Model without request_stream) fails before sending anything: ask
            # it plainly below, as without live text.
            if user_events or publisher.sent:
                raise
            cannot_stream = True
        except Exception as exc:
            await publisher.event({"type": "llm.error", "message": str(exc)})
            raise
        finally:
            _LIVE.reset(token)
        if cannot_stream:
            return await super()._model_request_operation(params)
        if response.state != "suspended":  # (a background job goes on in the next step)
            await publisher.event({"type": "llm.end", "finish_reason": response.finish_reason})
        return response

    async def _count_tokens_operation(self, params: ModelRequestParams) -> Any:
        return await super()._count_tokens_operation(_for_step(params))

    async def _compact_messages_operation(self, params: ModelCompactMessagesParams
                                          ) -> ModelResponse:
        asked = params.request_context
        settings = _step_settings(asked.model_settings)
        if settings is None:
            return await super()._compact_messages_operation(params)
        params = replace(params, request_context=replace(
            asked, model_settings=settings))  # type: ignore[arg-type]
        # (As pydantic-ai's: the Responses API's compact call drops the settings'
        # extra_headers, so the model is sent the step's key by its client.)
        async with self._durable_model_scope(params.model_id, params.run_context) as (model,
                                                                                      _):
            params.request_context.model = model
            return await _sent_once(model).compact_messages(params.request_context,
                                                            instructions=params.instructions)

    async def _cancel_suspended_response_operation(
            self, params: ModelCancelSuspendedResponseParams) -> None:
        if _STEP_REQUEST.get() is None or params.run_context is None:
            await super()._cancel_suspended_response_operation(params)
            return
        # (As pydantic-ai's, whose cancel call takes no settings: the model is sent it
        # once, with the step's key, by its client.)
        async with self._durable_model_scope(params.model_id, params.run_context,
                                             serving=True) as (model, _):
            await _sent_once(model).cancel_suspended_response(params.response)

    @asynccontextmanager
    async def _durable_model_scope(self, model_id: str | None, run_context: RunContext[AgentDepsT],
                                   *, serving: bool = False
                                   ) -> AsyncIterator[tuple[Model, RunContext[AgentDepsT]]]:
        async with super()._durable_model_scope(model_id, run_context,
                                                serving=serving) as (model, ctx):
            step = _STEP_REQUEST.get()
            if serving and step is not None and step.resumable:
                # (a request streamed in OpenAI's background mode: its stream read by a
                # copy of the model's client that ends a create's once the job is queued
                # and resumes a cut one, _durable_events)
                model = _sent_once(model, resuming=True)
            yield model, ctx

    def _model_stream_event_handler(self) -> EventStreamHandler[AgentDepsT] | None:
        user = super()._model_stream_event_handler()
        publisher, delivery = _LIVE.get(), _DELIVERY.get()
        if publisher is None and delivery is None:
            return user
        if publisher is not None and not publisher.user_events:
            user = None  # (streamed for the observers only)
        return _teed(user, publisher, delivery)

    # -- model requests through Tether's accounting --------------------------------------

    def _model_of(self, operation_id: _ModelOperationId) -> Any:
        """The request's model: a ``Model``, or its name."""
        if operation_id.model_id is None:
            return self.agent.model if self.agent is not None else None
        return self._extra_models.get(operation_id.model_id, operation_id.model_id)

    def _model_for(self, operation_id: _ModelOperationId) -> tuple[str, str, str]:
        """(provider, base_url, model name) of the request's model."""
        model = self._model_of(operation_id)
        if isinstance(model, Model):
            return model.system, (model.base_url or "").rstrip("/"), model.model_name
        text = str(model or operation_id.model_name or "unknown")
        provider, _, name = text.partition(":")
        return (provider, "", name) if name else ("unknown", "", text)

    def _meter(self, provider: str, base_url: str) -> MeteredModel:
        key = f"{provider}:{base_url}"
        found = self._meters.get(key)
        if found is None:
            found = MeteredModel(provider, base_url=base_url, prices=self._prices,
                                 retry=self._model_retry, rpm=self._rpm, tpm=self._tpm,
                                 breaker=self._breaker)
            self._meters[key] = found
        return found

    async def _model_step(self, operation_id: ModelRequestId, name: str,
                          body: Callable[[], Awaitable[object]], cache_key: tuple[object, ...],
                          config: TetherStepConfig) -> object:
        messages = cache_key[1] if len(cache_key) > 1 else []
        settings = cache_key[2] if len(cache_key) > 2 and isinstance(cache_key[2], Mapping) \
            else {}
        # A request streamed in OpenAI's background mode is read durably: its step ends
        # once the job is queued (journaled), pydantic-ai reads the job's stream in the
        # next, and a cut stream is resumed after its last event in the same attempt;
        # none is sent again (_durable_events).
        background = _background(self._model_of(operation_id), settings)
        polled = self._polled_job(operation_id, messages)
        return await self._metered_step(operation_id, name, body, messages, settings,
                                        stream=operation_id.streaming, polled=polled,
                                        resumable=operation_id.streaming and background,
                                        creates_job=background and polled is None)

    def _polled_job(self, operation_id: _ModelOperationId,
                    messages: object) -> ModelResponse | None:
        """The suspended response whose server-side job a model request polls (OpenAI's
        background mode: pydantic-ai's continuation of a response ``queued`` or
        ``in_progress``, which retrieves it), else None. A continuation that generates
        anew (Anthropic's ``pause_turn``, which continues at once) is a request of its
        own; a job's poll is not: the model gives it a ``continuation_delay``."""
        if not isinstance(messages, Sequence) or not messages:
            return None
        last = messages[-1]
        if not isinstance(last, ModelResponse) or last.state != "suspended":
            return None
        model = self._model_of(operation_id)
        if isinstance(model, Model):
            try:
                return last if model.continuation_delay(last) is not None else None
            except Exception:  # (a model of its own that cannot tell: as OpenAI's marks it)
                pass
        return last if (last.provider_details or {}).get("background") else None

    async def _compaction_step(self, operation_id: ModelCompactMessagesId, name: str,
                               body: Callable[[], Awaitable[object]],
                               cache_key: tuple[object, ...]) -> object:
        """A message compaction (Anthropic's is a Messages request, billed; OpenAI's
        ``/responses/compact``) as a step metered like a model request: its usage in the
        ledger, counted against the budget and by the endpoint's breaker. Its record was
        pydantic-ai's ``ModelResponse`` until 2026-12-06 (a plain step): a run recorded
        then replays it as it was, counting nothing for it (``_unmetered_response``)."""
        context = cache_key[1] if len(cache_key) > 1 else None
        messages, settings = ((context.messages, context.model_settings or {})
                              if isinstance(context, ModelRequestContext) else ([], {}))
        return await self._metered_step(operation_id, name, body, messages, settings,
                                        unmetered=_unmetered_response)

    async def _metered_step(self, operation_id: _ModelOperationId, name: str,
                            body: Callable[[], Awaitable[object]], messages: object,
                            settings: Mapping[str, Any], *, stream: bool = False,
                            unmetered: Callable[[Any], bool] | None = None,
                            polled: ModelResponse | None = None,
                            resumable: bool = False, creates_job: bool = False) -> object:
        """A provider request answered with a ``ModelResponse`` (a model request, a
        compaction) as one metered step (``MeteredModel.call``): budget, breaker, rate
        limits and ledger, each attempt one HTTP request (``_provider_attempt``).

        A background job (OpenAI's background mode) is one call: the request that
        queues it is metered as any request (its answer, ``queued`` without usage yet,
        warns of none: ``_suspended``); a request that polls it (``polled``: the
        suspended response it retrieves) is no new call and is not refused by the
        budget, and counts the usage its answer tells beyond ``polled``'s (the job's
        usage is cumulative; ``MeteredModel.call(polls=True)``)."""
        provider, base_url, model = self._model_for(operation_id)
        meter = self._meter(provider, base_url)
        try:
            size = len(ModelMessagesTypeAdapter.dump_json(messages))  # type: ignore[arg-type]
        except (TypeError, ValueError):  # PydanticSerializationError is a ValueError
            size = 0
        max_out = settings.get("max_tokens", 0)
        request = partial(_provider_attempt, provider, body, resumable=resumable,
                          creates_job=creates_job, **self._sent_with(operation_id))
        return await meter.call(name, request, model=model,
                                usage=_usage_of if polled is None else _usage_beyond(polled),
                                estimate_tokens=size // 4 + 1,
                                max_output_tokens=max_out if isinstance(max_out, int) else 0,
                                args={"model": f"{provider}:{model}", "stream": stream},
                                unmetered=unmetered, pending=_suspended,
                                polls=polled is not None)

    async def _model_operation_step(self, operation_id: _ModelOperationId, name: str,
                                    body: Callable[[], Awaitable[object]],
                                    config: TetherStepConfig) -> object:
        """A model operation other than a request or a compaction (a token count, the
        cancellation of a suspended response) as a step: each attempt one HTTP request
        with the step's ``Idempotency-Key``, its provider errors classified, as a
        request's (``_provider_attempt``). Not metered: a count and a cancellation are
        free and limited apart from requests (Anthropic), so neither the breaker nor the
        ledger counts them. Each attempt is listed among the model calls in flight
        (``MeteredModel.watched``) as a request's is: in a test environment, one whose
        endpoint reaches nothing or never answers ends the wait on its run
        (``RunStuck``) instead of waiting out its client's timeout. Replay returns the
        journaled result without sending it."""
        provider, base_url, _ = self._model_for(operation_id)
        meter = self._meter(provider, base_url)
        sent = self._sent_with(operation_id)

        async def attempt() -> object:
            with meter.watched():
                return await _provider_attempt(provider, body, **sent)

        return await ext.step(name, attempt, retry=config.retry)

    def _sent_with(self, operation_id: _ModelOperationId) -> dict[str, bool]:
        """How the operation's model is sent a step's requests: ``keyed`` (an
        ``Idempotency-Key`` header), ``once`` (``max_retries=0``). A model that ignores
        ``extra_headers`` or ``max_retries`` would warn at each request: it is given
        neither."""
        unsupported = getattr(self._model_of(operation_id), "unsupported_settings", ())
        return {"keyed": "extra_headers" not in unsupported,
                "once": "max_retries" not in unsupported}


def _asking(agent: str) -> list[Any]:
    """The capability by which a run started by name asks a human about each tool call
    awaiting approval (``requires_approval=True``, ``ApprovalRequired``): pydantic-ai's
    ``HandleDeferredToolCalls`` (none before it had one) with ``_ask_humans``. Without
    it such a call failed the run (``UserError``: no ``DeferredToolRequests`` among the
    output types), or ended it with the requests as its output, which nobody could
    answer."""
    try:
        from pydantic_ai.capabilities import HandleDeferredToolCalls
    except ImportError:  # pragma: no cover (pydantic-ai before the capability)
        return []
    return [HandleDeferredToolCalls(handler=partial(_ask_humans, agent))]


async def _ask_humans(agent: str, ctx: RunContext[Any], requests: DeferredToolRequests
                      ) -> DeferredToolResults | None:
    """Each call of ``requests`` awaiting approval as a Tether approval (``tether
    approvals``, ``tether approve``; the run released while it waits), in workflow code:
    the decisions are journaled signals, so a replay decides alike. A rejected call is
    reported to the model with the human's note. Other deferred calls (external tools)
    are left to pydantic-ai (the run ends with them, as before)."""
    if not requests.approvals or not ext.in_workflow():
        return None
    results = DeferredToolResults()
    tools = ctx.tool_manager
    for call in requests.approvals:
        found = tools.get_tool_def(call.tool_name) if tools is not None else None
        reason = (found.description if found is not None else None) or f"call {call.tool_name}"
        decision = await request_approval(
            call.tool_name, call.args_as_dict(), reason, approval_id=call.tool_call_id,
            call_id=call.tool_call_id, status={"agent": agent})
        results.approvals[call.tool_call_id] = True if decision.approved else ToolDenied(
            "rejected by a human: " + decision.note if decision.note
            else "rejected by a human (no note given)")
    tether.set_status(None)  # (answered: clear the approval status, else shown to the end)
    return results


def _provider_error(provider: str, exc: ModelAPIError, status: int | None) -> ProviderError:
    retry_after = getattr(exc, "retry_after", None)
    body = getattr(exc, "body", None)
    err = body.get("error") if isinstance(body, Mapping) else None
    err = err if isinstance(err, Mapping) else body
    message = _provider_message(exc, err)
    request_id = _request_id(exc)
    if (status is None and isinstance(body, Mapping) and body.get("error")
            and isinstance(body["error"], (str, Mapping))):
        # An HTTP 200 whose body is an error (a gateway's ``{"error": {"code": 400,
        # ...}}``): pydantic-ai calls it an invalid response ("validation errors for
        # ChatCompletion"), retried for ever, a bad request too. It is the error the
        # body names, as for tether.ai.LLM.
        return error_in_answer(provider, body)
    if isinstance(err, Mapping):  # (an account out of credit: fatal, not a rate limit)
        code, kind = err.get("code"), err.get("type")
        code, kind = (str(code) if code else None), (str(kind) if kind else None)
        if status is not None:
            error = error_for_status(provider, status, message, code=code or kind,
                                     error_type=kind, request_id=request_id)
            if isinstance(error, ProviderBillingError):
                return error
    code = _error_code(err)
    if status is None or status in (408, 409, 429) or status >= 500:
        return RetryableProviderError(message, provider=provider, status=status, code=code,
                                      request_id=request_id, retry_after=retry_after)
    return FatalProviderError(message, provider=provider, status=status, code=code,
                              request_id=request_id)


def _provider_message(exc: ModelAPIError, err: Any) -> str:
    """The provider's own words for an error: its error body's ``message`` (with the
    hint pydantic-ai adds, if any), as ``tether.ai.LLM`` and the Agents SDK integration
    say it (``openai: HTTP 429 (rate_limit_exceeded): Rate limit reached ...``); else
    pydantic-ai's message. (pydantic-ai's own reads ``status_code: 429, model_name:
    ..., body: {...}``: ``tether show`` cut it to ``openai: HTTP 429: status_…``.)"""
    said = err.get("message") if isinstance(err, Mapping) else None
    if not isinstance(said, str) or not said.strip():
        return getattr(exc, "message", None) or str(exc)
    hint = getattr(exc, "hint", None)
    return f"{said.strip()} ({hint})" if isinstance(hint, str) and hint else said.strip()


def _error_code(err: Any) -> str | None:
    """An error body's ``code``: ``rate_limit_exceeded``."""
    code = err.get("code") if isinstance(err, Mapping) else None
    return str(code) if code else None


def _request_id(exc: ModelAPIError) -> str | None:
    """The provider's id of the failed request (what its support asks for), from the
    answer's headers (OpenAI's ``x-request-id``, Anthropic's ``request-id``) or the SDK
    error under pydantic-ai's."""
    headers = getattr(exc, "headers", None)
    if isinstance(headers, Mapping):
        for name in ("x-request-id", "request-id"):
            if isinstance(headers.get(name), str) and headers[name]:
                return str(headers[name])
    found = getattr(exc.__cause__, "request_id", None)
    return found if isinstance(found, str) and found else None


def _background(model: object, settings: Mapping[str, Any] | None) -> bool:
    """Whether a request asks for OpenAI's background mode: ``openai_background`` in its
    settings, or else in its model's own (``OpenAIResponsesModel(settings=...)``)."""
    if settings and "openai_background" in settings:
        return bool(settings["openai_background"])
    own = getattr(model, "settings", None)
    return isinstance(own, Mapping) and bool(own.get("openai_background"))


def _unmetered_response(record: Any) -> bool:
    """Whether a compaction's journaled record is pydantic-ai's ``ModelResponse`` itself,
    as a plain step journaled it until 2026-12-06 (a metered record holds it under
    ``result``)."""
    return isinstance(record, Mapping) and "parts" in record and "result" not in record


def _usage_of(result: Any) -> tuple[Usage, str | None]:
    """Tokens and answering model of a journaled ModelResponse (or a streamed result)."""
    response = result
    if isinstance(result, Mapping) and "response" in result and "usage" not in result:
        response = result["response"]
    if not isinstance(response, Mapping):
        return Usage(), None
    usage = response.get("usage") or {}
    model = response.get("model_name")
    used = Usage.reported(usage.get("input_tokens"), usage.get("output_tokens")).cached(
        usage.get("cache_read_tokens"), usage.get("cache_write_tokens"),
        usage.get("cache_write_1h_tokens"))
    return used, (model if isinstance(model, str) and model else None)


def _suspended(result: Any) -> bool:
    """Whether a journaled ModelResponse (or streamed result) is suspended: a job the
    provider queued or still runs (OpenAI's background mode), its usage told when it
    completes, by the poll that completes it."""
    response = result
    if isinstance(result, Mapping) and "response" in result and "usage" not in result:
        response = result["response"]
    return isinstance(response, Mapping) and response.get("state") == "suspended"


def _usage_beyond(polled: ModelResponse) -> Callable[[Any], tuple[Usage, str | None]]:
    """``_usage_of`` less the usage of ``polled``, the suspended response a request polls:
    a background job's answer tells its usage so far, of which the earlier polls
    counted ``polled``'s."""
    told = polled.usage

    def usage_of(result: Any) -> tuple[Usage, str | None]:
        used, model = _usage_of(result)
        return Usage(
            max(0, used.input_tokens - told.input_tokens),
            max(0, used.output_tokens - told.output_tokens)).cached(
                max(0, used.cache_read_tokens - told.cache_read_tokens),
                max(0, used.cache_write_tokens - told.cache_write_tokens),
                max(0, used.cache_write_1h_tokens - told.cache_write_1h_tokens)), model

    return usage_of


class TetherAgent(Generic[AgentDepsT, OutputT]):
    """A pydantic-ai ``Agent`` as a Tether workflow.

    ``TetherAgent(agent, app=app)`` registers a workflow named after the agent (or
    ``name=``) that takes the user prompt and returns the agent's output, typed as
    the agent's ``output_type`` (a pydantic model comes back as that model, also from
    ``RunHandle.result()``). Start it with ``await tagent.start("prompt")``, by name
    (``tether start NAME '"prompt"'``, ``app.start("NAME", "prompt")``), over the HTTP
    API or as an MCP task; there a tool call awaiting approval (``requires_approval``)
    waits for a human's Tether approval (``tether approve``). In your own workflows,
    ``await tagent.run(prompt, ...)`` runs the agent durably with pydantic-ai's full
    ``run`` signature.

    Args:
        agent: the pydantic-ai agent (it needs a ``name``, or pass ``name=``).
        app: register on this app now (else ``app.add_agent(tagent)`` later).
        name: the workflow's and the operations' name (default ``agent.name``).
        queue: the task queue of the workflow.
        retention: the workflow's own retention policy, as ``@app.workflow(retention=)``
            takes it (a duration, a ``tether.Retention``, ``"forever"``; None: the
            app's).
        budget: a budget set at the start of each run (``tether.ai.Budget``).
        deps: a factory of the agent's ``deps`` for runs started by name (called in
            each run; it must build the same deps on replay).
        durability: the ``TetherDurability`` to use (prices, limits, retries, event
            stream handler); default one with default settings, unless the agent has
            one in its capabilities already.

    Raises:
        ConfigError: no name, a name already registered by another agent.
    """

    def __init__(self, agent: AbstractAgent[AgentDepsT, OutputT], *, app: App | None = None,
                 name: str | None = None, queue: str = "default", budget: Budget | None = None,
                 deps: Callable[[], AgentDepsT] | None = None,
                 durability: TetherDurability[AgentDepsT] | None = None,
                 retention: Any = None) -> None:
        wname = name or agent.name
        if not wname:
            raise ConfigError("TetherAgent needs a name: give the pydantic-ai Agent name=... "
                              "or pass TetherAgent(name=...); it names the workflow and the "
                              "journal's operations")
        self.agent = agent
        self.name = wname
        self.queue = queue
        self.retention = retention  # (checked by app.workflow when registered)
        if budget is not None and not isinstance(budget, Budget):
            # (budget=5 was taken as given: every model request then failed with
            # AttributeError and was retried for ever.)
            raise ConfigError(f"TetherAgent {wname!r}: budget= must be a tether.ai.Budget "
                              f"(e.g. Budget(usd=5.0)) or None, got {budget!r}")
        self.budget = budget
        self._deps = deps
        attached = TetherDurability.from_agent(agent)
        if attached is not None and durability is not None:
            raise ConfigError(f"agent {wname!r} has a TetherDurability already; pass "
                              "durability= only to an agent without one")
        self._extra: list[TetherDurability[AgentDepsT]] = []
        if attached is None:
            self._extra = [durability or TetherDurability(name=wname)]
            if durability is not None and not durability.name:
                durability.name = wname
        self.app: App | None = None
        self.workflow: Callable[..., Awaitable[Any]] | None = None
        if app is not None:
            app.add_agent(self)

    def __repr__(self) -> str:
        return f"TetherAgent({self.name!r}, queue={self.queue!r})"

    @property
    def output_type(self) -> Any:
        return self.agent.output_type

    @property
    def description(self) -> str:
        """The agent's ``description`` (pydantic-ai's ``Agent(description=...)``): the
        description of its MCP tool (``app.add_agent(tagent, mcp=True)``)."""
        return str(getattr(self.agent, "description", None) or "")

    def register(self, app: App) -> TetherAgent[AgentDepsT, OutputT]:
        """Register the workflow on ``app`` (``app.add_agent(tagent)`` calls this).

        Raises:
            ConfigError: registered on another app already.
        """
        if self.app is app:
            return self
        if self.app is not None:
            raise ConfigError(f"agent {self.name!r} is already registered on another app")

        async def run_agent(prompt: str) -> Any:
            deps = self._deps() if self._deps is not None else None
            result = await self.run(prompt, deps=deps, capabilities=_asking(self.name))
            return result.output

        output = self.agent.output_type
        run_agent.__name__ = run_agent.__qualname__ = self.name
        run_agent.__annotations__ = {"prompt": str,
                                     "return": output if isinstance(output, type) else Any}
        run_agent.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("prompt", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               annotation=str)],
            return_annotation=run_agent.__annotations__["return"])
        self.workflow = app.workflow(name=self.name, queue=self.queue,
                                     retention=self.retention)(run_agent)
        self.app = app
        return self

    async def run(self, user_prompt: str | Sequence[Any] | None = None,
                  **kwargs: Any) -> AgentRunResult[OutputT]:
        """``agent.run(...)`` made durable: inside a workflow every model request and tool
        call is a journaled operation. Takes pydantic-ai's ``run`` arguments."""
        if self.budget is not None and ext.in_workflow():
            set_budget(self.budget)
        capabilities = [*self._extra, *(kwargs.pop("capabilities", None) or ())]
        result: AgentRunResult[OutputT] = await self.agent.run(
            user_prompt, capabilities=capabilities or None, **kwargs)
        return result

    async def start(self, prompt: str, *, run_id: str | None = None) -> RunHandle[OutputT]:
        """Start a run of the registered workflow (returns at once).

        Raises:
            ConfigError: not registered on an app.
        """
        if self.app is None or self.workflow is None:
            raise ConfigError(f"agent {self.name!r} is not registered: pass app= or call "
                              "app.add_agent(tagent) first")
        handle: RunHandle[OutputT] = await self.app.start(self.workflow, prompt, run_id=run_id)
        return handle

