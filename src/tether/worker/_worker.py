"""The worker: claims runs from its task queues under a lease and executes them.

Loops: one claims (woken by local notifications, or when the next timer is due, or by
a slow poll), one heartbeats (renews every lease this worker holds in one statement,
learns of cancels and of leases it lost, and expires the leases of workers on this
host whose process is gone, so their runs are taken over at once instead of after the
lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tether import _observe
from tether._app import worker_host
from tether._clock import SyncedClock, wait_event
from tether._codec import SLOT_ERROR, SLOT_INPUT, SLOT_RESULT, restore
from tether._errors_codec import error_to_dict
from tether._lifecycle import (
    PurgePlan,
    retention_plans,
    tick_schedules,
    to_record,
    version_announce,
    version_retire,
)
from tether._pacing import OutagePacing
from tether._procs import pid_start, process_alive
from tether._replay import (
    AttemptWriter,
    Blocked,
    Continue,
    Lost,
    Release,
    RunContext,
    _Stop,
    current_run,
    current_step,
    current_worker,
    inherited_of,
)
from tether._show import counted, error_origin
from tether._types import ClaimedRun, Lease, RunRecord, RunStatus, check_name
from tether.errors import (
    Cancelled,
    ConfigError,
    LeaseLost,
    NonDeterminismError,
    PayloadBindingError,
    PayloadError,
    StepError,
    StoreError,
    StoreRefused,
    StoreUnavailable,
    TetherError,
)
from tether.store import HeartbeatResult, Store, Wait, WorkerInfo
from tether.worker import _gc
from tether.worker._metrics import (
    ATTEMPT_STATES,
    MetricsServer,
    WorkerCounts,
    check_host,
    load_tokens,
)

if TYPE_CHECKING:
    from tether._app import App

log = logging.getLogger("tether.worker")

_M = TypeVar("_M", bound=Callable[..., Awaitable[Any]])


def _as_worker(method: _M) -> _M:
    """``method`` of a ``Worker`` executing as that worker (``current_worker``): its log
    lines, and those of the tasks it starts (claims, heartbeats, runs), carry the
    worker's id; the caller's context is as it was once it returns."""
    @functools.wraps(method)
    async def wrapper(self: Worker, *args: Any, **kwargs: Any) -> Any:
        token = current_worker.set(self.worker_id)
        try:
            return await method(self, *args, **kwargs)
        finally:
            current_worker.reset(token)
    return wrapper  # type: ignore[return-value]


#: Lost leases whose run a heartbeat reads back to say who holds it now.
LOST_DETAILS = 10
#: A worker that holds no run renews its registration this often (it has no lease that
#: could expire; another worker calls it stale after a minute without a heartbeat).
IDLE_HEARTBEAT_INTERVAL = 15.0
#: The default poll of a worker whose store is shared by hosts and notifies it of new
#: work (PostgreSQL's LISTEN/NOTIFY): the poll only repairs a lost wake-up, and every
#: poll of every idle worker is a round trip to the one server.
NOTIFIED_POLL_INTERVAL = 10.0
#: Each idle poll waits a random 0-10 % less than the poll interval: workers started
#: together do not poll the server together, and a worker's poll does not keep landing
#: on its own heartbeat (two queries at once hold two pooled connections, and a pool
#: that saw all of them busy within a ``pool_max_idle`` period never shrinks).
POLL_JITTER = 0.1

#: Seconds before a run whose store call failed under it is replayed.
STORE_RETRY_DELAY = 1.0
#: Seconds a stopping worker waits for its last writes (its runs' last attempt states,
#: its unregistration) when the store does not answer.
STOP_WRITES_TIMEOUT = 5.0
#: Crashes of the worker's own code while executing one run (an exception that escaped
#: the run's executor) before the run is failed instead of handed back again.
MAX_EXECUTOR_CRASHES = 5
#: Takeovers in a row of a run whose worker died while executing it (killed by its own
#: code: ``os._exit()``, a segfault, the OOM killer), with no journal progress between
#: them, after which the run is failed instead of killing the next worker too.
MAX_CRASHES = 5
#: The wait before executing a run taken over after its second crash in a row; doubles
#: with each further crash, up to CRASH_BACKOFF_MAX.
CRASH_BACKOFF = 1.0
CRASH_BACKOFF_MAX = 60.0
#: The most runs of dead workers remembered with how their owner was found dead (for
#: the takeover's log line); the oldest are forgotten first (another worker took them).
FOUND_DEAD_MAX = 10_000
#: How long a worker that handed a run back because it cannot decrypt its payloads
#: leaves the run to other workers before it claims it again (doubles each time the same
#: worker meets it again, up to UNREADABLE_BACKOFF_MAX). The back-off is the worker's
#: own (``run_claim``'s ``exclude``): the run is claimable by the others at once.
UNREADABLE_BACKOFF = 1.0
UNREADABLE_BACKOFF_MAX = 60.0
#: Runs a worker remembers having handed back for a key (the least recently met are
#: forgotten first), and most of them left out of one claim (the most recently met).
UNREADABLE_REMEMBERED = 10_000
UNREADABLE_EXCLUDED_MAX = 1_000
#: What ``Worker._retry_store`` returns when it gave up.
_GAVE_UP = object()
#: Seconds between two reminders that the store is still unavailable.
OUTAGE_REMINDER = 30.0
#: A start that finds the store unreachable tries again after this many seconds,
#: doubling up to START_RETRY_MAX (as ``tether worker`` always did).
START_RETRY_FIRST = 0.5
START_RETRY_MAX = 10.0


class _RunReads:
    """``run_get`` for many callers at once: a read asked while none is in flight is
    made at once, alone (as ``run_get``); those asked meanwhile wait for it to end and go
    to the store together, as one ``run_get_many``, and so on. A storm of lost leases (a
    worker that paused past its lease loses every run at once, each run's end reading
    who holds it now) costs a few reads, not one a run: on PostgreSQL 1,000 such reads,
    each on its own, held the pool for 1.5-1.8 s, where one read of them all takes
    0.02-0.05 s (``bench/lost_storm.py``)."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store
        self._asked: dict[str, list[asyncio.Future[RunRecord | None]]] = {}
        #: A read is in flight (a first caller's, or ``_read_asked``'s).
        self._busy = False
        self._task: asyncio.Future[None] | None = None

    async def get(self, run_id: str) -> RunRecord | None:
        """The run (None: it is gone). Raises what the store's read raised."""
        if self._busy:
            fut: asyncio.Future[RunRecord | None] = \
                asyncio.get_running_loop().create_future()
            self._asked.setdefault(run_id, []).append(fut)
            return await fut
        self._busy = True
        try:
            return await self._store().run_get(run_id)
        finally:
            if self._asked:
                self._task = asyncio.ensure_future(self._read_asked())
            else:
                self._busy = False

    async def _read_asked(self) -> None:
        try:
            while self._asked:
                asked, self._asked = self._asked, {}
                try:
                    runs = await self._store().run_get_many(list(asked))
                except Exception as exc:
                    for futs in asked.values():
                        for fut in futs:
                            if not fut.done():
                                fut.set_exception(exc)
                    continue
                except BaseException:  # (cancelled: the event loop is closing)
                    for futs in asked.values():
                        for fut in futs:
                            fut.cancel()
                    raise
                found = {r.run_id: r for r in runs}
                for run_id, futs in asked.items():
                    for fut in futs:
                        if not fut.done():
                            fut.set_result(found.get(run_id))
        finally:
            self._busy = False
            self._task = None


class _StoreOutage(OutagePacing):
    """The store gone away under the worker, as the log tells it: one warning when the
    first call fails (a run's write, a claim, a heartbeat), a reminder with the counts
    every ``OUTAGE_REMINDER`` seconds, and one line when a call goes through again. Each
    failure and retry goes to the debug level: with a thousand runs in flight, a
    minute's outage logged per run and retry was thousands of lines."""

    def __init__(self, clock: Callable[[], float], lease_seconds: float) -> None:
        super().__init__()
        self.runs: set[str] = set()
        self._clock = clock
        self._lease_seconds = lease_seconds
        #: The clock's time of the last call that went through and wrote: a call that
        #: changed nothing (an idle worker's claim that found nothing to take) goes
        #: through on a full disk too, so it says nothing of whether the other workers
        #: could renew their leases then.
        self._reached_at = clock()
        #: Set by an outage: the last time the store was reached before it (None: no
        #: outage), and once a call goes through again, until when takeovers wait.
        self._cut_at: float | None = None
        self._grace_until: float | None = None
        #: Outages told (a start line each) and the seconds of those that ended (/metrics).
        self.outages = 0
        self.outage_seconds = 0.0

    def takeover_before(self) -> float | None:
        """What this worker's claims pass as ``run_claim``'s ``takeover_before``: after
        an outage (until a lease after the store answered again), the last time the
        store was reached before it. Another worker's lease that expired since may have
        expired only because that worker could not write either (a full disk, a
        database restarted: an outage of this worker is most likely everybody's), and a
        live owner renews it at its next heartbeat once the store is back; taken over
        at once, its step in flight ran a second time. A lease that expired while this
        worker still reached the store is taken over as before."""
        if self._cut_at is None:
            return None
        if self._grace_until is not None and self._clock() >= self._grace_until:
            self._cut_at = self._grace_until = None
            return None
        return self._cut_at

    def cut(self) -> None:
        """An outage: a call of this worker failed (``failed``), or the store found its
        server gone (``Store.outages`` grew) though none did (on PostgreSQL calls wait
        for the server, and an idle worker may make none meanwhile). The leases that
        expired since its last write are left to their owners for a lease from the
        store's next answer."""
        if self._cut_at is None:
            self._cut_at = self._reached_at
        self._grace_until = None

    def in_grace(self) -> float | None:
        """Until when takeovers wait (None: they do not, or the store is still out)."""
        return self._grace_until if self.takeover_before() is not None else None

    def failed(self, run_id: str | None, exc: BaseException, what: str) -> None:
        """A call failed with ``exc`` (a write of run ``run_id``, or the worker's own
        with ``None``); ``what`` follows on its debug line, e.g. "retrying in 0.4 s"."""
        if run_id is not None:
            self.runs.add(run_id)
        self.cut()  # (the grace is counted from the store's return)
        told = self._failure(OUTAGE_REMINDER)
        if told == "start":
            self.outages += 1
            _worker_wide("store unavailable (%s); the worker and its runs in flight retry, "
                         "and this says how it goes every %.0f s (each retry at debug "
                         "level)", exc, OUTAGE_REMINDER)
        elif told == "reminder":
            _worker_wide("store still unavailable after %.0f s (%s): %d failed calls so "
                         "far, %s", self._elapsed(), exc, self.failures, self._runs())
        if run_id is None:
            log.debug("store unavailable (%s); %s", exc, what)
        else:
            log.debug("run %s: store unavailable (%s); %s", run_id, exc, what,
                      extra={"run_id": run_id})

    def back(self, *, by_run: bool = True, wrote: bool = True) -> None:
        """A call went through: a run's write (``by_run``), or the worker's own claim or
        heartbeat, which ends the outage only if no run's write failed in it (a store
        that takes those and refuses the runs' writes is not back for the runs).
        ``wrote``: the call changed something (a claim that took runs, a heartbeat that
        renewed leases); only such a call moves the time a later outage is cut at."""
        now = self._clock()
        if wrote:
            self._reached_at = now
        if self._cut_at is not None and self._grace_until is None:
            self._grace_until = now + self._lease_seconds
        if self.since is None or (not by_run and self.runs):
            return
        elapsed = self._elapsed()
        self.outage_seconds += elapsed
        _worker_wide("store available again, %.1f s after the first failed call (%d failed "
                     "calls meanwhile, %s, each retried)", elapsed, self.failures,
                     self._runs())
        self._clear()
        self.runs = set()

    def _runs(self) -> str:
        n = len(self.runs)
        return f"{n} run{'' if n == 1 else 's'} in flight among them"


def _worker_wide(msg: str, *args: object) -> None:
    """A warning about the whole worker (its store's outage), logged outside the context
    of the run whose call told it: the line names the worker, not that run (whose
    ``run=ID`` it carried, one run among those in flight, picked by chance)."""
    def emit() -> None:
        current_run.set(None)
        current_step.set(None)
        log.warning(msg, *args)
    contextvars.copy_context().run(emit)


def _engine_store_failure(error: BaseException | None) -> bool:
    """Whether the workflow code ended because one of the engine's own store calls failed
    transiently (not a step's recorded failure, which is rebuilt as a ``StepError``)."""
    return isinstance(error, StoreUnavailable) and not isinstance(error, StepError)


class ExitInTask(TetherError):
    """A task started by workflow code raised ``SystemExit``, ``KeyboardInterrupt`` or
    ``GeneratorExit``; it is raised in that task instead, so it fails the run, not the
    worker. The workflow may catch it like any error (the original exception is its
    ``__cause__``)."""

    __module__ = "tether.worker"


async def _contained(coro: Any) -> Any:
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
        # (GeneratorExit too: set on the task, it was thrown into the coroutine awaiting
        # it, which Python then closed; the engine's code around it, awaiting as it
        # unwound, raised RuntimeError("coroutine ignored GeneratorExit"), an executor
        # crash, until 2026-12-08)
        raise ExitInTask(f"{type(exc).__name__}({exc}) raised in a task of a run") from exc
    except _Stop:
        # The engine stopping the run's code (a release, a block, a lost lease) ends
        # each of its tasks with ``_Stop``; a task the code does not await again would
        # be garbage-collected with asyncio's "Task exception was never retrieved".
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(_retrieve_stop)
        raise


def _retrieve_stop(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # (marks the engine's ``_Stop`` as retrieved)


def _contain_exits(loop: asyncio.AbstractEventLoop) -> None:
    """Make tasks created inside a run turn ``SystemExit``/``KeyboardInterrupt`` into
    an ordinary exception: asyncio re-raises those two out of the event loop, which would
    end the worker (and every next worker that claims the run); and ``GeneratorExit``,
    which a task's awaiter cannot take (``_contained``). Tasks created outside
    runs are left alone. Chains any task factory already set."""
    previous = loop.get_task_factory()
    if getattr(previous, "_tether_contains_exits", False):
        return

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        if current_run.get() is not None:
            coro = _contained(coro)
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    factory._tether_contains_exits = True  # type: ignore[attr-defined]
    loop.set_task_factory(factory)


def _lease_margin(margin: float | None, lease_seconds: float,
                  heartbeat_interval: float) -> float:
    """``Worker``'s ``lease_margin``, checked; None: its default, a tenth of the lease,
    at most half of what is left of a lease at each renewal. Raises: ConfigError."""
    room = lease_seconds - heartbeat_interval  # (left of a lease as the next renewal comes)
    if margin is None:
        return min(lease_seconds / 10, room / 2)
    if (isinstance(margin, bool) or not isinstance(margin, (int, float))
            or not 0 <= margin < room):
        # (at or past it, every step would wait for a renewal between two heartbeats)
        raise ConfigError(
            f"lease_margin must be a number of seconds >= 0 and below lease_seconds - "
            f"heartbeat_interval ({lease_seconds:g} - {heartbeat_interval:g} = {room:g}), "
            f"not {margin!r}: no step starts within it of a lease's end")
    return float(margin)


@dataclass(slots=True)
class _Active:
    task: asyncio.Task[None]
    ctx: RunContext | None
    seq: int
    lease: Lease
    queue: str
    finishing: bool = False
    #: When steps of the run stop starting by the worker's clock: its lease's end less
    #: ``Worker.lease_margin`` (``RunContext.lease_until``).
    lease_until: float = math.inf


class Worker:
    """Executes runs of ``app``'s workflows from ``queues``.

    Use it as an async context manager (embedded in an application), or call
    ``run()`` to serve until cancelled (the ``tether worker`` command).

    ``start_retry``: how long ``start()`` (and so ``async with``) keeps trying a store
    it cannot reach (``StoreUnavailable``), in seconds; ``None`` (the default): until
    the store answers, as ``tether worker`` does; ``0``: not at all, the first failure
    raises.

    ``lease_seconds``: how long a claimed run stays this worker's without a renewal
    (default 5); ``heartbeat_interval``: how often the heartbeat renews its leases
    (default a quarter of ``lease_seconds``; it must be below it). A step does not start
    once a run's lease has run out by the worker's clock until a renewal comes, nor
    within ``lease_margin`` seconds of its end: room for another worker's clock running
    a little ahead of this one's, which takes the run over by its own clock. Default:
    a tenth of ``lease_seconds`` (0.5 s for the default 5 s lease; at most half of
    ``lease_seconds - heartbeat_interval``): two workers' synced clocks (PostgreSQL:
    each within half a sync's round trip of the server's, 0.125 s at most, plus drift
    between its 30 s resyncs) stay well within it, and while heartbeats go through a
    lease never gets that close to its end (each renewal comes ``heartbeat_interval``
    after the last, with ``lease_seconds - heartbeat_interval`` of the lease left), so
    the margin delays no step then. ``0`` turns it off. It must be below
    ``lease_seconds - heartbeat_interval`` (else every step would wait for a renewal
    between two heartbeats).

    While it runs, the garbage collector's young threshold is raised from Python's
    default 700 to 10,000 objects (a quarter of the event loop's CPU went to collections
    with 1,000 runs in flight); an application that set its own thresholds keeps them,
    and ``tune_gc=False`` leaves the collector alone (``tether.worker._gc``).

    ``metrics_port``: serve ``GET /metrics`` (Prometheus text format, this worker's
    ``tether_worker_*`` counters, from zero at each start) on this port while the worker
    runs; ``0`` picks a free one (``metrics_port`` then says which, once started).
    ``metrics_host``: its address (default ``127.0.0.1``); one beyond loopback needs
    tokens: ``metrics_token_file`` (entries ``read:TOKEN`` or ``admin:TOKEN``) and/or
    ``TETHER_API_TOKENS``, as ``tether serve``'s; with tokens a scrape sends one
    (``Authorization: Bearer``). See docs/telemetry.md.
    """

    def __init__(self, app: App, *, queues: list[str] | None = None, concurrency: int = 50,
                 lease_seconds: float = 5.0, heartbeat_interval: float | None = None,
                 lease_margin: float | None = None,
                 poll_interval: float | None = None, sticky_wait: float = 2.0,
                 worker_id: str | None = None, tune_gc: bool = True,
                 max_crashes: int = MAX_CRASHES, start_retry: float | None = None,
                 metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                 metrics_token_file: str | None = None) -> None:
        if concurrency < 1:
            raise ConfigError("concurrency must be >= 1")
        if start_retry is not None and (isinstance(start_retry, bool)
                                        or not isinstance(start_retry, (int, float))
                                        or not start_retry >= 0):
            raise ConfigError(f"start_retry must be a number of seconds >= 0 or None, "
                              f"not {start_retry!r}")
        #: Seconds a start keeps trying an unreachable store (None: until it answers).
        self.start_retry = start_retry
        if isinstance(max_crashes, bool) or not isinstance(max_crashes, int) \
                or max_crashes < 1:
            raise ConfigError(f"max_crashes must be an integer >= 1, not {max_crashes!r}")
        #: Crashes in a row of one run (see MAX_CRASHES) before it is failed.
        self.max_crashes = max_crashes
        if lease_seconds <= 0:
            raise ConfigError("lease_seconds must be > 0")
        if heartbeat_interval is not None and not 0 < heartbeat_interval < lease_seconds:
            # (a lease would run out between two renewals: other workers could take its
            # runs over, and its own steps wait for a renewal before they start)
            raise ConfigError(f"heartbeat_interval must be > 0 and below lease_seconds "
                              f"({lease_seconds:g}), not {heartbeat_interval!r}")
        heartbeat_interval = heartbeat_interval or lease_seconds / 4
        #: Seconds before a lease's end by this worker's clock from which no step starts
        #: (see the class's docstring).
        self.lease_margin = _lease_margin(lease_margin, lease_seconds, heartbeat_interval)
        #: How long after a claim or heartbeat steps of its runs may start: a lease less
        #: the margin (``RunContext.lease_until``, precomputed: one comparison a step).
        self._start_span = lease_seconds - self.lease_margin
        self.app = app
        self._host = worker_host(app)
        #: What this worker did, for its ``/metrics`` (process-local, from zero).
        self.counts = WorkerCounts()
        #: When the worker was made (Unix time): its metrics' start time.
        self.metrics_started_at = time.time()
        self._metrics = self._metrics_server(metrics_port, metrics_host, metrics_token_file)
        if isinstance(queues, str):
            queues = [queues]  # (one name: not a list of one-letter queues)
        self.queues = list(queues) if queues else app.queues()
        for queue in self.queues:
            check_name("queue", queue)  # (an empty name served a queue no run is on)
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval
        #: Seconds between looks for work when nothing woke the worker: 1 s by default,
        #: NOTIFIED_POLL_INTERVAL on a multi-host store that notifies.
        self.poll_interval = poll_interval if poll_interval is not None else 1.0
        self._default_poll = poll_interval is None
        self._peers: list[WorkerInfo] | None = None  # the workers seen at the last look
        #: Runs whose owner this worker found dead, and how (``_reap_dead_workers``).
        self._found_dead: dict[str, str] = {}
        self.sticky_wait = sticky_wait
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.hostname = socket.gethostname()
        self._active: dict[str, _Active] = {}
        self._crashes: dict[str, int] = {}  # run id -> executor crashes in a row
        # run id -> (hand-backs for a key, when this worker may claim it again), in the
        # order last met; and the ids not to claim now, valid until _excluded_until.
        self._unreadable_runs: dict[str, tuple[int, float]] = {}
        self._excluded: list[str] = []
        self._excluded_until = 0.0
        self._claiming = False  # a run_claim is in flight (its runs are not active yet)
        self._background: set[asyncio.Future[None]] = set()
        #: Who holds a lost run now, read for many lost runs at once (``_lease_lost``).
        self._lost_reads = _RunReads(lambda: self.app.store)
        self._seq = 0
        self._wake = asyncio.Event()
        #: Set by a run's step that waits for its lease's renewal (``RunContext.
        #: lease_renewed``): the heartbeat goes at once, not at its next interval.
        self._beat_now = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._unsubscribe: Callable[[], Awaitable[None]] | None = None
        self._started = False
        self._registered = False  # (by a start that may yet fail: see _undo_start)
        self._stopping = False
        self._stop_task: asyncio.Future[None] | None = None
        self._stopped = False
        self._draining = False
        #: A run this worker executes alone (a crash suspect); nothing is claimed meanwhile.
        self._isolated: str | None = None
        #: A suspect waits for this worker to be idle: nothing is claimed until it is.
        self._isolation_wanted = False
        #: Runs past their crash check whose code this worker is executing.
        self._executing = 0
        #: The store gone away under the runs in flight (what the log says of it).
        self._outage = _StoreOutage(app.clock.now, lease_seconds)
        #: ``Store.outages`` when this worker last looked (before each claim).
        self._outages_seen = 0
        #: When the last heartbeat that went through was called (the clock's time): the
        #: leases of the runs held since then count from it.
        self._renewed_at = 0.0
        #: The workflows this worker may claim runs of: the ones its app registered.
        self._claimable: list[str] = sorted(app.workflows())
        self._attempts: AttemptWriter | None = None  # made at start, on the opened store
        self.completed = 0  #: runs this worker finished (any final status)
        #: Raise the garbage collector's young threshold while running (see ``_gc``).
        self.tune_gc = tune_gc
        self._gc_tuned = False

    def _metrics_server(self, port: int | None, host: str,
                        token_file: str | None) -> MetricsServer | None:
        """The ``GET /metrics`` server asked for (``metrics_port``), checked, not bound.
        Raises: ConfigError (a bad port, tokens that cannot be read, a host beyond
        loopback without tokens)."""
        if port is None:
            return None
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"metrics_port must be an integer from 0 to 65535 (0: a free "
                              f"port), not {port!r}")
        if not isinstance(host, str) or not host.strip("[] "):
            raise ConfigError(f"metrics_host must be a host name or address, not {host!r}")
        tokens = load_tokens(token_file)
        check_host(host, tokens)
        return MetricsServer(self, host, port, tokens)

    @property
    def metrics_port(self) -> int | None:
        """The port of this worker's ``GET /metrics`` (the one bound, once started, when
        0 was asked for); None without one."""
        return None if self._metrics is None else self._metrics.port

    @property
    def stopping(self) -> bool:
        """Whether the worker was told to stop or drain (it claims nothing more)."""
        return self._stopping or self._draining

    def attempts_noted(self) -> dict[str, int]:
        """Step attempt states noted by this worker, by state (``AttemptWriter.noted``)."""
        writer = self._attempts
        return dict(writer.noted) if writer is not None else dict.fromkeys(ATTEMPT_STATES, 0)

    def outage_figures(self) -> tuple[int, float, int]:
        """Store outages so far, their seconds (the one going on included), and 1 while
        one goes on."""
        outage = self._outage
        going = outage.since is not None
        return (outage.outages, outage.outage_seconds + outage._elapsed(), int(going))

    def active_queues(self) -> list[str]:
        """The queue of each run this worker holds now."""
        return [a.queue for a in self._active.values()]

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @_as_worker
    async def start(self) -> None:
        """Register, recover runs of dead workers on this host, and start serving.

        A store it cannot reach (``StoreUnavailable``: a database that is down or not
        accepting connections yet, a SQLite file locked past its busy timeout) is tried
        again after 0.5 s, doubling to 10 s, each failure logged at ERROR level, for
        as long as ``start_retry`` allows: by default until the store answers, as
        ``tether worker`` does, so that an application that embeds a worker rides out
        a database that is still starting. Cancel the call (``asyncio.timeout``) or set
        ``start_retry`` to bound the wait. A start that fails leaves nothing behind.

        Raises:
            StoreUnavailable: the store was still unreachable after ``start_retry``
                seconds.
            ConfigError: a mistake no wait can fix, at once: a SQLite file in a folder
                that does not exist, a PostgreSQL schema behind with auto-migration
                off, the App closed.
        """
        if self._started:
            return
        if self._metrics is not None:
            await self._metrics.start()  # (answers while the store is out, too)
        try:
            await self._start_retrying()
        except BaseException:
            if self._metrics is not None:
                await self._metrics.close()
            raise

    async def _start_retrying(self) -> None:
        delay, failures = START_RETRY_FIRST, 0
        deadline = None if self.start_retry is None else time.monotonic() + self.start_retry
        while True:
            try:
                await self._start_once()
                break
            except StoreUnavailable as exc:
                await self._undo_start()
                failures += 1
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    if failures > 1:
                        log.error("store unavailable: %s; giving up after %d attempts "
                                  "(start_retry=%g s)", exc, failures, self.start_retry)
                    raise
                wait = delay if left is None else min(delay, left)
                # One line per attempt, naming the server: the worker's state is in its log.
                if isinstance(exc, StoreRefused):
                    # (no database yet, a wrong password: no outage to wait out, and
                    # said so; tried again all the same, for a database made later)
                    log.error("%s; retrying in %.1f s (attempt %d) until it is fixed",
                              exc, wait, failures)
                else:
                    log.error("store unavailable: %s; retrying in %.1f s (attempt %d)",
                              exc, wait, failures)
                await asyncio.sleep(wait)
                delay = min(delay * 2, START_RETRY_MAX)
            except BaseException:
                await self._undo_start()
                raise
        if failures:
            log.info("store reachable after %d failed attempts", failures)

    async def _start_once(self) -> None:
        """One attempt at ``start``: every store call comes before the worker is
        started, so that a failure leaves only what ``_undo_start`` undoes."""
        store = await self._host.open()
        self._outages_seen = store.outages
        self._attempts = AttemptWriter(store)
        _contain_exits(asyncio.get_running_loop())
        caps = store.capabilities
        if self._default_poll and caps.notifications and caps.multi_host:
            self.poll_interval = NOTIFIED_POLL_INTERVAL
        now = self.app.clock.now()
        await store.worker_register(info=WorkerInfo(
            worker_id=self.worker_id, hostname=self.hostname, pid=os.getpid(),
            pid_start=pid_start(os.getpid()), queues=",".join(self.queues),
            started_at=now, heartbeat_at=now,
        ))
        self._registered = True
        await self._reap_dead_workers()
        await store.workflow_register(
            workflows={name: w.queue for name, w in self.app.workflows().items()}, now=now)
        for spec in self.app._schedules.values():
            await store.schedule_upsert(schedule=to_record(self.app, spec, now))
        if self.app.version is not None:
            # (the schedules' ticks go to the newest live version: see newest_live_version)
            await version_announce(store, worker_id=self.worker_id, version=self.app.version,
                                   workflows=[name for name, w in self.app.workflows().items()
                                              if w.queue in self.queues], now=now)
        # A cancel from another process reaches a run it holds at once, not at the next
        # heartbeat (which still reports cancels whose notification was lost).
        self._unsubscribe = await store.subscribe(self.notify, on_cancel=self.request_cancel)
        self._executor = ThreadPoolExecutor(
            max_workers=min(32, self.concurrency + 4), thread_name_prefix="tether-step"
        )
        self._started = True
        self._renewed_at = now
        if self.tune_gc:
            self._gc_tuned = _gc.worker_started()
        self._host.attach(self)
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="tether-claim"),
            asyncio.create_task(self._heartbeat_loop(), name="tether-heartbeat"),
        ]
        if self.app._schedules:
            self._loops.append(asyncio.create_task(self._schedule_loop(),
                                                   name="tether-schedules"))
        if retention_plans(self.app):
            self._loops.append(asyncio.create_task(self._retention_loop(),
                                                   name="tether-retention"))
        # (the version too: in a rolling deploy of versioned workers the log said nothing
        # of which code a worker claims for, until 2026-12-07)
        log.info("worker %s serving queues %s (concurrency %d%s)", self.worker_id,
                 ",".join(self.queues), self.concurrency,
                 "" if self.app.version is None else
                 f", version {self.app.version}: its runs and runs without one")
        declared = {w.queue for w in self.app.workflows().values()}
        if self.app.workflows() and not declared & set(self.queues):
            # (a typo in --queue: such a worker waits for ever, and said nothing)
            log.warning("worker %s: none of this app's workflows is declared on queue%s "
                        "%s (they are on %s); it runs only runs started there with "
                        "queue=", self.worker_id, "" if len(self.queues) == 1 else "s",
                        ", ".join(repr(q) for q in self.queues),
                        ", ".join(repr(q) for q in sorted(declared)))

    async def _undo_start(self) -> None:
        """What a start that failed before serving did: its subscription ended, its
        registration removed (bounded: the store may be what failed). The App's store
        stays open for its other users, and the next attempt calls it again."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            with contextlib.suppress(Exception):
                await unsubscribe()
        if self._registered:
            self._registered = False
            await self._unregister()
        self._attempts = None

    @_as_worker
    async def stop(self) -> None:
        """Stop claiming, stop executing, and hand held runs back to the queue.

        A caller cancelled meanwhile (a timeout around ``stop``) is cancelled at once,
        and the stopping goes on by itself; calling ``stop`` again waits for it."""
        if not self._started:
            return
        stopping = self._stop_task
        if stopping is None or (stopping.cancelled() and not self._stopped):
            # (A stopping cancelled by the end of its event loop starts again: each of
            # its parts can be done twice.)
            self._stopping = True
            stopping = self._stop_task = asyncio.ensure_future(self._stop())
        await asyncio.shield(stopping)

    async def _stop(self) -> None:
        try:
            await self._stop_parts()
        finally:
            # Only now: until its runs are handed back, App.close() waits for this stop.
            self._host.detach(self)

    async def _stop_parts(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            await unsubscribe()
        for t in self._loops:
            # (not again a loop a drain cancelled: a claim that was cancelled in its
            # query is still cancelling it in the server, and a second cancel cut that
            # off, psycopg's WARNING "query cancellation interrupted" at a stop)
            if not t.cancelling():
                t.cancel()
        for a in list(self._active.values()):
            a.task.cancel()
        await asyncio.gather(*self._loops, *(a.task for a in self._active.values()),
                             return_exceptions=True)
        # Hand-backs of crashed runs in flight: short writes, let them land before the
        # store can be closed under them.
        await asyncio.gather(*self._background, return_exceptions=True)
        # The last writes, side by side and bounded: a store that went away must not hold
        # the exit past the platform's stop timeout (it waited for the attempts, then
        # for the pool, one after the other: 15 s past the grace period). The attempt
        # states noted in the last 50 ms; the unregistration (it spares other workers
        # the wait for this one's leases to expire).
        await asyncio.gather(*(
            [self._attempts.close(STOP_WRITES_TIMEOUT)] if self._attempts is not None
            else []), self._unregister())
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._gc_tuned:
            self._gc_tuned = False
            _gc.worker_stopped()
        if self._metrics is not None:
            await self._metrics.close()
        self._stopped = True
        log.info("worker %s stopped", self.worker_id)

    async def _unregister(self) -> None:
        try:
            async with asyncio.timeout(STOP_WRITES_TIMEOUT):
                await self.app.store.worker_unregister(
                    worker_id=self.worker_id, now=self.app.clock.now())
                if self.app.version is not None:
                    await version_retire(self.app.store, worker_id=self.worker_id,
                                         now=self.app.clock.now())
        except (StoreError, TimeoutError) as exc:
            log.warning("worker %s could not unregister (%s); other workers take its "
                        "runs over when their leases expire", self.worker_id,
                        str(exc) or "the store did not answer")

    @_as_worker
    async def drain(self, grace: float, abandon: asyncio.Event | None = None) -> bool:
        """Stop claiming; let each run's step in flight finish and be journaled, then hand
        the run back (another worker continues it at once); after ``grace`` seconds, or
        when ``abandon`` is set, stop the rest as ``stop()`` does (their steps run again
        elsewhere). Returns True if every run was handed back within the grace period."""
        if not self._started or self._stopping:
            return True
        self._draining = True
        log.info("worker %s draining: %d run%s in flight, grace %.1f s", self.worker_id,
                 len(self._active), "" if len(self._active) == 1 else "s", grace)
        for t in self._loops:
            if t.get_name() == "tether-claim":
                t.cancel()
        for a in list(self._active.values()):
            if a.ctx is not None:
                a.ctx.drain()
        tasks = [a.task for a in self._active.values()]
        clean = True
        began = time.monotonic()
        if tasks:
            waiter = asyncio.ensure_future(asyncio.wait(tasks))
            stopper = asyncio.ensure_future(abandon.wait()) if abandon is not None else None
            done, _ = await asyncio.wait([waiter, *([stopper] if stopper else [])],
                                         timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            clean = waiter in done
            abandoned = stopper is not None and stopper in done
            for f in (waiter, stopper):
                if f is not None and not f.done():
                    f.cancel()
            if not clean:
                # Why it stops now: the grace period ran out, or it was told not to wait
                # (``abandon``: the CLI sets it on a second SIGTERM or SIGINT).
                why = ("told to stop draining (a second stop signal)" if abandoned
                       else f"the grace period ({grace:g} s) is over")
                n = len(self._active)
                log.warning("worker %s: %s with %d run%s still in flight; abandoning %s "
                            "(%s steps run again elsewhere)", self.worker_id, why, n,
                            "" if n == 1 else "s", "it" if n == 1 else "them",
                            "its" if n == 1 else "their")
            else:
                # (how long the drain took, against --grace: only "draining" and
                # "stopped" were said until 2026-12-07)
                n = len(tasks)
                log.info("worker %s drained in %.2f s: %d run%s let go, %sat its next "
                         "operation (handed back to the queue, or ended)", self.worker_id,
                         time.monotonic() - began, n, "" if n == 1 else "s",
                         "" if n == 1 else "each ")
        await self.stop()
        return clean

    async def run(self) -> None:
        """Serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    def notify(self) -> None:
        """Work may have arrived: claim now instead of at the next poll."""
        self._wake.set()

    def holds(self, run_id: str) -> bool:
        """Whether this worker executes ``run_id`` now (it ends it, or lets it go and
        says so: ``WorkerHost.run_left``)."""
        return run_id in self._active

    def request_cancel(self, run_id: str) -> None:
        active = self._active.get(run_id)
        if active is not None and active.ctx is not None:
            active.ctx.request_cancel()

    @property
    def active_runs(self) -> int:
        return len(self._active)

    # -- claiming ---------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        store = self.app.store
        clock = self.app.clock
        backoff = 0.1
        while not self._stopping:
            # Cleared before looking, so a wake-up that arrives while we claim (or while
            # every slot is busy) is kept for the wait below, and a stale one can't spin.
            self._wake.clear()
            free = self.concurrency - len(self._active)
            if self._isolated is not None or self._isolation_wanted:
                free = 0  # a crash suspect runs alone (see _crash_check)
            claimed: list[ClaimedRun] = []
            excluded = self._exclusions(clock.now())
            if self._active and clock.now() - self._renewed_at > self.lease_seconds / 2:
                # No heartbeat went through for a while (the store was unreachable): the
                # leases of the runs this worker executes may have expired. Claiming one
                # back would replay it beside the task still executing it, and run its
                # step in flight (a model call outliving the outage, a result waiting to
                # be written: RunContext.write_again) a second time; the next heartbeat
                # renews them instead (or reports them taken over by another worker).
                excluded = [*excluded, *self._active]
            if free > 0:
                self._claiming = True
                called = clock.now()
                if store.outages != self._outages_seen:
                    self._outages_seen = store.outages
                    self._outage.cut()
                try:
                    claimed = await store.run_claim(
                        worker_id=self.worker_id, queues=self.queues, limit=min(free, 256),
                        now=called, lease_seconds=self.lease_seconds,
                        workflows=self._claimable, version=self.app.version,
                        exclude=excluded, takeover_before=self._outage.takeover_before(),
                    )
                    backoff = 0.1
                    self._outage.back(by_run=False, wrote=bool(claimed))
                except StoreUnavailable as exc:
                    self._outage.failed(None, exc, f"claim failed; retrying in {backoff:.1f} s")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                except StoreError as exc:
                    log.warning("claim failed (%s); retrying in %.1f s", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                finally:
                    self._claiming = False
                self.counts.claimed += len(claimed)
                for c in claimed:
                    if c.due_at is not None:  # (read by the claim: no store call for it)
                        self.counts.waited(c.run.queue, called - c.due_at)
                    self._seq += 1
                    task = asyncio.create_task(self._execute(c), name=f"tether-run-{c.run.run_id}")
                    self._active[c.run.run_id] = _Active(
                        task, None, self._seq, c.lease, c.run.queue,
                        lease_until=called + self._start_span)
                    task.add_done_callback(self._make_done(c.run.run_id))
                if claimed:
                    # (Expired, the next claim, this worker's own, would take the runs
                    # again, running their steps in flight twice.)
                    with contextlib.suppress(StoreError):
                        await self._renew_if_late(called)
                if claimed:
                    continue
            timeout = self.poll_interval * (1.0 - POLL_JITTER * random.random())
            if free > 0:
                try:
                    nxt = await store.next_available_at(
                        queues=self.queues, workflows=self._claimable,
                        version=self.app.version, exclude=excluded)
                except StoreError:
                    nxt = None
                if excluded:  # look again when the first of them may be claimed again
                    nxt = min(nxt, self._excluded_until) if nxt is not None \
                        else self._excluded_until
                grace = self._outage.in_grace()
                if grace is not None and nxt is not None and nxt <= clock.now():
                    # (What is due is another worker's run whose takeover waits: look
                    # again at the grace's end, or at the usual poll if sooner.)
                    nxt = min(grace, clock.now() + self.poll_interval)
                if nxt is not None:
                    timeout = min(timeout, max(nxt - clock.now(), 0.0) + 0.001)
            await wait_event(self._wake, timeout)

    def _make_done(self, run_id: str) -> Any:
        def done(task: asyncio.Task[None]) -> None:
            active = self._active.get(run_id)
            if active is not None and active.task is task:
                del self._active[run_id]
                self._host.run_left(run_id)
            if self._isolated == run_id:
                self._isolated = None
            if not self._active:
                self._isolation_wanted = False
            self._wake.set()
            error = None if task.cancelled() else task.exception()
            if error is None:
                self._crashes.pop(run_id, None)
                return
            crashes = self._crashes.get(run_id, 0) + 1
            self._crashes[run_id] = crashes
            log.error("run %s: executor crashed (%d of %d)", run_id, crashes,
                      MAX_EXECUTOR_CRASHES, exc_info=error, extra={"run_id": run_id})
            if active is not None:
                # Else the heartbeat, which renews every lease this worker holds,
                # would keep the run 'running' here with nobody executing it.
                position = active.ctx.lost_at() if active.ctx is not None else None
                after = self._hand_back(active.lease, crashes, error, position, active.ctx)
                hand_back = asyncio.ensure_future(after)
                self._background.add(hand_back)
                hand_back.add_done_callback(self._background.discard)

        return done

    async def _hand_back(self, lease: Lease, crashes: int = 0,
                         error: BaseException | None = None,
                         position: int | None = None,
                         ctx: RunContext | None = None) -> None:
        """Release a run this worker holds but no longer executes, for a replay after a
        backoff that doubles with each crash; after ``MAX_EXECUTOR_CRASHES`` the run
        fails instead, so a poison run can neither spin nor hold a slot for ever. A
        lease lost meanwhile (another worker took the run over: nothing to hand back) is
        counted and said as ``_lease_lost`` does; ``position``: where the run stood, if
        known. ``ctx``: the crashed execution: when the run is released, its steps that
        succeeded but whose results were not recorded are noted ``superseded`` first
        (the replay runs them again), as a lost run's are, and its attempts are written
        before the release."""
        store = self.app.store
        reason = f"{type(error).__name__}: {error}" if error is not None else "worker error"
        if ctx is not None and crashes < MAX_EXECUTOR_CRASHES:
            # (Before the release: while this worker holds the run its journal is as
            # this execution left it. A run failed instead runs no step again.)
            await ctx.supersede(None)
            with contextlib.suppress(StoreError):
                await ctx.flush_history()

        def release() -> Awaitable[object]:
            now = self.app.clock.now()
            if crashes >= MAX_EXECUTOR_CRASHES:
                text = self.app.codec.for_run(lease.run_id).encode_error({
                    "type": "tether.errors.TetherError",
                    "message": f"the worker crashed {crashes} times executing this run; "
                               f"last: {reason}"}, SLOT_ERROR)
                return store.run_finish(lease=lease, status=RunStatus.FAILED.value,
                                        result=None, error=text, now=now)
            delay = _doubling(STORE_RETRY_DELAY, crashes, 60.0)
            # Only the error's type here: waiting_for is not a payload (no codec hook
            # encrypts it), and a message may hold user data.
            return store.run_release(lease=lease, now=now, wait=Wait(
                now + delay, f"replay after a worker error (crash {crashes} of "
                             f"{MAX_EXECUTOR_CRASHES}): {type(error).__name__}"))

        try:
            handed = await self._retry_store(lease.run_id, "hand it back", release,
                                             errors=(StoreError,), attempts=10)
        except LeaseLost:  # someone else has it: nothing to hand back
            await self._lease_lost(lease.run_id, lease.fencing_token, position, ctx)
            return
        if handed is not _GAVE_UP:
            if crashes >= MAX_EXECUTOR_CRASHES:
                self._crashes.pop(lease.run_id, None)
                self._count_end(RunStatus.FAILED)
                self._host.run_ended(lease.run_id)
            self._wake.set()

    async def _retry_store(self, run_id: str, what: str, call: Callable[[], Awaitable[Any]], *,
                           errors: tuple[type[Exception], ...] = (StoreUnavailable,),
                           attempts: int | None = None) -> Any:
        """``call()`` until the store takes it, backing off from 0.2 s to 5 s; after
        ``attempts`` (or once the worker is stopping) log and return ``_GAVE_UP``.
        A lost lease is not retried: ``LeaseLost`` goes to the caller."""
        delay = 0.2
        tried = 0
        while True:
            try:
                result = await call()
            except LeaseLost:
                self._outage.back(wrote=False)  # (the store answered)
                raise
            except errors as exc:
                tried += 1
                if self._stopping or (attempts is not None and tried >= attempts):
                    log.error("run %s: could not %s (%s); giving up", run_id, what, exc,
                              extra={"run_id": run_id})
                    return _GAVE_UP
                if isinstance(exc, StoreUnavailable):
                    self._outage.failed(run_id, exc, f"could not {what}; retrying in "
                                                     f"{delay:.1f} s")
                else:
                    log.warning("run %s: could not %s (%s); retrying in %.1f s",
                                run_id, what, exc, delay, extra={"run_id": run_id})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                self._outage.back()
                return result

    # -- schedules and retention ----------------------------------------------------------

    async def _schedule_loop(self) -> None:
        """Start the due ticks of the schedules of this worker's workflows (every worker
        tries; each tick's run is created once). Wakes at the next tick, and at least
        every 5 s to see schedules changed by other processes."""
        clock = self.app.clock
        names = set(self._claimable)
        while not self._stopping:
            delay = 5.0
            try:
                nxt = await tick_schedules(self.app, self.app.store, names, clock.now(),
                                           self.notify)
                if nxt is not None:
                    delay = min(delay, max(nxt - clock.now(), 0.0) + 0.001)
                self._outage.back(by_run=False, wrote=False)
            except StoreUnavailable as exc:
                # (an outage: said once and then every 30 s with the claims' and the
                # runs' failures, not a warning a second for as long as it lasts)
                self._outage.failed(None, exc, "starting the due ticks of schedules "
                                               "failed; retrying in 1.0 s")
                delay = 1.0
            except StoreError as exc:
                log.warning("schedules: %s", exc)
                delay = 1.0
            except Exception:  # (a bug: said, and tried again, not the loop ended unsaid)
                log.exception("schedules: starting the due ticks failed; trying again "
                              "in %.0f s", delay)
            await asyncio.sleep(delay)

    async def _retention_loop(self) -> None:
        """Apply the retention policies now and then (any worker may; deletes are
        idempotent): each of this app's workflows' own policies for their runs, and the
        app's for every other run of the store (``retention_plans``), each at its own
        ``every``."""
        plans = retention_plans(self.app)
        loop = asyncio.get_running_loop()
        due = [loop.time()] * len(plans)
        while not self._stopping and plans:
            for i, plan in enumerate(plans):
                if due[i] > loop.time():
                    continue
                await self._purge_under(plan)
                due[i] = loop.time() + plan.policy.every
            await asyncio.sleep(max(min(due) - loop.time(), 0.0))

    async def _purge_under(self, plan: PurgePlan) -> None:
        """One turn of a retention plan: purge in batches of 500 until none is left."""
        policy = plan.policy
        of = "" if plan.workflows is None else (
            f" of workflow{'' if len(plan.workflows) == 1 else 's'} "
            f"{', '.join(plan.workflows)}")
        # (only the filters a plan has: with the app's policy alone the call is as it
        # was, for a store written before they were)
        which: dict[str, Any] = {}
        if plan.workflows is not None:
            which["workflows"] = list(plan.workflows)
        if plan.exclude:
            which["exclude_workflows"] = list(plan.exclude)
        try:
            while True:
                report = await self.app.store.run_purge(
                    finished_before=self.app.clock.now() - policy.older_than,
                    statuses=list(policy.statuses), limit=500, **which)
                if report.runs:
                    log.info("retention: purged %s%s (%s, %s, %s, %s)",
                             counted(report.runs, "run"), of,
                             counted(report.journal_entries, "journal entry",
                                     "journal entries"),
                             counted(report.attempts, "attempt"),
                             counted(report.signals, "signal"),
                             counted(report.blobs, "message text"))
                if report.runs < 500:
                    break
        except StoreError as exc:
            log.warning("retention: %s", exc)
        except Exception:  # (a bug: said, and tried again, not the loop ended unsaid)
            log.exception("retention: the purge failed; trying again in %.1f s",
                          policy.every)

    # -- heartbeats ---------------------------------------------------------------------------

    async def _renew_if_late(self, called: float) -> HeartbeatResult | None:
        """After a claim or heartbeat called at ``called`` that took half a lease or more
        (it waited for a connection while the store was gone): the leases it took or
        renewed count from ``called`` and may be at their end, so renew them now. The
        heartbeat's result, or None when it was not late. Raises: StoreError."""
        now = self.app.clock.now()
        if now - called < self.lease_seconds / 2:
            return None
        hb = await self.app.store.lease_heartbeat(
            worker_id=self.worker_id, now=now, lease_seconds=self.lease_seconds)
        self._renewed(hb, now)
        return hb

    def _renewed(self, hb: HeartbeatResult, called: float) -> None:
        """A heartbeat called at ``called`` renewed the leases of the runs ``hb`` says
        this worker holds, until ``called`` plus a lease (as the store wrote them): the
        steps of those runs that waited for it start (``RunContext.lease_renewed``),
        until ``lease_margin`` before that end."""
        until = called + self._start_span
        active = self._active
        for run_id in hb.owned:
            a = active.get(run_id)
            if a is not None:
                a.lease_until = until
                if a.ctx is not None:
                    a.ctx.renew(until)

    def _check_stall(self, late: float) -> None:
        """The heartbeat woke ``late`` seconds after it should have: the event loop was
        blocked. Past half a lease, say so: a step that blocks the loop (synchronous
        I/O or CPU in an ``async def``) holds up every run of the worker and its
        heartbeat, and past a lease another worker takes its runs over, as from a dead
        worker (counted as crashes: ``--max-crashes`` then fails the run)."""
        if late < self.lease_seconds / 2 or not self._active:
            return
        log.error("the event loop was blocked for %.1f s (the lease is %.0f s)%s: an async "
                  "step that blocks (synchronous I/O or CPU in an async def) holds up every "
                  "run of this worker and its heartbeat; run blocking code in a plain def "
                  "step or with asyncio.to_thread", late, self.lease_seconds,
                  ", long enough for other workers to take its runs over"
                  if late >= self.lease_seconds else "")

    async def _heartbeat_loop(self) -> None:
        store = self.app.store
        loop = asyncio.get_running_loop()
        last_beat = loop.time()
        while not self._stopping:
            slept = loop.time()
            if await wait_event(self._beat_now, self.heartbeat_interval):
                self._beat_now.clear()
            self._check_stall(loop.time() - slept - self.heartbeat_interval)
            if not self._active and loop.time() - last_beat < IDLE_HEARTBEAT_INTERVAL:
                # No lease to renew: only check, without a query, that the workers of
                # this host seen at the last look are alive.
                with contextlib.suppress(StoreError):
                    await self._reap_dead_workers(refresh=False)
                continue
            last_beat = loop.time()
            seq = self._seq
            clock = self.app.clock
            if isinstance(clock, SyncedClock) and clock.due():
                try:
                    await self.app._sync_clock()
                except StoreUnavailable as exc:
                    self._outage.failed(None, exc, "clock sync failed")
                except StoreError as exc:
                    log.warning("clock sync failed: %s", exc)
            try:
                called = self.app.clock.now()
                hb = await store.lease_heartbeat(worker_id=self.worker_id, now=called,
                                                 lease_seconds=self.lease_seconds)
                self._renewed(hb, called)
                hb = await self._renew_if_late(called) or hb
                self._renewed_at = called
            except StoreUnavailable as exc:
                self._outage.failed(None, exc, "heartbeat failed")
                continue
            except StoreError as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            self._outage.back(by_run=False)
            lost: list[str] = []
            for run_id, active in list(self._active.items()):
                if active.seq > seq or active.finishing:
                    continue
                if run_id not in hb.owned:
                    lost.append(run_id)
                    if active.ctx is not None:
                        active.ctx.halt(Lost(LeaseLost(run_id, active.ctx.lease.fencing_token)))
                    active.task.cancel()
                elif run_id in hb.cancel_requested and active.ctx is not None:
                    active.ctx.request_cancel()
            if lost:
                await self._say_lost(lost)
            if not self._claiming and self._seq == seq:
                with contextlib.suppress(StoreError):
                    await self._release_orphans(hb.owned - set(self._active))
            with contextlib.suppress(StoreError):
                await self._reap_dead_workers()

    async def _say_lost(self, lost: list[str]) -> None:
        """Log at DEBUG the leases this worker's heartbeat found lost, with what the
        store holds now: who took each run and in which state. (Each lost run's end says
        it once, as a WARNING, with where the run stood and the step results refused:
        ``_lease_lost``.) One read, of the first ``LOST_DETAILS`` runs, and only when
        DEBUG is on; a count for the rest."""
        if not log.isEnabledFor(logging.DEBUG):
            return
        shown = lost[:LOST_DETAILS]
        try:
            runs = {r.run_id: r for r in await self.app.store.run_get_many(shown)}
        except StoreError:
            runs = {}
        for run_id in shown:
            run = runs.get(run_id)
            if run is None:
                log.debug("run %s: lease lost (heartbeat); dropping it", run_id,
                          extra={"run_id": run_id})
            else:
                log.debug("run %s: lease lost (heartbeat; now %s, owner %s, fencing token "
                          "%d, updated at %.3f); dropping it", run_id, run.status.value,
                          run.owner or "none", run.fencing_token, run.updated_at,
                          extra={"run_id": run_id})
        if len(lost) > len(shown):
            log.debug("%d more leases lost; dropping those runs", len(lost) - len(shown))

    async def _lease_lost(self, run_id: str, token: int, position: int | None,
                          ctx: RunContext | None = None) -> None:
        """This worker lost its lease on ``run_id`` (its fencing ``token`` is stale):
        another worker took the run over. Counted (``leases_lost``), and said once, as
        one WARNING: where the run stood (``position``; None: not known), who holds it
        now and under which token (one read, shared with the other runs lost at the
        same time: ``_RunReads``), and, for an execution of it (``ctx``), the
        steps whose body ran here but whose result was refused: their attempts are noted
        ``superseded`` (``RunContext.supersede``) and written before the line."""
        self.counts.leases_lost += 1
        unread: BaseException | None = None
        run: RunRecord | None = None
        try:
            run = await self._lost_reads.get(run_id)
        except StoreError as exc:
            unread = exc
        refused: list[Any] | None = []
        if ctx is not None:
            refused = await ctx.supersede(run if unread is None else None)
            await ctx.flush_history()
        if refused:
            position = min(row[3] for row in refused)
        if unread is not None:
            now = f"who holds it now could not be read: {unread}"
        elif run is None:
            now = "the run is gone"
        else:
            now = (f"now {run.status.value}, owner {run.owner or 'none'}, fencing token "
                   f"{run.fencing_token}")
        if refused:
            steps = ", ".join(f"step {row[4]!r} at position {row[3]} (attempt {row[5]})"
                              for row in refused)
            one = len(refused) == 1
            said = (f"; {steps} ran here but {'its result was' if one else 'their results were'}"
                    f" refused (attempt{'' if one else 's'} superseded: the step"
                    f"{' runs' if one else 's run'} again under the new lease, so "
                    f"{'its' if one else 'their'} side effects may have happened twice)")
        elif refused is None:
            said = ("; whether the results of steps that ended here at the loss stand "
                    "could not be read (their attempts stay ok)")
        else:
            said = ""
        at = f" at position {position}" if position is not None else ""
        log.warning("run %s: lease lost%s (%s; this worker's fencing token %d is stale)%s; "
                    "dropping it", run_id, at, now, token, said,
                    extra={"run_id": run_id} if position is None
                    else {"run_id": run_id, "position": position})

    async def _release_orphans(self, orphans: set[str]) -> None:
        """Hand back runs the store says this worker holds but that it does not execute:
        their claim committed but its reply was lost (a connection cut after COMMIT).
        Without this, this worker's heartbeat would renew their leases for as long as it
        lives, with nobody executing them. Called only when no claim was in flight."""
        store = self.app.store
        for run_id in orphans:
            run = await store.run_get(run_id)
            if run is None or run.owner != self.worker_id or run_id in self._active:
                continue
            log.warning("run %s: held in the store but not executed here (a claim whose "
                        "reply was lost); handing it back", run_id,
                        extra={"run_id": run_id})
            now = self.app.clock.now()
            with contextlib.suppress(LeaseLost):
                await store.run_release(
                    lease=Lease(run_id, self.worker_id, run.fencing_token), now=now,
                    wait=Wait(now, "handed back: its claim's reply was lost"))
                self._wake.set()

    async def _reap_dead_workers(self, *, refresh: bool = True) -> None:
        """Make the runs of dead workers claimable at once: a worker of this host whose
        process is gone, or (with ``refresh``, which reads the worker list) any worker
        silent for longer than ``stale_after``."""
        store = self.app.store
        now = self.app.clock.now()
        stale_after = max(60.0, self.lease_seconds * 10)
        if refresh or self._peers is None:
            self._peers = await store.worker_list()
        for w in list(self._peers):
            if w.worker_id == self.worker_id:
                continue
            gone = w.hostname == self.hostname and not process_alive(w.pid, w.pid_start)
            if gone or (refresh and now - w.heartbeat_at > stale_after):
                # A dead owner renews nothing: its runs are expired as of the cut of an
                # outage this worker met, if any, so that the lease of grace that
                # outage gives live owners (``takeover_before``) does not hold them.
                cut = self._outage.takeover_before()
                run_ids = await store.lease_expire_owner(
                    worker_id=w.worker_id, now=now if cut is None else min(now, cut))
                self._peers.remove(w)
                self._remember_dead(run_ids, (
                    "its process on this host is gone" if gone else
                    f"no heartbeat for {now - w.heartbeat_at:.0f} s") + f", worker {w.worker_id}")
                n = len(run_ids)
                if n:
                    # ("1 of its runs are" until 2026-12-06)
                    log.info("worker %s is gone; %d of its runs %s claimable now",
                             w.worker_id, n, "is" if n == 1 else "are")
                    self._wake.set()

    async def _owner_gone(self, run_id: str, generation: int, position: int) -> str | None:
        """How the worker cut off in the step at ``position`` was found dead, if it was a
        process of this host that is gone (read from the attempt it left running), else
        None. Another worker of this host (one serving other queues) may have found it
        dead and ended its leases before this one looked."""
        try:
            attempts = await self.app.store.attempt_list(run_id)
        except StoreError:
            return None
        cut = [a for a in attempts if a.status == "running" and a.position == position
               and a.generation == generation and a.worker_id != self.worker_id]
        if not cut:
            return None
        owner = max(cut, key=lambda a: a.started_at).worker_id
        host, _, rest = owner.rpartition(":")[0].rpartition(":")
        if host != self.hostname or not rest.isdigit():
            return None  # (another host's, or an id given by hand: nothing to tell by)
        if process_alive(int(rest), ""):
            return None
        return f"its process on this host is gone, worker {owner}"

    def _remember_dead(self, run_ids: list[str], how: str) -> None:
        """Note how the owner of these runs was found dead, for the line of their
        takeover (bounded: ``FOUND_DEAD_MAX``)."""
        found = self._found_dead
        found.update(dict.fromkeys(run_ids, how))
        while len(found) > FOUND_DEAD_MAX:
            del found[next(iter(found))]

    # -- executing one run ---------------------------------------------------------------------

    async def _execute(self, claimed: ClaimedRun) -> None:
        app = self.app
        run = claimed.run
        lease = claimed.lease
        wdef = self._host.workflow(run.workflow)
        if wdef is None:
            log.error("run %s: workflow %r is not registered in this worker; releasing it",
                      run.run_id, run.workflow, extra={"run_id": run.run_id})
            with contextlib.suppress(StoreError):
                await app.store.run_release(
                    lease=lease, now=app.clock.now(), wait=Wait(
                        app.clock.now() + 5 * self.poll_interval,
                        f"a worker with workflow {run.workflow}"))
            return
        if run.crashes and not await self._crash_check(claimed):
            return
        self._executing += 1
        try:
            await self._execute_claimed(claimed, wdef)
        finally:
            self._executing -= 1

    async def _execute_claimed(self, claimed: ClaimedRun, wdef: Any) -> None:
        app = self.app
        run = claimed.run
        lease = claimed.lease
        made: list[RunContext] = []
        codec = app.codec
        if codec.hook is not None:  # a payload it cannot decode hands the run back
            codec = codec.with_unreadable(lambda exc: self._unreadable(made[0], exc))
        ctx = RunContext(
            lease=lease, workflow=wdef, journal=claimed.journal, store=app.store,
            codec=codec, clock=app.clock, executor=self._executor,
            sticky_wait=self.sticky_wait, cancel_requested=run.cancel_requested,
            metrics=run.metrics, generation=run.generation,
            attempt_writer=self._attempts, retries=self._outage,
            # (taken over from a dead worker, now or before: an earlier execution may
            # have been cut off in a step; see RunContext.cut_off_attempts)
            taken_over=run.crashes > 0, version=run.version, queue=run.queue,
            step_mocks=self._host.step_mocks(), workflows=app._workflows,
        )
        made.append(ctx)
        ctx.shutting_down = self._shutting_down
        if self._draining:
            ctx.drain()
        active = self._active.get(run.run_id)
        if active is not None:
            active.ctx = ctx
            ctx.lease_until = active.lease_until
            ctx.ask_renewal = self._beat_now.set
        token = current_run.set(ctx)
        value: Any = None
        error: BaseException | None = None
        # Observers (spans) hear of the run's end once it is recorded: its outcome is
        # the status the store took (ctx.ended), which the worker learns last.
        observed: list[Any] = []
        raised: BaseException | None = None
        try:
            if _observe.observers:
                observed = await _observe.runs_started(ctx)
                value = await self._code(ctx, run.input, wdef)
            else:  # (no wrapping coroutine: one fewer frame at every resumption)
                args, kwargs = self._decode_input(ctx, run.input, wdef)
                value = await wdef.fn(*args, **kwargs)
        except _Stop as exc:
            raised = exc
        except asyncio.CancelledError as exc:
            raised = exc
            task = asyncio.current_task()
            if ctx.stop is None and not self._shutting_down() and task is not None \
                    and not task.cancelling():
                # Nobody cancelled this execution: the workflow's code raised it (or let
                # out one of a task it awaited). A failure of the run, as another
                # BaseException of user code; until 2026-12-08 it was taken for the
                # worker's own stop, and the run, left held, was handed back and executed
                # again every few seconds, for ever.
                raised = error = exc
            elif ctx.stop is None or not isinstance(ctx.stop, Lost):
                _observe.runs_ended(observed, ctx, exc)
                if observed:
                    await _observe.runs_closing(observed, ctx)
                raise  # the worker is stopping; the run goes back to the queue
        except BaseException as exc:
            # User code's sys.exit() or KeyboardInterrupt fails the run; it must not end
            # the worker (its own shutdown arrives as CancelledError, handled above).
            raised = error = exc
        finally:
            current_run.reset(token)
            ctx.abandoned = True
            for t in ctx.tasks:
                if not t.done() and t is not asyncio.current_task():
                    t.cancel()
        if active is not None:
            active.finishing = True
        if observed:  # (before the end is written: no other worker has the run yet)
            await _observe.runs_closing(observed, ctx)
        try:
            await self._conclude(ctx, value, error, run)
        finally:
            _observe.runs_ended(observed, ctx, raised)

    def _shutting_down(self) -> bool:
        """Whether this worker is stopping, or its loops were cancelled (the event loop
        closing cancels every task at once): a step cancelled now was not cancelled by
        its workflow's code."""
        return self._stopping or any(t.cancelling() or t.cancelled() for t in self._loops)

    async def _crash_check(self, claimed: ClaimedRun) -> bool:
        """A run whose workers died while executing it: count the crash, back off, run
        it alone, or fail it past ``max_crashes``. True: execute it now.

        The claim counted a takeover (``crashes > crashes_seen``). It is a crash *in a
        row* only if the journal has not moved on since the last one
        (``crash_progress``), else counting starts again from 1. From the second crash
        in a row the run is a suspect: it is handed back for a back-off (1, 2, 4 … s),
        and then executed only by a worker that executes nothing else meanwhile, so
        that a worker's death is counted against the run that caused it, not against
        the runs that happened to share the process. So a healthy run whose workers are
        killed now and then keeps going, and a run whose own code kills every worker
        that executes it (``os._exit()``, a segfault) ends ``failed``, visibly, instead
        of taking down every worker of the queue in turn."""
        app = self.app
        store = app.store
        run, lease = claimed.run, claimed.lease
        progress = sum(1 for e in claimed.journal if e.status != "pending")
        same_place = run.crash_progress == progress
        takeover = run.crashes > run.crashes_seen
        pending = [e.position for e in claimed.journal if e.status == "pending"]
        position = min(pending) if pending else len(claimed.journal)
        if takeover:
            crashes = run.crashes if same_place else 1
            try:
                await store.run_crash_mark(lease=lease, crashes=crashes, progress=progress)
            except LeaseLost:  # (taken over again meanwhile: this worker stalled)
                await self._lease_lost(run.run_id, lease.fencing_token, position)
                return False
            except StoreError as exc:  # the count is advisory: execute the run anyway
                log.warning("run %s: could not record its crash count (%s)", run.run_id,
                            exc, extra={"run_id": run.run_id})
        else:
            crashes = run.crashes if same_place else 0
        if crashes < 2 and not takeover:
            return True
        how = None
        if takeover:
            # (from a worker this one found dead, or one whose lease ran out: until
            # 2026-12-06 a worker killed on this host, found dead through its pid, was
            # said to have let its lease expire)
            how = self._found_dead.pop(run.run_id, None)
            if how is None:
                # (found dead by another worker, one serving other queues say: that one
                # ended the leases, and until 2026-12-07 this line blamed a lease expiry)
                how = await self._owner_gone(run.run_id, run.generation, position)
            self.counts.taken_over["found_dead" if how is not None else "lease_expired"] += 1
        if crashes >= self.max_crashes:
            message = (f"worker crashed {crashes} times running this run at position "
                       f"{position} (or stalled past its lease: a step blocking the event "
                       "loop is taken over as from a dead worker)")
            log.error("run %s: %s; failing it", run.run_id, message,
                      extra={"run_id": run.run_id, "position": position})
            text = app.codec.for_run(run.run_id).encode_error(
                {"type": "tether.errors.TetherError", "message": message}, SLOT_ERROR)
            try:
                await self._retry_store(run.run_id, "fail it", lambda: store.run_finish(
                    lease=lease, status=RunStatus.FAILED.value, result=None, error=text,
                    now=app.clock.now()), errors=(StoreError,), attempts=10)
            except LeaseLost:
                await self._lease_lost(run.run_id, lease.fencing_token, position)
                return False
            self.completed += 1
            self._count_end(RunStatus.FAILED)
            self._host.run_ended(run.run_id)
            return False
        if takeover:
            cause = (f"found dead ({how}" if how is not None else
                     "whose lease on it expired (it died, stalled, or lost the store")
            log.warning("run %s: taken over from a worker %s; crash %d of %d in a row at "
                        "position %d)", run.run_id, cause, crashes, self.max_crashes,
                        position, extra={"run_id": run.run_id, "position": position})
            if crashes < 2:
                return True
            delay = _doubling(CRASH_BACKOFF, crashes - 1, CRASH_BACKOFF_MAX)
            delay *= random.uniform(1.0, 1.25)
            await self._defer(lease, position, delay, f"a back-off: its worker died "
                              f"{crashes} times in a row running it (at position {position})")
            return False
        if self._executing or self._isolated is not None or len(self._active) > 1:
            # Not alone here: stop claiming until this worker is idle, and let it (or
            # another idle worker) claim the run again in a moment (jittered, so that
            # two suspects handed back together come back apart). Alone means holding
            # nothing else at all: a run claimed in the same batch but not started yet,
            # or one whose back-off is being written, dies with the suspect too, and
            # would count a crash it did not cause. (``_executing`` is not implied by
            # ``_active``: a task whose lease was lost may still be winding down after a
            # new claim of the same run replaced its entry.)
            self._isolation_wanted = True
            await self._defer(lease, position, CRASH_BACKOFF * random.uniform(1.0, 2.0),
                              f"a worker executing nothing else (its worker died "
                              f"{crashes} times in a row running it)")
            return False
        log.warning("run %s: executing it alone (its worker died %d times in a row "
                    "running it)", run.run_id, crashes, extra={"run_id": run.run_id})
        self._isolated = run.run_id
        return True

    async def _defer(self, lease: Lease, position: int, delay: float, reason: str) -> None:
        """Hand a run back, claimable again after ``delay`` (its crash count stays);
        ``position``: where it stands, for the line of a lease lost meanwhile."""
        now = self.app.clock.now()
        try:
            await self._retry_store(lease.run_id, "hand it back", lambda: self.app.store
                                    .run_release(lease=lease, now=now,
                                                 wait=Wait(now + delay, reason)),
                                    errors=(StoreError,), attempts=10)
        except LeaseLost:  # (taken over again meanwhile: this worker stalled)
            await self._lease_lost(lease.run_id, lease.fencing_token, position)
        self._wake.set()

    def _unreadable(self, ctx: RunContext, error: PayloadError) -> BaseException:
        """This worker cannot decode one of the run's stored payloads (it lacks the key
        that encrypted it, or has other key material under that id): stop the run's code
        and hand the run back, not fail it, so that a worker with the key completes it.
        The run is claimable by other workers at once; this worker leaves it out of its
        claims for a back-off that doubles each time it meets the same run again."""
        run_id = ctx.run_id
        if isinstance(error, PayloadBindingError):
            # Misplaced (moved from another run or slot in the store): no worker could
            # read it, so handing the run back would only pass it round for ever.
            log.error("run %s: %s; blocking it (an operator must restore the payload, "
                      "then `tether resume`)", run_id, error, extra={"run_id": run_id})
            return ctx.halt(Blocked(error))
        from tether.encryption import PayloadNotEncryptedError

        if isinstance(error, PayloadNotEncryptedError):
            # Clear text written without the hook (`tether start` without --app): the
            # workers, which all refuse it, would pass the run round for ever.
            log.error("run %s: %s; blocking it (start it again from the app, e.g. "
                      "`tether start --app MODULE:APP`, and cancel or erase this one: what "
                      "it stored is in clear text)", run_id, error,
                      extra={"run_id": run_id})
            return ctx.halt(Blocked(error))
        now = self.app.clock.now()
        n = self._unreadable_runs.pop(run_id, (0, 0.0))[0] + 1
        if len(self._unreadable_runs) >= UNREADABLE_REMEMBERED:
            del self._unreadable_runs[next(iter(self._unreadable_runs))]
        delay = _doubling(UNREADABLE_BACKOFF, n, UNREADABLE_BACKOFF_MAX)
        self._unreadable_runs[run_id] = (n, now + delay)
        self._excluded_until = 0.0  # recompute the exclusions at the next claim
        key_id = getattr(error, "key_id", None)
        needs = f"key id {key_id!r}" if key_id else "the payload key"
        log.error("run %s: this worker cannot decrypt its payloads (%s); handing it back "
                  "for a worker with %s (claimable by other workers at once, by this one "
                  "again in %.0f s)", run_id, error, needs, delay,
                  extra={"run_id": run_id})
        return ctx.halt(Release(Wait(now, f"a worker with {needs} (one without it "
                                          "handed the run back)")))

    def _exclusions(self, now: float) -> list[str]:
        """The runs this worker leaves out of its claims now (handed back for a key,
        their back-off not over): at most UNREADABLE_EXCLUDED_MAX, the most recently
        met. Recomputed only when one was added or the first of them expired
        (``_excluded_until``), when runs not met again for a while are forgotten."""
        if not self._unreadable_runs:
            return []
        if now < self._excluded_until:
            return self._excluded
        live: list[str] = []
        first = float("inf")
        for run_id, (_, until) in list(self._unreadable_runs.items()):
            if until > now:
                live.append(run_id)
                first = min(first, until)
            elif now - until > UNREADABLE_BACKOFF_MAX:
                del self._unreadable_runs[run_id]  # met elsewhere since, or ended
        self._excluded = live[-UNREADABLE_EXCLUDED_MAX:]
        self._excluded_until = first
        return self._excluded

    async def _code(self, ctx: RunContext, input_text: str, wdef: Any) -> Any:
        """The run's code, its input decoded first: under the observers, so that a run
        its input blocks (a payload this worker refuses) or fails has its span too."""
        args, kwargs = self._decode_input(ctx, input_text, wdef)
        return await wdef.fn(*args, **kwargs)

    def _decode_input(self, ctx: RunContext, text: str, wdef: Any
                      ) -> tuple[list[Any], dict[str, Any]]:
        """The workflow's arguments; what its parent handed down for integrations
        (``ext.start_child(inherit=)``) goes to ``ctx.inherited``."""
        data = ctx.codec.decode(text, None, SLOT_INPUT)
        ctx.inherited = inherited_of(data)
        args = list(data.get("args", []))
        kwargs = dict(data.get("kwargs", {}))
        anns = wdef.param_annotations
        for i, ann in enumerate(anns[: len(args)]):
            if ann is not None:
                args[i] = restore(args[i], ann,
                                  strict=f"argument {i + 1} of workflow {wdef.name!r}")
        for k, v in kwargs.items():
            ann = wdef.kw_annotations.get(k)
            if ann is not None:
                kwargs[k] = restore(v, ann, strict=f"argument {k!r} of workflow {wdef.name!r}")
        return args, kwargs

    async def _conclude(self, ctx: RunContext, value: Any, error: BaseException | None,
                        run: RunRecord) -> None:
        run_id = ctx.run_id
        if ctx.stop is None or isinstance(ctx.stop, Release):
            # (Released too: the steps its code cancelled just before are journaled.)
            with contextlib.suppress(_Stop):
                await ctx.flush()
        stop = ctx.end_stop(error)
        if isinstance(stop, Lost):  # (a heartbeat, or a write of the run, found it taken)
            await self._lease_lost(run_id, ctx.lease.fencing_token, ctx.lost_at(), ctx)
            return
        # Retried without a limit while the worker runs: the heartbeat renews this run's
        # lease meanwhile, so nobody else would ever replay it if we gave up. A stopping
        # worker hands its leases back, and the next worker replays the run.
        # The attempts first: whoever sees the run ended sees all of its attempts.
        await ctx.flush_history()
        try:
            await self._retry_store(run_id, "record its end",
                                    lambda: self._record_end(ctx, value, error, stop, run))
        except LeaseLost:  # (its end refused: another worker holds the run)
            await self._lease_lost(run_id, ctx.lease.fencing_token, ctx.lost_at(), ctx)

    async def _cancel_children(self, run_id: str) -> None:
        """Cancel a cancelled run's children; the parent's end is already recorded, so a
        store failure here is retried on its own."""
        children = await self._retry_store(
            run_id, "cancel its children", lambda: self.app.store.run_children_cancel(
                parent_run_id=run_id, now=self.app.clock.now()), attempts=8)
        if children is _GAVE_UP:
            log.error("run %s: cancel its children with `tether cancel`", run_id,
                      extra={"run_id": run_id})
        elif children:
            log.info("run %s cancelled; cancelling children %s", run_id, children,
                     extra={"run_id": run_id})

    async def _record_end(self, ctx: RunContext, value: Any, error: BaseException | None,
                          stop: Any, run: RunRecord) -> None:
        """One attempt at writing how the run's code ended (fenced by its lease);
        ``run``: the run as claimed."""
        app = self.app
        store = app.store
        codec = ctx.codec  # bound to the run
        run_id = ctx.run_id
        now = app.clock.now()
        if isinstance(stop, Blocked):
            err = stop.error
            if isinstance(err, NonDeterminismError):
                detail = error_to_dict(
                    err, position=err.position,
                    recorded=list(err.recorded) if err.recorded else None,
                    requested=list(err.requested) if err.requested else None)
                if err.code_at:
                    detail["code_at"] = err.code_at
            else:
                detail = error_to_dict(err)
            detail.pop("traceback", None)
            error_text = codec.encode_error(detail, SLOT_ERROR)
            # Asked to cancel before its replay blocked: the cancel wins, as a cancel of a
            # blocked run ends it at once (run_cancel_blocked), the block's reason staying
            # its error. Blocked, it waited for a second cancel. (A cancel this worker
            # has not heard of yet wins too: the store ends the run cancelled.)
            status = RunStatus.CANCELLED if ctx.cancel_requested else RunStatus.BLOCKED
            result = None
        elif isinstance(stop, Release):
            await store.run_release(lease=ctx.lease, wait=stop.wait, now=now)
            self.counts.released += 1
            self._wake.set()
            return
        elif isinstance(stop, Continue):
            # Deferred writes (clock, random values) land before the journal is archived.
            await ctx.flush()
            await store.run_continue(lease=ctx.lease, input=stop.input, now=now)
            log.info("run %s continued as new (generation %d)", run_id, ctx.generation + 1,
                     extra={"run_id": run_id})
            self._wake.set()
            return
        elif _engine_store_failure(error):
            # One of the engine's own store calls failed (a dropped connection, a
            # deadlock the database broke) where nothing is lost by replaying: a read, a
            # signal taken or a child started (both journaled in their transaction).
            # The run's outcome is unknown, not failed: hand it back so that a replay
            # retries from its journal. (Journal writes, which may hold a step's result,
            # are retried in place instead: RunContext.write_again.)
            assert isinstance(error, StoreUnavailable)
            self._outage.failed(run_id, error, f"store failed under it; replaying it in "
                                               f"{STORE_RETRY_DELAY:.1f} s")
            await store.run_release(lease=ctx.lease, now=now, wait=Wait(
                now + STORE_RETRY_DELAY, f"retry after a store error: {error}"))
            self._wake.set()
            return
        elif ctx.cancel_delivered:
            cancel_err = error if error is not None else Cancelled(run_id)
            status, result = RunStatus.CANCELLED, None
            error_text = codec.encode_error(error_to_dict(cancel_err), SLOT_ERROR)
        elif error is not None:
            status, result = RunStatus.FAILED, None
            error_text = codec.encode_error(error_to_dict(error), SLOT_ERROR)
        else:
            try:
                status, result, error_text = RunStatus.COMPLETED, codec.encode(
                    value, f"result of workflow {ctx.workflow.name!r}", SLOT_RESULT), None
            except PayloadError as exc:
                status, result = RunStatus.FAILED, None
                error_text = codec.encode_error(error_to_dict(exc), SLOT_ERROR)
                error = exc
        # Result waiters of this process registered from here on may not take the end
        # as this worker saw it (a retry may come between): they read it.
        since = self._host.waiters_mark()
        stored = await store.run_finish(lease=ctx.lease, status=status.value, result=result,
                                        error=error_text, now=now)
        ended = status if stored == status.value else RunStatus(stored)
        ctx.ended = ended
        if isinstance(stop, Blocked):  # (logged once it is recorded, as a failure below)
            code_at = getattr(stop.error, "code_at", None)
            log.error("run %s blocked: %s%s%s", run_id, stop.error,
                      f" (the code asking: {code_at})" if code_at else "",
                      "; cancelled, as asked" if ended is RunStatus.CANCELLED else "",
                      extra={"run_id": run_id})
        if status is RunStatus.FAILED:
            # Logged once the failure is recorded (this method may be attempted again):
            # a run whose own code raised had no line at all, and one failed by a step
            # only the step's, which does not say the run ended.
            assert error is not None
            origin = error_origin(error_to_dict(error))  # (where its code went wrong)
            log.warning("run %s (%s) failed: %s%s", run_id, ctx.workflow.name,
                        _observe.error_text(ctx, error), f" (at {origin})" if origin else "",
                        extra={"run_id": run_id})
        if status is RunStatus.CANCELLED:  # (a blocked end the store cancelled: it did)
            await self._cancel_children(run_id)
        self.completed += 1
        self._count_end(ended)
        self._host.run_ended(run_id, dataclasses.replace(
            run, status=ended, result=result, error=error_text, owner=None,
            updated_at=now, finished_at=now, available_at=None, waiting_for=None,
            metrics=dict(ctx.metrics)), since)

    def _count_end(self, status: RunStatus) -> None:
        ended = self.counts.ended
        ended[status.value] = ended.get(status.value, 0) + 1


def _doubling(base: float, n: int, cap: float) -> float:
    """The ``n``-th delay of a back-off that starts at ``base`` and doubles up to ``cap``
    (``n`` of 1 or less: ``base``)."""
    return min(base * 2.0 ** max(n - 1, 0), cap)
