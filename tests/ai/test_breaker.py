"""The shared circuit breaker and RPM/TPM limits, against a real store (both backends):
the state machine's transitions, one probe winner among concurrent callers, a vanished
probe taken over, and limits that postpone instead of failing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from tests.engine.helpers import status_is, wait_for
from tether import App, Postpone, RetryPolicy
from tether.ai import LLM, CircuitBreaker, user_message
from tether.ai._breaker import (
    BreakerGuard,
    ProviderGate,
    RateLimits,
    Ticket,
    key_fingerprint,
)
from tether.errors import ConfigError
from tether.ext import shared_state
from tether.store import Store, open_store
from tether.testing import Reply, ScriptedLLMServer
from tether.testing.llm_server import Fault


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    yield s
    await s.close()


CFG = CircuitBreaker(failures=3, cooldown=10.0, backoff=2.0, max_cooldown=25.0,
                     probe_timeout=30.0, probe_wait=1.0)


def guard(store: Store, clock: Clock, key: str = "llm.breaker:test") -> BreakerGuard:
    return BreakerGuard(store, key, CFG, clock=clock, label="test")


async def state(store: Store, key: str = "llm.breaker:test") -> dict[str, object]:
    row = await store.kv_get(key=key)
    assert row is not None
    return json.loads(row[0])  # type: ignore[no-any-return]


async def test_failures_open_it_and_a_success_resets_the_count(store: Store) -> None:
    """Two failures, a success, two failures: still closed (the count is consecutive);
    the third in a row opens it, and callers are postponed for the cool-down."""
    clock = Clock()
    g = guard(store, clock)
    for _ in range(2):
        await g.failure(await g.before())
    ticket = await g.before()
    assert ticket == Ticket(probe=False, failures=2)
    await g.success(ticket)
    assert (await state(store))["failures"] == 0
    for _ in range(2):
        await g.failure(await g.before())
    assert (await state(store))["state"] == "closed"
    await g.failure(await g.before())
    assert (await state(store))["state"] == "open"
    clock.t += 4
    with pytest.raises(Postpone, match="circuit open for test") as info:
        await g.before()
    assert 6.0 <= info.value.delay <= 7.5  # the rest of the cool-down, plus jitter


async def test_one_probe_at_a_time_then_close_or_reopen_longer(store: Store) -> None:
    """After the cool-down, of ten concurrent callers exactly one probes; the others are
    postponed briefly. A failed probe re-opens with the cool-down doubled (capped); a
    successful one closes the breaker."""
    clock = Clock()
    g = guard(store, clock)
    for _ in range(3):
        await g.failure(await g.before())
    clock.t += 10.5

    async def attempt() -> Ticket | float:
        try:
            return await guard(store, clock).before()
        except Postpone as exc:
            return exc.delay

    outcomes = await asyncio.gather(*(attempt() for _ in range(10)))
    probes = [o for o in outcomes if isinstance(o, Ticket)]
    assert len(probes) == 1 and probes[0].probe
    assert all(isinstance(o, float) and o <= 1.5 for o in outcomes if o not in probes)

    await g.failure(probes[0])
    opened = await state(store)
    assert opened["state"] == "open" and opened["cooldown"] == 20.0
    clock.t += 20.5
    probe = await g.before()
    await g.failure(probe)
    assert (await state(store))["cooldown"] == 25.0  # capped at max_cooldown
    clock.t += 25.5
    probe = await g.before()
    assert probe.probe
    await g.success(probe)
    assert await state(store) == {"state": "closed", "failures": 0}
    assert await g.before() == Ticket(probe=False, failures=0)


async def test_a_vanished_probe_is_taken_over(store: Store) -> None:
    """A probe that never reports (its worker died) blocks others only until
    ``probe_timeout``; then another caller probes."""
    clock = Clock()
    g = guard(store, clock)
    for _ in range(3):
        await g.failure(await g.before())
    clock.t += 11
    assert (await g.before()).probe  # ... and this caller dies
    clock.t += 29
    with pytest.raises(Postpone, match="a probe is in flight"):
        await g.before()
    clock.t += 2
    assert (await g.before()).probe


async def test_breakers_are_per_provider_key(store: Store) -> None:
    clock = Clock()
    a, b = guard(store, clock, "llm.breaker:a"), guard(store, clock, "llm.breaker:b")
    for _ in range(3):
        await a.failure(await a.before())
    with pytest.raises(Postpone):
        await a.before()
    assert await b.before() == Ticket()


async def test_rate_limits_postpone_when_not_granted(store: Store) -> None:
    """RPM 2: two calls pass, the third is postponed for about half a minute. TPM 1000:
    a 600-token call passes, a second one waits for the bucket to refill."""
    now = 5_000.0
    rpm = RateLimits(rpm=2)
    for _ in range(2):
        await rpm.acquire(store, "k1", tokens=10, now=now, label="p")
    with pytest.raises(Postpone, match=r"requests-per-minute limit of p \(2/min\)") as info:
        await rpm.acquire(store, "k1", tokens=10, now=now, label="p")
    assert 29 <= info.value.delay <= 37
    await rpm.acquire(store, "k1", tokens=10, now=now + 31, label="p")

    tpm = RateLimits(tpm=1000)
    await tpm.acquire(store, "k2", tokens=600, now=now, label="p")
    with pytest.raises(Postpone, match="tokens-per-minute") as info:
        await tpm.acquire(store, "k2", tokens=600, now=now, label="p")
    assert 11 <= info.value.delay <= 17  # 200 tokens missing at 1000/60 per second
    # A call larger than the whole budget takes all of it rather than never passing.
    await tpm.acquire(store, "k3", tokens=5000, now=now, label="p")


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="failures= must be >= 1"):
        CircuitBreaker(failures=0)
    with pytest.raises(ConfigError, match="durations must be > 0"):
        CircuitBreaker(cooldown=0)
    with pytest.raises(ConfigError, match="tpm= must be > 0"):
        LLM("openai:gpt-4.1-mini", tpm=-5)
    assert user_message("x")["role"] == "user"


async def test_an_llm_over_its_rpm_is_postponed_not_failed(sqlite_url: str) -> None:
    """RPM 60 (a full bucket of 60, one more a second): 63 calls in a row; the calls
    past the bucket are postponed (the run released meanwhile), none fails, and each
    journal entry records one attempt."""
    async with ScriptedLLMServer(responder=lambda req: Reply("ok")) as server:
        app = App(sqlite_url)
        llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, rpm=60)

        @app.workflow
        async def wf() -> int:
            for i in range(63):
                await llm.chat([user_message(f"q{i}")])
            return 63

        seen: set[str] = set()

        async def postponed() -> bool:
            info = await app.get_run("rpm")
            if (info.waiting_for or "").startswith("postponed llm"):
                seen.add(info.waiting_for or "")
            return bool(seen)

        async with app.worker(sticky_wait=0.1, poll_interval=0.05):
            handle = await app.start(wf, run_id="rpm")
            await wait_for(postponed, timeout=30)
            assert await handle.result(timeout=60) == 63
        info = await app.get_run("rpm")
        assert len(server.requests) == 63
        assert all(e["status"] == "ok" and e["attempts"] == 1 for e in info.journal)
        assert any("requests-per-minute limit" in s for s in seen)
        await llm.aclose()
        await app.close()


class _CountingReads:
    """A store whose ``kv_get`` calls are counted (a run's view of the shared state
    keeps its store as ``_store``, as this does)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.reads = 0

    async def kv_get(self, *, key: str) -> tuple[str, int] | None:
        self.reads += 1
        return await self._store.kv_get(key=key)

    async def kv_cas(self, *, key: str, value: str, version: int | None, now: float) -> bool:
        return await self._store.kv_cas(key=key, value=value, version=version, now=now)


async def test_a_closed_breaker_is_not_read_again_for_a_while(
        store: Store, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read closed with no failures, the breaker is taken as closed for ``CLOSED_FOR``
    seconds by every guard on the same store (a call then costs no store read); one
    that another process opened meanwhile stops this one's calls once that has passed;
    a failure seen here drops what was remembered at once."""
    from tether.ai import _breaker

    monkeypatch.setattr(_breaker, "CLOSED_FOR", 0.3)
    clock = Clock()
    view = _CountingReads(store)

    def fresh() -> BreakerGuard:  # a guard per call, as LLM makes them
        return BreakerGuard(view, "llm.breaker:memo", CFG, clock=clock,  # type: ignore[arg-type]
                            label="test")

    assert await fresh().before() == Ticket()
    assert view.reads == 1
    for _ in range(5):
        assert await fresh().before() == Ticket()
    assert view.reads == 1

    # Another process opens it (its own guard, not this store object's memory).
    other = open_store(store_url)
    await other.open()
    try:
        theirs = BreakerGuard(other, "llm.breaker:memo", CFG, clock=clock, label="test")
        for _ in range(3):
            await theirs.failure(await theirs.before())
    finally:
        await other.close()
    assert await fresh().before() == Ticket()  # still remembered closed here
    await asyncio.sleep(0.35)
    with pytest.raises(Postpone, match="circuit open"):
        await fresh().before()

    # A failure seen here: the next call reads the state (and counts on it).
    clock.t += 11
    probe = await fresh().before()
    assert probe.probe
    await fresh().success(probe)
    assert await fresh().before() == Ticket()
    reads = view.reads
    await fresh().failure(Ticket())
    assert await fresh().before() == Ticket(probe=False, failures=1)
    assert view.reads > reads + 1


class _SlowReads(_CountingReads):
    """Reads that take a while (a store under load), and can be made to fail."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.fail = False

    async def kv_get(self, *, key: str) -> tuple[str, int] | None:
        self.reads += 1
        await asyncio.sleep(0.05)
        if self.fail:
            raise OSError("store went away")
        return await self._store.kv_get(key=key)


async def test_calls_that_find_nothing_remembered_share_one_read(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fifty calls at once with the remembered state expired read the breaker once;
    a read that fails fails each of them, and the next calls read again; an open
    breaker read once postpones all of them."""
    from tether.ai import _breaker

    monkeypatch.setattr(_breaker, "CLOSED_FOR", 0.0)  # nothing stays remembered
    clock = Clock()
    view = _SlowReads(store)

    def fresh() -> BreakerGuard:
        return BreakerGuard(view, "llm.breaker:herd", CFG, clock=clock,  # type: ignore[arg-type]
                            label="test")

    tickets = await asyncio.gather(*(fresh().before() for _ in range(50)))
    assert tickets == [Ticket()] * 50 and view.reads == 1

    view.fail = True
    outcomes = await asyncio.gather(*(fresh().before() for _ in range(10)),
                                    return_exceptions=True)
    assert all(isinstance(o, OSError) for o in outcomes) and view.reads == 2
    view.fail = False
    assert await asyncio.gather(*(fresh().before() for _ in range(10))) == [Ticket()] * 10
    assert view.reads == 3

    for _ in range(3):  # opened (by failures seen here)
        await fresh().failure(Ticket())
    reads = view.reads
    outcomes = await asyncio.gather(*(fresh().before() for _ in range(20)),
                                    return_exceptions=True)
    assert all(isinstance(o, Postpone) for o in outcomes) and view.reads == reads + 1


async def test_a_probe_its_rate_limit_postpones_hands_the_probe_back(store: Store) -> None:
    """The breaker's cool-down is over and the caller that wins the probe finds its TPM
    bucket short: it is postponed before any request, and hands the probe back (the
    breaker open, its cool-down over), so the next caller, once the bucket has refilled
    (20 s later), probes. Before, the breaker stayed half-open for ``probe_timeout``
    (30 s) with no request in flight: every call of every run was postponed meanwhile."""
    clock = Clock()
    g = guard(store, clock, "llm.breaker:p")
    for _ in range(3):
        await g.failure(await g.before())
    rate = RateLimits(tpm=1000)
    key = f"llm.rate:p:{key_fingerprint('key')}:tpm"
    await store.rate_acquire(key=key, limit=1000, period=60, amount=1000, now=clock.t)

    async def enter() -> ProviderGate:
        return await ProviderGate.enter(store, "p", breaker=CFG, rate=rate,
                                        api_key=lambda: "key", tokens=500, clock=clock)

    clock.t += 11  # the cool-down is over; ~183 tokens refilled
    with pytest.raises(Postpone, match="tokens-per-minute"):
        await enter()
    after = await state(store, "llm.breaker:p")
    assert after["state"] == "open" and after["until"] == clock.t
    assert after["failures"] == 3 and after["cooldown"] == 10.0
    clock.t += 20  # ~516 tokens: enough; the probe_timeout (30 s) has not passed
    gate = await enter()
    assert gate._ticket is not None and gate._ticket.probe
    await gate.answered()
    assert (await state(store, "llm.breaker:p"))["state"] == "closed"


async def test_a_cancelled_probe_hands_the_probe_back(sqlite_url: str) -> None:
    """A run's call is the breaker's probe when the run is cancelled, its request
    unanswered: the probe is handed back (the breaker open, its cool-down over), not
    left half-open for ``probe_timeout`` (60 s) with no request in flight."""
    async with ScriptedLLMServer([Fault.http(500), Fault.hang()]) as server:
        app = App(sqlite_url)
        llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="k",
                  breaker=CircuitBreaker(failures=1, cooldown=0.2),
                  retry=RetryPolicy(initial_interval=0.05, max_attempts=None))

        @app.workflow
        async def wf() -> str:
            return (await llm.chat([user_message("q")])).text or ""

        async with app, app.worker(sticky_wait=0.1, poll_interval=0.05):
            await app.start(wf, run_id="probe")
            await wait_for(lambda: len(server.requests) == 2, timeout=30,
                           what="the probe's request")
            await app.cancel("probe")
            await wait_for(lambda: status_is(app, "probe", "cancelled"), timeout=30)
            row = await (await shared_state(app)).kv_get(key=f"llm.breaker:{llm.provider_key}")
        await llm.aclose()
    assert row is not None
    breaker = json.loads(row[0])
    assert breaker["state"] == "open" and breaker["failures"] == 1, breaker
