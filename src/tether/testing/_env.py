"""``TestEnv``: an app on a temporary SQLite store, a worker, and a clock that skips.

``TestEnv(app)`` builds ``env.app``: a new ``App`` with the definitions of ``app`` (its
workflows, steps, agents and schedules, its payload codec and code version) on a
temporary SQLite file and a ``VirtualClock``, and a worker for it. ``app`` itself is
not touched (``App.close()`` is final, so the environment never borrows it): start,
signal and inspect runs through ``env.app`` (or ``env.start`` / ``env.run`` /
``env.result``).

Time in the environment is virtual. It starts at the real time (or ``start_time``) and
moves only when the environment moves it:

- while a test waits through the environment (``env.result``, ``env.run``, ``await
  handle.result()`` on a handle from ``env.start`` or ``env.app``), whenever every run
  is waiting (none is running, none is due now) the clock jumps to the earliest
  wake-up among the waiting runs (a timer, a signal's timeout, a retry backoff, a postponed step) or
  the schedules (a next tick, whose run the environment starts) and the worker is
  woken; so a workflow that sleeps three days completes in milliseconds. Between
  those waits time stands still, so a test can start a run, send it a signal, then
  wait, without the signal's timeout firing first. With ``auto_skip=True`` time skips
  for the environment's whole life instead.
- ``env.advance(seconds)`` moves it by hand, then lets every run that became due run
  until all wait again; ``env.skip()`` moves it to the next wake-up, one at a time.

Runs are released at every wait (the worker's ``sticky_wait`` is 0), so each wait is
a real release and a replay, as in production after a long sleep.

A step can be replaced by a test double in the environment's runs (``mock_step``,
``TestEnv(mock_steps=)``): ``env.app`` holds the doubles, by the step's name, and its
worker calls one in place of the step under the step's policies; the app under test and
other environments run the step itself.

A wait on a run that can never end (with a timeout or without: ``await handle.result()``
on a handle of ``env.app`` has none) raises ``RunStuck``, saying what holds the run (a
signal nothing sent, a queue the worker does not serve...), instead of hanging the test
or waiting out its timeout: the skip loop finds the environment still (no run running
or due, no wake-up to skip to) and every task of the test waiting on the environment,
for ``stuck_after`` real seconds. A task of the test doing anything else (a sleep, a
request, a thread's work) may still send what the run waits for, so it holds that off.
A wait on a run that keeps failing one step (retried for ever, each backoff skipped)
raises ``RunSpinning`` once a call of the step has failed ``stuck_attempts`` attempts in
a row and fails again while the test only waits on the environment. A run beside the
wait that spins so is no movement for it: the environment is still but for such runs,
and a wait on a run that can never end raises ``RunStuck`` all the same.

"Every run is waiting" is read from the store in one query (no run ``running``, none
claimable now), so a run claimed but not yet started is never missed.

LLM calls are answered by the environment's scripted server (``env.llm``): the
``LLM`` objects given as ``llms=`` (typically built at module level, before the
environment) point at it while the environment is open, and environment variables
``OPENAI_BASE_URL``/``ANTHROPIC_BASE_URL`` do too, for an ``LLM`` built inside the
environment without a ``base_url``. The server answers Chat Completions, Anthropic
Messages and the OpenAI Responses API (``ScriptedResponsesServer``), so an OpenAI
Agents SDK agent whose model is a name, which the SDK sends to ``/v1/responses``, is
answered too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload
from urllib.parse import parse_qsl, urlsplit

from tether import _inflight
from tether._app import App, RunHandle
from tether._definitions import StepDef
from tether._lifecycle import tick_schedules
from tether._procs import process_alive
from tether._types import JournalEntry, RunRecord, RunStatus
from tether.errors import ConfigError, RunFailed, StoreError, TetherError
from tether.testing._mocks import step_double, step_of
from tether.testing.llm_server import ScriptedLLMServer, Step
from tether.testing.llm_server._server import answering_at
from tether.testing.responses_api import ScriptedResponsesServer

if TYPE_CHECKING:
    from tether.worker import Worker

R = TypeVar("R")

log = logging.getLogger("tether.testing")

#: Seconds of real time between looks at the store while skipping or settling.
_POLL = 0.002
_POLL_MAX = 0.02
#: Seconds of real time between looks at the journals of the runs waited on, for a step
#: that keeps failing (``TestEnv(stuck_attempts=...)``, ``RunSpinning``).
_SPIN_CHECK = 0.5
#: At most this many runs (the one waited on and the children it waits for) per wait.
_SPIN_RUNS = 32
#: At most this many runs queued, running or waiting are read to tell that every run
#: that moves only spins (``TestEnv._spinners``); a store with more is never still.
_SPIN_LIST = 1000
#: Real seconds an LLM call of a run waited on may keep failing to connect to a base URL
#: other than the scripted server's, while the test only waits, before the wait ends
#: (``RunStuck``; ``stuck_after`` if shorter): a model not pointed at the environment's
#: server (``_watch_unreached``).
_UNREACHED_AFTER = 1.0
#: Real seconds between those looks at the journals of the runs waited on.
_UNREACHED_LOOK = 0.25
#: Real seconds an LLM call of a run waited on may wait for an answer from a base URL
#: other than the scripted server's (the endpoint accepted the request and says
#: nothing), while the test only waits, before the wait ends (``RunStuck``;
#: ``stuck_after`` if shorter): the call would wait its model's own timeout in real
#: time (600 s by default), which the virtual clock does not shorten
#: (``_watch_unanswered``). A model whose timeout is this or shorter ends the call by
#: itself.
_UNANSWERED_AFTER = 2.0
#: The message of an LLM call whose request reached no server (``ProviderError``'s
#: ``no response``, the clients' ``cannot connect to {base_url} (...)``).
_CANNOT_CONNECT = re.compile(r": no response: cannot connect to (\S+) \(")
#: The message of an LLM call whose credentials an endpoint refused (the clients'
#: ``HTTP 401 ... (refused by {base_url})``).
_REFUSED_KEY = re.compile(r": HTTP (40[13])\b.*? \(refused by (\S+?)\)")

#: The store's key-value row an open environment holds (``kv_get``/``kv_cas``), to refuse
#: a second environment on the same store; its holder refreshes it every
#: ``_CLAIM_BEAT`` real seconds, and a row not refreshed for ``_CLAIM_STALE`` (a test
#: process killed, or left in a debugger) is taken over.
CLAIM_KEY = "tether.testing.env"
_CLAIM_BEAT = 5.0
_CLAIM_STALE = 30.0
#: The claims this process's environments hold, with the event loop each runs on: a
#: claim of this process that is not here (its environment closed) or whose loop is
#: closed (an environment never closed, its test's loop gone with its worker) is free.
_OPEN_CLAIMS: dict[str, asyncio.AbstractEventLoop] = {}

_LLM_ENV = {"OPENAI_BASE_URL": "base_url", "ANTHROPIC_BASE_URL": "anthropic_base_url"}
_KEY_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")

#: The environment variables open environments of this process set, by name: the value
#: found before the first set it, and each open environment's value (by its ``id()``,
#: with a weak reference to it), in the order they were set. Environments open at once
#: may close in any order: the variable keeps the value of the last one still open, and
#: the value found before when none is (each restoring what it found would put back a
#: closed one's URL). One never closed (its test's event loop closed under it) is not
#: open: its value is passed over.
_ENV_SET: dict[str, tuple[str | None, dict[int, tuple[weakref.ref[TestEnv], str]]]] = {}

#: The top-level packages whose tasks are the environment's machinery, not the test's:
#: Tether's own (the worker, the store, the scripted servers), asyncio's, and those of
#: the libraries Tether runs in the loop (the PostgreSQL pool, HTTP clients, the MCP
#: server). A task with a coroutine of any other code (the test function, a task it
#: created) that is not waiting on the environment holds ``RunStuck`` off (``_machinery``).
#: ``contextlib`` is neither's: its ``asynccontextmanager`` sits in the chain of whoever
#: enters one (the PostgreSQL store's connections; a test's own frame before it makes
#: the task the test's); counted as the test's, a PostgreSQL store's group commit,
#: busy while a run beside the wait retried, held ``RunStuck`` off.
_MACHINERY = frozenset({"tether", "asyncio", "contextlib", "psycopg", "psycopg_pool",
                        "httpx", "httpcore", "h11", "anyio", "mcp", "starlette", "uvicorn",
                        "opentelemetry"})

#: The modules whose tasks run the runs' code (the worker's ``tether-run-...`` tasks).
_RUNNERS = frozenset({"tether.worker._worker"})


class RunStuck(TetherError, TimeoutError):
    """A wait on a run that can never end in the environment, with a timeout or
    without: for ``TestEnv(stuck_after=...)`` real seconds no run was running or due, no
    timer, retry or schedule was pending (but those of runs that only spin, whose step
    keeps failing: they cannot end it), and the test did nothing but wait on the
    environment, while the run had not ended (it waits for a signal nothing sent, say).
    The message says what holds it. A ``TimeoutError``: the wait gave up, as one whose
    timeout passed does, only sooner."""

    __module__ = "tether.testing"


class RunSpinning(RunStuck):
    """A wait on a run that makes no progress in the environment: one call of a step,
    in the run or in a child it waits for, failed ``TestEnv(stuck_attempts=...)``
    attempts in a row and kept failing while the test did nothing but wait on the
    environment (its retry policy retries it for ever, or nearly, and the environment
    skips each backoff, so the wait spun until its timeout, or for ever without one).
    The message names the run, the step, its attempts and its last error. A
    ``RunStuck``, so a ``TimeoutError`` too."""

    __module__ = "tether.testing"


def _finite(value: object, what: str) -> float:
    """``value`` as a float: a real number (not a bool), finite. A NaN passed every
    check and made the clock NaN, and every run started after it failed on the store
    (NOT NULL ``created_at``); an infinite time never let a timer fall due."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} takes a number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{what} takes a finite number of seconds, got {value!r}")
    return float(value)


class VirtualClock:
    """A clock that moves only when told (``advance``, ``set``).

    ``sleep`` moves it too (then yields to the loop), so code written against the
    ``Clock`` seam that sleeps on it does not wait in real time.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else _finite(start, "start_time")

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (>= 0). Raises: ConfigError (a ``ValueError``)."""
        if _finite(seconds, "advance()") < 0:
            raise ConfigError(f"time moves forward only: advance({seconds}) is negative")
        self._now += seconds

    def set(self, at: float) -> None:
        """Move forward to ``at`` (epoch seconds); earlier times are refused (ConfigError,
        a ``ValueError``)."""
        if _finite(at, "set()") < self._now:
            raise ConfigError(f"time moves forward only: {at} is before {self._now}")
        self._now = float(at)


class TestRunHandle(RunHandle[R]):
    """A ``RunHandle`` whose ``result()`` skips time while it waits."""

    __test__ = False

    def __init__(self, env: TestEnv, handle: RunHandle[R]) -> None:
        super().__init__(handle.app, handle.run_id, handle.workflow)
        self.env = env

    async def result(self, timeout: float | None = 60.0) -> R:
        """Wait for the run to end, skipping time while every run waits; ``timeout``
        is in real seconds.

        Raises:
            RunFailed: the run ended failed, cancelled or blocked.
            TimeoutError: ``timeout`` real seconds passed first.
            RunStuck: the run can never end (see ``TestEnv``'s ``stuck_after``): raised
                after ``stuck_after`` real seconds of stillness, before ``timeout``.
            RunSpinning: a step of the run (or of a child it waits for) keeps failing
                (see ``TestEnv``'s ``stuck_attempts``).
        """
        return await super().result(timeout)  # (env.app skips time around it)


@dataclasses.dataclass(eq=False)
class _Wait:
    """A wait on a run's result through the environment (``TestEnv._waiting``)."""

    task: asyncio.Task[Any] | None
    run_id: str
    since: float  #: (real, monotonic) when it began
    #: Its own timeout (real seconds), or None.
    timeout: float | None = None
    #: The deadline ``RunStuck`` moves to now (None: ``stuck_after=None``).
    deadline: asyncio.Timeout | None = None
    stuck: RunStuck | None = None


class TestEnv:
    """A test environment for ``app``: ``async with TestEnv(app) as env:``.

    Args:
        app: the application under test (its definitions are used; it is not touched).
        start_time: the virtual clock's start (epoch seconds; default: now).
        llm: the scripted LLM server's script (``env.llm.set_script`` changes it; its
            outages and request times follow the virtual clock), or a
            ``ScriptedLLMServer`` to use (started if it is not, and then stopped at
            close; one given started is left running; one made without a ``clock``
            runs on the virtual clock while the environment is open, so its
            ``outage`` passes in virtual time).
        llms: ``tether.ai.LLM`` objects to point at the scripted server while the
            environment is open (their ``base_url`` comes back after).
        auto_skip: skip time whenever every run waits, not only while the test waits
            through the environment.
        stuck_after: real seconds (default 3) after which a wait on a run's result
            (``env.run``, ``env.result``, ``await handle.result()``, with a timeout or
            without) raises ``RunStuck`` when its run can never end: all that time no
            run was running or due, no timer, retry or schedule was pending (but those
            of runs that only spin, see ``stuck_attempts``), and every task of the test
            was waiting on the environment. A wait whose run keeps failing an LLM call
            that reaches nothing at its model's base URL, not the scripted server's (a
            model not given as ``llms=``, an integration's model whose client was built
            before the environment: every durable model call lists itself in
            ``tether._inflight``), raises ``RunStuck`` too, after a second (or
            ``stuck_after`` if shorter) of such failures while the test only waited;
            and so does one whose run's LLM call has had no answer for two seconds
            (or ``stuck_after``) from such a base URL that accepted the connection
            (it would wait the model's own timeout, 600 s by default, in real time;
            a model whose timeout is two seconds or less is left to it).
            None: such waits wait out their timeout, or for ever without one.
        stuck_attempts: failed attempts in a row of one call of a step (default 1000)
            after which a wait on a run's result raises ``RunSpinning`` when the step,
            in the run or in a child it waits for, keeps failing: it failed again while
            every task of the test was waiting on the environment, for at least half a
            second of real time. Sleeps, timers and attempts that succeed never count.
            None: such a wait spins until its timeout, or for ever without one.
        queues: the worker's queues (default: every queue of the app's workflows).
        store_url: a store of your own instead of the temporary SQLite file (e.g. a
            fresh PostgreSQL database); it is left in place afterwards. One open
            environment per store: a second one is refused (``ConfigError`` naming the
            first), as it would run the first's runs and skip its clock.
        fresh_schema: with a PostgreSQL ``store_url`` (whose URL names no ``schema``),
            run on a schema of the environment's own in that database, new at open
            (``tether_test_`` and 12 random hex digits) and dropped at close: every
            environment starts on an empty store, and environments open at the same
            time (in one process, or in several: xdist workers) may share the database,
            each keeping to its own runs. Nothing else of the database is touched.
        keep_schema: with ``fresh_schema``, leave the schema in place at close (its
            name, and the commands to look at it and to drop it, logged as a warning),
            to look at the runs of a failed test; also ``env.keep_schema = True`` while
            open, or the environment variable ``TETHER_TEST_KEEP_SCHEMA=1`` for every
            environment. The ``tether_env`` fixture keeps it when its test failed.
        mock_steps: steps to replace by test doubles in the environment's runs, ``{step:
            function}``, each step a name or a step function (see ``mock_step``).
        **worker_options: passed to ``app.worker`` (``concurrency``, ...); its
            ``start_retry`` is 0 unless given: a store that cannot be reached fails the
            opening at once instead of being waited for.

    Attributes:
        app: the environment's ``App``: the definitions of ``app`` on the temporary
            store and the virtual clock (closed with the environment).
        clock: the ``VirtualClock``.
        llm: the ``ScriptedLLMServer``.
        worker: the ``Worker``.
        store_url: the temporary store's URL.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, app: App, *, start_time: float | None = None,
                 llm: Iterable[Step] | ScriptedLLMServer | None = None,
                 llms: Iterable[Any] = (), auto_skip: bool = False,
                 queues: list[str] | None = None, store_url: str | None = None,
                 mock_steps: Mapping[str | Callable[..., Any], Callable[..., Any]]
                 | None = None, stuck_after: float | None = 3.0,
                 stuck_attempts: int | None = 1000, fresh_schema: bool = False,
                 keep_schema: bool = False,
                 **worker_options: Any) -> None:
        if stuck_after is not None and _finite(stuck_after, "stuck_after") < 0:
            raise ConfigError(f"stuck_after takes seconds >= 0 or None, got {stuck_after!r}")
        if stuck_attempts is not None and (isinstance(stuck_attempts, bool)
                                           or not isinstance(stuck_attempts, int)
                                           or stuck_attempts < 1):
            raise ConfigError(f"stuck_attempts takes a whole number >= 1 or None, got "
                              f"{stuck_attempts!r}")
        self.stuck_after = stuck_after
        self.stuck_attempts = stuck_attempts
        self.source = app
        self.app = app  # replaced by the environment's own App when it opens
        self.clock = VirtualClock(start_time)
        self.llm = (llm if isinstance(llm, ScriptedLLMServer)
                    else ScriptedResponsesServer(llm or (), clock=self.clock.now))
        self.auto_skip = auto_skip
        self._llms = list(llms)
        # A server given without a clock of its own runs on the environment's while it
        # is open: its outage passes in virtual time as the runs' retries do (on the
        # real clock a 10-minute outage outlasted every wait, each retry skipped to).
        self._lend_clock = isinstance(llm, ScriptedLLMServer) and llm.clock is None
        self._stop_llm = True
        self._llm_urls: list[str] = []
        self._queues = queues
        # (A test's store that cannot be reached fails the test, not waits for it.)
        self._worker_options = {"sticky_wait": 0.0, "start_retry": 0, **worker_options}
        self._worker: Worker | None = None
        self._dir: str | None = None
        self.store_url = store_url or ""
        self._own_store = store_url is None
        #: The database URL a fresh schema is made in at each open (``fresh_schema``).
        self._schema_base = _fresh_schema_base(store_url) if fresh_schema else None
        self._schema: str | None = None
        #: Leave the fresh schema in place at close (``keep_schema``).
        self.keep_schema = keep_schema
        #: Closing as an error leaves ``async with`` (``__aexit__``).
        self._raising = False
        #: Log the kept schema's line at close (the ``tether_env`` fixture prints it to
        #: the test's report instead).
        self._say_kept = True
        #: The environment variables this environment set (``_ENV_SET`` keeps what was
        #: there before, for whichever environment of the process closes last).
        self._set_vars: set[str] = set()
        self._skippers = 0
        self._skip_wanted = asyncio.Event()
        self._skip_task: asyncio.Task[None] | None = None
        self._waits: list[_Wait] = []
        #: (real, monotonic) since when the environment has been still (``_watch``).
        self._still_since: float | None = None
        #: The failed attempts of the failing step calls of the runs waited on, by (run
        #: id, position), at the last look while the test only waited (None: no such
        #: look since the test last did something else), and when (``_watch_spinning``).
        self._spin_base: dict[tuple[str, int], int] | None = None
        self._spin_at = 0.0
        #: The runs that only spin (by run id: the run and its step call failing in a
        #: row), when at the last look at the journals every run that moved was one of
        #: them: the environment is still but for them (``_watch``); else None.
        self._spinners: dict[str, tuple[RunRecord, JournalEntry]] | None = None
        self._busy_at = 0.0
        #: The LLM calls of the runs waited on that failed to connect elsewhere than to
        #: the scripted server, by (run id, position): their failed attempts and when
        #: (real, monotonic) a look first saw them so while the test only waited
        #: (``_watch_unreached``), and when the last look was.
        self._unreached: dict[tuple[str, int], tuple[int, float]] = {}
        self._unreached_at = 0.0
        #: The LLM calls in flight of the runs waited on, to another base URL than the
        #: scripted server's and not answered yet (by their ``id()``): when a look first
        #: saw each while the test only waited (``_watch_unanswered``).
        self._unanswered: dict[int, float] = {}
        self._closing = False
        self._opened = False
        #: The event loop the environment was opened in: its worker, skip loop and
        #: store connections run there (``_need_open``).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._claim_id = uuid.uuid4().hex
        self._claim_task: asyncio.Task[None] | None = None
        #: The test doubles (``mock_step``), shared with each ``env.app`` it builds.
        self._mocks: dict[str, StepDef] = {}
        for step, fn in (mock_steps or {}).items():
            self.mock_step(step, fn)

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> TestEnv:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # (an error on its way out of the block, the test's failure most often: under
        # the pytest plugin a fresh schema is then dropped only if the test passes)
        self._raising = exc[0] is not None
        try:
            await self.close()
        finally:
            self._raising = False

    async def open(self) -> None:
        """Build ``env.app`` on a temporary store, start the LLM server and a worker."""
        if self._opened:
            return
        if self._own_store:
            self._dir = tempfile.mkdtemp(prefix="tether-test-")
            self.store_url = f"sqlite:///{self._dir}/tether.db"
        if self._schema_base is not None:
            # (Created by the store's migrations at the first use, below: the claim.)
            self._schema = f"tether_test_{uuid.uuid4().hex[:12]}"
            sep = "&" if "?" in self._schema_base else "?"
            self.store_url = f"{self._schema_base}{sep}schema={self._schema}"
        self.app = _twin(self.source, self.store_url, self.clock)
        # Every handle of env.app skips time while its result is awaited, not only
        # env.start's: a handle from env.app.start waited in real time, so a run that
        # sleeps a day never ended and the test hung (RunHandle.result's default
        # timeout is None).
        self.app._around_result = self._awaiting
        self.app._step_mocks = self._mocks
        self._opened = True
        _inflight.watchers += 1  # (LLM calls list themselves while one is open)
        self._loop = asyncio.get_running_loop()
        self._closing = False
        try:
            if self._lend_clock:
                self.llm._set_clock(self.clock.now)
            # A server given already started (the ``llm_server`` fixture's) is the
            # caller's: left running at close, as it was found.
            self._stop_llm = self.llm._server is None
            # Before the worker: a second environment's worker would already claim the
            # first's runs.
            await self._claim()
            await self.llm.start()
            for var, attr in _LLM_ENV.items():
                self._set_env(var, getattr(self.llm, attr))
            for var in _KEY_ENV:
                if not os.environ.get(var) or var in _ENV_SET:  # (unset, or set by us)
                    self._set_env(var, "test-key")
            for model in self._llms:
                await model.aclose()  # a client of this loop would keep the old URL
                self._llm_urls.append(model.base_url)
                model.base_url = (self.llm.anthropic_base_url
                                  if model.provider == "anthropic" else self.llm.base_url)
            self._worker = self.app.worker(queues=self._queues, **self._worker_options)
            await self._worker.start()
            self._skip_task = asyncio.create_task(self._skip_loop(), name="tether-test-skip")
            if self.auto_skip:
                self._skippers += 1
                self._skip_wanted.set()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the worker and the LLM server, close ``env.app`` (for good) and delete
        the temporary store."""
        if not self._opened:
            return
        self._opened = False
        self._skippers = 0
        # The skip loop ends at its next look even if a cancel below were lost in a
        # store call it interrupts (seen under load on PostgreSQL: close then waited
        # forever); the event wakes it if it is waiting.
        self._closing = True
        self._skip_wanted.set()
        if self._skip_task is not None:
            self._skip_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._skip_task
        if self._claim_task is not None:
            self._claim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._claim_task
            self._claim_task = None
        _OPEN_CLAIMS.pop(self._claim_id, None)
        try:
            with contextlib.suppress(TetherError, OSError):
                await self._unclaim()  # (before the app's close: its store goes with it)
            await self.app.close()  # stops the worker too
            for model, url in zip(self._llms, self._llm_urls, strict=False):
                await model.aclose()
                model.base_url = url
            self._llm_urls.clear()
            if self._stop_llm:
                await self.llm.stop()
        finally:
            _inflight.watchers -= 1
            _inflight.unwatched()
            if self._lend_clock:
                self.llm._set_clock(None)
            for var in self._set_vars:
                _unset_env(var, id(self))
            self._set_vars.clear()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
            if self._schema is not None:
                schema, self._schema = self._schema, None
                if self.keep_schema or _keep_env():
                    if self._say_kept:
                        log.warning("%s", kept_schema_notice(self.store_url, schema))
                elif self._raising and DEFERRED_DROPS is not None:
                    DEFERRED_DROPS.append((self.store_url, schema))
                else:
                    await _drop_schema(self.store_url, schema)

    # -- one environment per store ----------------------------------------------------------

    def _claim_value(self) -> str:
        return json.dumps({"id": self._claim_id, "pid": os.getpid(),
                           "host": socket.gethostname(),
                           "test": os.environ.get("PYTEST_CURRENT_TEST"),
                           "beat": time.time()})

    async def _claim(self) -> None:
        """Hold the store's ``CLAIM_KEY`` row while open, or refuse (``ConfigError``,
        naming the holder) when another open environment holds it: two environments
        on one store ran each other's runs, and each skipped its clock to the other's
        wake-ups. A row whose holder stopped refreshing it (a killed test process) is
        taken over; so is one of a process of this host that is gone."""
        store = await self.app._open()
        for _ in range(10):
            row = await store.kv_get(key=CLAIM_KEY)
            holder = _holder(row[0]) if row is not None else None
            if holder is not None and holder.get("id") != self._claim_id \
                    and _claim_live(holder):
                raise ConfigError(_claim_refusal(self.store_url, holder))
            if await store.kv_cas(key=CLAIM_KEY, value=self._claim_value(),
                                  version=None if row is None else row[1], now=time.time()):
                self._claim_task = asyncio.create_task(self._keep_claim(),
                                                       name="tether-test-claim")
                _OPEN_CLAIMS[self._claim_id] = asyncio.get_running_loop()
                return
        raise ConfigError(f"TestEnv: the store {self.store_url} is being opened by other "
                          "environments at the same time: give each its own store")

    async def _keep_claim(self) -> None:
        """Refresh the claim every ``_CLAIM_BEAT`` real seconds while open."""
        store = self.app.store
        while True:
            await asyncio.sleep(_CLAIM_BEAT)
            try:
                row = await store.kv_get(key=CLAIM_KEY)
                holder = _holder(row[0]) if row is not None else None
                if row is None or holder is None or holder.get("id") != self._claim_id:
                    log.warning("TestEnv: another environment took over the store %s "
                                "(this one did not refresh its claim for %.0f s): the two "
                                "now see each other's runs", self.store_url, _CLAIM_STALE)
                    return
                await store.kv_cas(key=CLAIM_KEY, value=self._claim_value(),
                                   version=row[1], now=time.time())
            except (TetherError, OSError) as exc:  # (a store down for a moment)
                log.debug("TestEnv: refreshing the claim on the store failed: %s", exc)

    async def _unclaim(self) -> None:
        """Give the claim up (an empty row: the store's rows are never deleted)."""
        store = self.app.store
        row = await store.kv_get(key=CLAIM_KEY)
        holder = _holder(row[0]) if row is not None else None
        if row is not None and holder is not None and holder.get("id") == self._claim_id:
            await store.kv_cas(key=CLAIM_KEY, value="", version=row[1], now=time.time())

    def _set_env(self, var: str, value: str) -> None:
        self._set_vars.add(var)
        values = _ENV_SET.setdefault(var, (os.environ.get(var), {}))[1]
        values.pop(id(self), None)
        values[id(self)] = (weakref.ref(self), value)
        os.environ[var] = value

    @property
    def schema(self) -> str | None:
        """The schema of a ``fresh_schema`` environment while it is open (None
        otherwise): ``tether_test_`` and 12 hex digits, in ``store_url``'s database."""
        return self._schema

    @property
    def worker(self) -> Worker:
        if self._worker is None:
            raise RuntimeError("the environment is not open: use `async with TestEnv(app)`")
        return self._worker

    def _need_open(self) -> None:
        """Refuse to start or wait on runs outside the environment's life: before
        ``open`` ``env.app`` is still the app under test, whose store (by default
        ``./tether.db`` in the working directory) the run would go to, with no worker
        and no virtual clock."""
        if not self._opened:
            raise RuntimeError("the environment is not open (or closed): use `async with "
                               "TestEnv(app) as env:` (or `await env.open()`) before "
                               "starting runs")
        self._need_loop()

    def _need_loop(self) -> None:
        """Refuse a call from another event loop than the one the environment was
        opened in: its worker, its skip loop and its store's connections run in that
        one, which does not run meanwhile, so a wait on SQLite timed out saying only
        "did not end within 60 s" and on PostgreSQL hung for ever. The usual cause is
        an environment in a pytest fixture of a wider scope than the test's loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._loop is not None and loop is not self._loop:
            raise RuntimeError(
                "the environment was opened in another event loop: its worker and its "
                "store's connections run in that one, which does not run while this one "
                "waits, so no run would move; use the environment in the event loop that "
                "opened it (a fixture of a wider scope than the test's loop, say: give "
                "the test the fixture's loop, @pytest.mark.asyncio(loop_scope=\"module\") "
                "for a module-scoped fixture opened with loop_scope=\"module\", or open "
                "the environment in the test)")

    @contextlib.asynccontextmanager
    async def _awaiting(self, run_id: str, timeout: float | None) -> AsyncIterator[None]:
        """Around a wait on a run's result: skip time, explain a timeout, and end a wait
        without one on a run that can never end (``RunStuck``)."""
        self._need_loop()  # (a handle of env.app awaited in another event loop)
        # (skipping inside: it stops before a timeout is explained, so the explanation
        # reads runs that stand still)
        async with self._explained(), self.skipping(), self._waiting(run_id, timeout):
            yield

    @contextlib.asynccontextmanager
    async def _waiting(self, run_id: str, timeout: float | None) -> AsyncIterator[None]:
        """Register the wait (its task waits on the environment, see ``_test_busy``);
        it raises ``RunStuck`` when the skip loop finds its run stuck (``_watch``),
        through a deadline of its own moved to now, with a timeout of its own or
        without. Until 2026-12-06 such a wait on a run waiting for a signal nothing sent
        hung the test for ever without a timeout, and until 2026-12-07 one with a timeout
        waited it out (60 s by default)."""
        wait = _Wait(asyncio.current_task(), run_id, time.monotonic(), timeout)
        self._waits.append(wait)
        # (the test may have done anything since the last look at the journals, while no
        # wait was on and nothing looked at its tasks: RunSpinning starts counting anew,
        # and so does an LLM call that cannot connect)
        self._spin_reset()
        self._unreached.clear()
        self._unanswered.clear()
        try:
            if self.stuck_after is None:
                yield
                return
            try:
                async with asyncio.timeout(None) as deadline:
                    wait.deadline = deadline
                    yield
            except TimeoutError:
                if wait.stuck is None or not deadline.expired():
                    raise
                raise wait.stuck from None
        finally:
            self._waits.remove(wait)

    @contextlib.asynccontextmanager
    async def _explained(self) -> AsyncIterator[None]:
        """A wait that times out says what holds the runs (``_why``), e.g. when the
        scripted LLM server ran out of script: the run's LLM call then gets 500 "script
        exhausted" and retries (time skips through its backoff) until the wait gives up,
        which otherwise reads as a hang. It says too when the server still holds a
        request of a ``Fault.hang()``: that ends when the client gives up, after its own
        timeout in real time (600 s by default), which the virtual clock does not
        shorten. ``RunStuck`` passes as it is: it says why already. A run failed by an
        LLM call whose key another endpoint than the scripted server's refused (401,
        403) gets a note saying so (``_refused_elsewhere``)."""
        try:
            yield
        except RunFailed as exc:
            hint = self._refused_elsewhere(exc)
            if hint is not None:
                exc.add_note(hint)
            raise
        except TimeoutError as exc:
            if isinstance(exc, RunStuck):
                raise
            why = await self._why()
            if not why:
                raise
            raise TimeoutError(f"{exc}; " + "; ".join(why)) from exc

    async def _why(self) -> list[str]:
        """What holds the runs that have not ended, as far as the environment can tell
        (empty if nothing it knows of): a timeout's and ``RunStuck``'s explanations."""
        # (one snapshot: the runs go on retrying while this looks at the store, and
        # requests counted later read as scripted answers, "after 2 scripted answers"
        # for a script of one)
        requests = list(self.llm.requests)
        exhausted = sum(r.outcome == "exhausted" for r in requests)
        hanging = self.llm.hanging
        elsewhere = await self._llm_calls_elsewhere()
        unserved = await self._unserved()
        retrying, unwoken, elsewhere_queued = await self._stuck(skip_llm=bool(
            exhausted or hanging or elsewhere is not None))
        why = []
        if elsewhere_queued:
            why.append(
                "; ".join(elsewhere_queued) + ": the environment's worker serves "
                f"only the queues {', '.join(repr(q) for q in self.worker.queues)} "
                "(TestEnv(queues=...)); leave queues= out to serve every queue of "
                "the app's workflows")
        if retrying:
            why.append(
                "; ".join(retrying) + ": a step that keeps failing is retried under "
                "its policy (RetryPolicy.max_attempts; None retries forever) while "
                "time skips through its backoff; fix the step, or bound its retries")
        if unwoken:
            why.append(
                "; ".join(unwoken) + ": with no timeout there is no wake-up to skip "
                "to; send it (env.app.signal(run_id, name, data)), or give the wait "
                "a timeout")
        if unserved:
            why.append(
                f"{len(unserved)} run(s) of workflows the environment's app does not "
                f"have wait queued, which its worker never claims "
                f"({', '.join(repr(w) for w in sorted(set(unserved)))}; registered: "
                f"{', '.join(sorted(self.app.workflows())) or 'none'}): a misspelt "
                "name, or one registered after the environment opened?")
        if elsewhere is not None:
            why.append(
                f"runs retry LLM calls (step {elsewhere!r}) but none reached the "
                f"scripted LLM server: {_pointing(elsewhere)}; the worker's log says "
                "where its calls went")
        if exhausted:
            why.append(
                f"the scripted LLM server's script ran out: {exhausted} requests got 500 "
                f"'script exhausted' (retried), after "
                f"{len(requests) - exhausted} scripted answers; give the script "
                "a step for each LLM call (env.llm.requests has them all)")
        if hanging:
            why.append(
                f"the scripted LLM server holds {hanging} request(s) of a Fault.hang() "
                "unanswered: a hang ends when the client gives up, after its own "
                "timeout in real time (the virtual clock does not move it; an LLM's "
                "default is 600 s): give the LLM a short one, LLM(..., timeout=2) (an "
                "integration's model: its client's, AsyncOpenAI(timeout=2) say)")
        return why

    async def _stuck(self, *, skip_llm: bool) -> tuple[list[str], list[str], list[str]]:
        """What holds the runs that have not ended (at most 3 of each): a step that
        failed and is retried (its attempts and last error; LLM calls left out when
        ``skip_llm``, the scripted server's explanations tell those), a wait for a
        signal without a timeout, which no skip can end, and a run queued on a queue the
        worker does not serve (``TestEnv(queues=...)``). Before 2026-12-06 a wait on
        any of them timed out saying only "did not end within 60 s"."""
        retrying: list[str] = []
        unwoken: list[str] = []
        queued: list[str] = []
        served = set(self.worker.queues)
        try:
            for run in await self.app.store.run_list(limit=1_000):
                if run.status.is_ended:
                    continue
                if run.status == "queued" and run.queue not in served:
                    if len(queued) < 3:
                        queued.append(f"run {run.run_id!r} ({run.workflow}) is queued on "
                                      f"{run.queue!r}")
                    continue
                waiting_for = run.waiting_for or ""
                if run.status == "waiting" and run.available_at is None \
                        and waiting_for.startswith("signal "):
                    if len(unwoken) < 3:
                        unwoken.append(f"run {run.run_id!r} ({run.workflow}) waits for "
                                       f"signal {waiting_for[7:]!r}, with no timeout, "
                                       "and none was sent")
                    continue
                if len(retrying) >= 3:
                    continue
                for entry in (await self.app.get_run(run.run_id)).journal:
                    error = entry.get("error")
                    if entry.get("kind") != "step" or entry.get("status") != "pending" \
                            or not entry.get("attempts") or not isinstance(error, dict) \
                            or (skip_llm and (str(entry.get("name")).startswith("llm:") or (
                                run.run_id, entry.get("position")) in _inflight.attempts)):
                        continue
                    attempts = entry["attempts"]
                    retrying.append(
                        f"run {run.run_id!r} ({run.workflow}) retries step "
                        f"{entry.get('name')!r} ({attempts} attempt"
                        f"{'s' if attempts != 1 else ''} failed, the last with "
                        f"{error.get('type')}: {str(error.get('message'))[:200]})")
                    break
        except (TetherError, RuntimeError):  # (a store closed or broken meanwhile)
            pass
        return retrying, unwoken, queued

    async def _unserved(self) -> list[str]:
        """The workflows of the queued runs that the environment's worker cannot run (a
        name given to ``env.start`` that no definition has): they wait forever."""
        try:
            known = set(self.app.workflows())
            return [run.workflow for run in await self.app.store.run_list(limit=1_000)
                    if run.status == "queued" and run.workflow not in known]
        except (TetherError, RuntimeError):  # (a store closed or broken meanwhile)
            return []

    async def _llm_calls_elsewhere(self) -> str | None:
        """The name of a model call (an ``LLM``'s, ``llm:...``, or an integration's: a
        step ``tether._inflight`` saw attempted) a run of the environment retries while
        the scripted server has had no model request (Chat Completions, Messages, the
        Responses API): the call goes elsewhere."""
        if any(r.protocol != "models" for r in self.llm.requests):
            return None
        try:
            store = self.app.store
            for run in await store.run_list(limit=1_000):
                if run.status.is_ended:
                    continue
                for entry in await store.journal_read(run.run_id):
                    if (_model_call(run.run_id, entry) and entry.attempts > 0
                            and entry.status == "pending"):
                        return entry.name
        except (TetherError, RuntimeError):  # (a store closed or broken meanwhile)
            return None
        return None

    # -- steps replaced by test doubles ------------------------------------------------------

    def mock_step(self, step: str | Callable[..., Any], fn: Callable[..., Any]) -> None:
        """In the environment's runs, run ``fn`` in place of ``step`` (a step's name, or
        the step function), until the environment closes or ``unmock_step``.

        The workflow's code is unchanged: it calls the step, and each attempt of the
        step calls ``fn`` (an ``async def`` or a plain function, run as the step would
        be) with the step's arguments, under the step's own retry policy, timeout and
        rate limit; the journal records ``fn``'s result or error under the step's name,
        as it would the step's. Set while runs are in flight, it takes effect at their
        next attempt of the step; a step already recorded replays its record. Only this
        environment's runs see it: the app under test, and other environments of it,
        run the step itself.

        Raises:
            ConfigError: ``step`` is not a step of the app (a name not registered, a
                function not decorated with ``@app.step``, a workflow), or ``fn`` is
                not callable or cannot take the step's arguments as a workflow may
                pass them (its parameters are not the step's).
        """
        double = step_double(self.source, step, fn)
        self._mocks[double.name] = double

    def unmock_step(self, step: str | Callable[..., Any]) -> None:
        """Run ``step`` itself again in the environment's runs, from their next attempt
        of it (nothing happens if it was not mocked).

        Raises:
            ConfigError: ``step`` is not a step of the app.
        """
        self._mocks.pop(step_of(self.source, step).name, None)

    # -- time -----------------------------------------------------------------------------

    def now(self) -> float:
        """The virtual time (epoch seconds)."""
        return self.clock.now()

    async def advance(self, seconds: float, *, timeout: float = 60.0) -> None:
        """Let every run that is due run until all wait, then move the clock ``seconds``
        forward through each wake-up on the way, in order: the clock stops at each
        (a timer, a signal's timeout, a retry's backoff, a schedule's tick), and the
        runs due then run until all wait again, so a run that sleeps an hour three
        times has woken three times after ``advance(3 * 3600)``, each time at its
        hour. Then the clock is set to the end.

        Raises:
            ConfigError: (a ``ValueError``) a negative ``seconds``, NaN, infinity or a
                non-number.
            TimeoutError: the runs did not come through in ``timeout`` real seconds.
        """
        if _finite(seconds, "advance()") < 0:
            raise ConfigError(f"time moves forward only: advance({seconds}) is negative")
        self._need_open()
        # Until 2026-12-07 the clock jumped to the end at once: a run sleeping an hour
        # three times woke once, at the third hour (tether.now() said so), and a
        # schedule's ticks on the way were missed (its catch-up started one, late).
        wakes = 0
        try:
            async with asyncio.timeout(timeout):
                await self.settle(timeout=timeout)
                end = self.clock.now() + seconds
                while True:
                    _, wake = await self._look()
                    if wake is None or wake > end or wake <= self.clock.now():
                        break
                    self.clock.set(wake)
                    wakes += 1
                    self.worker.notify()
                    await self.settle(timeout=timeout)
                if self.clock.now() < end:
                    self.clock.set(end)
                    self.worker.notify()
                await self.settle(timeout=timeout)
        except TimeoutError as exc:
            if str(exc):  # (a settle's own, which says what holds the runs)
                raise
            why = await self._why()
            raise TimeoutError(
                f"advance({seconds}) did not come through in {timeout} s of real time "
                f"({wakes} wake-up{'s' if wakes != 1 else ''} on the way, the clock at "
                f"{self.clock.now()})" + ("; " + "; ".join(why) if why else "")) from exc

    async def skip(self, *, timeout: float = 60.0) -> bool:
        """One step of time skipping, by hand: let every due run run until all wait,
        then move the clock to the earliest wake-up of a waiting run and let what became
        due run until all wait again. False (time unchanged) if no run waits on time.

        Raises:
            TimeoutError: runs kept running for ``timeout`` real seconds.
        """
        await self.settle(timeout=timeout)
        _, wake = await self._look()
        if wake is None:
            return False
        await self.advance(wake - self.clock.now(), timeout=timeout)
        return True

    async def settle(self, *, timeout: float = 60.0) -> None:
        """Wait (real time) until no run is running and none is due now, without moving
        the clock: every run has ended or waits.

        Raises:
            RuntimeError: the environment is not open.
            TimeoutError: runs kept running for ``timeout`` real seconds.
        """
        self._need_open()
        delay = _POLL
        async with self._explained():
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        idle, _ = await self._look()
                        if idle:
                            return
                        await asyncio.sleep(delay)
                        delay = min(delay * 1.5, _POLL_MAX)
            except TimeoutError as exc:  # (asyncio.timeout's own has no message)
                raise TimeoutError(f"runs did not all come to a wait or an end within "
                                   f"{timeout} s") from exc

    @contextlib.asynccontextmanager
    async def skipping(self) -> AsyncIterator[None]:
        """Skip time while the block runs (``env.result`` uses it)."""
        self._skippers += 1
        self._skip_wanted.set()
        try:
            yield
        finally:
            self._skippers -= 1
            if self._skippers == 0:
                self._skip_wanted.clear()

    async def _look(self) -> tuple[bool, float | None]:
        """(every run waits or has ended, the earliest future wake-up on our queues)."""
        store = self.app.store
        queues = set(self.worker.queues)
        now = self.clock.now()
        wake: float | None = None
        if self.app._schedules:
            # The due ticks of the app's schedules start here, at the virtual time, and
            # the next tick is a wake-up like a timer: the worker's schedule loop sleeps
            # in real time (up to 5 s) and would see a tick the clock jumped to late.
            # Each tick's run is created once, whoever starts it.
            wake = await tick_schedules(self.app, store, set(self.app.workflows()), now,
                                        self.worker.notify)
        # Index lookups (Store.run_activity): each poll read every run (up to a million)
        # and looked at each, so a test on a store of many ended runs slowed with it.
        busy, due = await store.run_activity(queues=sorted(queues), now=now)
        if due is not None and (wake is None or due < wake):
            wake = due
        return not busy, wake

    async def _skip_loop(self) -> None:
        delay = _POLL
        while not self._closing:
            await self._skip_wanted.wait()
            if self._closing:
                return
            try:
                idle, wake = await self._look()
            except StoreError as exc:  # e.g. a test that breaks the store on purpose
                log.warning("time skipping: cannot read the store (%s); retrying", exc)
                await asyncio.sleep(_POLL_MAX)
                continue
            if idle and wake is not None and not await self._waits_over():
                self.clock.set(wake)
                self.worker.notify()
                delay = _POLL
            else:
                delay = min(delay * 1.5, _POLL_MAX) if idle else _POLL
            await self._watch(still=idle and wake is None)
            await asyncio.sleep(delay)

    async def _waits_over(self) -> bool:
        """Whether time skips only for waits on runs that have ended (or are blocked):
        their results are being read, and the clock must not jump to another run's
        wake-up meanwhile. Until 2026-12-07 it did: awaiting the result of a run that
        had already ended moved the clock to the next wake-up of any other run (a run
        sleeping 1000 hours beside it completed), and so could the wait that saw its
        run end, before it returned."""
        if self._skippers > len(self._waits):  # (auto_skip, or env.skipping() itself)
            return False
        try:
            for wait in list(self._waits):
                run = await self.app.store.run_get(wait.run_id)
                if run is None or not (run.status.is_ended
                                       or run.status is RunStatus.BLOCKED):
                    return False
        except (TetherError, RuntimeError):  # (a store closed or broken meanwhile)
            return False
        # Over too when nothing wants time to skip any more: the last wait ended while
        # the skip loop read the store. (It said not over with no wait left, so the
        # clock jumped to another run's wake-up just after the result of a run that had
        # ended was read: on PostgreSQL, whose reads gave the race its time, a run
        # waiting a day for a signal beside it timed out before the test sent it.)
        return self._skippers <= len(self._waits)

    async def _watch(self, *, still: bool) -> None:
        """End the waits (with a timeout or without) whose runs can never end
        (``RunStuck``): the environment has been ``still`` (no run running or due, no
        wake-up to skip to) and the test busy with nothing but waits on the environment,
        since the wait began, for ``stuck_after`` real seconds. The real time leaves a
        thread or another process of the test its chance to send what the run waits
        for. Those whose runs keep failing a step end too (``_watch_spinning``).

        Runs that only spin (each keeps failing one call of a step, as ``RunSpinning``
        tells) do not move the environment for the others' waits: a wait on a run
        waiting for a signal nothing sends, beside a run retrying a step for ever whose
        backoffs are skipped, raised nothing and hung (or waited out its timeout)."""
        watched = [wait for wait in self._waits
                   if wait.deadline is not None and wait.stuck is None]
        if watched and not still:
            await self._watch_unreached(watched)
            watched = [wait for wait in watched if wait.stuck is None]
        if watched and not still and self.stuck_attempts is not None:
            await self._watch_spinning(watched)
            still = self._spinners is not None
        else:
            self._spin_reset()
        if not watched or not still or self.stuck_after is None or self._test_busy():
            self._still_since = None
            return
        now = time.monotonic()
        if self._still_since is None:
            self._still_since = now
        for wait in watched:
            if now - max(self._still_since, wait.since) >= self.stuck_after:
                await self._end_stuck(wait)

    async def _end_stuck(self, wait: _Wait) -> None:
        """Raise ``RunStuck`` in ``wait`` (saying what holds its run) unless its run has
        settled, or the environment or the test moved while this read the store."""
        try:
            run = await self.app.store.run_get(wait.run_id)
            why = await self._why()
            idle, wake = await self._look()
        except (TetherError, RuntimeError):  # (a store closed or broken meanwhile)
            return
        if run is None or run.status.is_settled or self._test_busy() \
                or wait not in self._waits or wait.deadline is None:
            return
        spinners: list[str] = []
        more = False
        if not idle or wake is not None:  # (still but for runs that only spin?)
            spinning = await self._only_spinners()
            if spinning is None or wait not in self._waits or self._test_busy():
                return
            spinners = [f"run {spun.run_id!r} ({spun.workflow}) retrying step "
                        f"{entry.name!r}, which failed {entry.attempts} attempts in a row"
                        for spun, entry in spinning[:3]]
            more = len(spinning) > 3
        # (what the run itself waits for, unless a reason below names it: a parent
        # waits for its child, the child for the signal)
        holds = ("" if any(repr(run.run_id) in reason for reason in why)
                 else f" (it is queued on {run.queue!r})" if run.status == "queued"
                 else f" (it is {run.status}"
                 + (f" for {run.waiting_for})" if run.waiting_for else ")"))
        wait.stuck = RunStuck(
            f"run {run.run_id!r} ({run.workflow}) can never end{holds}: for "
            f"{self.stuck_after} s of real time no run was running or due, no timer, "
            "retry or schedule was pending"
            + (f" but those of runs that only spin ({', '.join(spinners)}"
               f"{', ...' if more else ''}; TestEnv(stuck_attempts=...))"
               if spinners else "")
            + " and the test did nothing but wait on the "
            "environment" + "".join(f"; {reason}" for reason in why)
            + " (TestEnv(stuck_after=...) sets how long to wait before saying so; None "
            + ("waits for ever)" if wait.timeout is None
               else f"waits out the wait's timeout, {wait.timeout:g} s)"))
        wait.deadline.reschedule(asyncio.get_running_loop().time())

    async def _watch_unreached(self, watched: list[_Wait]) -> None:
        """End the waits whose run, or a child it waits for, keeps failing an LLM call
        that reaches no server at its model's base URL, another than the scripted
        server's (``RunStuck``): a model built before the environment and not given as
        ``llms=`` keeps the provider's URL (no network, or no such host, under a test),
        or a server of the test's own is not up. Its calls were retried for ever, each
        backoff skipped, and the wait gave up only at its timeout (60 s) saying why.
        The call must have failed again, between two looks at least ``_UNREACHED_AFTER``
        real seconds apart (or ``stuck_after``), while every task of the test only
        waited on the environment: a test that starts its server meanwhile, or a run
        whose retries are bounded (it fails by itself at once), is never cut short, and
        a model whose server answers never fails so."""
        if self.stuck_after is None:
            return
        now = time.monotonic()
        if now - self._unreached_at < _UNREACHED_LOOK:
            return
        self._unreached_at = now
        if self._test_busy():
            self._unreached.clear()
            self._unanswered.clear()
            return
        grace = min(self.stuck_after, _UNREACHED_AFTER)
        try:
            for wait in watched:
                runs, steps = await self._failing_steps(wait.run_id)
                await self._watch_unanswered(wait, runs, now)
                for run, entry in steps:
                    url = self._unreached_url(run.run_id, entry)
                    if url is None:
                        continue
                    # (kept while the call is being tried again, and its entry reads
                    # as no failure: a call that succeeds never fails again)
                    attempts, since = self._unreached.setdefault(
                        (run.run_id, entry.position), (entry.attempts, now))
                    if entry.attempts > attempts and now - since >= grace \
                            and wait.stuck is None and not self._test_busy():
                        await self._end_unreached(wait, run, entry, url)
        except (TetherError, RuntimeError):  # (a store closed or broken meanwhile)
            self._unreached.clear()
            self._unanswered.clear()

    async def _watch_unanswered(self, wait: _Wait, runs: list[RunRecord],
                                now: float) -> None:
        """End ``wait`` (``RunStuck``) when its run, or a child it waits for, has an LLM
        call in flight to another base URL than the scripted server's that has had no
        answer for ``_UNANSWERED_AFTER`` real seconds (or ``stuck_after``) while every
        task of the test only waited: the endpoint accepted the connection and says
        nothing, and the call would wait its model's own timeout (600 s by default) in
        real time. A model whose timeout is that short or shorter is left to it, and a
        call that answers, however slowly, is not concerned once its answer began.

        Nor is a call to a scripted LLM server of this process (``ScriptedLLMServer``,
        one of the test's own beside ``env.llm``) while that server is answering a
        request (``answering``: a reply's ``delay``, a slow stream): a plain request's
        answer begins only when it arrives whole, and the server holds it on purpose.
        Its two seconds count from when the server answers nothing (a ``Fault.hang()``
        holds its request and never answers: that call is still ended)."""
        if wait.stuck is not None or self.stuck_after is None:
            return
        ours = {self.llm.base_url.rstrip("/"), self.llm.anthropic_base_url.rstrip("/")}
        family = {run.run_id: run for run in runs}
        grace = min(self.stuck_after, _UNANSWERED_AFTER)
        current = {}
        for call in _inflight.outstanding():
            if (call.run_id not in family or call.answered
                    or call.base_url.rstrip("/") in ours
                    or (call.timeout is not None and call.timeout <= _UNANSWERED_AFTER)):
                continue
            if answering_at(call.base_url):  # (its server answers: the grace starts anew)
                self._unanswered.pop(id(call), None)
                continue
            seen = current[id(call)] = self._unanswered.get(id(call), now)
            if now - seen >= grace and now - call.since >= grace \
                    and wait.stuck is None and not self._test_busy():
                await self._end_unanswered(wait, family[call.run_id], call, now)
        self._unanswered.update(current)

    async def _end_unanswered(self, wait: _Wait, run: RunRecord, call: Any,
                              now: float) -> None:
        """Raise ``RunStuck`` in ``wait``: its run's LLM call ``call`` (an
        ``OutstandingCall``) has had no answer from its base URL
        (``_watch_unanswered``)."""
        waited = await self.app.store.run_get(wait.run_id)
        if waited is None or waited.status.is_settled or wait not in self._waits \
                or wait.deadline is None:
            return
        limit = ("its client's own timeout" if not call.timeout_known
                 else f"its own timeout, {call.timeout:g} s," if call.timeout is not None
                 else "for ever, having no timeout,")
        wait.stuck = RunStuck(
            f"run {run.run_id!r} ({run.workflow}) cannot reach its model: its LLM call "
            f"(step {call.step!r}) has had no answer from {call.base_url} for "
            f"{now - call.since:.1f} s (the endpoint accepted the connection and says "
            f"nothing; the call waits {limit} in real time, which the virtual clock does "
            f"not shorten), and the environment's scripted LLM server is at "
            f"{self.llm.base_url}"
            + (f" (the wait is on run {wait.run_id!r} ({waited.workflow}), which waits "
               "for it)" if run.run_id != wait.run_id else "")
            + f": {_pointing(call.step)}; a server of your own at that URL must answer "
            "(TestEnv(stuck_after=None) "
            + ("waits for ever instead)" if wait.timeout is None
               else f"waits out the wait's timeout instead, {wait.timeout:g} s)"))
        wait.deadline.reschedule(asyncio.get_running_loop().time())

    def _refused_elsewhere(self, exc: RunFailed) -> str | None:
        """The note for a run failed by an LLM call refused 401 or 403 by an endpoint
        other than the scripted server's, else None: a model built before the
        environment and not given as ``llms=`` keeps the provider's URL, and the real
        provider refuses the environment's fake key (its 401 said nothing of the
        environment; a server of the test's own answering so is told alike)."""
        error = exc.error if isinstance(exc.error, dict) else {}
        found = _REFUSED_KEY.search(str(error.get("message", "")))
        if found is None:
            return None
        url = found.group(2).rstrip("/")
        if url in {self.llm.base_url.rstrip("/"), self.llm.anthropic_base_url.rstrip("/")}:
            return None
        # (an integration's model call of the run that went there: its own advice)
        steps = [attempt.step for (run_id, _), attempt in _inflight.attempts.items()
                 if run_id == exc.run_id and attempt.base_url.rstrip("/") == url
                 and not attempt.step.startswith("llm:")]
        if steps:
            return (f"run {exc.run_id!r} failed on its model's HTTP {found.group(1)} from "
                    f"{url} (step {steps[-1]!r}), not the environment's scripted LLM server "
                    f"(at {self.llm.base_url}), which refuses the environment's fake API "
                    f"key: {_pointing(steps[-1])}")
        return (f"run {exc.run_id!r} failed on its model's HTTP {found.group(1)} from {url}, "
                f"not the environment's scripted LLM server (at {self.llm.base_url}): an "
                "LLM built before the environment (at module level, say) keeps its own "
                "base_url, the provider's, which refuses the environment's fake API key, "
                "unless given as TestEnv(..., llms=[llm]) or built inside the test")

    def _unreached_url(self, run_id: str, entry: JournalEntry) -> str | None:
        """The base URL a failed LLM call (``llm:...``) could not connect to, when it is
        not one of the scripted server's; else None."""
        if not _failed_step(entry):
            return None
        if not entry.name.startswith("llm:"):  # (an integration's: where it went)
            attempt = _inflight.attempts.get((run_id, entry.position))
            if attempt is None or not attempt.unreached:
                return None
            url = attempt.base_url.rstrip("/")
            ours = {self.llm.base_url.rstrip("/"), self.llm.anthropic_base_url.rstrip("/")}
            return None if url in ours or not url else url
        try:
            error = self.app.codec.for_run(run_id).decode(entry.error)
        except Exception:  # (a payload this app cannot read)
            return None
        found = (_CANNOT_CONNECT.search(str(error.get("message")))
                 if isinstance(error, dict) else None)
        if found is None:
            return None
        url = found.group(1).rstrip("/")
        ours = {self.llm.base_url.rstrip("/"), self.llm.anthropic_base_url.rstrip("/")}
        return None if url in ours else url

    async def _end_unreached(self, wait: _Wait, run: RunRecord, entry: JournalEntry,
                             url: str) -> None:
        """Raise ``RunStuck`` in ``wait``: its run's LLM call ``entry`` cannot connect
        to ``url``, not the scripted server's (``_watch_unreached``)."""
        waited = await self.app.store.run_get(wait.run_id)
        if waited is None or waited.status.is_settled or wait not in self._waits \
                or wait.deadline is None:
            return
        wait.stuck = RunStuck(
            f"run {run.run_id!r} ({run.workflow}) cannot reach its model: its LLM call "
            f"(step {entry.name!r}) failed {entry.attempts} attempts in a row, nothing "
            f"answering at {url}, and the environment's scripted LLM server is at "
            f"{self.llm.base_url}"
            + (f" (the wait is on run {wait.run_id!r} ({waited.workflow}), which waits "
               "for it)" if run.run_id != wait.run_id else "")
            + f": {_pointing(entry.name)}; a server of your own at that URL must be up "
            "before the run calls it (TestEnv(stuck_after=None) "
            + ("waits for ever instead)" if wait.timeout is None
               else f"waits out the wait's timeout instead, {wait.timeout:g} s)"))
        wait.deadline.reschedule(asyncio.get_running_loop().time())

    def _spin_reset(self) -> None:
        """Forget the last look at the journals (``_watch_spinning``): the test did
        something else since, or the environment is still by itself."""
        self._spin_base = None
        self._spinners = None

    async def _watch_spinning(self, watched: list[_Wait]) -> None:
        """End the waits whose run, or a child it waits for, keeps failing one call of a
        step (``RunSpinning``): it has failed ``stuck_attempts`` attempts in a row or
        more, and failed again between two looks at the journals (``_SPIN_CHECK`` real
        seconds apart) while every task of the test only waited on the environment. A
        task of the test doing anything else (a sleep, then setting what the step
        needs) resets the looks: once it is done, the step's next attempt may succeed.

        It also tells whether every run that moves (running, due, or waiting on a
        timer or a backoff) only spins so (``_spinners``): then none of them can end a
        wait on another run, and the environment is still for ``RunStuck``."""
        now = time.monotonic()
        if now - self._busy_at < _POLL_MAX:  # (a look at the tasks at most this often)
            return
        self._busy_at = now
        if self._test_busy():
            self._spin_reset()
            return
        if self._spin_base is not None and now - self._spin_at < _SPIN_CHECK:
            return
        self._spin_at = now
        failing: dict[tuple[str, int], tuple[_Wait | None, RunRecord, JournalEntry]] = {}
        tree: dict[str, RunRecord] = {}
        try:
            for wait in watched:
                runs, steps = await self._failing_steps(wait.run_id)
                for run, entry in steps:
                    failing.setdefault((run.run_id, entry.position), (wait, run, entry))
                tree.update((run.run_id, run) for run in runs)
            moving = await self._moving_beside(tree, failing)
        except (TetherError, RuntimeError):  # (a store closed or broken meanwhile)
            self._spin_reset()
            return
        base, self._spin_base = self._spin_base, {
            key: entry.attempts for key, (_, _, entry) in failing.items()}
        if base is None or self._test_busy():
            self._spinners = None
            return
        assert self.stuck_attempts is not None
        spun = [(waited_on, run, entry) for key, (waited_on, run, entry) in failing.items()
                if entry.attempts >= self.stuck_attempts
                and entry.attempts > base.get(key, 0)]
        spinners = {run.run_id: (run, entry) for _, run, entry in spun}
        self._spinners = (spinners if moving and spinners.keys() >= moving.keys()
                          else None)
        for waited_on, run, entry in spun:
            if waited_on is None:  # (a run beside the waits: _spinners tells of it)
                continue
            wait = waited_on
            if wait.stuck is not None or wait not in self._waits or wait.deadline is None:
                continue
            try:
                why = await self._why()
                waited = await self.app.store.run_get(wait.run_id)
                # (decoded as the run's document decodes it: a payload hook may encrypt it)
                error = next((e.get("error") for e in (await self.app.get_run(
                    run.run_id)).journal if e.get("position") == entry.position), None)
            except (TetherError, RuntimeError):
                return
            if wait.stuck is not None or wait not in self._waits or waited is None \
                    or waited.status.is_settled:
                continue
            wait.stuck = RunSpinning(
                f"run {run.run_id!r} ({run.workflow}) makes no progress: its step "
                f"{entry.name!r} failed {entry.attempts} attempts in a row, the last with "
                f"{_error_text(error)}, and failed again while the test did nothing but "
                "wait on the environment"
                + (f" (the wait is on run {wait.run_id!r} ({waited.workflow}), which waits "
                   "for it)" if run.run_id != wait.run_id else "")
                + "".join(f"; {reason}" for reason in why)
                + " (TestEnv(stuck_attempts=...) sets how many failed attempts in a row "
                "of one step end the wait; None "
                + ("spins for ever)" if wait.timeout is None
                   else f"spins until the wait's timeout, {wait.timeout:g} s)"))
            wait.deadline.reschedule(asyncio.get_running_loop().time())

    async def _moving_beside(
            self, tree: dict[str, RunRecord],
            failing: dict[tuple[str, int], tuple[_Wait | None, RunRecord, JournalEntry]],
    ) -> dict[str, RunRecord] | None:
        """Every run that moves (``_moves``), those of ``tree`` (the runs waited on and
        their children) and the others, with the failing step calls of the others added
        to ``failing``; or None as soon as one of them cannot be spinning (no step call
        of its failed ``stuck_attempts`` attempts in a row), the store has schedules
        (a tick starts a run) or ``_SPIN_LIST`` runs or more that have not settled. The
        store's list of runs is read only when every run of ``tree`` waits without a
        wake-up or spins (read again, so that a child that ended while the tree was
        read, waking its parent, is seen): a wait on a run that moves reads only its
        journals, as ``RunSpinning`` does. The runs that may move are read in one
        snapshot (``Store.run_list_unsettled``): read a status at a time, a run
        claimed between the ``running`` read and the ``queued`` one was in neither,
        and the environment looked still but for the spinners (a false ``RunStuck``)."""
        assert self.stuck_attempts is not None
        limit = self.stuck_attempts

        def spinning(run_id: str) -> bool:
            return any(run.run_id == run_id and entry.attempts >= limit
                       for _, run, entry in failing.values())

        if self.app._schedules:
            return None
        store = self.app.store
        moving: dict[str, RunRecord] = {}
        for run_id, run in tree.items():
            if self._moves(run) and not spinning(run_id):
                return None
        for run_id in tree:
            now = await store.run_get(run_id)
            if now is not None and self._moves(now):
                if not spinning(run_id):
                    return None
                moving[run_id] = now
        runs = await store.run_list_unsettled(limit=_SPIN_LIST)
        if len(runs) >= _SPIN_LIST:
            return None
        for run in runs:
            if run.run_id in tree or not self._moves(run):
                continue
            for entry in await store.journal_read(run.run_id):
                if _failed_step(entry):
                    failing.setdefault((run.run_id, entry.position), (None, run, entry))
            if not spinning(run.run_id):
                return None
            moving[run.run_id] = run
        return moving

    def _moves(self, run: RunRecord) -> bool:
        """Whether ``run`` moves by itself in the environment: it is running, or queued
        or waiting on a timer (a sleep, a backoff, a signal's timeout) on a queue the
        worker serves; as ``Store.run_activity`` reads them."""
        return run.status == "running" or (
            run.queue in self.worker.queues
            and (run.status == "queued"
                 or (run.status == "waiting" and run.available_at is not None)))

    async def _only_spinners(self) -> list[tuple[RunRecord, JournalEntry]] | None:
        """The runs of the last look that only spin (``_spinners``), read again: None
        unless every run that moves now is one of them and each still retries the same
        step call, which has failed no fewer attempts (one that succeeded has moved on,
        and may end the wait). The runs are read in one snapshot, as ``_moving_beside``
        reads them."""
        known = self._spinners
        if known is None or self.app._schedules:
            return None
        store = self.app.store
        runs = await store.run_list_unsettled(limit=_SPIN_LIST)
        if len(runs) >= _SPIN_LIST:
            return None
        for run in runs:
            if not self._moves(run):
                continue
            if run.run_id not in known:
                return None
            _, entry = known[run.run_id]
            now = next((e for e in await store.journal_read(run.run_id)
                        if e.position == entry.position), None)
            if now is None or not _failed_step(now) or now.attempts < entry.attempts:
                return None
        return list(known.values())

    async def _failing_steps(self, run_id: str) -> tuple[
            list[RunRecord], list[tuple[RunRecord, JournalEntry]]]:
        """The runs that have not ended of the run ``run_id`` and the children it
        started, theirs and so on (at most ``_SPIN_RUNS`` runs), and their step calls
        that failed and wait to be tried again (pending, with an error)."""
        store = self.app.store
        runs: list[RunRecord] = []
        found: list[tuple[RunRecord, JournalEntry]] = []
        todo: list[str] = [run_id]
        seen: set[str] = set()
        while todo and len(seen) < _SPIN_RUNS:
            current = todo.pop(0)
            if current in seen:
                continue
            seen.add(current)
            run = await store.run_get(current)
            if run is None or run.status.is_ended:
                continue
            runs.append(run)
            for entry in await store.journal_read(current):
                if _failed_step(entry):
                    found.append((run, entry))
                elif entry.kind == "child_start" and entry.status == "ok" and entry.result:
                    with contextlib.suppress(Exception):  # (a payload it cannot read)
                        child = self.app.codec.for_run(current).decode(entry.result)
                        if isinstance(child, str):
                            todo.append(child)
        return runs, found

    def _test_busy(self) -> bool:
        """Whether a task of the test's own (not the environment's machinery, see
        ``_MACHINERY``) is running, or waiting on something other than a result through
        the environment (a sleep, a socket, a thread): it may still send the signal a
        run waits for."""
        waiting = {wait.task for wait in self._waits}
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is current or task.done() or _machinery(task):
                continue
            if not _waits_on(task, waiting):
                return True
        return False

    # -- runs -----------------------------------------------------------------------------

    # A workflow named by a string has no result type to infer: Any, as ``App.start``
    # says (without these overloads mypy asked for an annotation at every
    # ``await env.run("agent", ...)``).
    @overload
    async def start(self, workflow: Callable[..., Awaitable[R]], *args: Any,
                    **kwargs: Any) -> TestRunHandle[R]: ...

    @overload
    async def start(self, workflow: str, *args: Any, **kwargs: Any) -> TestRunHandle[Any]: ...

    async def start(self, workflow: Callable[..., Awaitable[Any]] | str, *args: Any,
                    **kwargs: Any) -> TestRunHandle[Any]:
        """``app.start(...)``, with a handle whose ``result()`` skips time. Its keyword
        arguments are the workflow's, except ``run_id``, ``queue`` and ``check_args``,
        which are ``App.start``'s (as there, a workflow parameter of one of those names
        left unfilled by the positional arguments is a ``WorkflowArgumentError``).

        Raises:
            RuntimeError: the environment is not open.
            WorkflowArgumentError: as ``App.start`` raises it.
        """
        self._need_open()
        handle: RunHandle[Any] = await self.app.start(workflow, *args, **kwargs)
        return TestRunHandle(self, handle)

    async def result(self, run: RunHandle[R] | str, *, timeout: float | None = 60.0) -> Any:
        """Wait for a run (a handle or a run id) to end, skipping time meanwhile; its
        result. ``timeout`` is in real seconds.

        Raises:
            RunFailed: the run ended failed, cancelled or blocked.
            RuntimeError: the environment is not open.
            TimeoutError: ``timeout`` real seconds passed first.
            RunStuck: the run can never end (see ``stuck_after``): raised after
                ``stuck_after`` real seconds of stillness, before ``timeout``.
            RunSpinning: a step of the run (or of a child it waits for) keeps failing
                (see ``stuck_attempts``).
        """
        self._need_open()
        handle = run if isinstance(run, RunHandle) else self.app.handle(run)
        if handle.app is self.app:
            return await RunHandle.result(handle, timeout)  # (skips: _awaiting)
        async with self._awaiting(handle.run_id, timeout):
            return await RunHandle.result(handle, timeout)

    @overload
    async def run(self, workflow: Callable[..., Awaitable[R]], *args: Any, **kwargs: Any) -> R: ...

    @overload
    async def run(self, workflow: str, *args: Any, **kwargs: Any) -> Any: ...

    async def run(self, workflow: Callable[..., Awaitable[Any]] | str, *args: Any,
                  **kwargs: Any) -> Any:
        """Start a run and wait for its result, skipping time (see ``start``), for 60
        real seconds at most. Keyword arguments are the workflow's (``run_id``,
        ``queue`` and ``check_args`` are ``App.start``'s, see ``start``); for another
        timeout, ``await
        env.result(await env.start(...), timeout=...)``."""
        handle = await self.start(workflow, *args, **kwargs)
        return await handle.result()


def _error_text(error: object) -> str:
    """A journal entry's recorded error (as a run's document has it) as ``Type: message``
    (the message cut at 200 characters)."""
    if not isinstance(error, dict):
        return str(error)[:200]
    return f"{error.get('type')}: {str(error.get('message'))[:200]}"


def _model_call(run_id: str, entry: JournalEntry) -> bool:
    """Whether ``entry`` is a durable model call: an ``LLM``'s (``llm:...``), or an
    integration's whose attempt this process made (``tether._inflight``)."""
    return entry.name.startswith("llm:") or (run_id, entry.position) in _inflight.attempts


def _pointing(step: str) -> str:
    """How to point the model of the call ``step`` at the scripted server: an ``LLM``
    (``llm:...``) is given as ``llms=``; an integration's model (OpenAI Agents SDK,
    pydantic-ai) brings its own client, which reads its base URL when it is made."""
    if step.startswith("llm:"):
        return ("an LLM built before the environment (at module level, say) keeps its "
                "own base_url, the provider's, unless given as TestEnv(..., llms=[llm])")
    return ("an integration's model whose client was built before the environment (at "
            "module level, say) keeps that client's base_url, the provider's: build the "
            "model (its client) inside the environment, where OPENAI_BASE_URL and "
            "ANTHROPIC_BASE_URL point at the scripted server, or give its client "
            "base_url=env.llm.base_url (env.llm.anthropic_base_url for Anthropic)")


def _failed_step(entry: JournalEntry) -> bool:
    """A step call that failed and waits to be tried again (pending, with an error)."""
    return (entry.kind == "step" and entry.status == "pending" and bool(entry.attempts)
            and entry.error is not None)


def _machinery(task: asyncio.Task[Any]) -> bool:
    """The task runs the environment's machinery: each coroutine of its chain (the
    task's, the one it awaits, and so on) is code of a package of ``_MACHINERY``. One
    of other code makes it the test's: the test function, also when a runner of a
    package of ``_MACHINERY`` awaits it (anyio's pytest plugin), and a task of unknown
    origin. A task the worker started (``_RUNNERS``) is the machinery's whatever it
    awaits: it runs the runs' code (a workflow, a step, a test double), which may be the
    test module's; counted as the test's, every run replayed after a retry held
    ``RunSpinning`` off."""
    awaited: Any = task.get_coro()
    frame = getattr(awaited, "cr_frame", None)
    if frame is not None and frame.f_globals.get("__name__") in _RUNNERS:
        return True
    seen = False
    for _ in range(256):  # (a chain's depth)
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is None:
            break
        if str(frame.f_globals.get("__name__", "")).partition(".")[0] not in _MACHINERY:
            return False
        seen = True
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return seen


def _waits_on(task: asyncio.Task[Any], waiting: set[asyncio.Task[Any] | None]) -> bool:
    """Whether ``task`` is blocked on a wait in ``waiting``: it is one, or it awaits a
    task that is (``await task``), or an ``asyncio.gather`` of such tasks. Anything else
    (running, ready to run, a sleep, ``asyncio.wait``, a thread's future) is not."""
    for _ in range(64):  # (a chain of tasks awaiting tasks; a cycle cannot block)
        if task in waiting:
            return True
        # (the future the task waits for: asyncio's, in both its C and Python tasks)
        future = getattr(task, "_fut_waiter", None)
        if isinstance(future, asyncio.Task):
            task = future
            continue
        children = getattr(future, "_children", None)  # asyncio.gather's
        if isinstance(children, list) and children:
            return all(child.done() or (isinstance(child, asyncio.Task)
                                        and _waits_on(child, waiting))
                       for child in children)
        return False
    return False


def _fresh_schema_base(store_url: str | None) -> str:
    """The URL ``fresh_schema`` makes its schemas in: ``store_url``, a PostgreSQL URL
    that names no schema (``ConfigError`` otherwise: the option would not say which
    store it empties)."""
    if not store_url or not store_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("TestEnv: fresh_schema needs a PostgreSQL store_url (a schema "
                          "of its own in that database); without store_url the "
                          "environment's store is a new SQLite file already")
    from tether.store.postgres._config import parse_url

    if any(key == "schema" for key, _ in parse_qsl(urlsplit(store_url).query)):
        raise ConfigError("TestEnv: fresh_schema makes a schema of its own; the store_url "
                          "names one already (leave ?schema= out, or fresh_schema)")
    parse_url(store_url, schema=None, connect_timeout=10)  # (a bad URL: refused now)
    return store_url


#: Set to 1 (or true, yes), every ``fresh_schema`` environment keeps its schema at close.
KEEP_SCHEMA_ENV = "TETHER_TEST_KEEP_SCHEMA"


#: Set to a list by the pytest plugin: the fresh schemas of environments that closed as
#: an error left their ``async with`` block, ``(store URL, schema)``, for the plugin to
#: keep if the test failed (and say so in its report), or drop if it passed (the error
#: was one the test expected). None: dropped at close, whatever the error.
DEFERRED_DROPS: list[tuple[str, str]] | None = None


def drop_schema_now(url: str, schema: str) -> None:
    """``_drop_schema``, from code that runs no event loop (a pytest hook)."""
    import psycopg

    from tether.store.postgres._config import parse_url

    try:
        cfg = parse_url(url, schema=None, connect_timeout=10)
        with psycopg.connect(cfg.conninfo, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    except (psycopg.Error, OSError) as exc:
        log.warning("TestEnv: could not drop its schema %s of %s: %s", schema, url, exc)


def _keep_env() -> bool:
    return os.environ.get(KEEP_SCHEMA_ENV, "").strip().lower() in ("1", "true", "yes")


def kept_schema_notice(url: str, schema: str) -> str:
    """What a kept schema's line says: its name, and the commands (run as they are
    written) to look at its runs and to drop it. ``url`` is the store's URL, with
    ``?schema=``, which ``tether --db`` takes; ``psql`` takes the database's."""
    parts = urlsplit(url)
    query = "&".join(f"{key}={value}" for key, value in parse_qsl(parts.query)
                     if key != "schema")
    base = parts._replace(query=query).geturl()
    return (f"TestEnv: kept its schema {schema} (keep_schema): look at its runs with "
            f"`tether runs --db '{url}'` (and `tether show RUN_ID --db '{url}'`); drop "
            f"it with `psql '{base}' -c 'DROP SCHEMA {schema} CASCADE'`")


async def _drop_schema(url: str, schema: str) -> None:
    """Drop the schema a ``fresh_schema`` environment made (logged if it cannot be)."""
    import psycopg

    from tether.store.postgres._config import parse_url

    try:
        cfg = parse_url(url, schema=None, connect_timeout=10)
        async with await psycopg.AsyncConnection.connect(cfg.conninfo,
                                                         autocommit=True) as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    except (psycopg.Error, OSError) as exc:
        log.warning("TestEnv: could not drop its schema %s of %s: %s", schema, url, exc)


def _holder(value: str) -> dict[str, Any] | None:
    """The claim in a ``CLAIM_KEY`` row, or None for a free one (empty, unreadable)."""
    try:
        holder = json.loads(value) if value else None
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _claim_live(holder: dict[str, Any]) -> bool:
    """The claim's holder may still be open: refreshed within ``_CLAIM_STALE`` real
    seconds, not a process of this host that is gone, and, in this process, an
    environment still open on a loop that still runs."""
    beat = holder.get("beat")
    if not isinstance(beat, (int, float)) or time.time() - beat > _CLAIM_STALE:
        return False
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and pid == os.getpid():
        loop = _OPEN_CLAIMS.get(str(holder.get("id")))
        return loop is not None and not loop.is_closed()
    if holder.get("host") == socket.gethostname() and isinstance(pid, int):
        return process_alive(pid, "")
    return True


def _claim_refusal(url: str, holder: dict[str, Any]) -> str:
    where = f"process {holder.get('pid')} on {holder.get('host')}"
    test = holder.get("test")
    return (f"TestEnv: the store {url} is in use by another open TestEnv ({where}"
            f"{f', test {test!r}' if test else ''}): two environments on one store run "
            "each other's runs and skip each other's clocks. Give each its own store "
            "(TestEnv(..., fresh_schema=True): a schema of its own in a PostgreSQL "
            "database; or, under pytest-xdist, a database named after the worker_id "
            "fixture), or "
            "close the first before opening this one")


def _twin(app: App, url: str, clock: VirtualClock) -> App:
    """A new App with ``app``'s definitions (workflows, steps, schedules, MCP
    exposures), codec and code version, on ``url`` with ``clock``; not its retention,
    nor its workflows' own (runs are not purged under a test).

    The definitions are shared, not re-registered, so whatever a definition carries
    (queue, retry policy, versions) is the same in both apps. (Until 2026-12-06 the
    schedules were left out: a scheduled workflow never ticked in a ``TestEnv``.)
    """
    twin = App(url, clock=clock, max_payload=app.codec.max_payload,
               payload_hook=app.codec.hook, version=app.version)
    # (a workflow's own retention left out as the app's is: its worker would purge the
    # test's runs as the virtual clock skips past it)
    twin._workflows.update({name: dataclasses.replace(wdef, retention=None)
                            for name, wdef in app._workflows.items()})
    twin._steps.update(app._steps)
    twin._schedules.update(app._schedules)
    twin.mcp_exposed.update(app.mcp_exposed)
    return twin


def _unset_env(var: str, holder: int) -> None:
    """Drop the value environment ``holder`` gave ``var``: it takes the value of the
    last environment still open that set it, else the value found before any did."""
    found, values = _ENV_SET.get(var, (os.environ.get(var), {}))
    values.pop(holder, None)
    for key, (ref, _) in list(values.items()):
        env = ref()
        if env is None or not env._opened or env._loop is None or env._loop.is_closed():
            del values[key]
    value = next(reversed(values.values()))[1] if values else found
    if not values:
        _ENV_SET.pop(var, None)
    if value is None:
        os.environ.pop(var, None)
    else:
        os.environ[var] = value
