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
``REMIND_EVERY`` seconds, and a line when the server is reachable again. psycopg_pool's
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

#: The name prefix of the store's pools (``tether-<schema>``), in psycopg_pool's logs.
POOL_PREFIX = "tether-"

log = logging.getLogger("tether.store.postgres")


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
        self._down(connect_reason(exc))

    def no_answer(self, seconds: float, started: float | None = None) -> None:
        """An operation (begun at ``started``, ``time.monotonic()``) got no answer
        within its deadline of ``seconds`` (``_deadline``): the server accepts
        connections, or did, but does not answer. The outage ends with the next
        connection made, or the next answer on any connection (``answered``). An
        operation begun before the last connection was made tells nothing new."""
        if started is not None and started < self._connected_at:
            return
        if self.since is None:
            self.unanswered = True
        self._down(f"no answer within {seconds:g} s")

    def answered(self) -> None:
        """An operation got its answer: an outage told by ``no_answer`` alone is over."""
        if self.unanswered:
            self.connected()

    def _down(self, reason: str) -> None:
        self.reason = reason
        told = self._failure(REMIND_EVERY)
        if told == "start":
            self.count += 1
            log.warning("PostgreSQL at %s unreachable (%s%s); connecting again as it is "
                        "needed, and this says how it goes every %.0f s (each attempt at "
                        "debug level)", self.where, self.reason,
                        ": down, hung, or the statement waited on a lock or ran long"
                        if self.unanswered else "", REMIND_EVERY)
        elif told == "reminder":
            log.warning("PostgreSQL at %s still unreachable after %.0f s (%s; %d "
                        "connection attempts failed)", self.where, self._elapsed(),
                        self.reason, self.failures)
        watchers, self._watchers = self._watchers, []
        for fut in watchers:
            if not fut.done():
                fut.set_result(None)

    def connected(self) -> None:
        self._connected_at = time.monotonic()
        if self.since is not None and self.unanswered:
            # No connection attempt failed: the server accepted one, so it was up all
            # along as far as anyone can tell ("reachable again after 0.0 s (1 connection
            # attempts failed)" sent operators after the network when a session held a
            # lock on the runs table).
            log.warning("PostgreSQL at %s answers again after %.1f s, and accepted every "
                        "connection meanwhile (%s no answer within %s deadline: a lock "
                        "another session holds, a statement running long, or a "
                        "connection the network dropped)", self.where, self._elapsed(),
                        "1 operation got" if self.failures == 1
                        else f"{self.failures} operations got",
                        "its" if self.failures == 1 else "their")
        elif self.since is not None:
            log.warning("PostgreSQL at %s reachable again after %.1f s (%d connection "
                        "attempts failed)", self.where, self._elapsed(), self.failures)
        self.reset()

    def reset(self) -> None:
        """Forget the outage without a word (what a closed store knew is stale)."""
        self._clear()
        self.reason = ""
        self.unanswered = False
        self._failing = False

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
