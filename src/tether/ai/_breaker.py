"""A circuit breaker per provider, and RPM/TPM limits, shared by every worker of a store.

Both live in the store, not in a process: fifty runs on five workers see one breaker,
so a provider outage is detected once and probed by one caller, instead of each run
hammering it on its own retry schedule.

The breaker (``kv_get``/``kv_cas`` on key ``llm.breaker:<provider>:<base_url>``)::

    closed --N consecutive failures--> open --cool-down over, one CAS winner--> probing
       ^                                ^                                          |
       +------------ probe succeeds ----+------ probe fails: cool-down x backoff --+

- *closed*: calls go through; a failure (5xx, timeout, dropped connection) counts; a
  success resets the count. 429s do not count: the provider is up and said when to
  come back (``Retry-After``), which the step's retry honours.
- *open*: calls raise ``tether.Postpone`` until the cool-down ends (plus jitter), so
  the runs are released, holding no worker, and no failed attempt is counted.
- *probing*: the caller whose compare-and-set moved the state from open is the probe;
  everyone else is postponed briefly. The probe's success closes the breaker; its
  failure re-opens it with a longer cool-down. A probe that never reports (its worker
  died) is taken over after ``probe_timeout``; one that knows it will not (postponed
  by its rate limit before its request, cancelled before the answer) hands the probe
  back at once (``BreakerGuard.release``).

Every transition is a compare-and-set on a versioned row, so concurrent callers in
any process agree on one winner. The state is JSON, readable with ``tether db``.

A process that read the breaker closed with no failures takes it as such for
``CLOSED_FOR`` seconds without reading it again: on the happy path a call
costs no store read, and a breaker another process opens stops this one's calls within
that time (``_Known``); calls that find nothing remembered at the same moment share one read. Any
failure this process sees reads and writes the state at once, and drops what it
remembered. The price: a success within that second does not reset failures other
processes counted meanwhile (it only would have if it had read them), which leans the
breaker slightly toward opening, never toward hammering a failing provider.

Rate limits use ``store.rate_acquire`` (a DB-enforced token bucket): a call that is not
granted raises ``Postpone`` for the time the bucket says.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.errors import ConfigError, Postpone

if TYPE_CHECKING:
    from tether.ext import SharedState

__all__ = ["BreakerGuard", "CircuitBreaker", "ProviderGate", "RateLimits", "Ticket"]

log = logging.getLogger("tether.ai")

#: How often a compare-and-set is retried after losing a race before giving up the
#: bookkeeping (the call itself is not affected).
_CAS_TRIES = 8

#: Seconds a breaker read closed with no failures is taken as closed without reading it.
CLOSED_FOR = 1.0

_Read = tuple[dict[str, Any], int | None]


@dataclass(slots=True)
class _Known:
    """What this process knows of the breakers of one store."""

    #: breaker key -> ``time.monotonic()`` until which it is taken as closed with no
    #: failures.
    closed: dict[str, float] = field(default_factory=dict)
    #: (event loop, breaker key) -> the read of the breaker in flight there. The calls in
    #: flight when the remembered state expires (a hundred agents: dozens) share it
    #: instead of each reading the store.
    reading: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future[_Read]] = field(
        default_factory=dict)


#: store -> what this process knows of its breakers.
_known: weakref.WeakKeyDictionary[Any, _Known] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """The breaker's settings.

    Args:
        failures: consecutive failures that open it.
        cooldown: seconds it stays open the first time.
        backoff: factor applied to the cool-down after each failed probe.
        max_cooldown: upper bound of the cool-down.
        probe_timeout: seconds after which a probe that has not reported is presumed
            dead and another caller may probe.
        probe_wait: how long callers are postponed while a probe is in flight.
    """

    failures: int = 5
    cooldown: float = 5.0
    backoff: float = 2.0
    max_cooldown: float = 120.0
    probe_timeout: float = 60.0
    probe_wait: float = 1.0

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ConfigError(f"CircuitBreaker failures= must be >= 1, got {self.failures}")
        if min(self.cooldown, self.max_cooldown, self.probe_timeout, self.probe_wait) <= 0:
            raise ConfigError("CircuitBreaker durations must be > 0")
        if self.backoff < 1:
            raise ConfigError(f"CircuitBreaker backoff= must be >= 1, got {self.backoff}")


@dataclass(frozen=True, slots=True)
class Ticket:
    """What ``before`` learned: whether this caller is the probe, and the failure count
    it saw (a success only writes when there is something to reset)."""

    probe: bool = False
    failures: int = 0
    #: A probe's ``probe_until`` as it wrote it: which probe is its own (``release``).
    probe_until: float = field(default=0.0, compare=False)


def _jitter(seconds: float) -> float:
    """Spread wake-ups so that released runs do not all come back in one instant."""
    return seconds + random.uniform(0.0, min(1.0, 0.2 * seconds + 0.05))


class BreakerGuard:
    """One provider's breaker in one store."""

    def __init__(self, store: SharedState, key: str, config: CircuitBreaker, *,
                 clock: Callable[[], float], label: str) -> None:
        self.store = store
        self.key = key
        self.config = config
        self.clock = clock
        self.label = label
        # A run's view of the shared state is one object per run execution; what is
        # remembered is per store (the view's store, else the object itself).
        owner = getattr(store, "_store", store)
        known = _known.get(owner)
        if known is None:
            known = _known[owner] = _Known()
        self._memo = known.closed
        self._reads = known.reading

    async def _read_shared(self) -> _Read:
        """``_read``, or the same read another caller of this event loop has in flight
        (its result or its error)."""
        slot = (asyncio.get_running_loop(), self.key)
        fut = self._reads.get(slot)
        if fut is None:
            fut = self._reads[slot] = asyncio.ensure_future(self._read())
            reads = self._reads

            def done(f: asyncio.Future[_Read]) -> None:
                if reads.get(slot) is f:
                    del reads[slot]
                if not f.cancelled():
                    f.exception()  # (seen: every waiter may have gone)

            fut.add_done_callback(done)
        return await asyncio.shield(fut)

    async def _read(self) -> tuple[dict[str, Any], int | None]:
        row = await self.store.kv_get(key=self.key)
        if row is None:
            value: Any = {"state": "closed", "failures": 0}
        else:
            try:
                value = json.loads(row[0])
            except ValueError:
                value = None
            if not isinstance(value, dict):
                value = {"state": "closed", "failures": 0}
        self._remember(value)
        return value, None if row is None else row[1]

    async def _write(self, value: dict[str, Any], version: int | None) -> bool:
        written = await self.store.kv_cas(key=self.key, value=json.dumps(value),
                                          version=version, now=self.clock())
        if written:
            self._remember(value)
        return written

    def _remember(self, value: dict[str, Any]) -> None:
        """Note the state read or written: closed with no failures is remembered for
        ``CLOSED_FOR`` seconds; anything else is not."""
        if value.get("state") == "closed" and not int(value.get("failures", 0)):
            self._memo[self.key] = time.monotonic() + CLOSED_FOR
        else:
            self._memo.pop(self.key, None)

    async def before(self) -> Ticket:
        """Let the call through (returning its ticket) or postpone it.

        Raises:
            Postpone: the breaker is open, or another caller is probing.
        """
        cfg, now = self.config, self.clock()
        if self._memo.get(self.key, 0.0) > time.monotonic():
            return Ticket(False, 0)
        for attempt in range(_CAS_TRIES):
            # (After a lost compare-and-set, a read of its own: the shared one is stale.)
            state, version = await (self._read_shared() if attempt == 0 else self._read())
            kind = state.get("state")
            failures = int(state.get("failures", 0))
            if kind == "open" and now < float(state["until"]):
                raise Postpone(_jitter(float(state["until"]) - now),
                               f"circuit open for {self.label} "
                               f"(cool-down {state.get('cooldown', 0):g} s)")
            if kind == "probing" and now < float(state["probe_until"]):
                raise Postpone(_jitter(min(cfg.probe_wait, float(state["probe_until"]) - now)),
                               f"circuit half-open for {self.label}: a probe is in flight")
            if kind not in ("open", "probing"):
                return Ticket(False, failures)
            # The cool-down is over (or the probe vanished): try to be the probe.
            until = now + cfg.probe_timeout
            probing = {"state": "probing", "probe_until": until,
                       "cooldown": float(state.get("cooldown", cfg.cooldown)),
                       "failures": failures, "opened_at": state.get("opened_at")}
            if await self._write(probing, version):
                return Ticket(True, failures, until)
        raise Postpone(_jitter(cfg.probe_wait), f"circuit for {self.label} is contended")

    async def success(self, ticket: Ticket) -> None:
        """The provider answered: a probe closes the breaker; a closed breaker forgets
        its failures."""
        if not ticket.probe and ticket.failures == 0:
            return
        for _ in range(_CAS_TRIES):
            state, version = await self._read()
            kind = state.get("state")
            if kind in ("open", "probing") and not ticket.probe:
                return  # opened by others meanwhile: let the probe decide
            if kind == "closed" and int(state.get("failures", 0)) == 0:
                return
            if await self._write({"state": "closed", "failures": 0}, version):
                return

    async def release(self, ticket: Ticket) -> None:
        """The probe of ``ticket`` will not report (postponed by a rate limit before its
        request, or cut before its answer): hand the probe back, so that the next
        caller probes now instead of every caller waiting ``probe_timeout`` for it. The
        breaker stays open, its cool-down over; nothing is counted."""
        if not ticket.probe:
            return
        for _ in range(_CAS_TRIES):
            state, version = await self._read()
            if (state.get("state") != "probing"
                    or float(state.get("probe_until", -1.0)) != ticket.probe_until):
                return  # (taken over since, or settled)
            back = {"state": "open", "until": self.clock(),
                    "cooldown": float(state.get("cooldown", self.config.cooldown)),
                    "failures": int(state.get("failures", 0)),
                    "opened_at": state.get("opened_at")}
            if await self._write(back, version):
                return

    async def failure(self, ticket: Ticket) -> None:
        """The provider failed: count it; open the breaker at the threshold; a failed
        probe re-opens it with a longer cool-down."""
        cfg, now = self.config, self.clock()
        self._memo.pop(self.key, None)
        for _ in range(_CAS_TRIES):
            state, version = await self._read()
            kind = state.get("state")
            failures = int(state.get("failures", 0)) + 1
            if ticket.probe and kind == "probing":
                cooldown = min(float(state.get("cooldown", cfg.cooldown)) * cfg.backoff,
                               cfg.max_cooldown)
                new = {"state": "open", "until": now + cooldown, "cooldown": cooldown,
                       "failures": failures, "opened_at": state.get("opened_at", now)}
            elif kind in ("open", "probing"):
                return  # already open: one outage, one count
            elif failures >= cfg.failures:
                new = {"state": "open", "until": now + cfg.cooldown, "cooldown": cfg.cooldown,
                       "failures": failures, "opened_at": now}
            else:
                new = {"state": "closed", "failures": failures}
            if await self._write(new, version):
                return


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests and tokens per minute for one provider key, across all workers.

    Args:
        rpm: requests per minute, or ``None``.
        tpm: tokens per minute (the prompt's estimate plus ``max_tokens`` when given),
            or ``None``.
    """

    rpm: float | None = None
    tpm: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("rpm", self.rpm), ("tpm", self.tpm)):
            if value is not None and value <= 0:
                raise ConfigError(f"LLM {name}= must be > 0, got {value}")

    async def acquire(self, store: SharedState, key: str, *, tokens: int, now: float,
                      label: str) -> None:
        """Take one request and ``tokens`` tokens, or postpone the call.

        Tokens are taken first: they are the scarcer resource, and a refused request
        then wastes no token budget. A call larger than the whole per-minute budget
        takes the whole budget (it could never be granted otherwise).

        Raises:
            Postpone: not granted yet (the delay is the bucket's own estimate).
        """
        if self.tpm is not None:
            amount = float(min(max(tokens, 1), self.tpm))
            wait = await store.rate_acquire(key=f"{key}:tpm", limit=self.tpm, period=60.0,
                                            amount=amount, now=now)
            if wait > 0:
                raise Postpone(_jitter(wait), f"tokens-per-minute limit of {label} "
                               f"({self.tpm:g}/min) reached")
        if self.rpm is not None:
            wait = await store.rate_acquire(key=f"{key}:rpm", limit=self.rpm, period=60.0,
                                            amount=1.0, now=now)
            if wait > 0:
                raise Postpone(_jitter(wait), f"requests-per-minute limit of {label} "
                               f"({self.rpm:g}/min) reached")


def key_fingerprint(api_key: str | None) -> str:
    """A short, non-reversible name for an API key (rate limits are per key)."""
    if not api_key:
        return "nokey"
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


class ProviderGate:
    """One attempt's passage to a provider (``LLM`` and ``MeteredModel`` alike): its
    breaker lets it through (or postpones it), its rate limits grant its tokens, and
    once it ends the breaker hears how it went (``answered`` or ``failed``). The
    bookkeeping after the request never turns the provider's answer, or its error, into
    another error: a store hiccup there is logged."""

    __slots__ = ("_guard", "_ticket")

    def __init__(self, guard: BreakerGuard | None, ticket: Ticket | None) -> None:
        self._guard = guard
        self._ticket = ticket

    @classmethod
    async def enter(cls, shared: SharedState, provider_key: str, *,
                    breaker: CircuitBreaker | None, rate: RateLimits | None,
                    api_key: Callable[[], str], tokens: int,
                    clock: Callable[[], float]) -> ProviderGate:
        """Pass the breaker of ``provider_key`` and take ``tokens`` from its rate limits
        (keyed by a fingerprint of ``api_key()``, read only when there are limits).

        Raises:
            Postpone: the breaker is open, or the bucket is empty.
        """
        guard = ticket = None
        if breaker is not None:
            guard = BreakerGuard(shared, f"llm.breaker:{provider_key}", breaker,
                                 clock=clock, label=provider_key)
            ticket = await guard.before()
        gate = cls(guard, ticket)
        if rate is not None:
            try:
                await rate.acquire(
                    shared, f"llm.rate:{provider_key}:{key_fingerprint(api_key())}",
                    tokens=tokens, now=clock(), label=provider_key)
            except BaseException:
                # A probe that cannot go yet: it is not the probe (others would wait
                # ``probe_timeout`` for a request that is not sent).
                await gate.abandoned()
                raise
        return gate

    async def answered(self) -> None:
        """The provider answered (a reply, a fatal error, or a request cut by its own
        caller): it is up."""
        if self._guard is not None and self._ticket is not None:
            await self._settle(self._guard.success(self._ticket))

    async def abandoned(self) -> None:
        """The attempt ends without an answer or a failure to report (postponed before
        its request, cancelled, or an error of its own): a probe is handed back."""
        if self._guard is not None and self._ticket is not None and self._ticket.probe:
            await self._settle(self._guard.release(self._ticket))

    async def failed(self, status: int | None) -> None:
        """A retryable failure, with its HTTP ``status``: it counts against the
        provider, but a 429 (rate-limited is alive) only closes a probe's breaker."""
        guard, ticket = self._guard, self._ticket
        if guard is None or ticket is None:
            return
        if status != 429:
            await self._settle(guard.failure(ticket))
        elif ticket.probe:
            await self._settle(guard.success(ticket))

    @staticmethod
    async def _settle(bookkeeping: Awaitable[None]) -> None:
        try:
            await bookkeeping
        except Exception as exc:  # logged; the call's own outcome stands
            log.warning("circuit breaker bookkeeping failed: %s", exc)
