"""OpenTelemetry spans for runs and the operations they execute (``tether[otel]``).

::

    import tether.otel
    tether.otel.instrument()          # the global tracer provider, or tracer_provider=...

Spans (see ``docs/telemetry.md``):

- ``start {workflow}``: made and ended by the process that starts a top-level run
  (``App.start``, ``start_many``, ``fork``, a schedule's tick) when it has called
  ``instrument()``; the parent of every ``run`` span of the run (so the trace's root
  does not die with a SIGKILLed worker). Attributes ``tether.run_id``,
  ``tether.workflow``, ``tether.queue``.
- ``run {workflow}``: one per execution of a run's code on a worker (the first one, and
  each replay after a crash, a wait or a handover); attributes ``tether.run_id``,
  ``tether.workflow``, ``tether.queue``, ``tether.outcome`` (``returned``, ``failed``,
  ``cancelled``, ``released``, ``continued`` (``continue_as_new``), ``blocked``,
  ``lost`` (another worker took the run over from this one), ``interrupted`` (the
  worker stopped mid-step), ``crashed``: the span of an execution whose worker died
  holding the run, exported with its ids by the execution that took the run over),
  ``tether.operations.replayed`` and ``tether.operations.executed``.
- one span per executed step attempt: ``chat {model}`` for a durable LLM call, with the
  GenAI semantic conventions (``gen_ai.operation.name``, ``gen_ai.provider.name``,
  ``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens``,
  ``gen_ai.usage.output_tokens``, ``gen_ai.response.finish_reasons``) and
  ``tether.cost_usd``; ``execute_tool {tool}`` for an agent's tool call
  (``gen_ai.tool.name``); ``step {name}`` otherwise. Attributes ``tether.position`` and
  ``tether.attempt``; a failed attempt has status ERROR and the exception recorded; one
  its worker cut off has ``tether.interrupted``; one whose result was refused (another
  worker had taken the run over) has ``tether.superseded`` and status ERROR.
- ``execute_tool {tool}`` for a tool call a child run served (``tether.ai``'s workflow
  and agent tools): from the child's start to its result, made by the execution that
  takes the result, linked to the child's first ``run`` span.

**Replay emits nothing for an operation answered from the journal**: the engine calls
the observer only for work that executes (``tether._observe``).

Trace context is kept in the store (a shared value ``otel.trace:<run_id>``: the run's
parent, its first ``run`` span, the execution whose span is open), so every execution
of a run joins one trace on any worker, under its ``start`` span, and a child run (on
any queue or host) is a child of the span that started it. A run started over HTTP with a W3C
``traceparent`` header (``POST /api/v1/runs``) is a child of the caller's span; a signal
or an approval posted with one links the run's next execution to the caller's span.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"tether.otel needs the otel extra: pip install 'tether[otel]' ({exc})"
                      ) from None

from tether import _observe
from tether._operations import _OwnCancel
from tether._replay import (
    Blocked,
    Continue,
    Lost,
    Release,
    RunContext,
    StepInfo,
    _Interrupted,
    _Stop,
)
from tether._types import RunStatus
from tether.errors import Postpone

if TYPE_CHECKING:
    from tether.store._port import Store

__all__ = ["OtelObserver", "instrument", "uninstrument"]

_KEY = _observe.TRACE_KEY
_PROPAGATOR = TraceContextTextMapPropagator()
#: A pydantic-ai model request (``tether.integrations.pydantic_ai``): group 1 is the model
#: id of a request to another model than the agent's default one.
_PYDANTIC_AI_MODEL = re.compile(r"pydantic_ai:.+__model\.request(?:_stream)?(?:\.(.+))?")


class OtelObserver:
    """Makes spans for executed work (install with ``instrument()``)."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer_provider = tracer_provider
        self.tracer = trace.get_tracer("tether", tracer_provider=tracer_provider)
        #: The executions (``id`` of their RunContext) whose ``run`` span this observer
        #: made and has not ended yet, each with the spans of its attempts that returned
        #: and whose result's write has not ended (``step_settled``): by position, the
        #: span and when the attempt ended (ns). Ended at the execution's end at the
        #: latest (``run_ended``), as attempts that ended well.
        self._unsettled: dict[int, dict[int, tuple[Span, int]]] = {}

    # -- runs ----------------------------------------------------------------------------

    async def run_started(self, ctx: RunContext) -> Any:
        key = _KEY.format(ctx.run_id)
        stored = await ctx.store.kv_get(key=key)
        doc = _trace_doc(stored)
        rooted = "traceparent" in doc
        parent = _PROPAGATOR.extract(doc) if rooted else None
        # Callers that sent the run a signal or an approval since its last execution
        # (``tether serve`` with a ``traceparent`` header): linked from this execution.
        links = []
        for carrier in doc.get("links") or []:
            if isinstance(carrier, dict):
                linked = trace.get_current_span(_PROPAGATOR.extract(carrier))
                if linked.get_span_context().is_valid:
                    links.append(trace.Link(linked.get_span_context()))
        record = ctx.lease
        started = time.time_ns()
        span = self.tracer.start_span(
            f"run {ctx.workflow.name}", context=parent, kind=SpanKind.INTERNAL, links=links,
            start_time=started,
            attributes={"tether.run_id": record.run_id, "tether.workflow": ctx.workflow.name,
                        # (the run's: a start may name another queue than its
                        # workflow's, which the span said until 2026-12-06)
                        "tether.queue": ctx.queue,
                        "tether.fencing_token": record.fencing_token})
        version = None if stored is None else stored[1]
        own = _carrier_of(span)
        lost = doc.get("open")
        if (isinstance(lost, dict) and ctx.taken_over
                and _int(lost.get("token"), record.fencing_token) < record.fencing_token):
            # An earlier execution's span that its worker never ended (killed holding the
            # run): its steps' spans, exported, name it as their parent.
            self._emit_lost(lost, ctx)
        # Linked once; a link added meanwhile stays for the next execution.
        kept = {k: v for k, v in doc.items() if k not in ("links", "open")}
        if not rooted:
            # No start span recorded the run's trace (a run started before 2026-12-06,
            # or by a process without telemetry): the first execution roots it; later
            # ones (any worker) join it.
            kept.update(own)
        # The run's first span ("run": a tool call the run served links to it, see
        # child_tool_ended).
        kept.setdefault("run", own)
        if own:
            # This execution's span until the worker says it ends it (run_closing): a
            # later execution that finds it here emits it for a worker that died.
            kept["open"] = {"span": own, "parent": {k: doc[k] for k in (
                                "traceparent", "tracestate") if k in doc} if rooted else None,
                            "start": started, "token": record.fencing_token}
        if kept != doc:
            await ctx.store.kv_cas(key=key, value=json.dumps(kept), version=version,
                                   now=ctx.clock.now())
        token = otel_context.attach(trace.set_span_in_context(span))
        self._unsettled[id(ctx)] = {}
        return span, token

    async def run_closing(self, token: Any, ctx: RunContext) -> None:
        """This execution's span ends in this process: forget it as open (a read and a
        write), so that no later execution emits it again."""
        key = _KEY.format(ctx.run_id)
        for _ in range(4):
            stored = await ctx.store.kv_get(key=key)
            doc = _trace_doc(stored)
            lost = doc.get("open")
            if stored is None or not isinstance(lost, dict) \
                    or lost.get("token") != ctx.lease.fencing_token:
                return
            del doc["open"]
            if await ctx.store.kv_cas(key=key, value=json.dumps(doc), version=stored[1],
                                      now=ctx.clock.now()):
                return

    def _emit_lost(self, lost: dict[str, Any], ctx: RunContext) -> None:
        """Export the ``run`` span of an execution whose worker died before ending it, with
        the ids its steps' spans name as their parent's (``open`` in the run's trace
        value), outcome ``crashed``, ending now. Only with the OpenTelemetry SDK (which
        lets a span be made with given ids)."""
        try:
            from opentelemetry.sdk.trace import ReadableSpan
            from opentelemetry.sdk.trace import Tracer as SdkTracer
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        except ImportError:  # pragma: no cover - the otel extra installs the SDK
            return
        # (Got again: a tracer got before the global provider was set is a proxy.)
        tracer = trace.get_tracer("tether", tracer_provider=self.tracer_provider)
        own = _span_context(lost.get("span"))
        if not isinstance(tracer, SdkTracer) or own is None or not own.trace_flags.sampled:
            return
        parent = _span_context(lost.get("parent"))
        now = time.time_ns()
        started = min(_int(lost.get("start"), now), now)
        tracer.span_processor.on_end(ReadableSpan(
            name=f"run {ctx.workflow.name}",
            context=trace.SpanContext(own.trace_id, own.span_id, is_remote=False,
                                      trace_flags=own.trace_flags,
                                      trace_state=own.trace_state),
            parent=parent, resource=tracer.resource, kind=SpanKind.INTERNAL,
            attributes={"tether.run_id": ctx.run_id, "tether.workflow": ctx.workflow.name,
                        "tether.queue": ctx.queue,
                        "tether.fencing_token": _int(lost.get("token"), 0),
                        "tether.outcome": "crashed"},
            status=Status(StatusCode.ERROR, "the worker executing the run stopped without "
                          "ending this span (killed, or cut off from the store); another "
                          "worker took the run over"),
            start_time=started, end_time=now,
            instrumentation_scope=InstrumentationScope("tether")))

    def run_ended(self, token: Any, ctx: RunContext, error: BaseException | None) -> None:
        span, attached = token
        for step, ended in (self._unsettled.pop(id(ctx), None) or {}).values():
            step.end(end_time=ended)  # (whether their results stand is not known)
        try:
            span.set_attribute("tether.operations.replayed", ctx.replayed)
            span.set_attribute("tether.operations.executed", ctx.executed)
            interrupted = error is not None and not isinstance(error, (Exception, _Stop))
            # (As the worker records it: blocked also when the code raised
            # NonDeterminismError itself, or returned with entries it never asked for.
            # A lease the heartbeat found taken cancels the run's task, which arrives
            # here as an interruption: its stop says it was lost.)
            stop = (ctx.stop if isinstance(error, _Stop) or isinstance(ctx.stop, Lost)
                    else None if interrupted else ctx.end_stop(error))
            if isinstance(stop, Blocked):
                # The run needs an operator: an error, with the reason, as a failed run.
                # Asked to cancel, it ended cancelled instead (the reason its error):
                # as the store took it (ctx.ended), the worker may not have known.
                outcome = ("cancelled" if ctx.ended is RunStatus.CANCELLED
                           else "blocked")
                _record_error(span, stop.error, _observe.hides_error_messages(ctx))
            elif isinstance(error, _Stop) or stop is not None:
                outcome = ("released" if isinstance(stop, Release) else "lost"
                           if isinstance(stop, Lost) else "continued"
                           if isinstance(stop, Continue) else "stopped")
            elif interrupted:
                outcome = "interrupted"  # the worker is stopping; another replays the run
            elif ctx.cancel_delivered:
                # Ended by a cancel request (App.cancel): the run is cancelled, as the
                # worker records it, whatever the code raised or returned after it.
                outcome = "cancelled"
            elif error is None:
                outcome = "returned"
            else:
                outcome = "failed"
                _record_error(span, error, _observe.hides_error_messages(ctx))
            span.set_attribute("tether.outcome", outcome)
            span.end()
        finally:
            otel_context.detach(attached)

    async def runs_starting(self, store: Store, runs: Sequence[tuple[str, str, str]],
                            now: float) -> None:
        """A ``start {workflow}`` span per run, made and ended here, in the process that
        starts it (a child of this process's current span, if any), whose context is
        recorded as the run's parent before the run exists: each execution's ``run``
        span is its child. The trace's root is thus exported by the starting process,
        not by the run's first worker, which a SIGKILL may take with its span (every
        later execution then pointed at a parent no backend received)."""
        made: list[tuple[Span, str, str]] = []
        for run_id, workflow, queue in runs:
            span = self.tracer.start_span(
                f"start {workflow}", kind=SpanKind.PRODUCER,
                attributes={"tether.run_id": run_id, "tether.workflow": workflow,
                            "tether.queue": queue})
            carrier = _carrier_of(span)
            if not carrier:  # (no SDK tracer provider: the first execution roots the trace)
                return
            made.append((span, run_id, json.dumps(carrier)))
        # All at once (``start_many``'s runs): one by one, 2,000 starts with telemetry on
        # took ~15x (SQLite) and ~5x (PostgreSQL) as long as without these writes; at
        # once ~3x and ~4x (a one-off measurement, 2026-12-06).
        recorded = await asyncio.gather(*(
            store.kv_cas(key=_KEY.format(run_id), value=value, version=None, now=now)
            for _, run_id, value in made))
        for (span, _, _), created in zip(made, recorded, strict=True):
            if created:
                span.end()
            # Else the run's trace context was recorded already (a caller's
            # ``traceparent``, which ``tether serve`` records first; a run that exists,
            # which this start does not create): the span is left unended, so that no
            # exporter receives a start that roots nothing.

    # -- steps ---------------------------------------------------------------------------

    def step_started(self, ctx: RunContext, info: StepInfo) -> Any:
        name, attributes = _describe(info.name)
        attributes.update({"tether.run_id": ctx.run_id, "tether.position": info.position,
                           "tether.attempt": info.attempt, "tether.step": info.name})
        chat = attributes.get("gen_ai.operation.name") == "chat"
        span = self.tracer.start_span(name, kind=SpanKind.CLIENT if chat else SpanKind.INTERNAL,
                                      attributes=attributes)
        return (span, otel_context.attach(trace.set_span_in_context(span)), chat, name,
                _observe.hides_error_messages(ctx), self._unsettled.get(id(ctx)),
                info.position)

    def step_ended(self, token: Any, value: Any, error: BaseException | None) -> None:
        span, attached, chat, name, hidden, unsettled, position = token
        try:
            if error is None and unsettled is not None:
                # Its result is yet to be journaled, which another worker that took the
                # run over refuses: the span ends (at this time) once the write has
                # (``step_settled``), saying whether the attempt was superseded.
                if chat:
                    _llm_result(span, value, name)
                unsettled[position] = (span, time.time_ns())
                return
            if error is None and chat:
                _llm_result(span, value, name)
            elif isinstance(error, _Interrupted):
                # A cancel request interrupted the attempt: the run ends cancelled, not
                # failed (its span is not an error either), and nothing failed here.
                span.set_attribute("tether.cancelled", True)
            elif isinstance(error, Postpone):
                # Run again later without counting a failed attempt (an open circuit
                # breaker, a rate limit): the engine records it as postponed, not failed.
                span.set_attribute("tether.postponed_seconds", error.delay)
            elif isinstance(error, (asyncio.CancelledError, _Stop)):
                # The worker cut the attempt off (it stops past its grace, or another
                # worker took the run's lease): no failure of the step, nor an end; the
                # attempt runs again elsewhere.
                span.set_attribute("tether.interrupted", True)
            elif error is not None:
                # (SystemExit or KeyboardInterrupt raised by the step's code too: a
                # failed attempt, as the engine records it.)
                if isinstance(error, _OwnCancel) and error.__cause__ is not None:
                    # The step's code raised CancelledError itself; the engine records
                    # that error, not its internal wrapper.
                    error = error.__cause__
                _record_error(span, error, hidden)
            span.end()
        finally:
            otel_context.detach(attached)

    def step_settled(self, ctx: RunContext, position: int, superseded: bool) -> None:
        """End the span of the attempt at ``position`` that returned, at the time it
        returned: an attempt whose result was refused (another worker had taken the run
        over and runs the step again) has ``tether.superseded`` and status ERROR (its
        body ran, its side effects happened; it read as an attempt that ended well)."""
        pending = self._unsettled.get(id(ctx))
        held = pending.pop(position, None) if pending is not None else None
        if held is None:
            return
        span, ended = held
        if superseded:
            span.set_attribute("tether.superseded", True)
            span.set_status(Status(StatusCode.ERROR, "superseded: the attempt returned but "
                                   "its result was refused (another worker had taken the "
                                   "run over, and runs the step again)"))
        span.end(end_time=ended)

    async def child_starting(self, ctx: RunContext, child_id: str) -> None:
        span = trace.get_current_span()
        if not span.get_span_context().is_valid:
            return
        await ctx.store.kv_cas(key=_KEY.format(child_id), value=_carrier(span), version=None,
                               now=ctx.clock.now())

    async def child_tool_ended(self, ctx: RunContext, call: _observe.ChildTool) -> None:
        """The ``execute_tool`` span of a tool call a child run served: from the child's
        start to its result, made now (the caller's executions in between were released
        while it waited), in the current execution's span, linked to the child's first
        run span (the child's spans are in this trace, under the span that started it)."""
        carrier = _trace_doc(await ctx.store.kv_get(key=_KEY.format(call.child_run_id))
                             ).get("run")
        links = []
        if isinstance(carrier, dict):
            linked = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
            if linked.is_valid:
                links.append(trace.Link(linked))
        end = int(call.ended_at * 1e9)
        span = self.tracer.start_span(
            f"execute_tool {call.tool}", kind=SpanKind.INTERNAL, links=links,
            start_time=min(int(call.started_at * 1e9), end),
            attributes={"gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": call.tool, "tether.run_id": ctx.run_id,
                        "tether.position": call.position,
                        "tether.child_run_id": call.child_run_id})
        if call.child_status != "completed":
            # (As the caller receives it: RunFailed, whose message names no payload.)
            span.set_status(Status(StatusCode.ERROR, f"RunFailed: child run "
                                   f"{call.child_run_id!r} ended {call.child_status}"))
            span.set_attribute("error.type", "RunFailed")
        span.end(end_time=end)


def _record_error(span: Span, error: BaseException, hidden: bool) -> None:
    """Status ERROR and the exception as an event. With ``hidden`` (the app has a payload
    hook: encryption, redaction) only the error's type and where it was raised: its
    message may hold what the hook protects (an API key, a customer's data), and spans
    leave the process unencrypted, as the logs do, which name only the type too."""
    kind = type(error).__name__
    # (The OpenTelemetry semantic conventions' attribute for an operation that failed,
    # which backends group errors by: a failed or blocked run's span had only its
    # status and event until 2026-12-06, its steps' spans had it.)
    span.set_attribute("error.type", kind)
    if not hidden:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{kind}: {error}"))
        return
    # The frames only: the last line of a formatted traceback is the message, and a
    # chained exception's (``raise ... from``) would be printed too.
    frames = "".join(traceback.format_tb(error.__traceback__))
    span.record_exception(error, attributes={
        "exception.message": f"{kind} (message not recorded: the app has a payload hook)",
        "exception.stacktrace": f"Traceback (most recent call last):\n{frames}{kind}"})
    span.set_status(Status(StatusCode.ERROR, kind))


def _carrier_of(span: Span) -> dict[str, str]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def _span_context(carrier: Any) -> trace.SpanContext | None:
    """The span context in a stored carrier, or None for none or an invalid one."""
    if not isinstance(carrier, dict):
        return None
    found = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
    return found if found.is_valid else None


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _carrier(span: Span) -> str:
    return json.dumps(_carrier_of(span))


def _trace_doc(stored: tuple[str, int] | None) -> dict[str, Any]:
    """A run's shared trace value (``TRACE_KEY``) as a dict (empty if none or not one)."""
    if stored is None:
        return {}
    try:
        loaded = json.loads(stored[0])
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _describe(step: str) -> tuple[str, dict[str, Any]]:
    """The span name and first attributes of a step, by the AI layer's step names."""
    if step.startswith("llm:"):
        spec = step[4:]
        provider, _, model = spec.partition(":")
        if not model:
            provider, model = "", spec
        attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
        if provider:
            attrs["gen_ai.provider.name"] = provider
            attrs["gen_ai.system"] = provider
        return f"chat {model}", attrs
    # Model requests of the framework integrations (tether.integrations), metered steps
    # whose record says the answering model, tokens and cost (see _llm_result).
    if step.startswith("openai_agents:model:"):
        model = step[len("openai_agents:model:"):]
        return f"chat {model}", {"gen_ai.operation.name": "chat",
                                 "gen_ai.request.model": model}
    found = _PYDANTIC_AI_MODEL.fullmatch(step)
    if found is not None:
        attrs = {"gen_ai.operation.name": "chat"}
        provider, _, model = (found.group(1) or "").partition(":")
        if not model:
            provider, model = "", provider
        if model:
            attrs["gen_ai.request.model"] = model
        if provider:
            attrs["gen_ai.provider.name"] = provider
            attrs["gen_ai.system"] = provider
        return f"chat {model}" if model else "chat", attrs
    for marker in ("openai_agents:tool:", ".call_tool:"):
        if marker in step:
            tool = step.split(marker, 1)[1]
            return f"execute_tool {tool}", {"gen_ai.operation.name": "execute_tool",
                                            "gen_ai.tool.name": tool}
    if ".tool:" in step:
        tool = step.split(".tool:", 1)[1]
        return f"execute_tool {tool}", {"gen_ai.operation.name": "execute_tool",
                                        "gen_ai.tool.name": tool}
    if step.startswith("mcp:") and step.endswith(".call_tool"):
        return f"execute_tool {step}", {"gen_ai.operation.name": "execute_tool",
                                        "gen_ai.tool.name": step}
    return f"step {step}", {}


def _llm_result(span: Span, value: Any, name: str) -> None:
    """GenAI response attributes from a durable LLM call's record."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if not isinstance(value, dict):
        return
    if not isinstance(value.get("reply"), dict):
        if isinstance(value.get("usage"), dict) and "result" in value:
            _metered_result(span, value, name)
        return
    reply = value["reply"]
    usage = reply.get("usage") or {}
    if reply.get("model"):
        span.set_attribute("gen_ai.response.model", str(reply["model"]))
    if reply.get("raw_id"):
        span.set_attribute("gen_ai.response.id", str(reply["raw_id"]))
    if reply.get("finish_reason"):
        span.set_attribute("gen_ai.response.finish_reasons", [str(reply["finish_reason"])])
    span.set_attribute("gen_ai.usage.input_tokens", int(usage.get("input_tokens", 0)))
    span.set_attribute("gen_ai.usage.output_tokens", int(usage.get("output_tokens", 0)))
    if "cost_usd" in value:
        span.set_attribute("tether.cost_usd", float(value["cost_usd"]))
    _failed_attempts(span, value.get("failed"))


def _failed_attempts(span: Span, failed: Any) -> None:
    """What a call's failed attempts were paid (a record's ``failed``: streams cut
    midway), apart from the answer's usage above, and how many of those tokens are
    estimates (the provider had not told them)."""
    if not isinstance(failed, dict):
        return
    for key, attribute in (("tokens", "tether.failed_attempts.tokens"),
                           ("estimated", "tether.failed_attempts.estimated_tokens")):
        count = failed.get(key)
        if isinstance(count, int) and not isinstance(count, bool) and count:
            span.set_attribute(attribute, count)
    usd = failed.get("usd")
    if isinstance(usd, (int, float)) and not isinstance(usd, bool) and usd:
        span.set_attribute("tether.failed_attempts.cost_usd", float(usd))


def _metered_result(span: Span, value: dict[str, Any], name: str) -> None:
    """GenAI response attributes from a metered call's record (``tether.ai.MeteredModel``:
    the framework integrations' model requests)."""
    usage = value["usage"]
    model = value.get("model")
    if isinstance(model, str) and model:
        span.set_attribute("gen_ai.response.model", model)
        if name == "chat":  # the request named no model (pydantic-ai's default model)
            span.update_name(f"chat {model}")
    span.set_attribute("gen_ai.usage.input_tokens", int(usage.get("input_tokens") or 0))
    span.set_attribute("gen_ai.usage.output_tokens", int(usage.get("output_tokens") or 0))
    if "cost_usd" in value:
        span.set_attribute("tether.cost_usd", float(value["cost_usd"]))
    _failed_attempts(span, value.get("failed"))


_installed: list[OtelObserver] = []


def instrument(tracer_provider: trace.TracerProvider | None = None) -> OtelObserver:
    """Emit spans for the runs this process executes (workers, embedded mode).

    Returns the observer; ``uninstrument(observer)`` removes it. Called again for the
    same tracer provider (e.g. from a module imported twice, or from each app's setup)
    it returns the observer already installed: a second one doubled every span."""
    for installed in _installed:
        if installed.tracer_provider is tracer_provider:
            _observe.add_observer(installed)  # (a no-op unless removed from _observe)
            return installed
    observer = OtelObserver(tracer_provider)
    _observe.add_observer(observer)
    _installed.append(observer)
    return observer


def uninstrument(observer: OtelObserver | None = None) -> None:
    """Stop emitting spans (one observer, or every one ``instrument`` installed)."""
    for o in [observer] if observer is not None else list(_installed):
        _observe.remove_observer(o)
        if o in _installed:
            _installed.remove(o)
