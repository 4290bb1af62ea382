"""What the store knows of its server being down, from its pool's connection attempts
and its operations' deadlines.

While the server is gone, an operation that finds no idle connection in the pool waits
for one for ``pool_timeout`` (10 s by default). A worker's own operations should: a
server that restarts within that time is ridden through. A person's request to
``tether serve`` should not: its answer, 503, is known as soon as the pool's last try to
connect failed. ``Outage`` records every connection attempt the pool makes (through the
connection class it gives the pool) so that the store can tell, without a round trip,
that the server is known to be down; callers that set ``FAIL_FAST`` then fail at once.

Nobody connects while every caller fails at once, so the store also *probes*: at most
once per ``PROBE_EVERY`` seconds while callers are being turned away, it asks the pool
for a connection in the background. The pool connects (through the same class), the
first success ends the outage, and the connection it made serves the next request.

A server that accepts connections but never answers is found by the operations'
deadlines (``_deadline``): the first deadline that passes marks the server down as a
failed connection attempt does (``no_answer``), and the pool's idle connections, made
before, are dropped; an answer on any connection, or a connection made, ends that.

The log tells an outage once: a warning at the first failed attempt, a reminder every
``REMIND_EVERY`` seconds, and a line when the server is reachable again. Deadlines
missed while the server accepts every connection (a lock another session holds, a
statement running long) are one episode in the log (``Stall``), however often a
connection made or an answer on another table ends the outage they tell and the next
missed deadline begins it again: a line at the first missed deadline, and one once
operations are answered within their deadline again, with how long statements waited. psycopg_pool's
own warning for each failed attempt of a Tether pool (three lines each, several a
second while the pool's tasks retry) goes to the debug level (``quiet_pool_log``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
import psycopg_pool

from tether._pacing import OutagePacing
from tether.store._port import every_caller_context
from tether.store.postgres._config import busy, connect_reason

#: Least seconds between two probes of a server known to be down.
PROBE_EVERY = 1.0

#: Seconds between two tries of one of the pool's connections that failed to connect
#: (±10 %), however long the server has been gone: a waiting caller gets a connection
#: about this long after the server is back (``ReconnectingPool``).
RETRY_EVERY = 0.5

#: Least seconds between the starts of two connection attempts while the last one
#: failed, whatever the number of the pool's connections trying (``tracked_connection``):
#: a pool of 50 connections lost at once makes about 2.5 attempts a second, not 100.
#: Below ``RETRY_EVERY``, so that one connection trying alone is never held back.
ATTEMPT_SPACING = 0.4

#: Seconds without a connection attempt after which what an outage knows is old: the
#: server may have come back meanwhile, unseen, since nobody tried (``stale``).
STALE_AFTER = 2.0

#: Seconds between two reminders in the log that the server is still unreachable.
REMIND_EVERY = 30.0

#: Seconds past a deadline without one missed after which an answer ends a stall
#: (``Stall.over``): an operation that missed its deadline is tried again after a
#: back-off (a worker's claims: up to 5 s) and on a new connection, so while a lock
#: holds its next deadline passes within a deadline and this much more.
STALL_QUIET_EXTRA = 5.0

#: The name prefix of the store's pools (``tether-<schema>``), in psycopg_pool's logs.
POOL_PREFIX = "tether-"

log = logging.getLogger("tether.store.postgres")


class Stall:
    """Operations that got no answer within their deadline while no connection attempt
    failed: told once at the first (``missed``), once at its end (``answered``), which
    is an answer after a deadline and ``STALL_QUIET_EXTRA`` seconds without a missed
    one (an operation held up, tried again, would have missed its next deadline by
    then; so the end is told that long after the last miss, and says how long
    statements waited: from the first missed operation's start to the last miss). The
    outage these deadlines tell
    (``Outage.no_answer``) ends with each connection made and each answer on any
    connection (a heartbeat's, while a lock on the runs table holds every claim), and
    begins again with the next deadline missed: told as such, the log alternated
    "unreachable" and "answers again" for as long as a lock was held."""

    __slots__ = ("first", "last", "misses", "seconds")

    def __init__(self, seconds: float, now: float) -> None:
        self.seconds = seconds  # the deadline missed (the longest, if several)
        self.first = now - seconds  # when the first operation that missed it began
        self.last = now  # when the last deadline passed
        self.misses = 0

    def missed(self, seconds: float, now: float) -> None:
        self.seconds = max(self.seconds, seconds)
        self.last = now
        self.misses += 1

    def over(self, now: float) -> bool:
        """Whether an answer now ends the episode: no deadline passed for a whole one
        and ``STALL_QUIET_EXTRA`` seconds."""
        return now - self.last >= self.seconds + STALL_QUIET_EXTRA


class Outage(OutagePacing):
    """Whether the pool's last connection attempt failed (and how), and the futures of
    callers waiting to hear of the next failure. ``since`` and ``failures`` count the
    failed attempts since the last success."""

    def __init__(self, where: str = "") -> None:
        super().__init__()
        self.where = where  # host:port/database, for the log
        #: Why the last attempt failed (libpq's reason, e.g. "Connection refused").
        self.reason = ""
        #: Outages begun so far (``PostgresStore.outages``).
        self.count = 0
        #: The outage was told by a deadline (``no_answer``), no connection attempt has
        #: failed since: any answer ends it.
        self.unanswered = False
        #: ``time.monotonic()`` of the last connection made (or answer, see ``answered``).
        self._connected_at = 0.0
        self._watchers: list[asyncio.Future[None]] = []
        self._probe: asyncio.Task[None] | None = None
        self._probed = 0.0  # time.monotonic() when the last probe started
        #: ``time.monotonic()`` when the last connection attempt began, and whether the
        #: last one to end failed (``held_back``).
        self._tried = -math.inf
        self._failing = False
        #: Deadlines missed while every connection attempt succeeds, told as one
        #: episode (``Stall``); None while there is none.
        self.stall: Stall | None = None

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, started: float | None = None) -> None:
        """A connection attempt (begun at ``started``, ``time.monotonic()``) failed. A
        server that refused it for want of a free slot (or while starting up) is up:
        that is not an outage; nor is an attempt begun before the last one that
        succeeded (made while the network was cut, it failed after it came back)."""
        if started is not None and started < self._connected_at:
            return
        self._failing = True
        if busy(exc):
            return
        self.unanswered = False  # (now only a connection made ends it)
        self.stall = None  # (an outage now: its lines take over)
        self._down(connect_reason(exc))

    def no_answer(self, seconds: float, started: float | None = None) -> None:
        """An operation (begun at ``started``, ``time.monotonic()``) got no answer
        within its deadline of ``seconds`` (``_deadline``): the server accepts
        connections, or did, but does not answer. The outage ends with the next
        connection made, or the next answer on any connection (``answered``). An
        operation begun before the last connection was made tells nothing new of the
        server being down; in the log, every deadline missed while no connection
        attempt fails belongs to one episode (``Stall``)."""
        if self.since is None or self.unanswered:
            self._stalled(seconds)
        if started is not None and started < self._connected_at:
            return
        if self.since is None:
            self.unanswered = True
        self._down(f"no answer within {seconds:g} s")

    def _stalled(self, seconds: float) -> None:
        now = time.monotonic()
        if self.stall is None:
            self.stall = Stall(seconds, now)
            log.warning("PostgreSQL at %s: a statement got no answer within its %g s "
                        "deadline (query_timeout): it waits on a lock another session holds "
                        "(pg_locks, "
                        "pg_blocking_pids()), runs long, or the server or the network "
                        "hangs; this says when statements are answered in time again "
                        "(each missed deadline at debug level)", self.where, seconds)
        self.stall.missed(seconds, now)

    @property
    def watching(self) -> bool:
        """Whether an answer tells something (``answered``): an outage told by a deadline,
        or a stall not over yet."""
        return self.unanswered or self.stall is not None

    def answered(self) -> None:
        """An operation got its answer: an outage told by ``no_answer`` alone is over,
        and so is a stall once no deadline passed for a whole one."""
        if self.unanswered:
            self.connected()
        stall = self.stall
        if stall is not None and stall.over(time.monotonic()):
            self.stall = None
            log.warning("PostgreSQL at %s answers within the deadline again: statements "
                        "waited past their %g s deadline for %.1f s (%s, and the server "
                        "accepted connections throughout: a lock another session held, "
                        "statements running long, or connections the network dropped)",
                        self.where, stall.seconds, stall.last - stall.first,
                        "1 operation got no answer in time" if stall.misses == 1
                        else f"{stall.misses} operations got no answer in time")

    def _down(self, reason: str) -> None:
        self.reason = reason
        told = self._failure(REMIND_EVERY)
        if told == "start":
            self.count += 1
            if not self.unanswered:  # (else a stall, told as one: ``_stalled``)
                log.warning("PostgreSQL at %s unreachable (%s); connecting again as it "
                            "is needed, and this says how it goes every %.0f s (each "
                            "attempt at debug level)", self.where, self.reason,
                            REMIND_EVERY)
        elif told == "reminder" and not self.unanswered:
            log.warning("PostgreSQL at %s still unreachable after %.0f s (%s; %d "
                        "connection attempts failed)", self.where, self._elapsed(),
                        self.reason, self.failures)
        watchers, self._watchers = self._watchers, []
        for fut in watchers:
            if not fut.done():
                fut.set_result(None)

    def connected(self) -> None:
        self._connected_at = time.monotonic()
        # An outage told by deadlines alone (``unanswered``) ends without a word: no
        # connection attempt failed, the server accepted one, and its statements may
        # wait on all the same (a lock): the stall's end is told by an answer in time
        # (``answered``). ("reachable again after 0.0 s" sent operators after the
        # network when a session held a lock on the runs table, and "answers again"
        # said of a connection made alternated with "unreachable" while it held.)
        if self.since is not None and not self.unanswered:
            log.warning("PostgreSQL at %s reachable again after %.1f s (%d connection "
                        "attempts failed)", self.where, self._elapsed(), self.failures)
        self._forget()

    def _forget(self) -> None:
        self._clear()
        self.reason = ""
        self.unanswered = False
        self._failing = False

    def reset(self) -> None:
        """Forget the outage, and any stall, without a word (what a closed store knew
        is stale)."""
        self._forget()
        self.stall = None

    def held_back(self) -> bool:
        """Whether a connection attempt should not begin now: the last one failed and
        another began less than ``ATTEMPT_SPACING`` seconds ago. Otherwise the attempt
        is counted as begun. However many of the pool's connections are trying again
        (each of them on its own, every ``RETRY_EVERY``), the server is then asked at
        most about once per ``ATTEMPT_SPACING``, and still within ``RETRY_EVERY`` of any
        moment (one connection trying alone is never held back)."""
        now = time.monotonic()
        if self._failing and now - self._tried < ATTEMPT_SPACING:
            return True
        self._tried = now
        return False

    def stale(self) -> bool:
        """Whether the server is taken for down on the word of an attempt begun over
        ``STALE_AFTER`` seconds ago: nobody asked since (the probes run only while
        callers are being refused), so it may well be back."""
        return self.since is not None and time.monotonic() - self._tried > STALE_AFTER

    def next_failure(self) -> asyncio.Future[None]:
        """A future done at the next failed attempt (drop it with ``forget``)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append(fut)
        return fut

    def forget(self, fut: asyncio.Future[None]) -> None:
        if fut in self._watchers:
            self._watchers.remove(fut)

    def probe(self, connect: Callable[[], Coroutine[Any, Any, None]], *,
              now_if_idle: bool = False) -> asyncio.Task[None] | None:
        """Start ``connect()`` in the background unless a probe runs or one started
        less than ``PROBE_EVERY`` seconds ago (``now_if_idle``: however long ago, if
        none runs). Returns the probe running, if any."""
        now = time.monotonic()
        if self._probe is not None and not self._probe.done():
            return self._probe
        if now - self._probed < PROBE_EVERY and not now_if_idle:
            return None
        self._probed = now
        self._probe = asyncio.get_running_loop().create_task(
            connect(), context=every_caller_context())
        return self._probe

    async def close(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None and not probe.done():
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
        for fut in self._watchers:
            fut.cancel()
        self._watchers.clear()


def tracked_connection(outage: Outage) -> type[psycopg.AsyncConnection[Any]]:
    """A connection class for the pool that reports each attempt to ``outage``."""

    class TrackedConnection(psycopg.AsyncConnection[Any]):
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            if outage.held_back():  # (no network: the pool tries again in RETRY_EVERY)
                raise psycopg.OperationalError(
                    f"not tried: another attempt began less than {ATTEMPT_SPACING:g} s "
                    f"ago and the last one failed ({outage.reason or 'no free slot'})")
            started = time.monotonic()
            try:
                conn = await super().connect(conninfo, **kwargs)
            except Exception as exc:
                outage.failed(exc, started)
                raise
            outage.connected()
            return conn

    TrackedConnection.__qualname__ = "TrackedConnection"  # (its repr, in the pool's logs)
    TrackedConnection._tether = True  # type: ignore[attr-defined]  # (_QuietPoolLog)
    return TrackedConnection


class _Retry:
    """How one of the pool's connections that failed to connect tries again, in
    psycopg_pool's terms (its ``AttemptWithBackoff``: ``delay``, ``update_delay``,
    ``time_to_give_up``): every ``RETRY_EVERY`` seconds (±10 %), not after a delay that
    doubles; given up after ``timeout`` seconds only while no caller waits for a
    connection (see ``ReconnectingPool``)."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any], timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout
        self.delay = 0.0
        self.give_up_at = 0.0

    def update_delay(self, now: float) -> None:
        if self.give_up_at == 0.0:
            self.give_up_at = now + self.timeout
        self.delay = RETRY_EVERY * random.uniform(0.9, 1.1)

    def time_to_give_up(self, now: float) -> bool:
        return 0.0 < self.give_up_at <= now and not _someone_waits(self.pool)


def _someone_waits(pool: psycopg_pool.AsyncConnectionPool[Any]) -> bool:
    """Whether a caller waits for a connection of ``pool``: psycopg_pool's queue keeps a
    caller that gave up (timed out, cancelled) until a connection comes, with its error
    set (psycopg_pool 3's internals; when they are not there, the answer is no)."""
    return any(getattr(w, "conn", None) is None and getattr(w, "error", None) is None
               for w in getattr(pool, "_waiting", ()))


def _retry_hook_fits() -> bool:
    """Whether the installed psycopg_pool has the private method ``ReconnectingPool``
    overrides, as written for (psycopg_pool 3.2 and 3.3: ``_add_connection(attempt,
    growing)``, ``attempt`` None for a first try). Another version gets the plain pool,
    with its own backoff, rather than a call that no longer fits (a test says so)."""
    try:
        params = list(inspect.signature(
            psycopg_pool.AsyncConnectionPool._add_connection).parameters)
    except (AttributeError, TypeError, ValueError):
        return False
    return params[:3] == ["self", "attempt", "growing"]


#: ``_retry_hook_fits()`` for the installed psycopg_pool.
RETRY_HOOK_FITS = _retry_hook_fits()


class ReconnectingPool(psycopg_pool.AsyncConnectionPool[Any]):
    """psycopg_pool's pool, whose connections that fail to connect try again every
    ``RETRY_EVERY`` seconds for as long as a caller waits for one.

    psycopg_pool tries a failed connection again after 1 s, then 2 s, 4 s... and gives
    it up after ``reconnect_timeout`` (the store's ``connect_timeout``, 5 s); a caller
    that began waiting while that connection was trying is given nothing more until
    its ``pool_timeout`` (10 s) ends, since only a new caller makes the pool connect
    again. So callers were served 0.02 to 4.5 s after the server came back (callers
    coming and going), or after a caller's whole ``pool_timeout`` (one waiting alone);
    now 0.3 to 0.5 s (``bench/pg_reconnect.py``). ``Outage.held_back``
    keeps the many connections trying at once from asking the server more than about
    2.5 times a second."""

    if RETRY_HOOK_FITS:
        async def _add_connection(self, attempt: Any, growing: bool = False) -> None:
            if attempt is None:
                attempt = _Retry(self, self.reconnect_timeout)
            await super()._add_connection(attempt, growing)


#: psycopg_pool's warnings for a failed connection attempt (their format strings).
_ATTEMPT_WARNINGS = frozenset({
    "error connecting in %r: %s",
    "reconnection attempt in pool %r failed after %s sec",
})


class _QuietPoolLog(logging.Filter):
    """Sends psycopg_pool's warning for each failed attempt of a Tether pool, and for
    each broken connection given back to it (one per connection an outage or a
    deadline broke), to ``tether.store.postgres`` at debug level, its first line only:
    ``Outage`` has told the outage already. Other pools' lines, and the pool's other
    lines, pass as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (isinstance(args, tuple) and args):
            return True
        if (record.msg in _ATTEMPT_WARNINGS and isinstance(args[0], str)
                and args[0].startswith(POOL_PREFIX)) or (
                record.msg == _DISCARD_WARNING and getattr(args[0], "_tether", False)):
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s", record.getMessage().split("\n", 1)[0])
            return False
        return True


#: psycopg_pool's warning for a broken connection given back (a connection of a
#: Tether pool is a ``TrackedConnection``, marked ``_tether``).
_DISCARD_WARNING = "discarding closed connection: %s"

_quiet_pool_log = _QuietPoolLog()


def quiet_pool_log() -> None:
    """Install the filter on psycopg_pool's logger (once; a store calls it as it opens)."""
    logger = logging.getLogger("psycopg.pool")
    if _quiet_pool_log not in logger.filters:
        logger.addFilter(_quiet_pool_log)
