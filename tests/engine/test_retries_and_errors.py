"""Retries are persisted policy; step failures are journaled and catchable on replay."""

from __future__ import annotations

from collections import Counter

import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App, RetryPolicy
from tether.testing import VirtualClock

FAST = dict(initial_interval=0.01, backoff=1.0, max_interval=0.01)


async def test_step_that_fails_n_times_then_succeeds_records_attempts(store_url: str) -> None:
    """Three failures, then success: one journal entry with four attempts."""
    app = App(store_url)

    @app.step(retry=RetryPolicy(**FAST, max_attempts=None))
    async def flaky() -> str:
        if tether.step_attempt() <= 3:
            raise ConnectionError("provider down")
        return "ok"

    @app.workflow
    async def wf() -> str:
        return await flaky()

    async with app.worker():
        assert await (await app.start(wf, run_id="f")).result(timeout=10) == "ok"
    (entry,) = (await app.get_run("f")).journal
    assert (entry["status"], entry["attempts"], entry["result"]) == ("ok", 4, "ok")
    await app.close()


async def test_unbounded_retries_keep_going(store_url: str) -> None:
    """max_attempts=None keeps retrying well past any default limit."""
    app = App(store_url)

    @app.step(retry=RetryPolicy(initial_interval=0.001, backoff=1.0, max_interval=0.001,
                                max_attempts=None))
    async def stubborn() -> int:
        if tether.step_attempt() < 25:
            raise TimeoutError("again")
        return tether.step_attempt()

    @app.workflow
    async def wf() -> int:
        return await stubborn()

    async with app.worker():
        assert await (await app.start(wf)).result(timeout=30) == 25
    await app.close()


async def test_non_retryable_error_fails_the_run_at_once(store_url: str) -> None:
    """An error listed in non_retryable is recorded after one attempt and fails the run."""
    app = App(store_url)
    calls = Counter[str]()

    @app.step(retry=RetryPolicy(**FAST, max_attempts=None, non_retryable=(ValueError,)))
    async def validate(x: int) -> int:
        calls["n"] += 1
        raise ValueError(f"bad input {x}")

    @app.workflow
    async def wf() -> int:
        return await validate(7)

    async with app.worker():
        with pytest.raises(tether.RunFailed) as exc_info:
            await (await app.start(wf, run_id="nr")).result(timeout=10)
    assert calls["n"] == 1
    assert exc_info.value.status == "failed"
    info = await app.get_run("nr")
    assert info.status == tether.RunStatus.FAILED
    assert info.error is not None and "bad input 7" in info.error["message"]
    (entry,) = info.journal
    assert entry["status"] == "error" and entry["attempts"] == 1
    assert entry["error"]["type"] == "ValueError"
    await app.close()


async def test_exhausted_attempts_fail_the_step(store_url: str) -> None:
    app = App(store_url)

    @app.step(retry=RetryPolicy(**FAST, max_attempts=3))
    async def never() -> None:
        raise RuntimeError("nope")

    @app.workflow
    async def wf() -> None:
        await never()

    async with app.worker():
        with pytest.raises(tether.RunFailed):
            await (await app.start(wf, run_id="ex")).result(timeout=10)
    (entry,) = (await app.get_run("ex")).journal
    assert (entry["status"], entry["attempts"]) == ("error", 3)
    await app.close()


async def test_step_error_is_catchable_live_and_on_replay(store_url: str) -> None:
    """A recorded step failure is re-raised on replay as the same catchable exception."""
    app = App(store_url)
    seen: list[tuple[str, str, bool]] = []

    class QuotaExceeded(Exception):
        pass

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def charge() -> None:
        raise KeyError("card 42")

    @app.workflow
    async def wf() -> str:
        try:
            await charge()
        except KeyError as exc:  # the original class, live and on replay
            seen.append((type(exc).__name__, str(exc), isinstance(exc, tether.StepError)))
        await tether.wait_for_signal("go")
        return "handled"

    async with app.worker():
        h = await app.start(wf, run_id="se")
        await wait_for(lambda: status_is(app, "se", "waiting"))
        await app.signal("se", "go")
        assert await h.result(timeout=10) == "handled"
    assert len(seen) == 2 and seen[0] == seen[1]
    assert seen[0][2] is True and "card 42" in seen[0][1]
    (entry, *_rest) = (await app.get_run("se")).journal
    assert entry["error"]["type"] == "KeyError"
    await app.close()


async def test_retry_schedule_survives_a_worker_stop(store_url: str) -> None:
    """Attempt count and next-attempt time are persisted: a new worker continues them.
    Virtual time: the 3 s backoffs pass when the test moves the clock."""
    clock = VirtualClock(1000.0)
    app = App(store_url, clock=clock)
    attempts: list[tuple[int, float]] = []

    @app.step(retry=RetryPolicy(initial_interval=3.0, backoff=1.0, max_interval=3.0,
                                max_attempts=None))
    async def down() -> int:
        attempts.append((tether.step_attempt(), clock.now()))
        if tether.step_attempt() < 3:
            raise ConnectionError("503")
        return tether.step_attempt()

    @app.workflow
    async def wf() -> int:
        return await down()

    async with app.worker(sticky_wait=0.5):
        h = await app.start(wf, run_id="rs")
        await wait_for(lambda: status_is(app, "rs", "waiting"))  # released for the backoff
    (entry,) = (await app.get_run("rs")).journal
    assert entry["status"] == "pending" and entry["attempts"] == 1
    assert entry["next_attempt_at"] == 1003.0
    async with app.worker(sticky_wait=0.5) as worker:  # a new worker: same schedule
        clock.advance(3.0)
        worker.notify()
        await wait_for(lambda: _attempts_recorded(app, "rs", 2))
        clock.advance(3.0)
        worker.notify()
        assert await h.result(timeout=20) == 3
    assert attempts == [(1, 1000.0), (2, 1003.0), (3, 1006.0)]
    await app.close()


async def _attempts_recorded(app: App, run_id: str, n: int) -> bool:
    (entry,) = (await app.get_run(run_id)).journal
    return bool(entry["attempts"] >= n and entry["status"] == "pending")


class ProviderDown(Exception):
    def __init__(self, status: int, body: dict[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self._private = object()


async def test_error_attributes_survive_replay(store_url: str) -> None:
    """A step error's JSON-able public attributes reach the workflow live and on replay,
    and a re-raised step error is recorded under its original type."""
    app = App(store_url)

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def call() -> None:
        raise ProviderDown(401, {"error": "bad key"})

    @app.workflow
    async def wf() -> list[object]:
        try:
            await call()
        except ProviderDown as exc:
            seen = [exc.status, exc.body]
        await tether.wait_for_signal("again")
        await call()  # fails the run with the same error
        return seen

    async with app.worker(sticky_wait=0.01, poll_interval=0.1):
        handle = await app.start(wf, run_id="e")
        await wait_for(lambda: status_is(app, "e", "waiting"), timeout=10)
        await app.signal("e", "again")  # replay: the first error comes from the journal
        with pytest.raises(tether.RunFailed):
            await handle.result(timeout=10)
    info = await app.get_run("e")
    assert info.error is not None
    assert info.error["type"].endswith("ProviderDown")
    assert info.error["attrs"] == {"status": 401, "body": {"error": "bad key"}}
    first = info.journal[0]["error"]
    assert first["attrs"] == {"status": 401, "body": {"error": "bad key"}}
    await app.close()


class _NotANumber(Exception):
    """An error with an attribute JSON cannot hold (NaN) and an infinite retry_after."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.score = float("nan")
        self.retry_after = float("inf")


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


async def test_errors_json_cannot_hold_are_still_recorded_under_the_retry_policy(
        store_url: str) -> None:
    """A step error with a lone surrogate in its message (a file name decoded with
    surrogateescape), a NaN attribute, an infinite retry_after or a __str__ that raises
    is a failed attempt like any other: retried under the policy and journaled. Before,
    recording it raised (UnicodeEncodeError, ValueError, RuntimeError) out of the step,
    past its retry policy, with nothing journaled; raised by the workflow itself, the
    run's end could not be written, and the run was replayed five times as a worker crash
    before it failed with that crash instead of its error."""
    app = App(store_url)
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
    errors = {"surrogate": lambda: FileNotFoundError(f"no such file: {name}"),
              "nan": lambda: _NotANumber("scored"), "unprintable": _Unprintable}
    calls: Counter[str] = Counter()

    @app.step(retry=RetryPolicy(**FAST, max_attempts=3))
    async def failing(kind: str) -> None:
        calls[kind] += 1
        raise errors[kind]()

    @app.workflow
    async def wf(kind: str) -> int:
        try:
            await failing(kind)
        except tether.StepError as exc:
            return exc.attempts
        return 0

    @app.workflow
    async def raises(kind: str) -> None:
        raise errors[kind]()

    async with app.worker():
        for kind in errors:
            assert await (await app.start(wf, kind, run_id=f"s-{kind}")).result(
                timeout=10) == 3, kind
            (entry,) = (await app.get_run(f"s-{kind}")).journal
            assert (entry["status"], entry["attempts"]) == ("error", 3), kind
            with pytest.raises(tether.RunFailed) as failed:
                await (await app.start(raises, kind, run_id=f"w-{kind}")).result(timeout=5)
            assert failed.value.error is not None
            assert "crashed" not in failed.value.error["message"], kind
    assert calls == {kind: 3 for kind in errors}
    info = await app.get_run("w-surrogate")
    assert info.error is not None and info.error["message"] == "no such file: caf\\udce9.txt"
    nan_error = (await app.get_run("w-nan")).error
    assert nan_error is not None and "attrs" not in nan_error  # (neither is JSON)
    await app.close()


class _ReadOnlyMessage(Exception):
    """As ``mcp.MCPError``: its ``message`` is a read-only property."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self._message = message

    @property
    def message(self) -> str:
        return self._message


async def test_an_error_whose_message_is_a_read_only_property_reaches_the_workflow(
        store_url: str) -> None:
    """A step that failed for good with an error class whose ``message`` is a read-only
    property (``mcp.MCPError``, from any ``tether.ai.mcp`` step: a server's -32602)
    could not be rebuilt for the workflow (setting StepError's ``message`` raised
    AttributeError: "property 'message' of 'StepError[MCPError]' object has no setter"),
    so the run failed with that instead of the step's error, which no ``except`` could
    catch. It is raised as the recorded class, live and on replay, with its message."""
    app = App(store_url)
    seen: list[tuple[str, str, bool]] = []

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def ask() -> None:
        raise _ReadOnlyMessage("answer not taken")

    @app.workflow
    async def wf() -> str:
        try:
            await ask()
        except _ReadOnlyMessage as exc:
            seen.append((exc.message, str(exc), isinstance(exc, tether.StepError)))
        await tether.wait_for_signal("go")
        return "handled"

    async with app.worker(sticky_wait=0.01, poll_interval=0.1):
        handle = await app.start(wf, run_id="ro")
        await wait_for(lambda: status_is(app, "ro", "waiting"), timeout=10)
        await app.signal("ro", "go")  # replay: the error comes from the journal
        assert await handle.result(timeout=10) == "handled"
    assert seen == [("answer not taken", f"{__name__}._ReadOnlyMessage: answer not taken",
                     True)] * 2
    await app.close()


async def test_a_failed_attempts_log_line_carries_its_attempt_as_a_field(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The warning for each failed attempt has ``run_id``, ``position`` and ``attempt``
    fields (JSON keys; ``attempt=K`` in a text line's tags), as lines logged inside a
    step have: until 2026-12-07 ``attempt`` was only in the message, and a log pipeline
    that grouped a step's lines by attempt lost these."""
    import logging

    caplog.set_level(logging.WARNING, "tether.observe")
    app = App(store_url)

    @app.step(retry=RetryPolicy(initial_interval=0.01, max_attempts=3))
    async def boom() -> str:
        raise RuntimeError("upstream 503")

    @app.workflow
    async def wf() -> str:
        return await boom()

    async with app, app.worker():
        h = await app.start(wf, run_id="att-1")
        with pytest.raises(tether.RunFailed):
            await h.result(timeout=30)
    lines = [r for r in caplog.records if r.name == "tether.observe"]
    assert [(getattr(r, "run_id", None), getattr(r, "position", None),
             getattr(r, "attempt", None)) for r in lines] == [
        ("att-1", 0, 1), ("att-1", 0, 2), ("att-1", 0, 3)], [r.getMessage() for r in lines]
