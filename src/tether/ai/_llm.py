"""``LLM``: a model client whose calls are durable operations inside a workflow.

Inside a workflow, ``await llm.chat(messages)`` is one operation named
``llm:<provider>:<model>`` (``llm:openai:gpt-4.1-mini``). It runs once; its reply, token
usage and cost are journaled; replay returns the recorded reply without a request.
Outside a workflow (or inside a step) it is a plain provider call.

An ``LLM`` is not bound to an ``App``: each call is a step built at call time
(``tether.ext.step``), executed by the running run. Replay
matches an operation by its kind and name only, so nothing needs to be registered,
and the same ``LLM`` object serves every app and every worker in the process.

What the step body does on a fresh call, in order (each part in its own module):

1. stage the prompt's new messages as blobs (``_messages``), stored in the transaction
   of the step's entry, whatever it records (``ext.Run.store_with_entry``); the entry's
   arguments are the references (conversation head, tools and schema digests, params);
2. budget admission (``_budget``): raise ``BudgetExceeded`` if this call would pass
   it, wait for calls of the run in flight if it fits only once they end, else
   reserve its bound until its cost is tallied;
3. circuit breaker and RPM/TPM limits (``_breaker``): ``Postpone`` when closed to us;
4. the HTTP call (``_openai`` / ``_anthropic``) with ``Idempotency-Key: <step key>``;
5. price it and add the run's metrics (``_accounting``); return the call record.

Provider failures are the step's retry policy: by default forever, with backoff up to
60 s, honouring ``Retry-After`` up to the policy's ``max_retry_after`` (120 s), the run
released while it waits. Refusals (400, 401,
403, ...), a missing key and an exceeded budget (policy ``fail``) fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

import pydantic

import tether
from tether import RetryPolicy, _inflight, ext
from tether.ai._accounting import (
    CallRecord,
    PaidAttempts,
    StreamProgress,
    cancelled_usage,
    failed_cost,
    failed_metrics,
    paid_by,
    saved_metrics,
    spent_metrics,
    watching,
)
from tether.ai._breaker import CircuitBreaker, ProviderGate, RateLimits
from tether.ai._budget import (
    Budget,
    BudgetExceeded,
    Claim,
    RunSpending,
    checked_budget,
    output_bound,
    require_price,
    spending_of,
    wait_out_budget,
    with_limits,
)
from tether.ai._errors import (
    FatalProviderError,
    ProviderBillingError,
    ProviderConfigError,
    RetryableProviderError,
)
from tether.ai._interrupt import TurnInterrupted, interruptibly
from tether.ai._messages import ContentRef, address, canonical_json, digest
from tether.ai._pricing import PriceTable
from tether.ai._types import (
    ChatClient,
    ChatReply,
    Message,
    OnChunk,
    ToolSpec,
    Usage,
    chat_client,
    parse_model_spec,
)
from tether.errors import ConfigError, TetherError

__all__ = ["DEFAULT_LLM_RETRY", "LLM", "OutputValidationError"]

log = logging.getLogger("tether.ai")

M = TypeVar("M", bound=pydantic.BaseModel)

#: Provider failures are retried without end, backing off to one try a minute: an
#: outage of hours costs a few rows, not a failed agent. Refusals are NonRetryable.
DEFAULT_LLM_RETRY = RetryPolicy(initial_interval=1.0, backoff=2.0, max_interval=60.0,
                                max_attempts=None)

_DEFAULT_BASE_URLS = {"openai": ("OPENAI_BASE_URL", "https://api.openai.com/v1"),
                      "anthropic": ("ANTHROPIC_BASE_URL", "https://api.anthropic.com")}
_KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


class OutputValidationError(TetherError):
    """The model's answers did not fit the requested output type, after the allowed
    retries (each one fed the validation error back to the model).

    Attributes:
        output: the name of the requested type.
        attempts: how many answers were tried.
        errors: the validation error of each answer.
        last_text: the last answer's text.
    """

    __module__ = "tether.ai"

    def __init__(self, output: str, attempts: int, errors: list[str],
                 last_text: str | None) -> None:
        super().__init__(f"the model's answer did not validate as {output} after {attempts} "
                         f"tries; last error: {errors[-1] if errors else '?'}")
        self.output = output
        self.attempts = attempts
        self.errors = errors
        self.last_text = last_text


class _Call:
    """One chat call's inputs, in both forms: the live values and the references."""

    def __init__(self, llm: LLM, messages: Sequence[Message], *, tools: Sequence[Any] | None,
                 tool_choice: str | None, output_schema: dict[str, Any] | None,
                 params: dict[str, Any], stream: bool, live: bool = False) -> None:
        # (The caller's sequence: ``address`` remembers an agent's growing list.)
        self.prompt: ContentRef = address(messages)
        self.messages = list(messages)
        self.tools = [ToolSpec.of(t) for t in tools or ()]
        self.tool_choice = tool_choice
        self.output_schema = output_schema
        self.params = params
        self.stream = stream
        #: Stream the HTTP call and publish its chunks; the journal says ``stream`` only
        #: for ``LLM.stream`` (``chat(live=True)`` records what a plain chat records).
        self.live = stream or live
        self.blobs = dict(self.prompt.blobs)
        tools_ref = self._blob([{"name": t.name, "description": t.description,
                                 "parameters": t.parameters} for t in self.tools]
                               if self.tools else None, "tools")
        schema_ref = self._blob(output_schema, "output schema")
        #: The journaled arguments: references and small values, never the prompt.
        self.refs: dict[str, Any] = {"model": llm.spec, "messages": self.prompt.head,
                                     "count": self.prompt.count, "tools": tools_ref,
                                     "tool_choice": tool_choice, "output": schema_ref,
                                     "params": params, "stream": stream}
        max_out = params.get("max_tokens", params.get("max_completion_tokens", 0))
        tools_size = sum(len(self.blobs[k]) for k in (tools_ref, schema_ref) if k)
        #: About 4 bytes per token: an estimate for budgets and TPM limits.
        self.estimate_input = (self.prompt.size + tools_size) // 4 + 1
        self.estimate_total = self.estimate_input + (int(max_out)
                                                     if isinstance(max_out, int) else 0)
        bound = next((params[k] for k in ("max_tokens", "max_completion_tokens",
                                          "max_output_tokens") if k in params), None)
        #: What the answer may cost at most, for the budget's reservation: the call's
        #: own limit, else the client's default (Anthropic's ``max_tokens``), else
        #: ``DEFAULT_OUTPUT_BOUND``.
        self.output_bound = output_bound(
            bound, llm._options.get("max_tokens") if llm.provider == "anthropic" else None)

    def _blob(self, value: Any, what: str) -> str | None:
        if value is None:
            return None
        text = canonical_json(value, what)
        key = digest(text)
        self.blobs[key] = text
        return key


class LLM:
    """A chat model; its calls are durable operations inside a workflow.

    Args:
        spec: ``"provider:model"``: ``"openai:gpt-4.1-mini"``,
            ``"anthropic:claude-sonnet-4-5"``, ``"openai-compatible:llama3.1:8b"``
            (which needs ``base_url``).
        base_url: the endpoint (default: ``$OPENAI_BASE_URL`` / ``$ANTHROPIC_BASE_URL``,
            else the provider's). Any OpenAI-compatible server works with ``openai:``.
        api_key: default ``$OPENAI_API_KEY`` / ``$ANTHROPIC_API_KEY``, read at the first
            call; a missing key fails that call (recorded, not retried).
        prices: a ``PriceTable``, or ``{model: (usd_in, usd_out)}`` per 1M tokens (or
            ``(usd_in, usd_out, usd_cache_read, usd_cache_write)``, with a fifth figure
            for Anthropic's 1-hour cache writes) overriding the defaults.
        retry: the retry policy of provider failures (default: forever, backoff to 60 s,
            a ``Retry-After`` honoured up to 120 s).
        rpm: requests per minute for this provider key, shared by every worker of the
            store; a call not granted is postponed (run released).
        tpm: tokens per minute, likewise.
        breaker: the shared circuit breaker's settings, or ``None`` for none.
        timeout: the HTTP timeout (seconds, per connect/read/write, or an
            ``httpx2.Timeout``); default 600 s.
        client_options: more options for the client: ``api`` (OpenAI and compatible:
            ``"chat"``, the default, or ``"responses"``; Anthropic: ``"messages"``
            only), ``extra_headers``, and ``max_tokens`` for Anthropic. Request fields
            (``temperature``, ``max_tokens`` for OpenAI) go to each call.

    Raises:
        ConfigError: an unknown provider, no model, ``openai-compatible`` without
            ``base_url``, a bad limit, an unknown option or ``api=`` (Anthropic's models
            take no ``api="responses"``), a base URL that is not http(s), a timeout
            that is not a positive number of seconds, a ``retry`` or ``breaker`` of the
            wrong type: each when the ``LLM`` is made, not at its first call.
    """

    def __init__(self, spec: str, *, base_url: str | None = None, api_key: str | None = None,
                 prices: PriceTable | Mapping[str, tuple[float, ...]] | None = None,
                 retry: RetryPolicy = DEFAULT_LLM_RETRY, rpm: float | None = None,
                 tpm: float | None = None, breaker: CircuitBreaker | None = CircuitBreaker(),
                 timeout: float | None = None, **client_options: Any) -> None:
        self.provider, self.model = parse_model_spec(spec)
        self.spec = f"{self.provider}:{self.model}"
        #: The journal's name for this model's operations; keep it stable across deploys.
        self.operation = f"llm:{self.spec}"
        if self.provider == "openai-compatible" and not base_url:
            raise ConfigError(f"model {spec!r}: an openai-compatible provider needs base_url=")
        if base_url is None:
            var, default = _DEFAULT_BASE_URLS[self.provider]
            base_url = os.environ.get(var) or default
        self.base_url = base_url.rstrip("/")
        _check_arguments(self.spec, self.provider, base_url=self.base_url, retry=retry,
                         breaker=breaker, timeout=timeout, options=client_options)
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self.retry = retry
        self.rate = RateLimits(rpm, tpm) if rpm is not None or tpm is not None else None
        self.breaker = breaker
        self._api_key = api_key
        self._timeout = timeout
        self._options = client_options
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ChatClient] = (
            weakref.WeakKeyDictionary())
        #: Set when the endpoint refused a streamed request that it answered plainly.
        self._plain_only = False

    def __repr__(self) -> str:
        return f"LLM({self.spec!r}, base_url={self.base_url!r})"

    @property
    def provider_key(self) -> str:
        """What the breaker is shared by: provider and endpoint."""
        return f"{self.provider}:{self.base_url}"

    # -- the client -------------------------------------------------------------------

    def client(self) -> ChatClient:
        """The HTTP client of the running event loop (one per loop, made on first use).

        Raises:
            ProviderConfigError: no API key, a bad base URL.
        """
        loop = asyncio.get_running_loop()
        found = self._clients.get(loop)
        if found is None:
            try:
                found = chat_client(self.spec, base_url=self.base_url, api_key=self._api_key,
                                    timeout=self._timeout, **self._options)
            except ConfigError as exc:
                raise ProviderConfigError(str(exc)) from None
            self._clients[loop] = found
        return found

    async def aclose(self) -> None:
        """Close the running loop's HTTP client (the object stays usable)."""
        found = self._clients.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found.aclose()

    async def __aenter__(self) -> LLM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- public calls -----------------------------------------------------------------

    @overload
    async def chat(self, messages: Sequence[Message], *, tools: Sequence[Any] | None = None,
                   tool_choice: str | None = None, output: None = None,
                   output_retries: int = 2, budget: Budget | None = None,
                   live: bool = False, **params: Any) -> ChatReply: ...

    @overload
    async def chat(self, messages: Sequence[Message], *, tools: Sequence[Any] | None = None,
                   tool_choice: str | None = None, output: type[M],
                   output_retries: int = 2, budget: Budget | None = None,
                   live: bool = False, **params: Any) -> M: ...

    async def chat(self, messages: Sequence[Message], *, tools: Sequence[Any] | None = None,
                   tool_choice: str | None = None, output: type[M] | None = None,
                   output_retries: int = 2, budget: Budget | None = None,
                   live: bool = False, **params: Any) -> ChatReply | M:
        """Ask the model; inside a workflow, one durable operation (per output try).

        Args:
            messages: the conversation, OpenAI chat format (both providers).
            tools: ``ToolSpec``s, ``Tool``s or tool dicts the model may call.
            tool_choice: ``"auto"``, ``"none"``, ``"required"`` or a tool's name.
            output: a pydantic model: the answer is constrained to its JSON schema and
                returned validated; a non-conforming answer is sent back with the
                validation error, up to ``output_retries`` more times.
            budget: this call's budget (default: the run's, see ``set_budget``).
            live: inside a workflow, stream the HTTP call and publish its text deltas to
                the run's observers as ``LLM.stream`` does (``llm.chunk`` events), while
                the journal records exactly what a plain ``chat`` records (so runs
                recorded before replay the same). ``tether.ai.Agent`` uses it.
            params: more request fields (``temperature``, ``max_tokens``, ...), JSON.

        Returns:
            The ``ChatReply``; with ``output``, the validated instance.

        Raises:
            FatalProviderError: the provider refused the call (400, 401, 403, ...).
            ProviderConfigError: no API key.
            BudgetExceeded: over budget with policy ``fail``.
            OutputValidationError: no answer validated.
            RetryableProviderError: outside a workflow only (inside, it is retried).
        """
        return await self._complete(messages, tools=tools, tool_choice=tool_choice,
                                    output=output, output_retries=output_retries,
                                    budget=budget, params=params, stream=False, on_chunk=None,
                                    live=live)

    @overload
    async def stream(self, messages: Sequence[Message], *, tools: Sequence[Any] | None = None,
                     tool_choice: str | None = None, output: None = None,
                     output_retries: int = 2, budget: Budget | None = None,
                     on_chunk: OnChunk | None = None, **params: Any) -> ChatReply: ...

    @overload
    async def stream(self, messages: Sequence[Message], *, tools: Sequence[Any] | None = None,
                     tool_choice: str | None = None, output: type[M],
                     output_retries: int = 2, budget: Budget | None = None,
                     on_chunk: OnChunk | None = None, **params: Any) -> M: ...

    async def stream(self, messages: Sequence[Message], *, tools: Sequence[Any] | None = None,
                     tool_choice: str | None = None, output: type[M] | None = None,
                     output_retries: int = 2, budget: Budget | None = None,
                     on_chunk: OnChunk | None = None, **params: Any) -> ChatReply | M:
        """Like ``chat``, streamed. Inside a workflow each text delta is published to
        the run's observers (``App.events(run_id)``) as
        ``{"type": "llm.chunk", "position": P, "text": "..."}``, an attempt that fails
        midway publishes ``llm.error`` (observers drop its partial text), and the end
        ``llm.end``. The journal records the final reply once; replay returns it and
        publishes nothing. ``on_chunk`` also receives each delta of a fresh call.
        """
        return await self._complete(messages, tools=tools, tool_choice=tool_choice,
                                    output=output, output_retries=output_retries,
                                    budget=budget, params=params, stream=True,
                                    on_chunk=on_chunk, live=True)

    # -- structured output --------------------------------------------------------------

    async def _complete(self, messages: Sequence[Message], *, tools: Sequence[Any] | None,
                        tool_choice: str | None, output: type[M] | None, output_retries: int,
                        budget: Budget | None, params: dict[str, Any], stream: bool,
                        on_chunk: OnChunk | None, live: bool) -> ChatReply | M:
        if output is None:
            return await self._call(messages, tools=tools, tool_choice=tool_choice,
                                    output_schema=None, budget=budget, params=params,
                                    stream=stream, on_chunk=on_chunk, live=live)
        if output_retries < 0:
            raise ConfigError(f"output_retries must be >= 0, got {output_retries}")
        schema = _output_schema(output)
        convo = list(messages)
        errors: list[str] = []
        text: str | None = None
        for _ in range(output_retries + 1):
            reply = await self._call(convo, tools=tools, tool_choice=tool_choice,
                                     output_schema=schema, budget=budget, params=params,
                                     stream=stream, on_chunk=on_chunk, live=live)
            text = reply.text
            try:
                return output.model_validate_json(text or "")
            except pydantic.ValidationError as exc:
                problem = _validation_summary(exc, text, reply.finish_reason)
            errors.append(problem)
            # Only the text goes back: tool calls without results would be refused.
            convo = [*convo, {"role": "assistant", "content": text or ""},
                     {"role": "user", "content":
                      f"Your answer does not match the required JSON schema: {problem}. "
                      "Answer again with only a JSON object that matches the schema."}]
        raise OutputValidationError(output.__name__, len(errors), errors, text)

    # -- one durable call ----------------------------------------------------------------

    async def _call(self, messages: Sequence[Message], *, tools: Sequence[Any] | None,
                    tool_choice: str | None, output_schema: dict[str, Any] | None,
                    budget: Budget | None, params: dict[str, Any], stream: bool,
                    on_chunk: OnChunk | None, live: bool = False) -> ChatReply:
        budget = checked_budget(budget, f"LLM {self.spec!r} chat")
        run = ext.current_run()
        if run is None or not ext.in_workflow():
            return await self._request(list(messages), tools=tools, tool_choice=tool_choice,
                                       output_schema=output_schema, params=params,
                                       stream=stream, on_chunk=on_chunk, key=None)
        call = _Call(self, messages, tools=tools, tool_choice=tool_choice,
                     output_schema=output_schema, params=params, stream=stream, live=live)
        spending = spending_of(run)
        claim = Claim()
        try:
            while True:
                limit = spending.effective(budget)
                body = self._body(run, call, spending, limit, claim, on_chunk)
                run.argument_texts(call.blobs)  # (the replay check's; nothing in a worker)
                try:
                    value = await ext.step(
                        self.operation, body, call.refs, retry=self.retry,
                        on_replay=saved_metrics,
                        on_recorded=lambda value: spending.recorded(claim, *_cost(value)))
                except BudgetExceeded as exc:
                    paid = PaidAttempts.of_error(exc)
                    spending.settle(claim, paid.tokens, paid.usd)
                    await wait_out_budget(spending, limit, exc)
                    continue
                except Exception as exc:  # (failed for good: its paid attempts count)
                    paid = PaidAttempts.of_error(exc)
                    spending.settle(claim, paid.tokens, paid.usd)
                    raise
                record = CallRecord.from_dict(value)
                spending.tally(claim, *_cost(value))
                return record.reply
        finally:
            spending.drop(claim)

    def _body(self, run: ext.Run, call: _Call, spending: RunSpending,
              budget: Budget | None, claim: Claim,
              on_chunk: OnChunk | None) -> Callable[[dict[str, Any]], Any]:
        """The step body of one call (the journaled argument is ``call.refs``)."""

        async def llm_call(refs: dict[str, Any]) -> dict[str, Any]:
            # The texts ``refs`` names are stored with whatever entry this step writes
            # (its reply, or a failed attempt's): no commit of their own before the
            # request, and no entry naming a text that is not stored.
            run.store_with_entry(call.blobs)
            # What the call's earlier attempts were paid, by this execution or one
            # before it (carried on the previous attempt's journaled error): counted by
            # the budget, carried on, and journaled with the record (``failed``).
            paid = PaidAttempts.before()
            spending.carry(claim, paid.tokens, paid.usd)
            price = self.prices.price(self.model)
            try:
                require_price(spending, budget, model=self.model, priced=price.known)
                await spending.admit(
                    budget, claim, estimate_tokens=call.estimate_input,
                    estimate_usd=call.estimate_input * price.input_per_million / 1_000_000,
                    bound_tokens=call.estimate_input + call.output_bound,
                    bound_usd=(call.estimate_input * price.input_per_million
                               + call.output_bound * price.output_per_million) / 1_000_000)
            except BaseException as exc:  # (refused: journaled with what was paid)
                paid.mark(exc)
                raise
            record = await paid.attempt(self._attempt(run, call, on_chunk),
                                        spending=spending, claim=claim, price=price,
                                        estimate_input=call.estimate_input)
            spending.answered(claim, record.reply.usage.total_tokens, record.cost_usd)
            return paid.record(with_limits(record.to_dict(), spending, budget))

        return llm_call

    async def _attempt(self, run: ext.Run, call: _Call,
                       on_chunk: OnChunk | None) -> CallRecord:
        """One admitted attempt of a call: breaker, rate limits, the request, its price."""
        self.client()  # a missing key fails here, before the breaker counts anything
        gate = await ProviderGate.enter(
            run.shared, self.provider_key, breaker=self.breaker, rate=self.rate,
            api_key=lambda: self._api_key or os.environ.get(
                _KEY_VARS.get(self.provider, ""), ""),
            tokens=call.estimate_total, clock=run.clock)
        publish = _Publisher(run, on_chunk) if call.live else None
        try:
            # An interruptible agent's turn can cut the request (TurnInterrupted): it was
            # billed as a cut one if its answer had begun (``cancelled_usage``).
            with watching() as requests, self._outstanding(run, requests):
                try:
                    reply = await interruptibly(self._live_or_plain(call, publish,
                                                                    tether.step_key()))
                except TurnInterrupted as exc:
                    cancelled_usage(requests, exc)
                    raise
        except (TurnInterrupted, RetryableProviderError, FatalProviderError) as exc:
            cut = paid_by(exc, self.prices.price(self.model), call.estimate_input)
            if cut is not None:  # (paid: told, or a stream begun)
                run.add_metrics(failed_metrics(*cut))
            if publish is not None:
                await publish.event({"type": "llm.error", "message": str(exc)})
            if isinstance(exc, RetryableProviderError):
                await gate.failed(exc.status)
            else:
                await gate.answered()  # (a fatal error answered: it is up)
            raise
        except BaseException:  # cancelled, or no provider error: nothing learned
            await gate.abandoned()
            raise
        await gate.answered()
        record = CallRecord.priced_by(self.prices, self.model, reply)
        run.add_metrics(spent_metrics(record))
        if publish is not None:
            await publish.event({"type": "llm.end",
                                 "finish_reason": reply.finish_reason})
        return record

    @contextlib.contextmanager
    def _outstanding(self, run: ext.Run, requests: list[StreamProgress]) -> Iterator[None]:
        """Count the attempt among the process's calls in flight (``outstanding_calls``)
        while its requests are made, when a test environment watches them
        (``tether._inflight``); else nothing."""
        if not _inflight.watchers:
            yield
            return
        step = ext.current_step()
        found = OutstandingCall(run.run_id, self.operation,
                                step.position if step is not None else -1, self.base_url,
                                time.monotonic(), self._read_timeout(), requests)
        with _inflight.listed(found):
            yield

    def _read_timeout(self) -> float | None:
        """How long a request of this model waits for an answer (None: for ever)."""
        if self._timeout is None:
            return 600.0  # (the clients' default)
        if isinstance(self._timeout, (int, float)):
            return float(self._timeout)
        read = getattr(self._timeout, "read", None)
        return float(read) if isinstance(read, (int, float)) else None

    async def _live_or_plain(self, call: _Call, publish: _Publisher | None,
                             key: str) -> ChatReply:
        """The HTTP call of a step: streamed when the call is live. A ``chat(live=True)``
        refused by an endpoint that cannot stream (a 4xx before the stream began) is
        asked again plainly; once that works, this process asks that endpoint
        plainly."""
        live = call.live and not (self._plain_only and not call.stream)
        try:
            return await self._request(
                call.messages, tools=call.tools, tool_choice=call.tool_choice,
                output_schema=call.output_schema, params=call.params, stream=live,
                on_chunk=publish if live else None, key=key)
        except FatalProviderError as exc:
            # (An error event in a stream the endpoint accepted, ``delivered`` set: a
            # gateway's 400, an account out of credit, is no refusal to stream; asked
            # again plainly, it was one more request for the same error.)
            # (Nor is a key refused, 401/403, or an account out of credit: asked again
            # plainly, the same refusal.)
            if (not live or call.stream or publish is None or publish.sent
                    or exc.delivered is not None or exc.status in (401, 403)
                    or isinstance(exc, ProviderBillingError)):
                raise
        reply = await self._request(
            call.messages, tools=call.tools, tool_choice=call.tool_choice,
            output_schema=call.output_schema, params=call.params, stream=False,
            on_chunk=None, key=f"{key}:plain")
        log.warning("%s: the endpoint refused a streamed request and answered a plain one; "
                    "its calls are made plainly from now on (no live text)", self.spec)
        self._plain_only = True
        return reply

    async def _request(self, messages: list[Message], *, tools: Sequence[Any] | None,
                       tool_choice: str | None, output_schema: dict[str, Any] | None,
                       params: dict[str, Any], stream: bool, on_chunk: OnChunk | None,
                       key: str | None) -> ChatReply:
        client = self.client()
        if stream:
            return await client.stream(messages, on_chunk=on_chunk, tools=tools,
                                       tool_choice=tool_choice, output_schema=output_schema,
                                       idempotency_key=key, **params)
        return await client.chat(messages, tools=tools, tool_choice=tool_choice,
                                 output_schema=output_schema, idempotency_key=key, **params)


#: The client options each provider's client takes (``LLM(**client_options)``).
_CLIENT_OPTIONS = {"openai": ("api", "extra_headers"),
                   "openai-compatible": ("api", "extra_headers"),
                   "anthropic": ("api", "extra_headers", "max_tokens")}
#: The ``api=`` values each provider's models are served by, and what each one is.
_APIS = {"openai": {"chat": "Chat Completions", "responses": "the Responses API"},
         "openai-compatible": {"chat": "Chat Completions", "responses": "the Responses API"},
         "anthropic": {"messages": "the Messages API"}}


def _check_arguments(spec: str, provider: str, *, base_url: str, retry: Any, breaker: Any,
                     timeout: Any, options: Mapping[str, Any]) -> None:
    """Refuse at ``LLM(...)`` what its client would refuse at the first call (inside a
    run: a failed step), saying what to write instead.

    Raises:
        ConfigError: an unknown option or ``api=``, a base URL that is not http(s), a
            timeout that is not a positive number of seconds, ...
    """
    where = f"LLM({spec!r})"
    allowed = _CLIENT_OPTIONS[provider]
    for name in options:
        if name in allowed:
            continue
        if name == "background":
            raise ConfigError(
                f"{where}: background= is not an option of LLM, and tether.ai.LLM runs no "
                "background jobs (OpenAI's background mode answers 'queued', with nothing "
                "here to poll it): send the request in the foreground (a longer timeout= "
                "for a long job), or use the pydantic-ai integration (TetherAgent, "
                "openai_background=True), which queues and polls the job as one durable "
                "call")
        if name == "stream":
            raise ConfigError(f"{where}: stream= is not an option of LLM: call "
                              "llm.stream(messages) for a streamed answer, or "
                              "llm.chat(messages, live=True)")
        raise ConfigError(
            f"{where}: unknown option {name}= (the options of {provider} models: "
            f"{', '.join(f'{o}=' for o in allowed)}, and base_url=, api_key=, prices=, "
            "retry=, rpm=, tpm=, breaker=, timeout=); request fields (temperature=, "
            "max_tokens=, ...) go to each call: llm.chat(messages, temperature=0.2)")
    api = options.get("api")
    apis = _APIS[provider]
    if api is not None and api not in apis:
        if provider == "anthropic":
            raise ConfigError(
                f"{where}: Anthropic models take no api= option (they are served by the "
                f"Messages API only, api='messages'), got api={api!r}; the Responses API "
                "is OpenAI's: use an 'openai:' model for api='responses'")
        raise ConfigError(f"{where}: api= must be 'chat' (Chat Completions) or 'responses' "
                          f"(the Responses API), got {api!r}")
    headers = options.get("extra_headers")
    if headers is not None and not (isinstance(headers, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items())):
        raise ConfigError(f"{where}: extra_headers= must map header names to string "
                          f"values, got {headers!r}")
    max_tokens = options.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool)
                                   or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"{where}: max_tokens= must be a positive whole number of "
                          f"tokens, got {max_tokens!r}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: base_url {base_url!r} is not an http(s) URL: write "
                          "it whole, e.g. 'https://api.example.com/v1'")
    _check_timeout(where, timeout)
    if not isinstance(retry, RetryPolicy):
        raise ConfigError(f"{where}: retry= must be a tether.RetryPolicy, got "
                          f"{type(retry).__name__}")
    if breaker is not None and not isinstance(breaker, CircuitBreaker):
        raise ConfigError(f"{where}: breaker= must be a tether.ai.CircuitBreaker or None, "
                          f"got {type(breaker).__name__}")


def _check_timeout(where: str, timeout: Any) -> None:
    """``timeout=``: None, positive finite seconds, or an ``httpx2.Timeout`` (or another
    client's timeout object with its four fields), each of them positive or None."""
    if timeout is None:
        return
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        values: list[Any] = [timeout]
    else:
        fields = ("connect", "read", "write", "pool")
        if not all(hasattr(timeout, f) for f in fields):
            raise ConfigError(f"{where}: timeout= must be seconds (timeout=600) or an "
                              f"httpx2.Timeout, got {type(timeout).__name__}")
        values = [getattr(timeout, f) for f in fields]
    for value in values:
        if value is None:
            continue
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value <= 0):
            raise ConfigError(f"{where}: timeout= must be a positive number of seconds "
                              f"(or None for no limit), got {timeout!r}")


@dataclasses.dataclass(frozen=True)
class OutstandingCall:
    """An attempt of an ``LLM`` call of a run whose request is in flight in this
    process (``outstanding_calls``): a test environment tells from it a model whose
    endpoint accepted the request and never answered."""

    run_id: str
    #: The step's name (``llm:openai:gpt-4.1-mini``) and position in the run.
    step: str
    position: int
    base_url: str
    #: When the attempt's request began (``time.monotonic()``).
    since: float
    #: How long its requests wait for an answer (seconds; None: for ever).
    timeout: float | None
    #: The progress of its requests (``watching``).
    requests: list[StreamProgress]

    @property
    def answered(self) -> bool:
        """Whether an answer (a 2xx) began for any of its requests."""
        return any(progress.opened for progress in self.requests)

    @property
    def timeout_known(self) -> bool:
        """The model's own timeout is ``timeout`` (``tether._inflight.Call``)."""
        return True


def outstanding_calls() -> list[OutstandingCall]:
    """The attempts of ``LLM`` calls of runs whose request is in flight in this process
    now, oldest first (``tether._inflight`` lists the integrations' calls too)."""
    return [call for call in _inflight.outstanding() if isinstance(call, OutstandingCall)]


def _cost(value: dict[str, Any]) -> tuple[int, float]:
    """The tokens and USD of a journaled call record, as the workflow tallies them:
    its reply's, and what its failed attempts were paid (``failed``)."""
    # (Read as ``CallRecord.from_dict`` reads them, without building the reply: this
    # runs twice per call.)
    usage = Usage.from_dict(value["reply"].get("usage", {}))
    tokens, usd = failed_cost(value)
    return usage.total_tokens + tokens, float(value.get("cost_usd", 0.0)) + usd


class _Publisher:
    """Sends a fresh streamed call's chunks to the run's observers (best effort: a
    failing event channel never fails the call)."""

    def __init__(self, run: ext.Run, on_chunk: OnChunk | None) -> None:
        step = ext.current_step()
        self.run = run
        self.position = step.position if step is not None else -1
        self.attempt = step.attempt if step is not None else 0
        self.on_chunk = on_chunk
        #: Whether a chunk went out (a failed stream then cannot be asked again plainly).
        self.sent = False
        self._failed = False

    async def __call__(self, text: str) -> None:
        self.sent = True
        await self.event({"type": "llm.chunk", "text": text})
        if self.on_chunk is not None:
            result = self.on_chunk(text)
            if asyncio.iscoroutine(result):
                await result

    async def event(self, event: dict[str, Any]) -> None:
        event = {**event, "position": self.position, "attempt": self.attempt}
        try:
            await self.run.publish(event)
        except Exception as exc:  # observers are best effort
            if not self._failed:
                self._failed = True
                log.warning("cannot publish stream events of run %s: %s", self.run.run_id,
                            exc)


def _output_schema(output: Any) -> dict[str, Any]:
    if not (isinstance(output, type) and issubclass(output, pydantic.BaseModel)):
        raise ConfigError(f"output= must be a pydantic model class, got {output!r}")
    from tether.ai._tools import model_schema

    schema = model_schema(output)
    schema["title"] = output.__name__
    return schema


def _validation_summary(exc: pydantic.ValidationError, text: str | None,
                        finish_reason: str = "stop") -> str:
    """What was wrong with an answer, for the model and for ``OutputValidationError``
    (journaled as its message): a refusal quotes the model (its text is no JSON, and
    "Invalid JSON: expected ident" hid why), an answer cut at ``max_tokens`` says so."""
    if finish_reason == "content_filter":
        return f"the model refused: {(text or '')[:300]!r}"
    if not text:
        return "the answer was empty (expected a JSON object)"
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    if finish_reason == "length":
        parts.append("the answer was cut at max_tokens (finish_reason length)")
    return "; ".join(parts)
