"""Observers of executed work: the seam telemetry hangs on (``tether.otel``).

The engine calls these helpers only where work really executes: a run's code running
on a worker, a step attempt, a child run being started. An operation answered from the
journal during replay never reaches them, so an observer that makes a span per call
cannot multiply spans by replaying (a run resumed at step 40 reports steps 40 onwards).

With no observer installed every helper is one ``if`` and an ``await`` of what it wraps.
Observers must not raise: an exception from one is logged and ignored, because
telemetry must never change what a run does.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tether._clock import utc_datetime
from tether.errors import StepError
from tether.store._lifecycle import TRACE_KV_PREFIX

if TYPE_CHECKING:
    from tether._replay import RunContext, StepInfo
    from tether.store._port import Store

__all__ = ["MAX_LINKS", "TRACE_KEY", "ChildTool", "Observer", "add_observer",
           "add_trace_link", "adopt_trace_context", "child_starting", "child_tool_ended",
           "error_text", "hides_error_messages", "remove_observer", "runs_closing",
           "runs_ended", "runs_started", "runs_starting", "step", "step_failed",
           "step_settled", "trace_carrier"]

log = logging.getLogger("tether.observe")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChildTool:
    """An agent's tool call served by a child run (``tether.ai``'s workflow and agent
    tools), whose result this execution takes: the call lasted from the child's start to
    now, whatever executions of the caller it spanned (it was released meanwhile)."""

    tool: str
    #: The position of the wait for the child's result in the caller's journal.
    position: int
    child_run_id: str
    #: When the child was started, and when its result is taken (epoch seconds, the
    #: run's clock).
    started_at: float
    ended_at: float
    #: How the child ended: ``completed``, ``failed`` or ``cancelled``.
    child_status: str


class Observer(Protocol):
    """What an observer implements (all of it; return ``None`` tokens when unused)."""

    async def run_started(self, ctx: RunContext) -> Any:
        """The run's code starts executing on this worker (first time or a replay);
        returns a token handed back to ``run_ended``."""

    def run_ended(self, token: Any, ctx: RunContext, error: BaseException | None) -> None:
        """The run's code stopped: returned (``error`` None), raised, or was unwound to
        wait or stop (``error`` is Tether's internal ``BaseException``). Called once the
        worker recorded how the run ended, if it did (``ctx.ended``, the status the
        store took)."""

    async def run_closing(self, token: Any, ctx: RunContext) -> None:
        """The run's code stopped and this worker still holds the run: its execution's
        span will be ended here (``run_ended``), not by a later execution. Optional: an
        observer without it is skipped."""

    def step_started(self, ctx: RunContext, info: StepInfo) -> Any:
        """One attempt of a step starts executing (never for a journaled step)."""

    def step_ended(self, token: Any, value: Any, error: BaseException | None) -> None:
        """The attempt returned ``value`` or raised ``error``."""

    def step_settled(self, ctx: RunContext, position: int, superseded: bool) -> None:
        """The journal write of the result of the attempt at ``position`` that returned
        (``step_ended`` with no error) ended: the result stands (``superseded`` False),
        or it was refused (True: another worker had taken the run over, and runs the
        step again). Not called when the worker cannot tell (the run's end is then the
        last word). Optional: an observer without it is skipped."""

    async def child_starting(self, ctx: RunContext, child_id: str) -> None:
        """``ctx`` is about to start the child run ``child_id`` (for trace context)."""

    async def runs_starting(self, store: Store, runs: Sequence[tuple[str, str, str]],
                            now: float) -> None:
        """This process is about to create top-level runs (``App.start``, ``start_many``,
        ``fork``, a schedule's tick), each ``(run_id, workflow, queue)``, before any
        worker can claim them (for trace context). Optional: an observer without it is
        skipped."""

    async def child_tool_ended(self, ctx: RunContext, call: ChildTool) -> None:
        """``ctx`` takes the result of a tool call that a child run served (once: a
        replay answers it from the journal)."""


_observers: list[Observer] = []
#: The installed observers (the engine skips ``step`` when there are none).
observers = _observers

#: The shared value (``Store.kv_*``) holding a run's W3C trace context, a JSON carrier
#: (``{"traceparent": ..., "tracestate"?: ...}``): written by whoever roots the run's
#: trace (a caller of the HTTP API, a parent run, the process that started the run, or
#: for a run started where telemetry was off its first execution) and read by every
#: execution of the run (``tether.otel``).
TRACE_KEY = TRACE_KV_PREFIX + "{}"

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def trace_carrier(traceparent: str | None, tracestate: str | None = None
                  ) -> dict[str, str] | None:
    """A W3C trace-context carrier from a caller's headers, or None for a missing or
    invalid ``traceparent`` (which the W3C recommendation says to ignore: the run then
    roots its own trace)."""
    if not traceparent:
        return None
    m = _TRACEPARENT.fullmatch(traceparent.strip())
    if m is None:
        return None
    version, trace_id, parent_id, _flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 \
            or parent_id == "0" * 16:
        return None
    carrier = {"traceparent": traceparent.strip()}
    if tracestate and len(tracestate) <= 512 and tracestate.isprintable():
        carrier["tracestate"] = tracestate.strip()
    return carrier


async def adopt_trace_context(store: Store, run_id: str, carrier: dict[str, str],
                              now: float) -> bool:
    """Make ``carrier`` the parent of run ``run_id``'s spans, before the run first
    executes; False if the run's trace context was set already (it is kept)."""
    return await store.kv_cas(key=TRACE_KEY.format(run_id), value=json.dumps(carrier),
                              version=None, now=now)


#: Links kept for a run's next execution at most (older ones are dropped first).
MAX_LINKS = 16


async def add_trace_link(store: Store, run_id: str, carrier: dict[str, str],
                         now: float) -> bool:
    """Link the next execution of run ``run_id`` to the span in ``carrier`` (a caller
    that sent the run a signal or an approval): kept under ``"links"`` in the run's
    trace-context value, which that execution reads anyway and then clears. False if
    concurrent writers kept this one from being added."""
    key = TRACE_KEY.format(run_id)
    for _ in range(8):
        current = await store.kv_get(key=key)
        doc: dict[str, Any] = {}
        if current is not None:
            try:
                loaded = json.loads(current[0])
            except ValueError:
                loaded = None
            if isinstance(loaded, dict):
                doc = loaded
        links = [c for c in doc.get("links") or [] if isinstance(c, dict)]
        doc["links"] = [*links[-(MAX_LINKS - 1):], carrier]
        if await store.kv_cas(key=key, value=json.dumps(doc),
                              version=None if current is None else current[1], now=now):
            return True
    return False


def add_observer(observer: Observer) -> None:
    if observer not in _observers:
        _observers.append(observer)


def remove_observer(observer: Observer) -> None:
    if observer in _observers:
        _observers.remove(observer)


async def runs_started(ctx: RunContext) -> list[tuple[Observer, Any]]:
    """Tell the observers that the run's code starts; what ``runs_ended`` takes. The
    worker calls ``runs_ended`` once the run's end is recorded (``RunContext.ended``),
    so that a span's outcome is the status the store took, not the one the worker
    asked for (a block whose cancel the worker had not heard of ends cancelled)."""
    started = []
    for o in list(_observers):
        try:
            started.append((o, await o.run_started(ctx)))
        except Exception:
            log.exception("observer %r failed at run start", o)
    return started


async def runs_starting(store: Store, runs: Sequence[tuple[str, str, str]],
                        now: float) -> None:
    """Tell the observers that this process is about to create ``runs`` (``(run_id,
    workflow, queue)`` each), before it inserts them: their trace context is written
    here, in the starting process, so that no worker (which a SIGKILL may take) holds
    the only record of the trace's root. Callers skip it when ``observers`` is empty."""
    for o in list(_observers):
        hook = getattr(o, "runs_starting", None)
        if hook is None:  # (an observer written before the hook existed)
            continue
        try:
            await hook(store, runs, now)
        except Exception:
            log.exception("observer %r failed at run start", o)


async def runs_closing(started: list[tuple[Observer, Any]], ctx: RunContext) -> None:
    """Tell the observers ``runs_started`` told that the run's code stopped, before the
    worker records how (while no other worker can claim the run): each then knows that
    this execution's span ends in this process (``run_ended``)."""
    for o, token in reversed(started):
        hook = getattr(o, "run_closing", None)
        if hook is None:
            continue
        try:
            await hook(token, ctx)
        except Exception:
            log.exception("observer %r failed at run end", o)


def runs_ended(started: list[tuple[Observer, Any]], ctx: RunContext,
               error: BaseException | None) -> None:
    """Tell the observers ``runs_started`` told that the run's code stopped with
    ``error`` (None: it returned), in reverse order."""
    for o, token in reversed(started):
        try:
            o.run_ended(token, ctx, error)
        except Exception:
            log.exception("observer %r failed at run end", o)


async def step(ctx: RunContext, info: StepInfo, attempt: Awaitable[T]) -> T:
    """Await one executed attempt of a step under the observers."""
    if not _observers:
        return await attempt
    started = []
    for o in list(_observers):
        try:
            started.append((o, o.step_started(ctx, info)))
        except Exception:
            log.exception("observer %r failed at step start", o)
    try:
        value = await attempt
    except BaseException as exc:
        _end_steps(started, None, exc)
        raise
    _end_steps(started, value, None)
    return value


def _end_steps(started: list[tuple[Observer, Any]], value: Any,
               error: BaseException | None) -> None:
    for o, token in reversed(started):
        try:
            o.step_ended(token, value, error)
        except Exception:
            log.exception("observer %r failed at step end", o)


def step_settled(ctx: RunContext, position: int, superseded: bool) -> None:
    """Tell the observers how the write of a returned attempt's result (at
    ``position``) ended: it stands, or it was refused (``superseded``)."""
    for o in list(_observers):
        hook = getattr(o, "step_settled", None)
        if hook is None:  # (an observer written before the hook existed)
            continue
        try:
            hook(ctx, position, superseded)
        except Exception:
            log.exception("observer %r failed at a step's settling", o)


async def child_starting(ctx: RunContext, child_id: str) -> None:
    for o in list(_observers):
        try:
            await o.child_starting(ctx, child_id)
        except Exception:
            log.exception("observer %r failed at child start", o)


async def child_tool_ended(ctx: RunContext, call: ChildTool) -> None:
    for o in list(_observers):
        try:
            await o.child_tool_ended(ctx, call)
        except Exception:
            log.exception("observer %r failed at a child tool's end", o)


def hides_error_messages(ctx: RunContext) -> bool:
    """Whether the run's app has a payload hook (encryption, redaction): an error
    message may then hold what the hook protects, so logs and spans name only the
    error's type (telemetry leaves the process unencrypted, often for a vendor)."""
    return getattr(ctx.codec, "hook", None) is not None


def error_text(ctx: RunContext, error: BaseException) -> str:
    """``Type: message`` of an error of the run, for a log line: only the type when the
    app has a payload hook (``hides_error_messages``). A step's error that failed the
    run (a ``StepError``, rebuilt from the journal) is said as its step raised it, as
    ``tether show`` says it: ``ValueError: bad amount`` (until 2026-12-07
    ``StepError[ValueError]: ValueError: bad amount``, the type twice)."""
    if hides_error_messages(ctx):
        # Payloads are encrypted or redacted (App(payload_hook=...)): an error message
        # may hold what they protect, so the log names only the error's type.
        named = error.error_type if isinstance(error, StepError) else type(error).__name__
        return f"{named} (message not logged: the app has a payload hook)"
    try:
        err = (f"{error.error_type}: {error.message}" if isinstance(error, StepError)
               else f"{type(error).__name__}: {error}")
    except Exception:  # (its __str__ raises: the attempt is recorded all the same)
        err = f"{type(error).__name__} (str() failed)"
    # A lone surrogate (a file name decoded with surrogateescape) cannot be written by a
    # UTF-8 log stream: logged escaped, as the error is recorded.
    return err.encode("utf-8", "backslashreplace").decode("utf-8")


def step_failed(ctx: RunContext, info: StepInfo, error: BaseException,
                next_attempt_at: float | None) -> None:
    """Log a failed step attempt: the error, and when the next attempt is (or that
    there is none). Logged whether or not observers are installed."""
    where = f"run {ctx.run_id} position {info.position}"
    err = error_text(ctx, error)
    if next_attempt_at is None:
        log.warning("%s: step %s failed for good on attempt %d: %s", where, info.name,
                    info.attempt, err, extra={"run_id": ctx.run_id, "position": info.position,
                                              "attempt": info.attempt})
        return
    log.warning("%s: step %s attempt %d failed: %s; %s", where, info.name, info.attempt,
                err, next_attempt_words(next_attempt_at, ctx.clock.now()),
                extra={"run_id": ctx.run_id, "position": info.position,
                       "attempt": info.attempt})


def next_attempt_words(at: float, now: float) -> str:
    """When a failed step's next attempt is, for its log line: ``next attempt at T (in
    4.0 s)``, or ``next attempt now`` when it is due at once (no delay, or a delay less
    than the line's tenth of a second). Until 2026-12-07 that said "next attempt at T
    (in 0.0 s)", T a few milliseconds before the line's own time (the failure's, taken
    before the attempt was journaled)."""
    if at - now < 0.05:  # (what "in %.1f s" writes as 0.0)
        return "next attempt now"
    when = utc_datetime(at).isoformat(timespec="milliseconds")
    return f"next attempt at {when} (in {at - now:.1f} s)"
