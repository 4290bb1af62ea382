"""The extension interface: what integrations build on.

``tether.ai`` and the agent-framework integrations are written against this module and
the public ``tether`` API only, as any user's integration would be; nothing outside the
engine imports its private modules (an import-linter contract checks it). See
``docs/extending.md``.

What an integration gets here:

- **a step built at call time** (:func:`step`): a journaled operation whose body is
  made per call (a closure over the call's live inputs) instead of registered with
  ``@app.step``. Replay matches an operation by kind and name only, so nothing needs to
  be registered and one integration object can serve every app of a process;
- **the current run's identity** (:func:`current_run`, :func:`current_step`,
  :func:`in_workflow`);
- **run metrics** (:func:`add_metrics`, and ``on_replay`` on :func:`step` for what a
  recorded result saved);
- **live events** for observers (:meth:`Run.publish`, read by ``App.events``);
- **shared state** across workers and hosts (:class:`SharedState`: versioned keys,
  content-addressed blobs and rate limits, kept in the store);
- **per-execution memory** (:meth:`Run.memory`): plain Python state for one execution
  of a run's code, rebuilt by replay after a crash or a release;
- **a tool call served by a child run** (:func:`child_tool_result`): the wait for the
  child's result, which telemetry shows as the tool's call;
- **what a parent hands down to its child** (:func:`start_child`'s ``inherit``, read
  by the child as :attr:`Run.inherited`): stored with the child's input, so it is the
  same in every execution of the child (a budget's share, say).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tether._codec import Codec
from tether._definitions import StepDef
from tether._operations import ChildHandle, _ctx, _start_child, child_wait, run_step, run_sync_step
from tether._replay import RunContext, StepInfo
from tether._replay import current_run as _current_run
from tether._replay import current_step as _current_step
from tether._retry import DEFAULT_RETRY, RateLimit, RetryPolicy
from tether._show import opened_events
from tether._types import RunRecord
from tether._types import check_name as _check_name
from tether.errors import ConfigError, OutsideRun, PayloadTooLarge

if TYPE_CHECKING:
    from tether._app import App
    from tether.store import Store

__all__ = [
    "OnRecorded",
    "OnReplay",
    "Run",
    "RunRecord",
    "SharedState",
    "StepInfo",
    "add_metrics",
    "child_tool_result",
    "current_run",
    "current_step",
    "in_workflow",
    "runs_awaiting_approval",
    "shared_state",
    "start_child",
    "step",
]

T = TypeVar("T")

#: Called with a result answered from the journal instead of executed; returns metrics
#: to add to the run (counted at most once per position over the run's life).
OnReplay = Callable[[Any], dict[str, float] | None]

#: Called with a successful result the journal answers, when the step is called (before
#: it is delivered).
OnRecorded = Callable[[Any], None]


class SharedState(Protocol):
    """State shared by every worker and host of one store (a provider's circuit
    breaker, its rate limits, content-addressed conversation texts).

    Keys are free text; prefix them with your integration's name (``llm.breaker:...``).
    Every method is atomic across processes and hosts.
    """

    async def kv_get(self, *, key: str) -> tuple[str, int] | None:
        """The value of ``key`` and its version, or ``None`` if it was never set."""
        ...

    async def kv_cas(self, *, key: str, value: str, version: int | None, now: float) -> bool:
        """Compare-and-set: with ``version=None`` insert ``key`` if absent; else replace it
        only if its version is still ``version`` (the version then goes up by one).
        True if written."""
        ...

    async def blob_put(self, *, blobs: dict[str, str]) -> None:
        """Store content-addressed texts (the key is a digest of the text); a key that is
        stored already is left as it is. A run's view (``Run.shared``) stores them
        through the app's payload hook, under the hook's keyed digest if it has one."""
        ...

    async def blob_get(self, *, keys: list[str]) -> dict[str, str]:
        """The texts stored under ``keys`` (missing keys are absent from the result).
        A run's view (``Run.shared``) reads what its ``blob_put`` stored, decoded.

        Raises:
            PayloadError: (a run's view) the payload hook cannot decode a text: the
                execution is handed back as for any payload it cannot read.
        """
        ...

    async def rate_acquire(self, *, key: str, limit: float, period: float, amount: float,
                           now: float) -> float:
        """Take ``amount`` from the token bucket ``key`` (``limit`` per ``period``
        seconds, refilled continuously, full at first use). Returns 0.0 when taken;
        else the seconds until ``amount`` will be available, taking nothing."""
        ...


class _RunShared:
    """A run's view of the shared state: ``blob_put`` records the run as a referrer of
    the texts (one object per execution of the run, so per-store caches keyed by it,
    such as tether.ai's "already stored" set, cover this run's references). The texts
    pass through the run's payload hook (``Codec.seal_blobs`` / ``open_blobs``)."""

    def __init__(self, store: Store, run_id: str, codec: Codec) -> None:
        self._store = store
        self._run_id = run_id
        self._codec = codec

    async def kv_get(self, *, key: str) -> tuple[str, int] | None:
        return await self._store.kv_get(key=key)

    async def kv_cas(self, *, key: str, value: str, version: int | None, now: float) -> bool:
        return await self._store.kv_cas(key=key, value=value, version=version, now=now)

    async def blob_put(self, *, blobs: dict[str, str]) -> None:
        await self._store.blob_put(blobs=dict(self._codec.seal_blobs(blobs)),
                                   run_id=self._run_id)

    async def blob_get(self, *, keys: list[str]) -> dict[str, str]:
        return await self._codec.open_blobs(self._store.blob_get, keys)

    async def rate_acquire(self, *, key: str, limit: float, period: float, amount: float,
                           now: float) -> float:
        return await self._store.rate_acquire(key=key, limit=limit, period=period,
                                              amount=amount, now=now)


def _frozen(value: Any) -> Any:
    """``value`` (decoded JSON) read-only all the way down: each object a read-only
    mapping, each array a tuple."""
    if isinstance(value, dict):
        return MappingProxyType({key: _frozen(v) for key, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


class Run:
    """The run whose code executes here, as an integration sees it.

    Obtained from :func:`current_run`; valid while that execution of the run lasts
    (do not keep it across runs).
    """

    __slots__ = ("_ctx",)

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx

    def __repr__(self) -> str:
        return f"Run(run_id={self.run_id!r}, workflow={self.workflow!r})"

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._ctx.run_id

    @property
    def workflow(self) -> str:
        """The name of the run's workflow."""
        return self._ctx.workflow.name

    @property
    def fencing_token(self) -> int:
        """The executing worker's fencing token (grows on every takeover of the run)."""
        return self._ctx.lease.fencing_token

    @property
    def shared(self) -> SharedState:
        """State shared across workers, in the run's store. Texts this run stores with
        ``blob_put`` are recorded as referenced by it: retention deletes a text only once
        no remaining run references it."""
        return self.memory(_RunShared, lambda: _RunShared(self._ctx.store, self.run_id,
                                                            self._ctx.codec))

    def clock(self) -> float:
        """The engine's clock, in seconds since the epoch. Not journaled: use it for
        bookkeeping outside the journal (breakers, limits), and ``tether.now()`` for
        time that workflow logic depends on."""
        return self._ctx.clock.now()

    @property
    def inherited(self) -> Mapping[str, Any]:
        """What the run's parent handed down to integrations when it started it
        (:func:`start_child`'s ``inherit``; empty for any other run). Part of the run's
        input: the same in every execution of the run, whatever crashed.

        Read-only all the way down: its objects are read-only mappings and its arrays
        tuples (until 2026-12-07 only the outer mapping was, and code could change a
        nested one, what every later read of this execution saw, where a replay read
        the stored value). It encodes as JSON as it is: pass it, or a part of it, to
        :func:`start_child`'s ``inherit``, a step or a result."""
        frozen: Mapping[str, Any] = _frozen(self._ctx.inherited)
        return frozen

    def memory(self, key: object, factory: Callable[[], T]) -> T:
        """Per-execution state under ``key`` (built by ``factory`` on first use).

        It lives as long as this execution of the run's code: a crash or a release
        drops it, and replay rebuilds it by running the same code again, so keep only
        what the workflow code derives from journaled results.
        """
        memory = self._ctx.memory
        if key not in memory:
            memory[key] = factory()
        value: T = memory[key]
        return value

    def store_with_entry(self, blobs: Mapping[str, str]) -> int:
        """Store content-addressed texts (the key is a digest of the text) with the
        running step's journal entry: in the transaction that writes the step's next
        entry (its result, or a failed attempt's), recorded as referenced by this run as
        ``shared.blob_put`` records them. For the texts a step's journaled arguments
        name (a durable LLM call's prompt): its entry never names a text that is not
        stored, and the step makes no commit of its own for them. Texts this execution
        of the run stored so already are left out. Call it from the step's body, before
        anything that can fail; returns how many texts were staged. Keys are the SHA-256
        of each text (``shared.blob_get`` reads them back by it): with a payload hook
        each is stored through the hook (slot ``"blob"``), under its keyed digest if it
        has one.

        Raises:
            OutsideRun: not in a step's body of this run.
        """
        info = _current_step.get()
        if info is None or info.run_id != self._ctx.run_id:
            raise OutsideRun("tether.ext.Run.store_with_entry()", "a step's body")
        return self._ctx.stage_blobs(info.position, blobs)

    def argument_texts(self, blobs: Mapping[str, str]) -> None:
        """The content-addressed texts the arguments of the operation about to be called
        name (a durable LLM call's prompt: its journaled ``messages`` is a digest). A
        worker ignores them (``store_with_entry`` stores them); the replay check
        (``tether.testing.replay(compare_args=True)``) keeps them, to say which message of
        a changed prompt differs from the recorded one. Cheap: call it before the step."""
        self._ctx.argument_texts(blobs)

    def add_metrics(self, deltas: Mapping[str, float]) -> None:
        """Add numbers to the run's metrics; see :func:`add_metrics`."""
        _add_metrics(self._ctx, _finite_deltas(deltas))

    def set_metrics(self, values: Mapping[str, float | None]) -> None:
        """Set numbers of the run's metrics to ``values`` (``None`` removes a key), for
        a figure that is a state, not a count (``tether.ai``'s budget limits): from
        workflow code, a replay that sets the same values again writes nothing, and one
        that sets them on its way to a later change writes the latest. Persisted with
        the run's metrics (coalesced, as ``add_metrics``), never journaled. Keys that
        start with ``_`` are the run's own: ``App.get_run`` and ``tether show`` leave
        them out of its metrics.

        Raises:
            ValueError: a value is not a finite number (nor ``None``), or a name is not
                text or holds a NUL character (nothing is set).
        """
        checked = _finite_deltas({k: v for k, v in values.items() if v is not None},
                                 "tether.ext.Run.set_metrics()")
        self._ctx.set_metrics({k: (None if v is None else checked[k])
                               for k, v in values.items()})

    async def run_metrics(self, run_id: str) -> dict[str, float]:
        """The metrics of another run of this store (a child's spend, to roll it into
        this run's). Not journaled: read it in a step's body, so that replay returns
        what was read. ``{}`` for an unknown run.

        Raises:
            StoreError: the store cannot be read.
        """
        record = await self._ctx.store.run_get(run_id)
        return dict(record.metrics) if record is not None else {}

    def events(self, *, ready: Callable[[], None] | None = None) -> AsyncIterator[str]:
        """The run's live events from now on (what ``App.events`` gives its observers:
        JSON texts), from the run's own store, until the caller stops iterating. For
        code that must notice something while the run executes (an agent watching for
        an interrupt). Not replayed, not journaled.

        ``ready``, if given, is called once the subscription is in place (during the
        first ``__anext__``, which then waits for an event): every event published
        after that is delivered. What came before it is not: read the store after
        ``ready`` (``signal_pending``) to learn of that."""
        return opened_events(self._ctx.codec,
                             self._ctx.store.run_events(self._ctx.run_id, ready=ready))

    async def signal_pending(self, name: str) -> bool:
        """Whether a signal ``name`` sent to this run waits, not yet taken by a
        ``wait_for_signal``. A read of the store, not journaled and consuming nothing:
        for code that watches (an agent's turn, which is cut by the steps' journaled
        outcomes), never for a decision the workflow's replay must repeat.

        Raises:
            StoreError: the store cannot be read.
        """
        return await self._ctx.store.signal_pending(run_id=self._ctx.run_id, name=name)

    async def publish(self, event: Mapping[str, Any]) -> None:
        """Send a live event (a JSON object) to the run's observers (``App.events``,
        ``tether serve``'s streams). Not replayed; kept in the run's event log so
        ``tether serve``'s streams can resume after a reconnect, through the app's
        payload hook (encrypted with ``AesGcm``) like the run's payloads.

        Raises:
            StoreError: the event could not be sent (callers usually log and go on).
            PayloadTooLarge: the event is over 64 KiB as stored (with a payload hook,
                once encoded: its message gives both sizes).
        """
        # Through the app's payload hook: what a run publishes (a streamed model answer)
        # is kept in the store's event log, and is as private as the reply it becomes.
        text = json.dumps(event)
        data = self._ctx.codec.encode_event(text)
        try:
            await self._ctx.store.run_publish(run_id=self._ctx.run_id, data=data)
        except PayloadTooLarge as exc:
            if data is text:
                raise
            # The limit counts the stored text, the hook's output: an event of 49,109
            # bytes was refused as "65537 bytes", a size its publisher never made.
            raise PayloadTooLarge(
                f"live event of run {self._ctx.run_id!r} ({len(text.encode()):,} bytes of "
                f"JSON, {exc.size:,} once encoded by the app's payload hook, which the "
                "limit counts)", exc.size, exc.limit) from None


def current_run() -> Run | None:
    """The run whose workflow code or step executes here, or ``None`` outside runs."""
    ctx = _current_run.get()
    return None if ctx is None else Run(ctx)


def current_step() -> StepInfo | None:
    """Inside a step's body: which step, position and attempt; else ``None``."""
    return _current_step.get()


def in_workflow() -> bool:
    """True in workflow code, where an operation is journaled; False outside runs and
    inside a step's body (where an operation is a plain call)."""
    return _current_run.get() is not None and _current_step.get() is None


def add_metrics(deltas: Mapping[str, float]) -> None:
    """Add numbers to the running run's metrics (tokens, cost...), persisted with the run
    and shown by ``App.get_run`` and ``tether show``. Thread-safe (plain ``def`` steps run
    in threads).

    Called from a step, it counts what really happened on this attempt: a crash after
    the work but before the journal commit counts it twice, as it was paid twice.
    Called from workflow code, it counts once: a replay of that code (after a release
    or a crash) adds nothing, as long as the operation that follows the call was
    journaled before the replay began.

    Raises:
        OutsideRun: no run executes here.
        ValueError: a value is not a finite number, or a name is not text or holds a NUL
            character (nothing is added).
    """
    ctx = _current_run.get()
    if ctx is None:
        raise OutsideRun("tether.ext.add_metrics()", "a workflow or step")
    _add_metrics(ctx, _finite_deltas(deltas))


def _add_metrics(ctx: RunContext, deltas: dict[str, float]) -> None:
    """Add ``deltas`` unless workflow code is replaying what an earlier execution ran.

    Workflow code runs again from the top after every release (a sleep, a signal wait,
    a retry backoff): until 2026-12-06 numbers added there were added again by every
    replay (a run that slept, waited for its child and ended counted 5 tokens as 15).
    Code before a position recorded when this execution began is replayed, and adds
    nothing; a step's body counts each attempt, as before."""
    if _current_step.get() is None and ctx.position <= ctx.last_recorded:
        return
    ctx.add_metrics(deltas)


def _finite_deltas(deltas: Mapping[str, float],
                   what: str = "tether.ext.add_metrics()") -> dict[str, float]:
    """``deltas`` as floats, checked here, in the caller's code. The store refuses a run's
    metrics holding NaN or an infinity (they are JSON, read by ``/metrics``), but only
    when they are written, after the step returned: the refusal then counted as a worker
    crash, so the step ran again (its side effects with it) until the run failed with
    "the worker crashed 5 times", and every later write of the run's metrics failed."""
    out: dict[str, float] = {}
    for key, value in deltas.items():
        if not isinstance(key, str) or "\x00" in key:
            # (a NUL in a key is JSON PostgreSQL's json and jsonb refuse: the run page's
            # sums of its parent's children and /metrics then failed on that run)
            raise ValueError(f"{what}: a metric's name must be text "
                             f"without NUL characters, got {key!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number):
            raise ValueError(f"{what}: metric {key!r} must be a finite "
                             f"number, got {value!r}")
        out[key] = number
    return out


def step(name: str, fn: Callable[..., Any], /, *args: Any, retry: RetryPolicy | None = None,
         on_replay: OnReplay | None = None, on_recorded: OnRecorded | None = None,
         rate_limit: RateLimit | None = None, return_annotation: Any = None,
         **kwargs: Any) -> Awaitable[Any]:
    """Run ``fn(*args, **kwargs)`` as a step operation named ``name``.

    In workflow code it takes the run's next position *now* (at call time, so
    ``asyncio.gather`` stays deterministic), runs ``fn`` once under ``retry`` (default
    ``tether.RetryPolicy()``), journals its outcome, and on replay returns the record
    without calling ``fn``. The arguments are journaled (they must be JSON), so pass the
    call's small identity as arguments and close over the large live values in ``fn``.
    Outside a workflow, or inside a step's body, it is a plain call of ``fn``.

    ``name`` is what the determinism check compares: keep it stable across deploys
    and distinct per kind of call (prefix it with your integration, ``llm:openai:...``).
    ``on_recorded(result)`` is called with a successful result the journal answers as
    soon as the step is called, before the result is delivered (in a run of several
    tasks a recorded result waits for its turn while the live steps of other tasks
    run): what those steps must know already, e.g. an LLM call's cost for the budget
    of its siblings. Keyword arguments named like this function's options (``retry``,
    ``on_replay``, ``on_recorded``, ``rate_limit``, ``return_annotation``) are taken as
    options, not passed to ``fn``.

    Raises:
        ConfigError: ``fn`` is not callable, or ``name`` is empty (``InvalidName`` in a
            run: also over 200 characters or holding control characters).
        StepError: what ``fn`` raised last, once the retries are exhausted (also an
            instance of the original class when it is importable).
    """
    if not name:
        raise ConfigError("tether.ext.step() needs a non-empty operation name")
    if not callable(fn):
        raise ConfigError(f"tether.ext.step() needs a function, got {type(fn).__name__}")
    is_async = _is_async(fn)
    ctx = _current_run.get()
    if ctx is None or _current_step.get() is not None:
        if is_async:
            result: Awaitable[Any] = fn(*args, **kwargs)
            return result
        return run_sync_step(fn, args, kwargs)
    if ctx.journal.get(ctx.position) is None:  # (a recorded one replays as it was made)
        _check_name("step name", name)
    sdef = StepDef(name=name, fn=fn, retry=retry or DEFAULT_RETRY, is_async=is_async,
                   return_annotation=return_annotation, on_replay=on_replay,
                   on_recorded=on_recorded, rate_limit=rate_limit)
    return run_step(ctx, sdef, ctx.take_position(), args, kwargs)


def child_tool_result(handle: ChildHandle[T], tool: str) -> Awaitable[T]:
    """``handle.result()`` for a call of the tool ``tool`` that the child run serves (an
    agent's tool that is a workflow or another agent): the same operation, taken at
    call time, and with telemetry (``tether.otel``) an ``execute_tool {tool}`` span from
    the child's start to its result, as a function tool's step makes one; made by the
    execution that takes the result, never by a replay.

    Raises:
        RunFailed: the child failed or was cancelled.
        OutsideRun: not in workflow code.
    """
    ctx = _current_run.get()
    if ctx is None or _current_step.get() is not None:
        return handle.result()  # (raises OutsideRun, as it does)
    return child_wait(ctx, ctx.take_position(), handle.run_id, handle._annotation, tool)


def start_child(workflow: Callable[..., Awaitable[T]] | str, /, args: Sequence[Any] = (),
                kwargs: Mapping[str, Any] | None = None, *, queue: str | None = None,
                inherit: Mapping[str, Any] | None = None) -> Awaitable[ChildHandle[T]]:
    """``tether.start_child(workflow, *args, queue=queue, **kwargs)``, handing
    ``inherit`` down to the child's integrations (:attr:`Run.inherited`).

    ``inherit`` is a JSON object, stored with the child's input (in the transaction that
    creates the child, and in this run's journal as the operation's arguments): the
    child reads the same value in every execution, and a replay of this run, which
    answers the start from the journal, hands nothing down again. Key it by your
    integration's name (``tether.ai.budget``). The child's workflow function never
    sees it.

    Raises:
        OutsideRun: not in workflow code.
        ConfigError: ``workflow`` is not a workflow.
        PayloadError: ``inherit`` or the arguments are not JSON.
    """
    ctx = _ctx("ext.start_child")
    return _start_child(ctx, ctx.take_position(), workflow, tuple(args), dict(kwargs or {}),
                        queue, None, "cancel", inherit)


async def shared_state(app: App) -> SharedState:
    """The shared state of ``app``'s store (opened if need be), for code outside runs:
    tools, admin scripts, tests.

    Raises:
        ConfigError: the App is closed.
    """
    from tether._app import worker_host

    return await worker_host(app).open()


async def runs_awaiting_approval(app: App, *, limit: int = 1000,
                                 after: tuple[float, str] | None = None) -> list[RunRecord]:
    """The ``waiting`` runs of ``app``'s store (opened if need be) released on the signal
    ``approval`` alone, oldest first by (created_at, run_id), after the ``after`` cursor
    (the last run's of the previous page): what ``tether.ai.pending_approvals`` reads,
    through an index of these runs alone, so it costs the same however many other runs
    wait.

    Raises:
        ConfigError: the App is closed.
    """
    from tether._app import worker_host

    store = await worker_host(app).open()
    return await store.run_list_awaiting_approval(limit=limit, after=after)


def _is_async(fn: Callable[..., Any]) -> bool:
    # iscoroutinefunction sees through functools.partial; an object whose __call__ is
    # an ``async def`` counts too.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))  # noqa: B004
