"""App: the registry of workflow and step definitions, and the client façade over a
Store (start, get_run, cancel, worker). The composition root: it picks the backend."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from tether import _ids, _observe
from tether._budgets import entered_limits, kept_raise
from tether._clock import Clock, SyncedClock
from tether._codec import (
    DEFAULT_MAX_PAYLOAD,
    SLOT_ERROR,
    SLOT_INPUT,
    SLOT_JOURNAL,
    SLOT_RESULT,
    SLOT_SIGNAL,
    SLOT_STATUS,
    Codec,
    PayloadHook,
    result_slot,
)
from tether._definitions import StepDef, WorkflowDef, param_annotations, return_annotation
from tether._operations import run_step, run_sync_step
from tether._replay import INHERIT_KEY, current_run, current_step, inherited_of
from tether._retry import DEFAULT_RETRY, RateLimit, RetryPolicy
from tether._show import error_origin, opened_events, signal_wait_starts
from tether._types import (
    MAX_NAME,
    JournalEntry,
    RunInfo,
    RunRecord,
    RunStatus,
    check_cancel_reason,
    check_name,
    did_you_mean,
)
from tether._waiters import ResultWaiters
from tether.errors import (
    ConfigError,
    InvalidName,
    PayloadError,
    RunFailed,
    RunNotFound,
    StoreError,
    TetherError,
    WorkflowArgumentError,
    WorkflowNotFound,
)
from tether.store import SignalSent, Store, check_store_options, open_store, resolve_url
from tether.store._lifecycle import RetryReport, fork_version_dropped, version_dropped
from tether.store._values import check_queue_limit

if TYPE_CHECKING:
    from tether.worker import Worker

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


class _Registrable(Protocol):
    def register(self, app: App) -> Any: ...


A = TypeVar("A", bound=_Registrable)

_log = logging.getLogger("tether")

#: Signals also published to the run's live events (``{"type": "signal", "name"}``),
#: for code that must notice them while the run executes: ``tether.ai``'s
#: interruptible agents watch for ``interrupt`` during a turn. Other signals are only
#: stored (a run takes them at its next ``wait_for_signal``).
ANNOUNCED_SIGNALS = frozenset({"interrupt"})
_NO_INPUT: Any = object()


class _StepDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> Callable[P, Awaitable[R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, Awaitable[R]]: ...


def _same_def(old: Callable[..., Any], new: Callable[..., Any]) -> bool:
    """Whether ``new`` is the same ``def`` as ``old`` run again (one code object: a
    function defined inside another, made anew at each call)."""
    code = getattr(old, "__code__", None)
    return code is not None and code is getattr(new, "__code__", None)


def _already_registered(name: str, old: Callable[..., Any], new: Callable[..., Any], *,
                        kind: str = "workflow") -> str:
    """Why a second workflow (or step) of one name is refused, naming the first; and,
    when it is the same ``def`` run again (a workflow defined inside a test function,
    registered on an App of the module at every run of the test), what to do instead.
    Until 2026-12-06 the message named neither, and the second run of such a test failed
    on it. A step is refused only for another ``def``: until 2026-12-06 it replaced the
    first silently, and the journal, which records a step by its name, could not tell
    the two apart (replay would return one's recorded result to the other)."""
    where = f"{getattr(old, '__module__', '?')}.{getattr(old, '__qualname__', '?')}"
    if _same_def(old, new):
        return (f"a workflow named {name!r} is already registered, by this same definition "
                f"({where}) run before: a workflow defined inside a function (a test) "
                "registers again each time the function runs; register it on a new App "
                "each time (in tests, the `app` fixture of tether.testing), or define it "
                "at module level")
    return (f"a {kind} named {name!r} is already registered ({where}); give this one "
            f"another name (@app.{kind}(name=...))")


class RunHandle(Generic[R]):
    """A started run: its id, and a way to wait for its result."""

    def __init__(self, app: App, run_id: str, workflow: str | None = None, *,
                 created: bool | None = None) -> None:
        self.app = app
        self.run_id = run_id
        self.workflow = workflow
        #: From ``App.start`` and ``App.fork``: whether this call created the run
        #: (``False``: a run with this id existed, and nothing was started); ``None``
        #: where not known.
        self.created = created

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id!r})"

    async def status(self) -> RunStatus:
        return (await self.app.get_run(self.run_id)).status

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the run to end and return its result.

        Raises:
            RunFailed: the run ended failed, cancelled or blocked, or its payloads
                were erased (``tether erase``; status ``erased``).
            TimeoutError: ``timeout`` seconds passed first.
            PayloadError: its result (or error) is encrypted and this app has no
                payload hook.
        """
        if timeout is not None and timeout < 0:
            raise ConfigError("timeout must be >= 0 or None")
        app = self.app
        await app._open()
        if app._around_result is None:
            run = await app._waiters.result(self.run_id, timeout, app._subscribe)
            value: R = app._decode_result(run)
            return value
        # (decoded inside: a test environment explains a RunFailed too)
        async with app._around_result(self.run_id, timeout):
            run = await app._waiters.result(self.run_id, timeout, app._subscribe)
            value = app._decode_result(run)
        return value


class App:
    """Workflows and steps registered on one store.

    Args:
        url: ``sqlite:///path.db`` (default ``./tether.db``) or ``postgresql://...``;
            ``TETHER_DATABASE_URL`` overrides the default.
        clock: the time seam (tests pass a fake one). Default: the machine's clock,
            on PostgreSQL kept in step with the server's (``SyncedClock``).
        max_payload: size limit of one encoded payload in bytes (default 2 MiB).
        payload_hook: encrypt/compress stored payload text.
        store: an already built store (overrides ``url``).
        version: the code version (opt-in): recorded on each run this app starts; its
            workers claim only runs of this version or of none (see docs/operations.md).
        retention: finished runs older than this (seconds, a ``timedelta`` or text such
            as ``"30d"``, or a ``tether.Retention``) are purged in the background by this
            app's workers: every run of the store but those of this app's workflows that
            have a policy of their own (``@app.workflow(retention=)``), which wins.
        **store_options: options of the store built from ``url`` (SQLite:
            ``synchronous``, ``busy_timeout``...; PostgreSQL: ``pool_max``,
            ``query_timeout``...: see docs/postgres.md), checked by name here, before
            anything is connected.

    Raises:
        ConfigError: an unknown store option (the message lists the store's), store
            options together with ``store``, or a bad ``max_payload``, ``version`` (not
            a string, empty, or holding control characters: ``InvalidName``) or
            ``retention``.
    """

    def __init__(self, url: str | None = None, *, clock: Clock | None = None,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, payload_hook: PayloadHook | None = None,
                 store: Store | None = None, version: str | None = None,
                 retention: Any = None, **store_options: Any) -> None:
        self.url = store.url if store is not None else resolve_url(url)
        if store is not None and store_options:
            raise ConfigError(
                f"store options ({', '.join(sorted(store_options))}) apply to a store the "
                "App builds from its URL, not to App(store=...): pass them to open_store")
        # Named now, not at the first use of the store: nothing is connected yet.
        check_store_options(self.url, store_options)
        self._store: Store | None = store
        self._store_options = store_options
        self._opened = False
        self._closed = False
        self._open_lock: asyncio.Lock | None = None
        #: The long-lived process this App is (``serve``, ``mcp``: set by those
        #: commands), which its PostgreSQL store makes known to ``tether db copy`` and
        #: ``restore`` while open (``postgres._presence``). None: a script, a worker.
        self._process_kind: str | None = None
        self.clock: Clock = clock or SyncedClock()
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) \
                or max_payload < 1:
            raise ConfigError(f"max_payload must be a whole number of bytes >= 1, "
                              f"not {max_payload!r}")
        self.codec = Codec(max_payload=max_payload, hook=payload_hook)
        self._workflows: dict[str, WorkflowDef] = {}
        #: Workflows served as MCP tools: name -> "optional" | "task-only".
        self.mcp_exposed: dict[str, str] = {}
        self._steps: dict[str, StepDef] = {}
        #: Steps replaced by test doubles, by name (``tether.testing.TestEnv.mock_step``):
        #: a step of this name that this app's workers execute calls the double's
        #: function under the step's own policies, and its journal records the double's
        #: outcome. Read at each attempt (a double set while runs are in flight takes
        #: effect at their next attempt). Empty outside tests.
        self._step_mocks: dict[str, StepDef] = {}
        self._workers: set[Worker] = set()
        self._closing: asyncio.Future[None] | None = None
        self._waiters = ResultWaiters(self._read_runs, held=self._held_here)
        #: Entered around every ``RunHandle.result`` wait of this app: a ``TestEnv``
        #: skips its virtual time there, so a handle from ``env.app.start`` waits as one
        #: from ``env.start`` does (it waited in real time, which a timer of days never
        #: reached: the test hung). Given the run's id and the wait's timeout: a wait
        #: without one raises ``tether.testing.RunStuck`` once the run can never end.
        self._around_result: Callable[[str, float | None],
                                      contextlib.AbstractAsyncContextManager[None]] \
            | None = None
        self._unsubscribe: Callable[[], Awaitable[None]] | None = None
        self._subscribed = False
        self._host = WorkerHost(self)
        if version is not None and (not isinstance(version, str) or not version.strip()):
            raise ConfigError(f"version must be a non-empty string, not {version!r}")
        if version is not None:
            # A name like an id: with control characters it rewrote a terminal when
            # printed, and a NUL failed every start on PostgreSQL (a StoreError). Not
            # held to the ids' length (new=False): longer ones were taken before.
            check_name("version", version, new=False)
        self.version: str | None = version
        from tether._lifecycle import Retention, parse_retention

        self.retention: Retention | None = parse_retention(retention)
        #: Schedules declared with ``@app.schedule`` / ``app.schedule`` (name -> spec).
        self._schedules: dict[str, Any] = {}

    # -- definitions ------------------------------------------------------------------------

    @overload
    def step(self, fn: Callable[P, Awaitable[R]], /) -> Callable[P, Awaitable[R]]: ...

    @overload
    def step(self, fn: Callable[P, R], /) -> Callable[P, Awaitable[R]]: ...

    @overload
    def step(self, fn: None = None, /, *, name: str | None = None,
             retry: RetryPolicy | None = None,
             on_replay: Callable[[Any], dict[str, float] | None] | None = None,
             rate_limit: RateLimit | None = None,
             timeout: float | dt.timedelta | None = None) -> _StepDecorator: ...

    def step(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
             retry: RetryPolicy | None = None,
             on_replay: Callable[[Any], dict[str, float] | None] | None = None,
             rate_limit: RateLimit | None = None,
             timeout: float | dt.timedelta | None = None) -> Any:
        """Register a step: a side-effecting function whose outcome is journaled.

        ``async def`` and plain ``def`` both work (plain functions run in a thread). In a
        workflow, ``await step(...)`` is an operation: it runs once, its result is
        recorded, and replay returns the record. Outside a workflow it is just a call
        (still awaited).

        ``rate_limit=tether.RateLimit(key, limit, per=seconds)`` caps calls across all
        workers (enforced in the store); a call over it waits without using an attempt.

        ``on_replay(result)`` may return metrics to add to the run when a recorded result
        is returned instead of executed (counted once per operation), e.g. the tokens a
        journaled LLM reply saved.

        ``timeout`` (seconds or a ``timedelta``) bounds one attempt: past it the attempt
        fails with ``tether.StepTimeout`` and is retried under the policy. An ``async``
        step is cancelled; a plain ``def`` step's thread cannot be stopped and runs on.

        A name is one step's: the journal records a step by its name, so another
        function under a name already registered is refused (the same ``def`` run
        again, e.g. a step made by a function each time it runs, takes the name again).

        Raises:
            ConfigError: a bad name, ``retry`` or ``timeout``; a name registered by
                another function.
        """
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigError(f"retry must be a tether.RetryPolicy or None, not {retry!r}")
        limit: float | None = None
        if timeout is not None:
            if isinstance(timeout, dt.timedelta):
                timeout = timeout.total_seconds()
            # (not NaN: it passed `<= 0`, as every comparison with it is false, and
            # asyncio.timeout got a deadline of NaN, which bounded nothing)
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                    or timeout != timeout or timeout <= 0:
                raise ConfigError(f"step timeout must be a number of seconds > 0, "
                                  f"not {timeout!r}")
            limit = float(timeout)

        def decorate(f: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
            if not callable(f):
                raise ConfigError(f"@app.step needs a function, got {type(f).__name__}")
            is_async = inspect.iscoroutinefunction(f)
            sname = check_name("step name", name or f.__name__)
            existing = self._steps.get(sname)
            if existing is not None and existing.fn is not f \
                    and not _same_def(existing.fn, f):
                raise ConfigError(_already_registered(sname, existing.fn, f, kind="step"))
            sdef = StepDef(
                name=sname, fn=f,
                retry=retry or DEFAULT_RETRY,
                is_async=is_async, return_annotation=return_annotation(f),
                on_replay=on_replay, rate_limit=rate_limit, timeout=limit,
            )
            self._steps[sdef.name] = sdef

            @functools.wraps(f)
            def call(*args: Any, **kwargs: Any) -> Awaitable[Any]:
                ctx = current_run.get()
                if ctx is None or current_step.get() is not None:
                    # (a plain call; in another step's body, a test double's if any)
                    plain = ctx.step_mocks.get(sname, sdef) if ctx is not None \
                        and ctx.step_mocks else sdef
                    if plain.is_async:
                        return plain.fn(*args, **kwargs)  # type: ignore[no-any-return]
                    return run_sync_step(plain.fn, args, kwargs)
                # The position is taken now, at call time, so gather() is deterministic.
                return run_step(ctx, sdef, ctx.take_position(), args, kwargs)

            call.__tether_step__ = sdef  # type: ignore[attr-defined]
            return call

        return decorate(fn) if fn is not None else decorate

    @overload
    def workflow(self, fn: Callable[P, Awaitable[R]], /) -> Callable[P, Awaitable[R]]: ...

    @overload
    def workflow(self, fn: None = None, /, *, name: str | None = None, queue: str = "default",
                 mcp: bool | str = False, retention: Any = None
                 ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]: ...

    def workflow(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
                 queue: str = "default", mcp: bool | str = False,
                 retention: Any = None) -> Any:
        """Register a workflow: an ``async def`` whose code is replayed after a crash.

        The function is returned as it is, tagged with its definition. ``mcp=True``
        exposes it as a tool of Tether's MCP server (``mcp="task-only"``: callable
        only as a task); see docs/mcp-server.md.

        ``retention``: this workflow's own retention policy, which wins over the app's
        (``App(retention=)``) for its runs, shorter or longer: what ``App(retention=)``
        takes (a duration such as ``"7d"``, or a ``tether.Retention``), or
        ``"forever"``: its ended runs are never purged by retention. ``None`` (default):
        the app's policy applies. Applied by this app's workers (docs/operations.md,
        "Retention").

        Raises:
            ConfigError: a bad name, queue, ``mcp`` or ``retention``.
        """
        from tether._lifecycle import parse_workflow_retention

        _check_mcp(mcp)
        own_retention = parse_workflow_retention(retention)

        def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
            if not inspect.iscoroutinefunction(f):
                raise ConfigError(
                    f"workflows must be `async def`; `{getattr(f, '__name__', f)}` is a plain "
                    "function"
                )
            wname = check_name("workflow name", name or f.__name__)
            check_name("queue", queue)
            existing = self._workflows.get(wname)
            if existing is not None and existing.fn is not f:
                raise ConfigError(_already_registered(wname, existing.fn, f))
            pos, kw = param_annotations(f)
            wdef = WorkflowDef(name=wname, fn=f, queue=queue,
                               return_annotation=return_annotation(f),
                               param_annotations=pos, kw_annotations=kw,
                               retention=own_retention)
            self._workflows[wname] = wdef
            f.__tether_workflow__ = wdef  # type: ignore[attr-defined]
            if mcp:
                self.expose_mcp(wname, task_only=mcp == "task-only")
            return f

        return decorate(fn) if fn is not None else decorate

    @overload
    def schedule(self, target: str, /, *, timezone: str = "UTC", name: str | None = None,
                 input: Any = None, overlap: str = "skip", catchup: str = "latest",
                 catchup_max: int = 10, queue: str | None = None) -> Callable[[F], F]: ...

    @overload
    def schedule(self, target: Callable[..., Any], /, *, cron: str, timezone: str = "UTC",
                 name: str | None = None, input: Any = None, overlap: str = "skip",
                 catchup: str = "latest", catchup_max: int = 10,
                 queue: str | None = None) -> None: ...

    def schedule(self, target: Callable[..., Any] | str, /, *, cron: str | None = None,
                 timezone: str = "UTC", name: str | None = None, input: Any = None,
                 overlap: str = "skip", catchup: str = "latest", catchup_max: int = 10,
                 queue: str | None = None) -> Any:
        """Start a run of a workflow on every tick of a cron schedule.

        As a decorator above ``@app.workflow``: ``@app.schedule("*/5 * * * *",
        timezone="Europe/Paris")``. As a call: ``app.schedule(workflow, cron="0 9 * * 1",
        input=[...])``. ``input`` is the list of positional arguments (or ``{"args":
        [...], "kwargs": {...}}``). Workers of this app create the schedule in the store
        when they start and start each tick's run exactly once between them (its run id
        is ``NAME@TICK``). ``catchup``: ticks missed while no worker ran start once
        (``latest``, default), not at all (``skip``) or each (``all``, the last
        ``catchup_max``, side by side). ``overlap``, when a run of the schedule from
        before the tick (or before the missed ticks caught up together) has not ended:
        start no run for it (``skip``, default), start it anyway (``allow``), or cancel
        the older runs and start it (``cancel_previous``). Ticks caught up together
        never overlap one another (docs/lifecycle.md, "Schedules").

        Raises:
            ConfigError: a bad cron expression (one that could never tick included), time
                zone or option, or a malformed ``{"args", "kwargs"}`` input (by
                ``App.fork``'s rule: ``"args"`` a list or tuple, ``"kwargs"`` a dict, no
                other key).
            NotSerializable, PayloadTooLarge: an ``input`` the store could not hold.
            WorkflowArgumentError: an ``input`` the workflow's signature cannot take (a
                required argument missing, an unknown keyword, one too many).
        """
        from tether._lifecycle import make_spec

        def add(fn: Callable[..., Any], cron_text: str) -> None:
            wdef = self._workflow_def(fn)
            if isinstance(input, dict) and "args" in input:
                # (as App.fork checks it: "args" as a string was split into characters,
                # a misspelt key dropped, a "kwargs" that is no dict a bare TypeError)
                _check_args_form(input)
                args, kwargs = tuple(input["args"]), dict(input.get("kwargs") or {})
            elif input is None:
                args, kwargs = (), {}
            else:
                args, kwargs = (tuple(input) if isinstance(input, (list, tuple)) else (input,)), {}
            # (each tick's run would fail on a worker with a TypeError)
            wdef.check_arguments(args, kwargs)
            spec = make_spec(wdef.name, queue or wdef.queue, cron_text, timezone=timezone,
                             name=name, args=args, kwargs=kwargs, overlap=overlap,
                             catchup=catchup, catchup_max=catchup_max)
            # The input each tick's run gets, checked here as the store will take it (the
            # payload hook aside): found at a worker's start, it stopped the worker, every
            # other workflow's runs with it.
            from tether._codec import SLOT_INPUT, Codec

            payload: dict[str, Any] = {"args": list(spec.args)}
            if spec.kwargs:
                payload["kwargs"] = spec.kwargs
            Codec(max_payload=self.codec.max_payload).encode(
                payload, f"input of schedule {spec.name!r}", SLOT_INPUT)
            if spec.name in self._schedules and self._schedules[spec.name] != spec:
                raise ConfigError(f"a schedule named {spec.name!r} is already declared")
            self._schedules[spec.name] = spec

        if isinstance(target, str):
            cron_text = target

            def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
                add(fn, cron_text)
                return fn

            return decorate
        if cron is None:
            raise ConfigError("app.schedule(workflow, cron=...) needs a cron expression")
        add(target, cron)
        return None

    def workflows(self) -> dict[str, WorkflowDef]:
        return dict(self._workflows)

    def queues(self) -> list[str]:
        """The queues this app's workflows name (``["default"]`` if none)."""
        found = sorted({w.queue for w in self._workflows.values()})
        return found or ["default"]

    def _workflow_def(self, workflow: Callable[..., Any] | str) -> WorkflowDef:
        if isinstance(workflow, str):
            wdef = self._workflows.get(workflow)
            if wdef is None:
                raise WorkflowNotFound(workflow, list(self._workflows))
            return wdef
        wdef = getattr(workflow, "__tether_workflow__", None)
        if wdef is None:
            raise ConfigError(
                f"{getattr(workflow, '__name__', workflow)!r} is not a workflow: decorate it "
                "with @app.workflow"
            )
        return wdef  # type: ignore[no-any-return]

    # -- the store ------------------------------------------------------------------------------

    def use_store(self, url: str) -> None:
        """Point this app at another store URL (before it is opened).

        Raises:
            ConfigError: the store is open or the App closed; a store option given to
                the App that the new URL's store does not take.
        """
        self._check_open()
        if self._opened:
            raise ConfigError("the app's store is already open")
        check_store_options(url, self._store_options)
        self.url = url
        self._store = None

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called: a closed App is done for good."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError(
                "this App is closed: App.close() is final; create a new App to use the "
                "store again")

    @property
    def store(self) -> Store:
        """The app's store (built on first use, opened by the first call that needs it).

        Raises:
            ConfigError: the App is closed.
        """
        self._check_open()
        if self._store is None:
            self._store = open_store(self.url, **self._store_options)
        return self._store

    async def _open(self) -> Store:
        store = self.store
        if not self._opened:
            if self._open_lock is None:
                self._open_lock = asyncio.Lock()
            async with self._open_lock:
                if not self._opened:
                    if self._process_kind is not None and hasattr(store, "process_kind"):
                        store.process_kind = self._process_kind
                    await store.open()
                    self._opened = True
                    await self._sync_clock()
        return store

    async def _sync_clock(self) -> None:
        """Sync the default clock to the store's (PostgreSQL: the server's), so that
        every process of a multi-host store reads leases and timers off one clock. A
        clock passed to the App, and a store without a clock of its own (SQLite: one
        machine), are left alone.

        Raises:
            StoreError: the store could not be reached.
        """
        server_time = getattr(self._store, "server_time", None)
        if isinstance(self.clock, SyncedClock) and server_time is not None:
            await self.clock.sync(server_time)

    async def reset_store(self) -> None:
        """Close the store's connections and forget them, keeping the App usable: the next
        call that needs the store opens it anew. For a long-lived process (the CLI worker)
        that reconnects from scratch after the store failed.

        Raises:
            ConfigError: the App is closed.
        """
        self._check_open()
        for w in list(self._workers):
            await w.stop()
        await self._drop_store()

    async def close(self) -> None:
        """Stop this app's workers and close its store. Final: afterwards every call
        that needs the store raises ``ConfigError`` instead of opening a new one.
        Closing twice is harmless.

        A caller cancelled meanwhile (a timeout around ``close``) is cancelled at once,
        and the closing goes on by itself; calling ``close`` again waits for it."""
        closing = self._closing
        if closing is None or (closing.done() and not self._closed):
            # (Again after a closing that failed, or that the end of its event loop
            # cancelled: each of its parts can be done twice.)
            closing = self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(closing)

    async def _close(self) -> None:
        while self._workers:  # (a worker leaves the set when its stop has ended)
            await next(iter(self._workers)).stop()
        await self._drop_store()
        self._closed = True

    async def _drop_store(self) -> None:
        """Close the store (if it was opened) and forget it: the next use builds and
        opens a new one (``reset_store``), unless the App is closed for good."""
        if self._unsubscribe is not None:
            await self._unsubscribe()
            self._unsubscribe = None
        self._subscribed = False
        store, opened = self._store, self._opened
        self._opened = False
        self._open_lock = None
        await self._waiters.close()
        self._store = None
        if opened and store is not None:
            await store.close()

    async def __aenter__(self) -> App:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- client --------------------------------------------------------------------------------

    @overload
    async def start(self, workflow: Callable[P, Awaitable[R]], *args: Any,
                    run_id: str | None = None, queue: str | None = None,
                    check_args: bool = True, **kwargs: Any) -> RunHandle[R]: ...

    @overload
    async def start(self, workflow: str, *args: Any, run_id: str | None = None,
                    queue: str | None = None, check_args: bool = True,
                    **kwargs: Any) -> RunHandle[Any]: ...

    async def start(self, workflow: Callable[..., Any] | str, *args: Any,
                    run_id: str | None = None, queue: str | None = None,
                    check_args: bool | None = None, **kwargs: Any) -> RunHandle[Any]:
        """Start a run of ``workflow`` (the function or its name) with these arguments.

        Idempotent on ``run_id``: starting an existing id starts nothing and returns a
        handle to the existing run, whatever its input and queue, without a warning
        (``handle.created`` is False; ``tether start`` warns on stderr instead).
        Without one, the run gets a new id: a UUIDv7 as 32 hex digits (time first, so
        runs started together get neighbouring ids; nothing may rely on their order).

        ``run_id``, ``queue`` and ``check_args`` are this call's own: a workflow
        parameter of one of those names cannot be passed by keyword here. Where the
        workflow's function is known here, giving one of them while the workflow has
        a parameter of that name that the positional arguments leave unfilled is a
        ``WorkflowArgumentError`` naming it (the workflow would silently have got its
        default): pass that parameter positionally, or rename it.
        ``check_args=False`` starts the run without checking the arguments against the
        workflow's function known here: for a client whose code is not the workers'
        (another deploy, where the workflow's signature changed), whose check would
        refuse what the workers take. The worker then judges them (a ``TypeError`` fails
        the run).

        Raises:
            WorkflowNotFound: (a function not decorated as a workflow: ConfigError)
            WorkflowArgumentError: the arguments do not fit the workflow's signature (a
                required one missing, an unknown keyword, one too many), checked where
                its function is known here (given, or registered on this app under the
                name given) unless ``check_args`` is False; nothing was started. Also a
                ``TypeError``. Also (whatever ``check_args``): one of this call's own
                keywords names a parameter of the workflow left unfilled.
            NotSerializable: an argument is not JSON.
            PayloadTooLarge: the encoded input is over the size limit.
            ConfigError: the run id is used by a run of another workflow; the App is
                closed.
        """
        wdef = self._local_workflow(workflow)
        if wdef is not None:
            given = dict(zip(START_KEYWORDS, (run_id, queue, check_args), strict=True))
            _refuse_keyword_clash(wdef, len(args),
                                  [k for k, v in given.items() if v is not None])
        return await self._start(workflow, args, kwargs, run_id=run_id, queue=queue,
                                 check_args=check_args is not False)

    async def _start(self, workflow: Callable[..., Any] | str, args: Sequence[Any],
                     kwargs: dict[str, Any], *, run_id: str | None, queue: str | None,
                     check_args: bool) -> RunHandle[Any]:
        """``start`` without its refusal of a start keyword that names a parameter of
        the workflow: for a caller whose workflow arguments are all positional
        (``tether start``, ``POST /api/v1/runs``), where ``run_id`` and ``queue`` can
        only be the start's."""
        if run_id is not None:
            check_name("run id", run_id)
        if queue is not None:
            check_name("queue", queue)
        wdef = self._local_workflow(workflow) if check_args else None
        if wdef is not None:
            wdef.check_arguments(args, kwargs)
        store = await self._open()
        name, default_queue, unknown = await self._start_target(workflow, queue)
        payload: dict[str, Any] = {"args": list(args)}
        if kwargs:
            payload["kwargs"] = kwargs
        # An empty id is refused, not replaced: the caller relies on it for idempotency.
        rid = _ids.new_run_id() if run_id is None else run_id
        text = self.codec.for_run(rid).encode(payload, f"input of workflow {name!r}",
                                              SLOT_INPUT)
        now = self.clock.now()
        record = RunRecord(run_id=rid, workflow=name, queue=queue or default_queue,
                           status=RunStatus.QUEUED, input=text, created_at=now,
                           updated_at=now, available_at=now, version=self.version)
        if _observe.observers:  # (telemetry: the run's trace is rooted here, not by a worker)
            await _observe.runs_starting(store, [(rid, name, record.queue)], now)
        stored, created = await store.run_insert(run=record)
        if not created and stored.workflow != name:
            from tether._lifecycle import RunIdTaken

            raise RunIdTaken(
                f"run id {rid!r} is already used by a run of workflow {stored.workflow!r}"
            )
        if created:
            if unknown is not None:
                _warn_unknown(name, record.queue, unknown, rid)
            for w in self._workers:
                w.notify()
        return RunHandle(self, rid, name, created=created)

    async def start_many(self, workflow: Callable[..., Awaitable[R]] | str,
                         inputs: Iterable[Sequence[Any]], *,
                         run_ids: Sequence[str] | None = None,
                         queue: str | None = None,
                         check_args: bool = True) -> list[RunHandle[R]]:
        """Start one run of ``workflow`` per item of ``inputs`` (each a sequence of
        positional arguments) in one store transaction: many starts for the price of
        one commit. Idempotent on ``run_ids`` like ``start``; an id given twice starts
        one run. ``check_args=False``: the items are not checked (as for ``start``).

        Raises:
            WorkflowNotFound, NotSerializable, PayloadTooLarge: nothing was started.
            WorkflowArgumentError: an item's arguments do not fit the workflow's
                signature (as for ``start``, unless ``check_args`` is False); nothing
                was started.
            ConfigError: ``run_ids`` does not match ``inputs`` (nothing was started), or
                an id is already used by a run of another workflow (the other runs
                were started).
        """
        items = [list(args) for args in inputs]
        if run_ids is not None and len(run_ids) != len(items):
            raise ConfigError(f"start_many: {len(run_ids)} run ids for {len(items)} inputs")
        for rid in run_ids or ():
            check_name("run id", rid)
        if queue is not None:
            check_name("queue", queue)
        wdef = self._local_workflow(workflow) if check_args else None
        if wdef is not None:
            for i, args in enumerate(items):
                try:
                    wdef.check_arguments(args)
                except WorkflowArgumentError as exc:
                    raise WorkflowArgumentError(exc.workflow,
                                                f"inputs[{i}]: {exc.problem}") from None
        store = await self._open()
        name, default_queue, unknown = await self._start_target(workflow, queue)
        now = self.clock.now()
        records = []
        for i, args in enumerate(items):
            rid = run_ids[i] if run_ids is not None else _ids.new_run_id()
            text = self.codec.for_run(rid).encode({"args": args},
                                                  f"input of workflow {name!r}", SLOT_INPUT)
            records.append(RunRecord(run_id=rid, workflow=name, queue=queue or default_queue,
                                     status=RunStatus.QUEUED, input=text, created_at=now,
                                     updated_at=now, available_at=now,
                                     version=self.version))
        if _observe.observers and records:
            await _observe.runs_starting(store, [(r.run_id, name, r.queue) for r in records],
                                         now)
        results = await store.run_insert_many(runs=records) if records else []
        clashes = [stored.run_id for stored, created in results
                   if not created and stored.workflow != name]
        if any(created for _, created in results):
            if unknown is not None:
                _warn_unknown(name, queue or default_queue, unknown)
            for w in self._workers:
                w.notify()
        if clashes:
            raise ConfigError(f"run id {clashes[0]!r} is already used by a run of another "
                              f"workflow ({len(clashes)} such ids; the other runs started)")
        return [RunHandle(self, r.run_id, name) for r in records]

    def _local_workflow(self, workflow: Callable[..., Any] | str) -> WorkflowDef | None:
        """The definition of the workflow a start names, when its function is known here
        (a workflow function, or the name of one registered on this app), whose
        signature the start's arguments are checked against; None otherwise (a name
        from another deploy, which its workers know; or no workflow at all, which
        ``_start_target`` refuses)."""
        if isinstance(workflow, str):
            return self._workflows.get(workflow)
        wdef = getattr(workflow, "__tether_workflow__", None)
        return wdef if isinstance(wdef, WorkflowDef) else None

    async def _start_target(self, workflow: Callable[..., Any] | str,
                            queue: str | None = None
                            ) -> tuple[str, str, tuple[str, ...] | None]:
        """(name, queue, unknown) of a workflow given by function, or by name: registered
        on this app, or registered in the store by a worker that has its code (``unknown``
        None), or else (a script that starts runs before the workers are up) unknown: the
        run is queued on ``queue`` (or ``default``), with a warning once it is created
        (``_warn_unknown``, naming the closest of the known names in ``unknown``, for a
        typo; none for an id that was already started), and starts when such a worker
        comes."""
        if isinstance(workflow, str) and workflow not in self._workflows:
            # As ``POST /api/v1/runs`` has it: no worker could register a name that is
            # empty, holds control characters or is over MAX_NAME (``app.workflow``),
            # so its run would wait for ever, and print its escapes (InvalidName).
            check_name("workflow", workflow)
            known = await self.store.workflow_list()
            if workflow not in known:
                return workflow, queue or "default", (*known, *self._workflows)
            return workflow, known[workflow], None
        wdef = self._workflow_def(workflow)
        return wdef.name, wdef.queue, None

    def handle(self, run_id: str) -> RunHandle[Any]:
        """A handle to an existing run."""
        _lookup_id(run_id)
        return RunHandle(self, run_id)

    async def get_run(self, run_id: str) -> RunInfo:
        """The run's status, input, result or error, and journal.

        Raises:
            RunNotFound: no run has this id.
        """
        _lookup_id(run_id)
        return await self._run_info(run_id)

    async def _run_info(self, run_id: str, unreadable: Unreadable | None = None, *,
                        earlier: bool = True) -> RunInfo:
        """``get_run``; a payload this app cannot decode is ``unreadable(text, error)``
        (``tether._show``'s marker for the documents of ``tether serve`` and ``tether
        show --json``) instead of its stored text (ciphertext, for a key it lacks).
        ``earlier`` False reads and decodes no earlier generation's journal (``history``
        is ``[]``, and a signal wait's start is derived from this generation's alone):
        for a reader of this generation's figures (``tether._show.budget_of``).

        Raises:
            RunNotFound: no run has this id.
        """
        store = await self._open()
        run = await store.run_get(run_id)
        if run is None:
            raise RunNotFound(run_id)
        journal = await store.journal_read(run_id)
        codec = self.codec.for_run(run_id)

        def decode(text: str | None, annotation: Any = None, slot: str = SLOT_JOURNAL) -> Any:
            return _safe_decode(codec, text, annotation, slot, unreadable)

        def entry_views(journal: list[Any]) -> list[dict[str, Any]]:
            entries = []
            for e in journal:
                duration = None
                if e.started_at is not None and e.finished_at is not None:
                    duration = e.finished_at - e.started_at
                entries.append({
                    "position": e.position, "kind": e.kind, "name": e.name,
                    "status": e.status, "attempts": e.attempts, "started_at": e.started_at,
                    "finished_at": e.finished_at, "duration": duration,
                    "next_attempt_at": e.next_attempt_at,
                    "args": decode(e.args),
                    "result": decode(e.result, None, result_slot(e.kind)),
                    "error": decode(e.error),
                })
            return entries

        # (A signal wait without a timeout journals no start: it is derived from the
        # operations before it, generation after generation: signal_wait_starts.)
        history = []
        floor: float | None = run.created_at
        for g in await store.journal_archive_read(run_id) if earlier else []:
            archived = entry_views(g.entries)
            floor = signal_wait_starts(archived, floor)
            history.append({"generation": g.generation, "input": _input_view(
                                decode(g.input, None, SLOT_INPUT)),
                            "journal": archived})
        entries = entry_views(journal)
        signal_wait_starts(entries, floor)
        attempts = []
        final = {e.position: e for e in journal if e.status in ("ok", "error")}
        rows = await store.attempt_list(run_id)
        # The last start of each attempt number: a number taken again later (a re-run
        # whose earlier attempt left no row to count, or could not be read) was cut off.
        last_start = {(a.generation, a.position, a.attempt): a.started_at for a in rows}
        for a in rows:
            status, finished_at, error = a.status, a.finished_at, a.error
            if status == "running" and not (run.status == "running" and run.owner == a.worker_id):
                # Its worker no longer holds the run. If the step's entry records this
                # very attempt as its last (same number, none of that number after it),
                # it ended so (its end was noted, not yet written, when the worker died:
                # the history is written every 50 ms); else it was cut off.
                e = final.get(a.position)
                if (e is not None and a.generation == run.generation
                        and e.attempts == a.attempt
                        and last_start[(a.generation, a.position, a.attempt)] == a.started_at):
                    status, finished_at = e.status, e.finished_at
                    error = e.error if e.status == "error" else None
                else:
                    status = "interrupted"
            attempts.append({
                "generation": a.generation, "position": a.position, "name": a.name,
                "attempt": a.attempt, "worker_id": a.worker_id, "status": status,
                "started_at": a.started_at, "finished_at": finished_at,
                "error": decode(error)})
        wdef = self._workflows.get(run.workflow)
        limits = entered_limits(run.metrics)
        # (a raise sent before the run reached its budget waits for it: said with it)
        kept = (await kept_raise(store, codec, run_id)
                if limits is not None and not RunStatus(run.status).is_ended else None)
        return RunInfo(
            run_id=run.run_id, workflow=run.workflow, queue=run.queue,
            status=run.status, input=_input_view(decode(run.input, None, SLOT_INPUT)),
            result=decode(run.result, wdef.return_annotation if wdef is not None else None,
                          SLOT_RESULT),
            error=decode(run.error, None, SLOT_ERROR),
            created_at=run.created_at, updated_at=run.updated_at,
            finished_at=run.finished_at, waiting_for=run.waiting_for,
            status_info=decode(run.status_info, None, SLOT_STATUS),
            parent_run_id=run.parent_run_id, journal=entries,
            metrics={k: v for k, v in run.metrics.items() if not k.startswith("_")},
            version=run.version, forked_from=run.forked_from, forked_at=run.forked_at,
            generation=run.generation, history=history, attempts=attempts,
            erased_at=run.erased_at,
            cancel_requested=bool(run.cancel_requested) and not RunStatus(run.status).is_ended,
            cancel_requested_at=_cancel_requested_at(run),
            budget_limits=limits, kept_budget_raise=kept,
            **_cancel_origin(run),
        )

    async def list_runs(self, *, status: RunStatus | str | None = None,
                        limit: int = 100) -> list[RunRecord]:
        """The newest runs, optionally only those in ``status``.

        Raises:
            ConfigError: an unknown status, or a limit below 1.
        """
        if status is not None:
            try:
                status = RunStatus(status)
            except ValueError:
                known = ", ".join(s.value for s in RunStatus)
                raise ConfigError(f"unknown run status {status!r} (one of: {known})") from None
        if limit < 1:
            raise ConfigError(f"limit must be >= 1, got {limit}")
        store = await self._open()
        return await store.run_list(status=status, limit=limit)

    async def cancel(self, run_id: str, *, reason: str | None = None) -> RunStatus:
        """Ask a run to cancel: it stops at its next operation and ends ``cancelled``.
        That operation runs on a worker serving the run's queue: a waiting run becomes
        claimable at once but stays ``waiting`` until such a worker replays it and
        delivers ``Cancelled`` at its wait (where its code may clean up);
        ``RunInfo.cancel_requested`` is true meanwhile.
        A run no code could see the cancel in ends ``cancelled`` at once: a ``blocked``
        run, and a ``queued`` one that never started (no journal entry); its children
        whose policy is ``cancel`` are then asked to cancel, as when a worker ends a run
        cancelled. Returns the run's status after the request.

        ``reason`` says why (one line, at most 1,000 characters): ``get_run`` gives it
        back (``RunInfo.cancel_reason``), as do ``tether show``, ``tether result`` and
        the API, and the children this cancel cancels get it too, with this run's id
        (``RunInfo.cancelled_with``). A repeat keeps the first request's time and
        reason; a retry clears them.

        Raises:
            RunNotFound: no run has this id.
            ConfigError: ``reason`` is not a string, is empty, too long, or holds
                control characters (nothing was asked).
        """
        return RunStatus((await self._cancel(run_id, reason=reason)).status)

    async def _cancel(self, run_id: str, *, reason: str | None = None) -> RunRecord:
        """``cancel``, answering the run's record after the request as the store's
        ``run_cancel`` gives it (with the reason and the parent the cancel keeps, for
        ``tether cancel``: a repeat keeps the first request's)."""
        _lookup_id(run_id)
        reason = check_cancel_reason(reason)
        store = await self._open()
        run = await store.run_cancel(run_id=run_id, now=self.clock.now(), reason=reason)
        for w in self._workers:
            w.request_cancel(run_id)
            w.notify()
        return run

    async def signal(self, run_id: str, name: str, payload: Any = None, *,
                     idempotency_key: str | None = None) -> bool:
        """Send a signal (a named JSON message) to a run; returns False if a signal with
        this idempotency key had been sent already (it is delivered once). The key is
        the run's: a signal of another name or payload sent under it is not stored
        either, and returns False too (the HTTP API's answer says which differed).

        Raises:
            RunNotFound: no such run.
            SignalError: the run has ended.
            NotSerializable: the payload is not JSON.
            PayloadTooLarge: the encoded payload is over the size limit.
            PayloadError: the run's payloads are encrypted and this app has no payload
                hook (the signal would be stored in clear text, unreadable to the run).
        """
        _lookup_id(run_id)
        sent = await self._signal(run_id, name, payload, idempotency_key=idempotency_key)
        return sent.created

    async def _signal(self, run_id: str, name: str, payload: Any, *,
                      idempotency_key: str | None) -> SignalSent:
        """``signal``, answering the store's ``SignalSent``: with ``created`` False, the
        signal stored under the key (which may have another name or payload)."""
        if idempotency_key is not None:
            check_name("idempotency key", idempotency_key)
        store = await self._open()
        await self._check_signal_name(store, run_id, name)
        text = self.codec.for_run(run_id).encode(payload, f"payload of signal {name!r}",
                                                 SLOT_SIGNAL)
        if self.codec.hook is None:
            await self._refuse_clear_text(run_id, f"signal {name!r}")
        sent = await store.signal_send(run_id=run_id, name=name, payload=text,
                                       idempotency_key=idempotency_key, now=self.clock.now())
        for w in self._workers:
            w.notify()
        if sent.created and name in ANNOUNCED_SIGNALS:
            # Tells the code running the run now (an agent watching for ``interrupt``)
            # and observers; the signal itself is stored already, this is best effort.
            try:
                await store.run_publish(run_id=run_id, data=json.dumps(
                    {"type": "signal", "name": name}))
            except TetherError as exc:
                _log.warning("run %s: cannot publish the signal %r to observers: %s",
                            run_id, name, exc)
        return sent

    @staticmethod
    async def _check_signal_name(store: Store, run_id: str, name: str) -> None:
        """``InvalidName`` for a signal name Tether refuses. One over ``MAX_NAME`` is
        still taken by a run that waits for it: code of an older version (which had no
        limit) may have made it wait for one, and it must not wait for ever."""
        try:
            check_name("signal name", name)
        except InvalidName:
            if len(name) <= MAX_NAME:
                raise
            run = await store.run_get(run_id)
            if run is None or run.waiting_for != f"signal {name}":
                raise
            check_name("signal name", name, new=False)

    async def _refuse_clear_text(self, run_id: str, what: str) -> None:
        """Raise ``PayloadError`` if run ``run_id`` keeps its payloads encrypted: this
        app has no payload hook, so ``what`` would be stored in clear text, where the
        run's workers (which refuse a clear payload) could never read it."""
        from tether.encryption import sealed_view

        run = await self.store.run_get(run_id)
        sealed = sealed_view(run.input) if run is not None and run.input else None
        if sealed is not None:
            raise PayloadError(
                f"run {run_id!r} keeps its payloads encrypted ({sealed[1:-1]}): this app "
                f"has no payload hook, so the {what} would be stored in clear text and the "
                "run could not read it; send it from an app with the key (App(payload_hook="
                "...), tether signal --app MODULE:APP, tether serve --app MODULE:APP)")

    async def retry(self, run_id: str) -> RunStatus:
        """Run a ``failed``, ``blocked`` or ``cancelled`` run again after its code was
        fixed, under this app's current code and version. Recorded successful operations
        are kept; the failed operation runs again with a fresh attempt count; the earlier
        failure stays in the run's attempts (``tether show``). Children it would wait for
        again and find ended are retried with it: those its cancel cancelled, or whose
        failure it failed on (``docs/lifecycle.md``).

        Raises:
            RunNotFound: no run has this id.
            RunStateError: the run is in another state (``RunErased``: it was erased).
        """
        _lookup_id(run_id)
        return RunStatus((await self._retry(run_id)).run.status)

    async def _retry(self, run_id: str) -> RetryReport:
        """``retry``, with the children retried with the run (for ``tether serve``)."""
        store = await self._open()
        report = await store.run_retry(run_id=run_id, version=self.version,
                                       now=self.clock.now())
        for w in self._workers:
            w.notify()
        await self._warn_if_unserved(report.run.workflow, report.run.queue, run_id)
        unpinned = version_dropped(run_id, report.version_before, report.run.version)
        if unpinned is not None:
            _log.warning("%s", unpinned)
        return report

    async def _warn_if_unserved(self, workflow: str, queue: str, run_id: str) -> None:
        """A retried or forked run (``run_id``) of a workflow neither this app nor any
        worker of the store has registered (renamed or removed in code, or a typo'd
        start) waits for ever: say so, as ``start`` does (it said nothing and printed
        ``queued``)."""
        if workflow in self._workflows:
            return
        try:
            known = await self.store.workflow_list()
        except StoreError:
            return  # (only a warning: the retry or fork itself was done)
        if workflow not in known:
            _warn_unknown(workflow, queue, (*known, *self._workflows), run_id)

    async def fork(self, run_id: str, *, at: int, input: Any = _NO_INPUT,
                   new_run_id: str | None = None) -> RunHandle[Any]:
        """A new run whose journal is ``run_id``'s up to (not including) position ``at``;
        it continues from there with the current code (and version), with the old input
        or ``input``, to which what the source's parent handed down with its input is added
        (``tether.ext.start_child(inherit=)``: a child's share of its parent's budget
        stays with its forks). Returns its handle; ``get_run`` shows where it came from.

        ``input`` is read by this rule, in this order:

        - a list or tuple: the positional arguments (``[5]`` calls ``workflow(5)``);
        - a dict with an ``"args"`` key: ``{"args": [...], "kwargs": {...}}``, positional
          and keyword arguments (``"kwargs"`` may be left out; ``"args"`` must be a list
          or tuple and ``"kwargs"`` a dict, and no other key is taken: ``ConfigError``);
        - anything else, a dict without ``"args"`` included: the one positional
          argument (``{"city": "Oslo"}`` calls ``workflow({"city": "Oslo"})``).

        So a workflow whose one argument is a dict that has an ``"args"`` key, or is a
        list, takes it wrapped: ``input=[value]``. (The HTTP API's ``input`` and ``tether
        fork --input`` take only the first form, a JSON array; anything else is refused.)

        Raises:
            RunNotFound: no run has this id.
            RunErased: the run's payloads were erased.
            ConfigError: a bad position, a malformed ``{"args", "kwargs"}`` input, or
                the new id is held by another run.

        With ``new_run_id``, a fork is idempotent, as ``start`` is with ``run_id``: when
        that run exists and is this fork (of ``run_id``, at ``at``, with the same input),
        nothing is started and its handle is returned (``handle.created`` is False).
        Any other run with that id (a run that is no fork, a fork of another run or
        position, or with another input) is a ``ConfigError`` that says which it is.
            NotSerializable: the new input is not JSON.
            WorkflowArgumentError: the new input does not fit the workflow's signature,
                when it is registered on this app (as for ``start``).
        """
        _lookup_id(run_id)
        if isinstance(input, dict) and "args" in input:
            _check_args_form(input)
        if new_run_id is not None:
            check_name("run id", new_run_id)
        store = await self._open()
        source = await store.run_get(run_id)
        if source is None:
            raise RunNotFound(run_id)
        if isinstance(at, bool) or not isinstance(at, int) or at < 0:
            raise ConfigError(f"at must be a position >= 0, not {at!r}")
        journal = await store.journal_read(run_id)
        last = max((e.position for e in journal), default=-1)
        if at > last + 1:
            from tether._lifecycle import fork_past_end

            raise ConfigError(fork_past_end(run_id, last, at))
        now = self.clock.now()
        rid = new_run_id or _ids.new_run_id()
        if not rid.strip():
            raise ConfigError("a run id must not be empty")
        if self.codec.hook is None:
            from tether.encryption import sealed_view

            sealed = sealed_view(source.input) if source.input else None
            if sealed is not None:
                raise PayloadError(
                    f"run {run_id!r} keeps its payloads encrypted ({sealed[1:-1]}), each "
                    "bound to it: this app has no payload hook to encode them again for "
                    "the fork, which could not read them; fork it from an app with the "
                    "key (App(payload_hook=...), tether fork --app MODULE:APP)")
        codec = self.codec.for_run(rid)
        source_codec = self.codec.for_run(run_id)
        copied: list[JournalEntry] | None = None
        if input is _NO_INPUT:
            text = codec.reseal(source.input, source_codec, SLOT_INPUT, SLOT_INPUT)
        else:
            payload: dict[str, Any] = ({"args": list(input["args"]), **(
                {"kwargs": input["kwargs"]} if "kwargs" in input else {})}
                if isinstance(input, dict) and "args" in input else
                {"args": list(input) if isinstance(input, (list, tuple)) else [input]})
            wdef = self._workflows.get(source.workflow)
            if wdef is not None:  # (its code is at hand: as App.start checks its input)
                wdef.check_arguments(payload["args"], payload.get("kwargs"))
            # What the source's parent handed down to integrations (a child's share of
            # its parent's budget) goes with the new input: a fork must not escape it.
            inherited = inherited_of(source_codec.decode(source.input, slot=SLOT_INPUT)
                                     ) if source.input else {}
            if inherited:
                payload[INHERIT_KEY] = inherited
            text = codec.encode(payload, f"input of workflow {source.workflow!r}", SLOT_INPUT)
        if codec.binds:
            # The payload hook binds each payload to its run: the copied ones are
            # encoded again for the fork (else it could not read them).
            copied = [_reseal_entry(e, codec, source_codec) for e in journal
                      if e.position < at]
        record = RunRecord(run_id=rid, workflow=source.workflow, queue=source.queue,
                           status=RunStatus.QUEUED, input=text, created_at=now,
                           updated_at=now, available_at=now, version=self.version,
                           forked_from=run_id, forked_at=at)
        if new_run_id is not None and await self._fork_held(rid, run_id, at, text, codec):
            return RunHandle(self, rid, source.workflow, created=False)
        if _observe.observers:
            await _observe.runs_starting(store, [(rid, source.workflow, source.queue)], now)
        try:
            await store.run_fork(source_run_id=run_id, run=record, at=at, entries=copied)
        except ConfigError:
            # The id was taken meanwhile: by this very fork (asked twice at once), or not.
            if new_run_id is not None and await self._fork_held(rid, run_id, at, text,
                                                                 codec):
                return RunHandle(self, rid, source.workflow, created=False)
            raise
        for w in self._workers:
            w.notify()
        await self._warn_if_unserved(source.workflow, source.queue, rid)
        unpinned = fork_version_dropped(run_id, rid, source.version, record.version)
        if unpinned is not None:
            _log.warning("%s", unpinned)
        return RunHandle(self, rid, source.workflow, created=True)

    async def _fork_held(self, rid: str, run_id: str, at: int, text: str,
                         codec: Codec) -> bool:
        """Whether run ``rid`` exists and is the fork of ``run_id`` at ``at`` with the
        input ``text`` (encoded for ``rid``): a fork asked for again, which starts
        nothing. False: no run has the id. ``RunIdTaken``: another run holds it."""
        from tether._lifecycle import RunIdTaken, fork_id_holder

        holder = await self.store.run_get(rid)
        if holder is None:
            return False
        same = (holder.input is not None
                and codec.decode(holder.input, slot=SLOT_INPUT)
                == codec.decode(text, slot=SLOT_INPUT))
        problem = fork_id_holder(holder, rid, run_id, at, same)
        if problem is not None:
            raise RunIdTaken(problem)
        return True

    async def resume(self, run_id: str) -> RunStatus:
        """Make a ``blocked`` run runnable again, after its code was fixed.

        Raises:
            RunNotFound: no run has this id.
            RunStateError: the run is not blocked.
        """
        _lookup_id(run_id)
        store = await self._open()
        run = await store.run_resume(run_id=run_id, now=self.clock.now())
        for w in self._workers:
            w.notify()
        return RunStatus(run.status)

    # -- queue concurrency limits (store engineer) ------------------------------------------

    async def set_queue_limit(self, queue: str, limit: int | None) -> None:
        """At most ``limit`` runs of ``queue`` run at once across all workers (persisted
        in the store; ``0`` pauses the queue, keeping the limit it held for
        ``resume_queue``; ``None`` removes the limit).

        Raises:
            ConfigError: a limit that is not an integer >= 0 or None.
        """
        check_queue_limit(queue, limit)  # before the store is opened (created)
        store = await self._open()
        await store.queue_limit_set(queue=queue, limit=limit, now=self.clock.now())
        for w in self._workers:
            w.notify()

    async def queue_limits(self) -> dict[str, int]:
        """The queues that have a concurrency limit, and their limits."""
        store = await self._open()
        return await store.queue_limits()

    async def pause_queue(self, queue: str) -> None:
        """Pause ``queue``: no worker claims its runs until ``resume_queue`` (its limit
        becomes 0, as ``set_queue_limit(queue, 0)``). The limit it held is kept for the
        resume; pausing a paused queue changes nothing."""
        await self.set_queue_limit(queue, 0)

    async def resume_queue(self, queue: str) -> tuple[bool, int | None]:
        """Lift the pause of ``queue`` (``pause_queue``, or the limit 0): it gets back
        the limit it held before the pause (or none, if it had none). Returns whether it
        was paused and its limit now (``None``: none); a queue that was not paused is
        left as it is."""
        check_queue_limit(queue, None)
        store = await self._open()
        resumed = await store.queue_resume(queue=queue, now=self.clock.now())
        for w in self._workers:
            w.notify()
        return resumed

    async def queue_pauses(self) -> dict[str, int | None]:
        """The paused queues, each with the limit ``resume_queue`` gives it back
        (``None``: none)."""
        store = await self._open()
        return await store.queue_pauses()

    async def events(self, run_id: str) -> AsyncIterator[str]:
        """Live events a run publishes for observers (e.g. streamed LLM chunks), from
        now on, until the caller stops iterating. Best effort (``tether serve`` reads the
        stored event log instead, to resume after a reconnect).

        Raises:
            RunNotFound: no run has this id.
        """
        _lookup_id(run_id)
        store = await self._open()
        if await store.run_get(run_id) is None:
            raise RunNotFound(run_id)
        async for event in opened_events(self.codec.for_run(run_id),
                                         store.run_events(run_id)):
            yield event

    def add_agent(self, agent: A, *, mcp: bool | str = False) -> A:
        """Register an agent (``tether.ai.Agent``) as a workflow named after it, so it
        starts by name like any workflow. ``mcp=True`` (or ``"task-only"``) exposes it
        as an MCP tool."""
        _check_mcp(mcp)
        agent.register(self)
        if mcp:
            self.expose_mcp(str(getattr(agent, "name", "")), task_only=mcp == "task-only")
            workflow = getattr(agent, "workflow", None)  # the tool's description
            workflow.__tether_mcp_description__ = getattr(agent, "description", "")  # type: ignore[union-attr]
        return agent

    def expose_mcp(self, *workflows: Callable[..., Any] | str, task_only: bool = False) -> None:
        """Expose workflows (functions or names) as tools of Tether's MCP server
        (``tether serve`` at ``/mcp``, ``tether mcp``); ``task_only``: a client without
        the Tasks extension gets its error instead of a synchronous call."""
        for w in workflows:
            self.mcp_exposed[w if isinstance(w, str) else self._workflow_def(w).name] = (
                "task-only" if task_only else "optional")

    def worker(self, *, queues: list[str] | None = None, concurrency: int = 50,
               **options: Any) -> Worker:
        """A worker for this app's workflows; use ``async with app.worker(...):``.

        ``queues``: the queues it serves (one name may be given as a string); left out
        or empty, the queues of the app's workflows. ``options`` are ``Worker``'s.

        Its start (entering ``async with``) waits for a store it cannot reach, trying
        again with backoff and logging each failure, as ``tether worker`` does: by
        default until the store answers; ``start_retry=SECONDS`` bounds the wait,
        ``start_retry=0`` raises the first ``StoreUnavailable`` (``Worker.start``).

        Raises:
            ConfigError: the App is closed; a bad option.
        """
        from tether.worker import Worker

        self._check_open()
        return Worker(self, queues=queues, concurrency=concurrency, **options)

    # -- internals -------------------------------------------------------------------------------

    async def _subscribe(self) -> bool:
        """Wake result waiters when another process ends a run (once per app). True if
        this call subscribed (an end notified before it was missed)."""
        if self._subscribed or not self.store.capabilities.notifications:
            return False
        self._subscribed = True
        self._unsubscribe = await self.store.subscribe(self._on_store_event)
        self._waiters.notified = True
        return True

    def _on_store_event(self) -> None:
        self._waiters.check_all()

    def _held_here(self, run_id: str) -> bool:
        """Whether a worker of this app holds ``run_id`` now."""
        return any(worker.holds(run_id) for worker in self._workers)

    def _run_finished(self, run_id: str, ended: RunRecord | None = None,
                      since: int | None = None) -> None:
        if ended is None or since is None:
            self._waiters.check(run_id)
        else:
            self._waiters.settle(ended, since)

    async def _read_runs(self, run_ids: list[str], settled_only: bool) -> list[RunRecord]:
        store = await self._open()
        return await store.run_get_many(run_ids, settled_only=settled_only)

    def _decode_result(self, run: RunRecord) -> Any:
        if run.erased_at is not None:
            # Its result or error is the erasure marker, not the workflow's (and, under a
            # payload hook, clear text the hook would refuse as planted): the same
            # outcome a parent awaiting an erased child meets.
            raise RunFailed(run.run_id, "erased", {
                "type": "tether.errors.RunErased",
                "message": "its payloads were erased (tether erase): the result is gone"})
        codec = self.codec.for_run(run.run_id)
        if self.codec.hook is None:
            from tether.encryption import sealed_view

            text = run.result if run.status is RunStatus.COMPLETED else run.error
            sealed = sealed_view(text) if text else None
            if sealed is not None:
                # Ciphertext is not JSON: say what it is instead of a JSONDecodeError.
                what = "result" if run.status is RunStatus.COMPLETED else "error"
                raise PayloadError(
                    f"run {run.run_id!r} ended {run.status.value}; its {what} is stored "
                    f"encrypted ({sealed[1:-1]}) and this app has no payload hook to "
                    "decode it: read it from an app with the key (App(payload_hook=...), "
                    "tether result --app MODULE:APP)")
        if run.status is RunStatus.COMPLETED:
            wdef = self._workflows.get(run.workflow)
            return codec.decode(run.result,
                                wdef.return_annotation if wdef is not None else None,
                                SLOT_RESULT)
        error = codec.decode(run.error, None, SLOT_ERROR) if run.error else None
        failed = RunFailed(run.run_id, run.status, error)
        origin = error_origin(error)
        if origin:
            # Where the run's code went wrong (its journaled traceback's innermost frame
            # outside Tether), as a note: a test awaiting the result prints it under
            # the error's line, which named no file; the message itself is unchanged.
            failed.add_note(f"at {origin}")
        raise failed


#: ``App.start``'s own keywords: a workflow parameter of one of these names cannot be
#: passed by keyword through it (``_refuse_keyword_clash``; the MCP face refuses such
#: a tool).
START_KEYWORDS = ("run_id", "queue", "check_args")


def _refuse_keyword_clash(wdef: WorkflowDef, positional: int, given: list[str]) -> None:
    """Raise ``WorkflowArgumentError`` when one of ``App.start``'s own keywords given to
    it (``given``) names a parameter of the workflow that its ``positional`` arguments
    leave unfilled: the start took the value, and the workflow would silently have run
    with its default (or failed for want of it)."""
    check = wdef.arguments
    if check is None or not given:
        return
    for keyword in given:
        where = check.by_name.get(keyword)
        if where is not None and where >= positional:
            raise WorkflowArgumentError(
                wdef.name,
                f"its parameter {keyword!r} has the name of a keyword of App.start, which "
                f"takes {keyword}= as its own: give the parameter positionally (and "
                f"{keyword}= for the start), or rename it")


def _warn_unknown(workflow: str, queue: str, known: Iterable[str] = (),
                  run_id: str | None = None) -> None:
    """A run (``run_id``; None: several, ``start_many``) was created for a workflow no
    worker has registered in the store; the closest of the ``known`` names is suggested,
    for a typo (``tether start crwal``)."""
    hint = did_you_mean(workflow, known)
    if run_id is None:
        _log.warning("no worker has registered workflow %r in this store yet%s; the runs "
                     "wait on queue %r until a worker with that workflow serves them",
                     workflow, hint, queue)
        return
    _log.warning("run %s: no worker has registered workflow %r in this store yet%s; the "
                 "run waits on queue %r until a worker with that workflow serves it",
                 run_id, workflow, hint, queue, extra={"run_id": run_id})


def _check_args_form(value: dict[str, Any]) -> None:
    """``App.fork``'s ``{"args": [...], "kwargs": {...}}`` input, checked: a string as
    ``"args"`` would be split into characters by the worker, and a misspelt key dropped."""
    extra = sorted(str(k) for k in value if k not in ("args", "kwargs"))
    if extra:
        raise ConfigError(f"input with 'args' takes only 'args' and 'kwargs', not "
                          f"{', '.join(map(repr, extra))} (a workflow whose one argument is "
                          "such a dict takes it wrapped: input=[value])")
    if not isinstance(value["args"], (list, tuple)):
        raise ConfigError(f"input's 'args' must be a list of positional arguments, not "
                          f"{type(value['args']).__name__}")
    kwargs = value.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ConfigError("input's 'kwargs' must be a dict of keyword arguments by name")


def _check_mcp(mcp: object) -> None:
    if mcp not in (False, True, "task-only"):
        raise ConfigError(f"mcp= takes True, False or 'task-only', got {mcp!r}")


class WorkerHost:
    """The narrow part of an ``App`` that its workers use, and nothing else: the store
    (opened once for the app), the definitions, and the notices a worker gives back.
    A worker gets it with ``worker_host(app)``."""

    __slots__ = ("_app",)

    def __init__(self, app: App) -> None:
        self._app = app

    async def open(self) -> Store:
        """The app's store, opened.

        Raises:
            ConfigError: the App is closed.
        """
        return await self._app._open()

    def workflow(self, name: str) -> WorkflowDef | None:
        """The registered workflow ``name``, or ``None``."""
        return self._app._workflows.get(name)

    def step_mocks(self) -> Mapping[str, StepDef]:
        """The app's steps replaced by test doubles, by name (live: read at each
        attempt; empty outside tests)."""
        return self._app._step_mocks

    def attach(self, worker: Worker) -> None:
        """A worker started: the app's notices (new runs, signals, cancels) reach it,
        and ``App.close()`` stops it."""
        self._app._workers.add(worker)

    def detach(self, worker: Worker) -> None:
        """A worker stopped."""
        self._app._workers.discard(worker)

    def waiters_mark(self) -> int:
        """A mark of the result waiters registered so far (for ``run_ended``)."""
        return self._app._waiters.mark()

    def run_ended(self, run_id: str, ended: RunRecord | None = None,
                  since: int | None = None) -> None:
        """A worker of this process ended ``run_id``: wake its result waiters at once.
        With ``ended`` (the run as the worker ended it, committed) and the mark taken
        before the end was written (``waiters_mark``), the waiters registered before
        the mark take it without a read; the others read the run."""
        self._app._run_finished(run_id, ended, since)

    def run_left(self, run_id: str) -> None:
        """A worker of this process stopped holding ``run_id``, for whatever reason:
        its result waiters not answered yet read it (while a worker held it, store
        notifications did not make them read it)."""
        self._app._waiters.left(run_id)


def worker_host(app: App) -> WorkerHost:
    """The worker's view of ``app``."""
    return app._host


def _cancel_requested_at(run: RunRecord) -> float | None:
    """``RunInfo.cancel_requested_at``: when the cancel of a run that has it pending, or
    that ended cancelled, was requested (a run that ended otherwise ignored it)."""
    if not run.cancel_requested or (RunStatus(run.status).is_ended
                                    and run.status is not RunStatus.CANCELLED):
        return None
    return run.cancel_requested_at


def _cancel_origin(run: RunRecord) -> dict[str, str | None]:
    """``RunInfo.cancel_reason`` and ``cancelled_with``: why the cancel was asked and
    whose it was (its parent's, cascaded), of a run that has it pending or ended
    cancelled, as ``_cancel_requested_at``."""
    if not run.cancel_requested or (RunStatus(run.status).is_ended
                                    and run.status is not RunStatus.CANCELLED):
        return {"cancel_reason": None, "cancelled_with": None}
    return {"cancel_reason": run.cancel_reason, "cancelled_with": run.cancelled_with}


def _input_view(stored: Any) -> Any:
    """A run's input as users gave it: the list of positional arguments, or
    ``{"args": [...], "kwargs": {...}}`` when there are keyword arguments."""
    if isinstance(stored, dict) and set(stored) == {"args"}:
        return stored["args"]
    return stored


def _reseal_entry(e: JournalEntry, codec: Codec, source: Codec) -> JournalEntry:
    """A fork's copy of journal entry ``e`` of its source, its payloads bound to the
    fork (``codec``'s run) instead of the source (``source``'s)."""
    slot = result_slot(e.kind)

    def again(text: str | None, slot: str = SLOT_JOURNAL) -> str | None:
        return None if text is None else codec.reseal(text, source, slot, slot)

    return dataclasses.replace(e, result=again(e.result, slot), error=again(e.error),
                               args=again(e.args))


#: What ``App._run_info`` shows for a payload it cannot decode: (stored text, why).
Unreadable = Callable[[str, Exception], Any]


def _safe_decode(codec: Codec, text: str | None, annotation: Any = None,
                 slot: str = SLOT_JOURNAL, unreadable: Unreadable | None = None) -> Any:
    if text is None:
        return None
    try:
        return codec.decode(text, annotation, slot)
    except Exception as exc:
        return text if unreadable is None else unreadable(text, exc)


def _lookup_id(run_id: object) -> None:
    """A run id looked up must be a string (``InvalidName``, a ``ConfigError``): an
    ``int`` raised TypeError("object of type 'int' has no len()") on SQLite, out of the
    message of the ``RunNotFound`` it made, and a StoreError on PostgreSQL ("operator
    does not exist: text = smallint")."""
    if not isinstance(run_id, str):
        raise InvalidName("run id", str(run_id), f"must be a string, not {type(run_id).__name__}")
