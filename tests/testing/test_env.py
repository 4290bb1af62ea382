"""``TestEnv``: days of durable waiting (timers, signal timeouts, retry backoffs) pass
in virtual time; every wait is a real release and replay on a real SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

import tether
from tether import App, InvalidName, RetryPolicy, RunFailed, RunNotFound, SignalTimeout
from tether._types import RunRecord
from tether.ai import LLM, Agent
from tether.errors import ConfigError
from tether.testing import Fault, Outage, Reply, RunSpinning, RunStuck, ScriptedLLMServer, TestEnv

DAY = 86400.0


def make_app() -> tuple[App, dict[str, Any]]:
    app = App("sqlite:///never-opened.db")
    seen: dict[str, Any] = {"attempts": [], "calls": 0}

    @app.step(retry=RetryPolicy(initial_interval=3600, backoff=2, max_interval=6 * 3600,
                                max_attempts=4))
    async def flaky() -> str:
        seen["attempts"].append(seen["env"].now())  # the environment's virtual time
        if len(seen["attempts"]) < 3:
            raise ConnectionError("the partner API is down")
        return "ok"

    @app.step
    def count() -> int:
        seen["calls"] += 1
        return int(seen["calls"])

    @app.workflow
    async def slow(name: str) -> dict[str, Any]:
        t0 = tether.now().timestamp()
        await count()
        await tether.sleep(3 * DAY)
        t1 = tether.now().timestamp()
        try:
            answer = await tether.wait_for_signal("answer", timeout=DAY)
        except SignalTimeout:
            answer = "timed out"
        t2 = tether.now().timestamp()
        status = await flaky()
        t3 = tether.now().timestamp()
        return {"name": name, "slept": t1 - t0, "waited": t2 - t1, "answer": answer,
                "status": status, "retried": t3 - t2}

    @app.workflow
    async def approval() -> Any:
        return await tether.wait_for_signal("answer", timeout=DAY)

    @app.workflow
    async def ticker(n: int) -> list[float]:
        stamps = []
        for _ in range(n):
            await tether.sleep(3600)
            stamps.append(tether.now().timestamp())
        return stamps

    @app.workflow
    async def parent() -> list[Any]:
        first = await tether.call(ticker, 2)
        second = await tether.call(ticker, 1)
        return [first, second]

    seen["workflows"] = {"slow": slow, "approval": approval, "ticker": ticker,
                         "parent": parent}
    return app, seen


async def test_three_days_a_day_long_timeout_and_hours_of_backoff_take_no_real_time() -> None:
    app, seen = make_app()
    async with TestEnv(app, start_time=1_000_000.0) as env:
        seen["env"] = env
        result = await env.run(seen["workflows"]["slow"], "ada")
        end = env.now()
        info = await env.app.get_run((await env.app.list_runs())[0].run_id)
    assert result["slept"] == 3 * DAY
    assert result["waited"] == DAY and result["answer"] == "timed out"
    # Two failures: backoffs of 1 h then 2 h before the third attempt succeeded.
    attempts = seen["attempts"]
    assert [b - a for a, b in itertools.pairwise(attempts)] == [3600, 7200]
    assert result["retried"] == 3 * 3600 and result["status"] == "ok"
    assert end == 1_000_000.0 + 4 * DAY + 3 * 3600
    assert seen["calls"] == 1  # replayed after every release, executed once
    assert [e["kind"] for e in info.journal] == ["now", "step", "sleep", "now", "signal",
                                                 "now", "step", "now"]


async def test_time_stands_still_between_waits_so_a_signal_beats_its_timeout() -> None:
    app, seen = make_app()
    async with TestEnv(app) as env:
        handle = await env.start(seen["workflows"]["approval"])
        await env.settle()
        assert (await env.app.get_run(handle.run_id)).status == "waiting"
        t0 = env.now()
        await env.app.signal(handle.run_id, "answer", {"approved": True})
        assert await handle.result() == {"approved": True}
        assert env.now() == t0


async def test_advance_moves_time_by_hand_and_runs_what_became_due() -> None:
    app, seen = make_app()
    async with TestEnv(app, start_time=0.0) as env:
        handle = await env.app.start(seen["workflows"]["ticker"], 3)
        await env.advance(3600)
        info = await env.app.get_run(handle.run_id)
        assert info.status == "waiting"
        assert [e["status"] for e in info.journal if e["kind"] == "sleep"] == ["ok", "pending"]
        await env.advance(1800)  # not yet due
        assert [e["status"] for e in (await env.app.get_run(handle.run_id)).journal
                if e["kind"] == "sleep"] == ["ok", "pending"]
        assert await env.result(handle) == [3600.0, 7200.0, 10800.0]


async def test_advance_stops_at_each_wake_up_on_the_way() -> None:
    """``advance(3 h)`` over a run that sleeps an hour three times wakes it three
    times, each at its hour, as the same hours of real time would; and a schedule's
    ticks on the way each start, at their time. The clock jumped to the end at once:
    the run woke once, at the third hour (its ``tether.now()`` said 10800), and the
    ticks were missed (catch-up started one, late, and logged them as missed)."""
    app, seen = make_app()
    ticks: list[float] = []

    @app.schedule("0 9 * * *")
    @app.workflow
    async def report() -> str:
        ticks.append(tether.now().timestamp())
        return "sent"

    async with TestEnv(app, start_time=0.0) as env:
        handle = await env.app.start(seen["workflows"]["ticker"], 3)
        await env.advance(3 * 3600)
        info = await env.app.get_run(handle.run_id)
        assert info.status == "completed"
        for kind in ("sleep", "now"):  # (each woke at its hour, and read it)
            assert [e["result"] for e in info.journal if e["kind"] == kind] == [
                3600.0, 7200.0, 10800.0]
        assert env.now() == 3 * 3600
        await env.advance(3 * DAY)
        assert env.now() == 3 * 3600 + 3 * DAY
        assert ticks == [9 * 3600 + d * DAY for d in range(3)]


async def test_awaiting_an_ended_runs_result_leaves_the_clock_alone() -> None:
    """Awaiting the result of a run that has ended (again, or one that ended while the
    test did something else) reads it without moving the clock: it jumped to the next
    wake-up of any other run, so a run sleeping 1000 hours beside it completed, and
    ``env.now()`` after a result depended on the race."""
    app, seen = make_app()
    ticker = seen["workflows"]["ticker"]
    async with TestEnv(app, start_time=0.0) as env:
        short = await env.start(ticker, 1)
        long = await env.start(ticker, 1000)
        assert await short.result() == [3600.0]
        assert env.now() == 3600.0
        for _ in range(10):
            assert await short.result() == [3600.0]
            assert await env.result(short.run_id) == [3600.0]
            assert await env.app.handle(short.run_id).result() == [3600.0]
        assert env.now() == 3600.0
        assert (await env.app.get_run(long.run_id)).status == "waiting"


async def test_children_and_their_timers_skip_too() -> None:
    app, seen = make_app()
    async with TestEnv(app, start_time=0.0) as env:
        assert await env.run(seen["workflows"]["parent"]) == [[3600.0, 7200.0], [10800.0]]


async def test_auto_skip_skips_without_waiting_through_the_env() -> None:
    app, seen = make_app()
    async with TestEnv(app, start_time=0.0, auto_skip=True) as env:
        handle = await env.app.start(seen["workflows"]["approval"])
        with pytest.raises(RunFailed) as err:
            await handle.result(timeout=30)
        assert "SignalTimeout" in str(err.value.error)
        assert env.now() == DAY


async def test_a_failed_runs_error_says_where_the_users_code_raised() -> None:
    # A test awaiting the result read only "ended failed: KeyError: 'b'"; the file and
    # line were in the worker's log line and `tether show` alone. A note carries them
    # (pytest prints it under the error's line); the message is what it was.
    app = App()

    @app.step(retry=RetryPolicy(max_attempts=1))
    def pick(d: dict[str, int]) -> int:
        return d["b"]

    @app.workflow
    async def own(d: dict[str, int]) -> int:
        return d["b"]

    @app.workflow
    async def through_a_step(d: dict[str, int]) -> int:
        return await pick(d)

    async with TestEnv(app) as env:
        for wf, where in ((own, 'in own: return d["b"]'), (through_a_step,
                                                             'in pick: return d["b"]')):
            with pytest.raises(RunFailed) as err:
                await env.run(wf, {"a": 1})
            assert str(err.value).endswith("ended failed: KeyError: 'b'")
            [note] = err.value.__notes__
            assert note.startswith(f"at {__file__}, line ") and note.endswith(where), note


async def test_llm_calls_are_answered_by_the_scripted_server() -> None:
    app = App()
    built_before = LLM("anthropic:claude-haiku-4-5", api_key="k")  # module level, say
    built_inside: list[LLM] = []

    @app.workflow
    async def ask(question: str) -> list[str]:
        first = await built_before.chat([{"role": "user", "content": question}])
        second = await built_inside[0].chat([{"role": "user", "content": "Sure?"}])
        await tether.sleep(DAY)  # released, then replayed: replies come from the journal
        return [first.text or "", second.text or ""]

    url = built_before.base_url
    async with TestEnv(app, llm=[Reply("Paris."), Reply("Yes.")], llms=[built_before]) as env:
        # Built inside the environment, without base_url: the environment's server.
        async with LLM("openai:gpt-4.1-mini") as llm:
            built_inside.append(llm)
            assert await env.run(ask, "Capital of France?") == ["Paris.", "Yes."]
        assert [(r.protocol, r.last_user_text()) for r in env.llm.requests] == [
            ("anthropic", "Capital of France?"), ("openai", "Sure?")]
    assert built_before.base_url == url


async def test_the_apps_own_definitions_run_and_the_app_itself_is_untouched(
        tmp_path: Any) -> None:
    app, seen = make_app()
    clock = app.clock
    async with TestEnv(app) as env:
        assert env.app is not app and env.app.url == env.store_url
        assert env.app.clock is env.clock
        assert set(env.app.workflows()) == set(app.workflows())
        assert await env.run(seen["workflows"]["ticker"], 1)
    assert env.app.closed and not app.closed
    assert app.url == "sqlite:///never-opened.db" and app.clock is clock
    assert not os.path.exists(env.store_url[len("sqlite:///"):])
    async with TestEnv(app) as again:  # a second environment from the same app
        assert await again.run(seen["workflows"]["ticker"], 1)


async def test_an_app_in_use_elsewhere_can_be_tested_too(tmp_path: Any) -> None:
    app = App(f"sqlite:///{tmp_path}/real.db")

    @app.workflow
    async def nap() -> str:
        await tether.sleep(DAY)
        return "rested"

    async with app:  # open on its own store
        async with TestEnv(app) as env:
            assert await env.run(nap) == "rested"
        assert await app.list_runs() == []  # the environment's runs stayed in its store


async def test_runs_outside_the_environments_life_are_refused(tmp_path: Any) -> None:
    """``env.start`` before ``open`` (or after ``close``) is a RuntimeError naming the
    fix. Before the check, a start before open went to the app under test's own store
    (``./tether.db`` for ``App()``), with no worker and no virtual clock."""
    app = App(f"sqlite:///{tmp_path}/real.db")

    @app.workflow
    async def nap() -> str:
        return "rested"

    env = TestEnv(app)
    for attempt in (lambda: env.start(nap), lambda: env.run(nap),
                    lambda: env.result("some-run"), lambda: env.settle()):
        with pytest.raises(RuntimeError, match="the environment is not open"):
            await attempt()
    assert not (tmp_path / "real.db").exists()
    async with env:
        assert await env.run(nap) == "rested"
    with pytest.raises(RuntimeError, match="the environment is not open"):
        await env.start(nap)
    await app.close()


def test_an_environment_used_from_another_event_loop_says_so(tmp_path: Any) -> None:
    """An environment opened in one event loop and used in another (a module-scoped
    fixture under function-scoped tests, with pytest-asyncio) is refused with a
    RuntimeError naming the cause. Its worker and store connections run in the loop
    that opened it, which does not run meanwhile: a wait timed out on SQLite saying
    only "did not end within 60 s", and hung for ever on PostgreSQL."""
    app = App(f"sqlite:///{tmp_path}/real.db")

    @app.workflow
    async def nap() -> str:
        await tether.sleep(3600)
        return "rested"

    env = TestEnv(app)
    opener, other = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        opener.run_until_complete(env.open())
        handle = opener.run_until_complete(env.start(nap))

        async def bounded(attempt: Any) -> Any:
            async with asyncio.timeout(10):  # (without the check: a wait that never ends)
                return await attempt()

        for attempt in (lambda: env.run(nap), lambda: env.start(nap),
                        lambda: env.result(handle.run_id), lambda: handle.result(),
                        lambda: env.app.handle(handle.run_id).result(),
                        lambda: env.settle(), lambda: env.skip(), lambda: env.advance(60)):
            with pytest.raises(RuntimeError, match="opened in another event loop"):
                other.run_until_complete(bounded(attempt))
        # the loop that opened it goes on as before
        assert opener.run_until_complete(handle.result()) == "rested"
    finally:
        opener.run_until_complete(env.close())
        opener.run_until_complete(app.close())
        opener.close()
        other.close()


async def test_a_wait_that_outlasts_the_llm_script_says_so() -> None:
    """A run with more LLM calls than the script has steps retries its call, answered
    500 "script exhausted", until the wait gives up: the TimeoutError says why (it
    said only "did not end within N s", which reads as a hang)."""
    app = App()
    llm = LLM("openai:gpt-4.1-mini")

    @app.workflow
    async def ask_twice() -> str:
        await llm.chat([{"role": "user", "content": "one"}])
        return (await llm.chat([{"role": "user", "content": "two"}])).text or ""

    async with TestEnv(app, llm=[Reply("1")], llms=[llm]) as env:
        handle = await env.start(ask_twice)
        async with asyncio.timeout(30):  # (its first call beyond the script, however slow)
            while not any(r.outcome == "exhausted" for r in env.llm.requests):
                await asyncio.sleep(0.01)
        for wait in (lambda: handle.result(timeout=0.5),
                     lambda: env.result(handle, timeout=0.5)):
            with pytest.raises(TimeoutError, match=r"did not end within 0.5 s; the scripted "
                               r"LLM server's script ran out: \d+ requests got 500 'script "
                               r"exhausted' \(retried\), after 1 scripted answers"):
                await wait()


async def test_a_wait_on_a_hung_llm_request_says_so() -> None:
    """A ``Fault.hang()`` holds the request until the client gives up, after its own
    timeout in real time (600 s for an ``LLM`` by default), which the virtual clock does
    not shorten: a wait that gives up first says so (it said only "did not end within
    N s")."""
    app = App()
    llm = LLM("openai:gpt-4.1-mini")
    app.add_agent(Agent("hung", model=llm))
    async with TestEnv(app, llm=[Fault.hang(), Reply("ok")], llms=[llm]) as env:
        handle = await env.start("hung", "hi")
        async with asyncio.timeout(30):  # (the request reaches the server, however slow)
            while not any(r.outcome == "fault:hang" for r in env.llm.requests):
                await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError, match=r"did not end within 0.5 s; the scripted LLM "
                           r"server holds 1 request\(s\) of a Fault.hang\(\) unanswered: .*"
                           r"LLM\(\.\.\., timeout=2\)"):
            await handle.result(timeout=0.5)


async def test_an_outage_of_a_server_given_to_the_environment_passes_in_virtual_time(
) -> None:
    """A ``ScriptedLLMServer`` made by the test (for its ``outage=``) and given as
    ``llm=`` runs on the virtual clock while the environment is open, as the
    environment's own does: a 10-minute outage is over once the retries have skipped
    past it. On the real clock it outlasted the wait: every retry skipped ahead in
    virtual time and met the outage again, hundreds of times."""
    app = App()
    llm = LLM("openai:gpt-4.1-mini")
    app.add_agent(Agent("patient", model=llm))
    server = ScriptedLLMServer([Reply("back")], outage=Outage(seconds=600, retry_after=60))
    async with TestEnv(app, start_time=0.0, llm=server, llms=[llm]) as env:
        handle = await env.start("patient", "hi")
        assert await handle.result(timeout=30) == "back"
        outcomes = [r.outcome for r in server.requests]
        assert outcomes[-1] == "reply" and set(outcomes[:-1]) == {"outage"}
        assert 600 <= server.requests[-1].time < 600 + 180  # virtual epoch seconds
    assert server.clock is None  # given back


async def test_a_schedule_ticks_in_virtual_time() -> None:
    """The app's schedules are in the environment, and a schedule's next tick is a
    wake-up: a daily workflow runs once per virtual day, at 09:00 (the environment left
    schedules out: ``skip()`` found nothing to wake and no tick ever ran)."""
    app = App()
    ticks: list[str] = []

    @app.schedule("0 9 * * *")
    @app.workflow
    async def report() -> str:
        ticks.append(tether.now().isoformat())
        return "sent"

    async with TestEnv(app, start_time=1_767_254_400.0) as env:  # 2026-01-01 08:00 UTC
        for _ in range(3):
            assert await env.skip()
        assert ticks == ["2026-01-01T09:00:00+00:00", "2026-01-02T09:00:00+00:00",
                         "2026-01-03T09:00:00+00:00"]
        runs = await env.app.list_runs()
        assert sorted(r.run_id for r in runs) == [
            "report@2026-01-01T09:00:00Z", "report@2026-01-02T09:00:00Z",
            "report@2026-01-03T09:00:00Z"]
        assert {r.status for r in runs} == {"completed"}


async def test_runs_carry_the_apps_code_version() -> None:
    """A versioned app's runs in the environment are recorded under its version, as
    its workers in production record them (they were unversioned)."""
    app = App(version="v7")

    @app.workflow
    async def noop() -> str:
        return "ok"

    async with TestEnv(app) as env:
        handle = await env.start(noop)
        assert await handle.result() == "ok"
        assert (await env.app.get_run(handle.run_id)).version == "v7"


async def test_a_wait_on_llm_calls_that_go_elsewhere_says_so() -> None:
    """An ``LLM`` built before the environment and not given as ``llms=`` keeps its
    own base URL (the provider's; here a closed port, not to reach the network): its
    calls fail and are retried while the scripted server gets nothing. The wait that
    gives up says so, and how to point the model at the server (it said only "did not
    end within N s")."""
    app = App()
    llm = LLM("openai:gpt-4.1-mini", base_url="http://127.0.0.1:9/v1")
    app.add_agent(Agent("astray", model=llm))
    async with TestEnv(app, llm=[Reply("ok")]) as env:
        handle = await env.start("astray", "hi")
        async with asyncio.timeout(30):  # (its first attempt has failed, however slow)
            while True:
                journal = await env.app.store.journal_read(handle.run_id)
                if journal and journal[0].attempts > 0:
                    break
                await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError, match=r"did not end within 0.5 s; runs retry LLM "
                           r"calls \(step 'llm:openai:gpt-4.1-mini'\) but none reached the "
                           r"scripted LLM server: .*TestEnv\(\.\.\., llms=\[llm\]\)"):
            await handle.result(timeout=0.5)
    await llm.aclose()


async def test_a_model_not_pointed_at_the_environment_ends_the_wait_at_once() -> None:
    """A model built before the environment and not given as ``llms=`` keeps its own
    base URL (the provider's; here a closed port, not to reach the network): nothing
    answers there, and its call was retried for ever, each backoff skipped, until the
    wait gave up at its timeout (60 s) saying why. The wait now ends as soon as the call
    has failed again while the test only waited, with ``RunStuck`` saying where the
    calls went and how to point the model at the scripted server."""
    app = App()
    llm = LLM("openai:gpt-4.1-mini", base_url="http://127.0.0.1:9/v1")
    app.add_agent(Agent("astray", model=llm))
    async with TestEnv(app, llm=[Reply("ok")]) as env:
        handle = await env.start("astray", "hi")
        with pytest.raises(RunStuck, match=(
                rf"run '{handle.run_id}' \(astray\) cannot reach its model: its LLM call "
                r"\(step 'llm:openai:gpt-4\.1-mini'\) failed \d+ attempts in a row, nothing "
                r"answering at http://127\.0\.0\.1:9/v1, and the environment's scripted LLM "
                rf"server is at {re.escape(env.llm.base_url)}: .*TestEnv\(\.\.\., llms=\[llm\]\)")):
            await env.result(handle, timeout=30)
        assert env.llm.requests == []
        assert (await env.app.get_run(handle.run_id)).status in ("waiting", "running")
    await llm.aclose()


class _Silent:
    """A server that accepts each connection, reads what comes and never answers, in a
    thread of its own (no task of the test's: a task reading a socket is the test
    busy, for the environment)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # (closed)
                return
            self.accepted.append(conn)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    @staticmethod
    def _hold(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=10)
        for conn in self.accepted:
            conn.close()


async def test_a_model_whose_server_never_answers_ends_the_wait_at_once() -> None:
    """A model built before the environment and not given as ``llms=`` whose base URL
    accepts the connection and never answers (here a socket of the test's own that
    reads the request and says nothing): the call waited its own timeout (600 s by
    default) in real time, the virtual clock no help, and the wait gave up only at its
    timeout. The wait now ends once the call has had no answer for a short while as the
    test only waited, with ``RunStuck`` saying where the call went and how to point the
    model at the scripted server; the model's own timeout is not changed."""
    silent = _Silent()
    app = App()
    llm = LLM("openai:gpt-4.1-mini", base_url=silent.url)
    app.add_agent(Agent("mute", model=llm))
    try:
        async with TestEnv(app, llm=[Reply("ok")]) as env:
            handle = await env.start("mute", "hi")
            with pytest.raises(RunStuck, match=(
                    rf"run '{handle.run_id}' \(mute\) cannot reach its model: its LLM call "
                    r"\(step 'llm:openai:gpt-4\.1-mini'\) has had no answer from "
                    rf"{re.escape(silent.url)} for [\d.]+ s \(the endpoint accepted the "
                    r"connection and says nothing; the call waits its own timeout, 600 s, "
                    r"in real time.*scripted LLM server is at "
                    rf"{re.escape(env.llm.base_url)}: .*TestEnv\(\.\.\., llms=\[llm\]\)")):
                await env.result(handle, timeout=30)
            assert env.llm.requests == []
            assert silent.accepted  # (the request reached the socket)
        assert llm._timeout is None  # (its own timeout, untouched)
    finally:
        await llm.aclose()
        silent.close()


async def test_a_model_with_a_short_timeout_is_left_to_it() -> None:
    """A model whose own timeout is short (here 1 s) against a socket that never
    answers ends its calls by itself: the environment does not cut its wait short, and
    the run sees the timeouts, as a test of its own retries would mean it to."""
    silent = _Silent()
    app = App()
    llm = LLM("openai:gpt-4.1-mini", base_url=silent.url, timeout=1,
              retry=RetryPolicy(max_attempts=2, initial_interval=0.01))

    @app.workflow
    async def timed() -> str:
        return (await llm.chat([{"role": "user", "content": "hi"}])).text or ""

    try:
        async with TestEnv(app) as env:
            with pytest.raises(RunFailed, match=r"request timed out"):
                await env.result(await env.start(timed), timeout=60)
        assert len(silent.accepted) == 2
    finally:
        await llm.aclose()
        silent.close()


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_a_model_whose_key_another_server_refuses_says_so(protocol: str) -> None:
    """A model built before the environment and not given as ``llms=`` keeps its own
    base URL: in real life the provider's, which refuses the environment's fake key
    with a 401 (here a server of the test's own that answers so, as OpenAI and
    Anthropic do). The run fails at once on the 401 (a refusal is not retried), and the
    failure says which endpoint refused the key and how to point the model at the
    scripted server; it said only "HTTP 401 ...: Incorrect API key provided"."""
    app = App()
    async with ScriptedLLMServer([Reply("never")], api_key="sk-the-real-one") as real:
        url = real.base_url if protocol == "openai" else real.anthropic_base_url
        llm = LLM("openai:gpt-4.1-mini" if protocol == "openai"
                  else "anthropic:claude-sonnet-4-5", base_url=url)
        app.add_agent(Agent("keyed", model=llm))
        async with TestEnv(app, llm=[Reply("ok")]) as env:
            handle = await env.start("keyed", "hi")
            with pytest.raises(RunFailed) as failed:
                await env.result(handle, timeout=30)
            assert env.llm.requests == []
            ours = env.llm.base_url
        await llm.aclose()
    assert re.search(rf"HTTP 401 .*\(refused by {re.escape(url)}\)", str(failed.value))
    assert failed.value.__notes__[-1] == (
        f"run '{handle.run_id}' failed on its model's HTTP 401 from {url}, not the "
        f"environment's scripted LLM server (at {ours}): an LLM built before "
        "the environment (at module level, say) keeps its own base_url, the provider's, "
        "which refuses the environment's fake API key, unless given as "
        "TestEnv(..., llms=[llm]) or built inside the test")
    assert [r.status for r in real.requests] == [401]


async def test_a_key_the_scripted_server_refuses_has_no_such_note() -> None:
    """A 401 the environment's own server answers (a script's ``Fault.http(401)``) is
    the test's intent: the failure carries no note about another server."""
    app = App()
    llm = LLM("openai:gpt-4.1-mini")

    @app.workflow
    async def scripted() -> str:
        return (await llm.chat([{"role": "user", "content": "hi"}])).text or ""

    async with TestEnv(app, llm=[Fault.http(401, "bad key")], llms=[llm]) as env:
        with pytest.raises(RunFailed, match=r"HTTP 401.*bad key \(refused by ") as failed:
            await env.run(scripted)
    assert not any("scripted LLM server" in note
                   for note in getattr(failed.value, "__notes__", []))
    await llm.aclose()


async def test_a_model_on_a_server_of_the_tests_own_is_answered_by_it() -> None:
    """A model pointed at a server the test started (not the environment's) is answered
    by it, and one whose server the test brings up while the run already retries (the
    test sleeping meanwhile) is not cut short: only calls that keep failing to connect
    while the test does nothing but wait end the wait."""
    app = App()
    port = _free_port()
    async with ScriptedLLMServer([Reply("mine")]) as mine:
        up = LLM("openai:gpt-4.1-mini", base_url=mine.base_url)
        late = LLM("openai:gpt-4.1-nano", base_url=f"http://127.0.0.1:{port}/v1")
        app.add_agent(Agent("up", model=up))
        app.add_agent(Agent("late", model=late))
        async with TestEnv(app, llm=[Reply("the environment's")]) as env:
            assert await env.run("up", "hi") == "mine"
            handle = await env.start("late", "hi")
            waiting = asyncio.create_task(env.result(handle))
            async with asyncio.timeout(30):  # (its calls fail: nothing listens yet)
                while not any(e.attempts > 3
                              for e in await env.app.store.journal_read(handle.run_id)):
                    await asyncio.sleep(0.01)
            await asyncio.sleep(2 * 1.0)  # (the test is busy: the server may come)
            async with ScriptedLLMServer([Reply("late but mine")], port=port):
                assert await waiting == "late but mine"
            assert env.llm.requests == []
        await up.aclose()
        await late.aclose()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_server_given_started_is_left_running() -> None:
    """A server the test started (the ``llm_server`` fixture's) is the test's: the
    environment leaves it running at close (it stopped it, so the test's own calls to
    it after the environment were refused); one it started, it stops."""
    app = App()
    llm = LLM("openai:gpt-4.1-mini")
    app.add_agent(Agent("twice", model=llm))
    async with ScriptedLLMServer([Reply("one"), Reply("two")]) as server:
        async with TestEnv(app, llm=server, llms=[llm]) as env:
            assert await env.run("twice", "hi") == "one"
        async with httpx.AsyncClient() as http:
            after = await http.post(server.base_url + "/chat/completions", json={
                "model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert after.json()["choices"][0]["message"]["content"] == "two"
    unstarted = ScriptedLLMServer([Reply("three")])
    async with TestEnv(app, llm=unstarted, llms=[llm]) as env:
        assert await env.run("twice", "hi") == "three"
    with pytest.raises(RuntimeError, match="not started"):
        unstarted.url  # noqa: B018
    await llm.aclose()


def test_an_agents_sdk_agent_is_answered_by_each_environment_in_turn() -> None:
    """Each test has its event loop (pytest-asyncio) and its environment's server: a
    ``TetherAgent`` whose model is a name is answered by each in turn. Its model, looked
    up once for the process, kept the first loop's client and the first
    ``OPENAI_BASE_URL``: the second environment's run met "Event loop is closed", then
    the first server's closed port, until the wait gave up."""
    pytest.importorskip("agents")
    from agents import Agent, set_tracing_disabled

    from tether.integrations.openai_agents import TetherAgent

    set_tracing_disabled(True)
    app = App()
    TetherAgent(Agent(name="haiku", instructions="Answer in haikus.",
                      model="gpt-4.1-mini"), app=app)

    async def one_test(answer: str) -> None:
        async with TestEnv(app, llm=[Reply(answer)]) as env:
            handle = await env.start("haiku", "Recursion?")
            assert await handle.result(timeout=15) == answer
            assert [r.status for r in env.llm.requests] == [200]

    for answer in ("Code calls itself", "Loops within loops", "Base case at last"):
        asyncio.run(one_test(answer))


async def test_advance_refuses_going_back() -> None:
    app, _ = make_app()
    async with TestEnv(app) as env:
        # (a ConfigError, as for a NaN, since 2026-12-08: a bare ValueError before)
        with pytest.raises(ConfigError, match="forward only"):
            await env.advance(-1)


async def test_the_clock_refuses_nan_infinity_and_non_numbers() -> None:
    """Until 2026-12-06 ``advance(float('nan'))`` and ``start_time=nan`` were taken: the
    clock read NaN, and every run started after failed with a StoreError (NOT NULL
    ``created_at``); ``advance(inf)`` put every timer out of reach."""
    app = App("sqlite:///never-opened.db")

    @app.workflow
    async def nap() -> str:
        await tether.sleep(60)
        return "rested"

    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ConfigError, match="finite"):
            TestEnv(app, start_time=bad)
    with pytest.raises(ConfigError, match="number of seconds"):
        TestEnv(app, start_time="0")  # type: ignore[arg-type]
    async with TestEnv(app, start_time=0.0) as env:
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ConfigError, match="finite"):
                await env.advance(bad)
            with pytest.raises(ConfigError, match="finite"):
                env.clock.set(bad)
        with pytest.raises(ConfigError, match="number of seconds"):
            await env.advance("5")  # type: ignore[arg-type]
        assert env.now() == 0.0
        assert await env.run(nap) == "rested"
        assert env.now() == 60.0


async def test_a_wait_on_a_run_of_an_unknown_workflow_says_so() -> None:
    """``env.start("nope")`` queues a run that the environment's worker never claims
    (its app has no such workflow). Until 2026-12-06 every wait on it ran to its timeout
    and said only "did not end within 60 s", or nothing at all (``settle``, ``skip``,
    ``advance``: a TimeoutError with an empty message)."""
    app = App("sqlite:///never-opened.db")

    @app.workflow
    async def real() -> str:
        return "x"

    async with TestEnv(app) as env:
        handle = await env.start("nope")
        with pytest.raises(TimeoutError, match="'nope'; registered: real"):
            await handle.result(timeout=0.5)
        for wait in (env.settle, env.skip):
            with pytest.raises(TimeoutError, match=r"within 0\.5 s; .*'nope'; registered"):
                await wait(timeout=0.5)
        assert await env.run(real) == "x"
        # A run id that is not a string: AttributeError ("'int' object has no attribute
        # 'app'") until 2026-12-06.
        with pytest.raises(InvalidName, match="must be a string"):
            await env.result(5)  # type: ignore[arg-type]
        with pytest.raises(RunNotFound):
            await env.result("nope")


async def test_time_skipping_on_either_backend(store_url: str) -> None:
    """The environment reads idleness through the Store port: PostgreSQL works too."""
    app, seen = make_app()
    async with TestEnv(app, store_url=store_url, start_time=0.0) as env:
        seen["env"] = env
        assert await env.run(seen["workflows"]["parent"]) == [[3600.0, 7200.0], [10800.0]]
        result = await env.run(seen["workflows"]["slow"], "pg")
        assert (result["slept"], result["waited"], result["retried"]) == (3 * DAY, DAY, 3 * 3600)


async def test_a_store_of_its_own_that_cannot_be_reached_fails_the_opening() -> None:
    """``TestEnv(store_url=...)`` on a database that is down raises at once: a worker
    embedded elsewhere waits for its store at start, the test environment's does not
    (``start_retry=0`` unless given)."""
    import socket

    pytest.importorskip("psycopg")
    from tether import StoreUnavailable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = App()

    @app.workflow
    async def wf() -> int:
        return 1

    env = TestEnv(app, store_url=f"postgresql://tether@127.0.0.1:{port}/db")
    with pytest.raises(StoreUnavailable, match="Connection refused"):
        await asyncio.wait_for(env.open(), 60)


async def test_an_agents_sdk_agent_whose_model_is_a_name_is_answered() -> None:
    """The OpenAI Agents SDK sends an agent whose model is a name to the Responses API
    (``/v1/responses``), at ``OPENAI_BASE_URL``, which the environment sets: its server
    answers it from the script. (It used to be a plain ``ScriptedLLMServer``, which
    answered 404 there, so the run failed with ``FatalProviderError``: the testing kit
    could not test the integration's own documented example.)"""
    pytest.importorskip("agents")
    from agents import Agent, set_tracing_disabled

    from tether.integrations.openai_agents import TetherAgent

    set_tracing_disabled(True)  # (as the integration's tests do: no export at exit)
    app = App()
    TetherAgent(Agent(name="haiku", instructions="Answer in haikus.",
                      model="gpt-4.1-mini"), app=app)
    async with TestEnv(app, llm=[Reply("Code calls itself")]) as env:
        assert await env.run("haiku", "Recursion?") == "Code calls itself"
        assert [(r.protocol, r.path, r.status) for r in env.llm.requests] == [
            ("responses", "/v1/responses", 200)]


async def test_time_skipping_reads_no_list_of_runs(store_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Each poll of the environment (is every run waiting? when does the next wake?)
    asks the store through index lookups (``Store.run_activity``): it read every run,
    up to a million, at each poll, so a test on a store of many ended runs slowed with
    it. Timers, children and a signal's timeout still pass in virtual time, to the
    second, with ended runs and another queue's timer in the store."""
    from tether.store import open_store

    def every_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the environment read every run")

    monkeypatch.setattr(type(open_store(store_url)), "run_list", every_run)
    app, seen = make_app()
    async with TestEnv(app, store_url=store_url, start_time=0.0) as env:
        seen["env"] = env
        store = env.app.store
        for i in range(20):
            await store.run_insert(run=RunRecord(
                run_id=f"old-{i}", workflow="gone", queue="default", status="completed",
                input="[[], {}]", created_at=-100.0 + i, updated_at=-90.0))
        await store.run_insert(run=RunRecord(  # not ours: never woken to
            run_id="elsewhere", workflow="gone", queue="nobody-serves", status="waiting",
            input="[[], {}]", created_at=0.0, updated_at=0.0, available_at=10 * DAY))
        assert await env.run(seen["workflows"]["parent"]) == [[3600.0, 7200.0], [10800.0]]
        assert env.now() == 10800.0
        result = await env.run(seen["workflows"]["slow"], "x")
        assert (result["slept"], result["waited"], result["retried"]) == (3 * DAY, DAY, 3 * 3600)
        assert not await env.skip()  # the other queue's timer is no wake of ours


def _napper_app() -> App:
    app = App()

    @app.workflow
    async def napper(tag: str) -> str:
        await tether.sleep(3600)
        return tag

    return app


async def test_a_second_environment_on_one_store_is_refused_naming_the_first(
        store_url: str) -> None:
    """Two environments open on one store (two xdist workers given the same database)
    ran each other's runs, and one skipping its clock woke the other's timers: the
    second's worker ran the first's hour-long sleep to its end while the first's clock
    stood at 0. The second is now refused with a ConfigError naming the first; once
    the first is closed, the store takes a new environment."""
    app = _napper_app()
    async with TestEnv(app, store_url=store_url, start_time=0.0) as first:
        handle = await first.start("napper", "first's")
        await first.settle()
        second = TestEnv(app, store_url=store_url, start_time=1e6)
        with pytest.raises(ConfigError, match=rf"in use by another open TestEnv \(process "
                                              rf"{os.getpid()} on .*, test 'tests/testing/"
                                              r"test_env\.py::test_a_second_environment"):
            await second.open()
        assert not second._opened
        assert (await first.app.get_run(handle.run_id)).status == "waiting"
        assert first.now() == 0.0
        assert await handle.result() == "first's"
    async with TestEnv(app, store_url=store_url) as again:
        assert await again.run("napper", "again") == "again"


@pytest.mark.postgres
async def test_fresh_schema_gives_each_environment_an_empty_store_of_one_database(
        pg_migrated_url: str) -> None:
    """Tests of one xdist process given one database saw each other's runs: one left
    waiting by an earlier test was listed, and woken, by the next. With
    ``fresh_schema=True`` each environment runs on a schema of its own, dropped at
    close; the database's own store (its default schema) is not touched."""
    import psycopg

    app = _napper_app()
    async with App(pg_migrated_url) as outside:  # the database's own store: left alone
        kept = await outside.start("napper", "kept")
    schemas = []
    for tag in ("left waiting", "second"):
        async with TestEnv(app, store_url=pg_migrated_url, fresh_schema=True,
                           start_time=0.0) as env:
            assert env.store_url.startswith(pg_migrated_url + "?schema=tether_test_")
            schemas.append(env.store_url.rpartition("=")[2])
            assert await env.app.list_runs() == []  # neither the earlier test's nor kept
            handle = await env.start("napper", tag)
            await env.settle()
            assert (await env.app.get_run(handle.run_id)).status == "waiting"
    assert schemas[0] != schemas[1]
    with psycopg.connect(pg_migrated_url) as conn:
        left = conn.execute("SELECT schema_name FROM information_schema.schemata "
                            "WHERE schema_name LIKE 'tether_test_%'").fetchall()
    assert left == []
    async with App(pg_migrated_url) as outside:
        assert [r.run_id for r in await outside.list_runs()] == [kept.run_id]


@pytest.mark.postgres
async def test_keep_schema_leaves_the_fresh_schema_in_place_and_says_how_to_look(
        pg_migrated_url: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``fresh_schema=True`` dropped its schema at close, so the runs of a failed test
    could not be looked at. ``keep_schema=True`` (or ``env.keep_schema = True`` while
    open, or ``TETHER_TEST_KEEP_SCHEMA=1``) leaves it, and a warning says its name and
    the commands to look at it and to drop it; the schema is a store its URL opens."""
    import psycopg

    app = _napper_app()
    monkeypatch.delenv("TETHER_TEST_KEEP_SCHEMA", raising=False)
    kept = []
    for how in ("option", "attribute", "variable", "none"):
        if how == "variable":
            monkeypatch.setenv("TETHER_TEST_KEEP_SCHEMA", "1")
        else:
            monkeypatch.delenv("TETHER_TEST_KEEP_SCHEMA", raising=False)
        async with TestEnv(app, store_url=pg_migrated_url, fresh_schema=True,
                           keep_schema=how == "option") as env:
            schema, url = env.schema, env.store_url
            assert schema is not None and url.endswith(f"?schema={schema}")
            handle = await env.start("napper", how)
            await env.settle()
            if how == "attribute":
                env.keep_schema = True
        assert env.schema is None
        if how != "none":
            kept.append((schema, url, handle.run_id))
            assert f"TestEnv: kept its schema {schema} (keep_schema): look at its runs " \
                   f"with `tether runs --db '{url}'`" in caplog.text
            assert f"`psql '{pg_migrated_url}' -c 'DROP SCHEMA {schema} CASCADE'`" \
                in caplog.text
    with psycopg.connect(pg_migrated_url, autocommit=True) as conn:
        left = sorted(row[0] for row in conn.execute(
            "SELECT schema_name FROM information_schema.schemata "
            "WHERE schema_name LIKE 'tether_test_%'"))
        assert left == sorted(schema for schema, _, _ in kept)
        for schema, url, run_id in kept:
            async with App(url) as looking:
                assert (await looking.get_run(run_id)).status == "waiting"
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_fresh_schema_is_refused_without_a_postgresql_url_of_no_schema(
        sqlite_url: str) -> None:
    app = _napper_app()
    for url in (None, sqlite_url):
        with pytest.raises(ConfigError, match="fresh_schema needs a PostgreSQL store_url"):
            TestEnv(app, store_url=url, fresh_schema=True)
    with pytest.raises(ConfigError, match="names one already"):
        TestEnv(app, store_url="postgresql://u@127.0.0.1/db?schema=mine", fresh_schema=True)


@pytest.mark.filterwarnings("ignore::ResourceWarning",
                            "ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_environment_left_open_on_a_closed_loop_does_not_hold_the_store(
        tmp_path: Any) -> None:
    """A test that opened an environment and never closed it (its event loop closed
    with the test, its worker gone): the next test of the same process, on the same
    store, opens at once instead of being refused for the claim's 30 s."""
    url = f"sqlite:///{tmp_path}/left.db"
    app = _napper_app()
    saved = dict(os.environ)  # (the environment left open sets OPENAI_BASE_URL and more)

    async def leave_open() -> None:
        await TestEnv(app, store_url=url).open()

    try:
        asyncio.run(leave_open())
    finally:
        os.environ.clear()
        os.environ.update(saved)
    gc.collect()  # (the left environment's sockets, unclosed: warned about here)

    async def next_test() -> str:
        async with TestEnv(app, store_url=url) as env:
            return await env.run("napper", "next")

    assert asyncio.run(next_test()) == "next"


_HOLDER = """
import asyncio, sys
from tether import App
from tether.testing import TestEnv

app = App()

@app.workflow
async def wf() -> int:
    return 1

async def main() -> None:
    async with TestEnv(app, store_url=sys.argv[1]):
        print("open", flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_an_environment_of_another_process_holds_the_store_until_it_dies(
        tmp_path: Any) -> None:
    """Another test process's open environment holds the store (refused here); once
    that process is killed (no close, no clean up), its claim is taken over at once,
    as the process is gone from this host."""
    import signal
    import sys

    url = f"sqlite:///{tmp_path}/shared.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, url, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTEST_CURRENT_TEST": "test_other.py::test_holder (call)"})
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"open\n"
        app = _napper_app()
        with pytest.raises(ConfigError, match=rf"process {proc.pid} on .*, test "
                                              r"'test_other\.py::test_holder \(call\)'"):
            await TestEnv(app, store_url=url).open()
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    async with TestEnv(app, store_url=url, start_time=0.0) as env:
        assert await env.run("napper", "mine") == "mine"
        assert env.now() == 3600.0


async def test_a_handle_from_env_app_skips_time_too() -> None:
    """``env.app.start`` (and ``env.app.handle``) return plain ``RunHandle``s. Until
    2026-12-06 their ``result()`` waited in real time: a run that sleeps three days never
    ended, and with ``result()``'s default timeout (None) the test hung."""
    app, seen = make_app()
    async with TestEnv(app, start_time=0.0) as env:
        handle = await env.app.start(seen["workflows"]["ticker"], 3)
        assert type(handle) is tether.RunHandle
        assert await handle.result(timeout=30) == [3600.0, 7200.0, 10800.0]
        again = await env.app.start(seen["workflows"]["ticker"], 2)
        assert await env.app.handle(again.run_id).result(timeout=30) == [14400.0, 18000.0]


async def test_a_wait_on_a_failing_step_or_an_unsent_signal_says_so() -> None:
    """A wait that times out names what holds the runs: a step retried forever (its
    attempts and last error), a signal wait without a timeout that nothing sent. Until
    2026-12-06 both said only "did not end within N s"."""
    app = App("sqlite:///never-opened.db")

    @app.step(retry=RetryPolicy(max_attempts=None))
    def charge(customer: str) -> str:
        raise KeyError(customer)

    @app.workflow
    async def bill() -> str:
        return await charge("customer_id")

    @app.workflow
    async def approval() -> Any:
        return await tether.wait_for_signal("decision")

    async with TestEnv(app) as env:
        billing = await env.start(bill)
        await env.settle()  # its first attempt failed: it waits for its backoff
        with pytest.raises(TimeoutError, match=(
                rf"run '{billing.run_id}' \(bill\) retries step 'charge' \(\d+ attempts? "
                r"failed, the last with KeyError: 'customer_id'\).*fix the step")):
            await billing.result(timeout=0.5)
        await env.app.cancel(billing.run_id)
        await env.settle()
        waiting = await env.start(approval)
        await env.settle()
        with pytest.raises(TimeoutError, match=(
                rf"run '{waiting.run_id}' \(approval\) waits for signal 'decision', with no "
                r"timeout, and none was sent.*env\.app\.signal")) as err:
            await waiting.result(timeout=0.5)
        assert "retries step" not in str(err.value)  # (the cancelled run is not named)
        await env.app.signal(waiting.run_id, "decision", "yes")
        assert await waiting.result() == "yes"


async def test_a_wait_on_a_run_of_a_queue_the_worker_does_not_serve_says_so() -> None:
    """``TestEnv(queues=[...])`` narrows the worker's queues: a run of a workflow on
    another queue stays queued. Until 2026-12-06 a wait on it said only "did not end
    within N s"."""
    app = App("sqlite:///never-opened.db")

    @app.workflow(queue="llm")
    async def summarise() -> str:
        return "done"

    @app.workflow
    async def plain() -> str:
        return "plain"

    async with TestEnv(app, queues=["default"], stuck_after=0.3) as env:
        assert await env.run(plain) == "plain"
        handle = await env.start(summarise)
        with pytest.raises(TimeoutError, match=(
                rf"run '{handle.run_id}' \(summarise\) is queued on 'llm': the "
                r"environment's worker serves only the queues 'default' \(TestEnv\(queues=")):
            await handle.result(timeout=0.5)
        # A wait without a timeout says so too, as soon as it can tell (RunStuck).
        with pytest.raises(RunStuck, match=(
                rf"run '{handle.run_id}' \(summarise\) can never end: .*; run "
                rf"'{handle.run_id}' \(summarise\) is queued on 'llm': the environment's")):
            await handle.result(timeout=None)


def _stuck_app() -> tuple[App, dict[str, Any]]:
    """A run that waits for a signal without a timeout, and one that sleeps days."""
    app = App("sqlite:///never-opened.db")

    @app.workflow
    async def approval() -> Any:
        return await tether.wait_for_signal("decision")

    @app.workflow
    async def napper() -> float:
        await tether.sleep(3 * DAY)
        return tether.now().timestamp()

    @app.workflow
    async def parent() -> Any:
        return await tether.call(approval)

    return app, {"approval": approval, "napper": napper, "parent": parent}


@pytest.mark.timeout(60)  # (a regression hangs: this fails it instead)
async def test_a_wait_without_timeout_on_a_run_that_can_never_end_raises_run_stuck(
        store_url: str) -> None:
    """``await handle.result()`` (no timeout) on a run waiting for a signal nothing in
    the test sends: once the environment has been still (no run running or due, no
    wake-up) for ``stuck_after`` real seconds while the test only waited on it, the wait
    raises ``RunStuck`` saying what holds the run. Until 2026-12-06 it hung for ever."""
    app, wf = _stuck_app()
    async with TestEnv(app, store_url=store_url, start_time=0.0, stuck_after=0.5) as env:
        handle = await env.app.start(wf["approval"])
        with pytest.raises(RunStuck, match=(
                rf"run '{handle.run_id}' \(approval\) can never end: for 0\.5 s of real "
                r"time no run was running or due.*; run '.*' \(approval\) waits for signal "
                r"'decision', with no timeout, and none was sent.*env\.app\.signal")) as err:
            await handle.result()
        assert isinstance(err.value, TimeoutError)
        # The same through env.result, env.app.handle and a handle of env.start, given
        # no timeout.
        with pytest.raises(RunStuck):
            await env.result(handle.run_id, timeout=None)
        with pytest.raises(RunStuck):
            await env.app.handle(handle.run_id).result()
        other = await env.start(wf["approval"])
        with pytest.raises(RunStuck, match=rf"run '{other.run_id}' \(approval\) can never"):
            await other.result(timeout=None)
        # The runs are untouched: a signal still ends each.
        await env.app.signal(handle.run_id, "decision", "yes")
        assert await handle.result() == "yes"
        await env.app.signal(other.run_id, "decision", "no")
        assert await other.result(timeout=None) == "no"
        # A sleeping run still skips time and completes.
        napping = await env.app.start(wf["napper"])
        assert await napping.result() == 3 * DAY
        # A parent waiting for its child, which waits for the signal: both named.
        parent = await env.app.start(wf["parent"])
        with pytest.raises(RunStuck, match=(
                rf"run '{parent.run_id}' \(parent\) can never end \(it is waiting for "
                r"child .*\): .*\(approval\) waits for signal 'decision'")):
            await parent.result()


@pytest.mark.timeout(60)
async def test_a_wait_without_timeout_is_not_ended_while_the_test_does_something_else(
        store_url: str) -> None:
    """``RunStuck`` waits while a task of the test itself does something other than wait
    on the environment (here: sleeps five times ``stuck_after``, then sends the signal;
    the test task itself, a task it created, or one gathered with the wait): the test
    may still send it."""
    app, wf = _stuck_app()
    async with TestEnv(app, store_url=store_url, stuck_after=0.2) as env:
        handle = await env.app.start(wf["approval"])
        task = asyncio.create_task(handle.result())
        await asyncio.sleep(0.1)
        await env.app.signal(handle.run_id, "decision", "early")
        assert await task == "early"

        second = await env.app.start(wf["approval"])
        task = asyncio.create_task(second.result())
        await asyncio.sleep(1.0)  # (five times stuck_after, the test busy elsewhere)
        await env.app.signal(second.run_id, "decision", "late")
        assert await task == "late"

        async def send_later(run_id: str) -> None:
            await asyncio.sleep(1.0)
            await env.app.signal(run_id, "decision", "from a task")

        third = await env.app.start(wf["approval"])
        sender = asyncio.create_task(send_later(third.run_id))
        assert await third.result() == "from a task"
        await sender

        fourth = await env.app.start(wf["approval"])
        assert await asyncio.gather(fourth.result(), send_later(fourth.run_id)) == [
            "from a task", None]


async def test_stuck_after_takes_seconds_or_none() -> None:
    app, _ = _stuck_app()
    for bad in (-1, float("nan"), "3"):
        with pytest.raises(ConfigError, match="stuck_after"):
            TestEnv(app, stuck_after=bad)  # type: ignore[arg-type]
    assert TestEnv(app, stuck_after=None).stuck_after is None


@pytest.mark.timeout(120)  # (without RunStuck for timed waits: each waits its timeout)
async def test_a_wait_with_a_timeout_on_a_run_that_can_never_end_raises_run_stuck(
        store_url: str) -> None:
    """A wait with a timeout (``env.run``'s 60 s, ``env.result``'s, a handle's) on a run
    that can never end raises ``RunStuck`` once the environment has been still for
    ``stuck_after``, with the explanation a wait without a timeout gives. Until
    2026-12-07 it waited out its whole timeout (60 s by default), then explained."""
    app, wf = _stuck_app()
    async with TestEnv(app, store_url=store_url, start_time=0.0, stuck_after=0.3) as env:
        with pytest.raises(RunStuck, match=(
                r"run '.*' \(approval\) can never end: for 0\.3 s of real time no run was "
                r"running or due.*; run '.*' \(approval\) waits for signal 'decision', with "
                r"no timeout, and none was sent.*env\.app\.signal.*None waits out the "
                r"wait's timeout, 60 s\)$")) as err:
            await env.run(wf["approval"])  # (60 s unless told)
        assert isinstance(err.value, TimeoutError)
        [run] = await env.app.list_runs()
        handle = await env.start(wf["approval"])
        for wait in (lambda: handle.result(timeout=40),
                     lambda: env.result(run.run_id, timeout=40),
                     lambda: env.app.handle(run.run_id).result(timeout=40)):
            with pytest.raises(RunStuck, match=r"\(approval\) can never end: .*None waits "
                                               r"out the wait's timeout, 40 s\)$"):
                await wait()
        # A parent waiting for its child, which waits for the signal: both named.
        parent = await env.start(wf["parent"])
        with pytest.raises(RunStuck, match=(
                rf"run '{parent.run_id}' \(parent\) can never end \(it is waiting for "
                r"child .*\): .*\(approval\) waits for signal 'decision'")):
            await parent.result(timeout=40)
        # The runs are untouched: a signal still ends each.
        for run_id, answer in ((run.run_id, "yes"), (handle.run_id, "no")):
            await env.app.signal(run_id, "decision", answer)
            assert await env.result(run_id, timeout=40) == answer
    # stuck_after=None: a timed wait waits out its timeout, as before.
    async with TestEnv(app, store_url=store_url, stuck_after=None) as env:
        handle = await env.start(wf["approval"])
        with pytest.raises(TimeoutError, match=r"did not end within 0\.5 s; run '.*' "
                                               r"\(approval\) waits for signal") as late:
            await handle.result(timeout=0.5)
        assert not isinstance(late.value, RunStuck)


@pytest.mark.timeout(120)
async def test_a_wait_with_a_timeout_on_a_run_that_can_end_still_completes(
        store_url: str) -> None:
    """``RunStuck`` does not cut short a timed wait that would complete: a run whose
    timers the environment skips to (days of sleep, a signal's timeout, a child's
    timers), and a run waiting for a signal that a task of the test sends after a real
    sleep several times ``stuck_after`` (a task it created, or one gathered with the
    wait)."""
    app, wf = _stuck_app()
    other, seen = make_app()
    async with TestEnv(app, store_url=store_url, start_time=0.0, stuck_after=0.2) as env:
        assert await env.run(wf["napper"]) == 3 * DAY
        napping = await env.start(wf["napper"])
        assert await napping.result(timeout=40) == 6 * DAY

        async def send_later(run_id: str, answer: str) -> None:
            await asyncio.sleep(1.0)  # (five times stuck_after)
            await env.app.signal(run_id, "decision", answer)

        handle = await env.start(wf["approval"])
        sender = asyncio.create_task(send_later(handle.run_id, "from a task"))
        assert await handle.result(timeout=40) == "from a task"
        await sender
        again = await env.start(wf["approval"])
        assert await asyncio.gather(env.result(again, timeout=40),
                                    send_later(again.run_id, "gathered")) == ["gathered",
                                                                              None]
        third = await env.app.start(wf["approval"])
        task = asyncio.create_task(third.result(timeout=40))
        await asyncio.sleep(1.0)
        await env.app.signal(third.run_id, "decision", "late")
        assert await task == "late"
    async with TestEnv(other, store_url=store_url, start_time=0.0, stuck_after=0.2) as env:
        seen["env"] = env
        assert await env.run(seen["workflows"]["parent"]) == [[3600.0, 7200.0], [10800.0]]
        result = await env.run(seen["workflows"]["slow"], "retried")  # (backoffs too)
        assert (result["waited"], result["answer"], result["status"]) == (
            DAY, "timed out", "ok")
        with pytest.raises(RunFailed, match="SignalTimeout"):  # (a day's timeout, skipped)
            await env.run(seen["workflows"]["approval"])


def _spinning_app() -> tuple[App, dict[str, Any]]:
    """A step retried for ever that always fails, in a run and in a child; one that
    fails until the test says otherwise; one that fails twice per call; long sleeps."""
    app = App("sqlite:///never-opened.db")
    state: dict[str, Any] = {"fixed": False, "calls": 0}

    @app.step(retry=RetryPolicy(max_attempts=None))
    def charge(customer: str) -> str:
        raise KeyError(customer)

    @app.step(retry=RetryPolicy(initial_interval=1, max_interval=1, max_attempts=None))
    def until_fixed() -> str:
        if not state["fixed"]:
            raise ConnectionError("the provider is down")
        return "fixed"

    @app.step(retry=RetryPolicy(initial_interval=60, max_attempts=None))
    def twice_then_ok(i: int) -> int:
        state["calls"] += 1
        if state["calls"] % 3:
            raise ConnectionError("flaky")
        return i

    @app.workflow
    async def bill() -> str:
        return await charge("customer_id")

    @app.workflow
    async def parent() -> str:
        return await tether.call(bill)

    @app.workflow
    async def patient() -> str:
        return await until_fixed()

    @app.workflow
    async def many() -> list[int]:
        return [await twice_then_ok(i) for i in range(10)]

    @app.workflow
    async def years() -> float:
        for _ in range(3):
            await tether.sleep(365 * DAY)
        return tether.now().timestamp()

    return app, {"bill": bill, "parent": parent, "patient": patient, "many": many,
                 "years": years, "state": state}


@pytest.mark.timeout(150)  # (without RunSpinning: the timed waits wait out their timeout)
async def test_a_wait_on_a_step_that_keeps_failing_raises_run_spinning(store_url: str) -> None:
    """A step whose policy retries it for ever, failing each time: the environment skips
    every backoff, so the run never ends and never stands still (``RunStuck`` cannot
    tell). Once one call of the step has failed ``stuck_attempts`` attempts in a row and
    fails again while the test only waits, the wait (with a timeout or without, on the
    run or on a parent waiting for it) raises ``RunSpinning`` naming the step, its
    attempts and its last error. Until 2026-12-07 a wait without a timeout spun for
    ever, one with a timeout until its timeout (60 s by default)."""
    app, wf = _spinning_app()
    async with TestEnv(app, store_url=store_url, stuck_attempts=20) as env:
        with pytest.raises(RunSpinning, match=(
                r"^run '(.*)' \(bill\) makes no progress: its step 'charge' failed (\d+) "
                r"attempts in a row, the last with KeyError: 'customer_id', and failed again "
                r"while the test did nothing but wait on the environment; run '.*' \(bill\) "
                r"retries step 'charge' .*fix the step, or bound its retries "
                r"\(TestEnv\(stuck_attempts=\.\.\.\) sets how many failed attempts in a row "
                r"of one step end the wait; None spins until the wait's timeout, 60 s\)$"
                )) as err:
            await env.run(wf["bill"])
        assert isinstance(err.value, RunStuck) and isinstance(err.value, TimeoutError)
        [run] = await env.app.list_runs()
        assert run.status == "waiting"  # (left as it is: still retrying)
        [entry] = (await env.app.get_run(run.run_id)).journal
        assert entry["attempts"] >= 20
        await env.app.cancel(run.run_id)

        handle = await env.app.start(wf["bill"])
        with pytest.raises(RunSpinning, match=(
                rf"^run '{handle.run_id}' \(bill\) makes no progress: .*None spins for "
                r"ever\)$")):
            await handle.result()  # (no timeout)
        await env.app.cancel(handle.run_id)

        parent = await env.start(wf["parent"])
        with pytest.raises(RunSpinning, match=(
                r"^run '.*' \(bill\) makes no progress: its step 'charge' failed \d+ "
                r"attempts in a row, .* \(the wait is on run "
                rf"'{parent.run_id}' \(parent\), which waits for it\)")):
            await parent.result(timeout=40)
        await env.app.cancel(parent.run_id)
        await env.settle()
    # stuck_attempts=None: the wait spins until its timeout, as before.
    async with TestEnv(app, store_url=store_url, stuck_attempts=None) as env:
        handle = await env.start(wf["bill"])
        with pytest.raises(TimeoutError, match=r"did not end within 1 s; run '.*' \(bill\) "
                                               r"retries step 'charge'") as late:
            await handle.result(timeout=1.0)
        assert not isinstance(late.value, RunStuck)
        await env.app.cancel(handle.run_id)
        await env.settle()


@pytest.mark.timeout(120)
async def test_runs_that_progress_are_not_taken_for_spinning(store_url: str) -> None:
    """``RunSpinning`` counts the failed attempts of one call of a step, in a row, while
    the test only waits: years of virtual sleep, a step that fails twice per call (20
    failures in all) and a step that fails until a task of the test, after a real
    sleep, fixes what it needs, all complete, with ``stuck_attempts=3``."""
    app, wf = _spinning_app()
    async with TestEnv(app, store_url=store_url, start_time=0.0, stuck_attempts=3) as env:
        assert await env.run(wf["years"]) == 3 * 365 * DAY
        assert await env.run(wf["many"]) == list(range(10))
        assert wf["state"]["calls"] == 30

        async def fix_later() -> None:
            await asyncio.sleep(1.0)  # (the step fails meanwhile, every virtual second)
            wf["state"]["fixed"] = True

        handle = await env.start(wf["patient"])
        assert await asyncio.gather(handle.result(timeout=40), fix_later()) == ["fixed", None]
        [entry] = (await env.app.get_run(handle.run_id)).journal
        assert entry["attempts"] > 3  # (it did fail more than stuck_attempts times)


async def test_stuck_attempts_takes_a_whole_number_or_none() -> None:
    app, _ = _spinning_app()
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ConfigError, match="stuck_attempts"):
            TestEnv(app, stuck_attempts=bad)  # type: ignore[arg-type]
    assert TestEnv(app, stuck_attempts=None).stuck_attempts is None
    assert TestEnv(app).stuck_attempts == 1000


@pytest.mark.timeout(120)
async def test_run_spinning_reads_an_encrypted_journal() -> None:
    """An app whose payloads are encrypted (``AesGcm``): the child's run id and the
    step's last error are read through the app's codec, so ``RunSpinning`` still finds
    the child and names its error in clear."""
    pytest.importorskip("cryptography")
    from tether.encryption import AesGcm

    app = App("sqlite:///never-opened.db", payload_hook=AesGcm({"k1": bytes(range(32))}))

    @app.step(retry=RetryPolicy(max_attempts=None))
    def charge(customer: str) -> str:
        raise KeyError(customer)

    @app.workflow
    async def bill() -> str:
        return await charge("customer_id")

    @app.workflow
    async def parent() -> str:
        return await tether.call(bill)

    async with TestEnv(app, stuck_attempts=10) as env:
        handle = await env.start(parent)
        with pytest.raises(RunSpinning, match=(
                r"^run '.*' \(bill\) makes no progress: its step 'charge' failed \d+ "
                r"attempts in a row, the last with KeyError: 'customer_id', .* \(the wait is "
                rf"on run '{handle.run_id}' \(parent\), which waits for it\)")):
            await handle.result(timeout=40)
        [child] = [r for r in await env.app.list_runs() if r.workflow == "bill"]
        raw = await env.app.store.journal_read(child.run_id)
        assert "customer_id" not in (raw[0].error or "")  # (stored encrypted)
        await env.app.cancel(handle.run_id)
        await env.settle()


def _beside_app() -> tuple[App, dict[str, Any]]:
    """A run that waits for a signal without a timeout (``approval``), a run that spins
    beside it (``bill``: a step retried for ever that always fails), and runs that send
    the signal, after a sleep, a step that fails a few times, or one the test fixes."""
    app = App("sqlite:///never-opened.db")
    state: dict[str, Any] = {"fixed": False, "fails": 0}

    @app.step(retry=RetryPolicy(max_attempts=None))
    def charge(customer: str) -> str:
        raise KeyError(customer)

    @app.step(retry=RetryPolicy(initial_interval=60, max_attempts=None))
    def fails_five_times() -> str:
        state["fails"] += 1
        if state["fails"] <= 5:
            raise ConnectionError("flaky")
        return "recovered"

    @app.step(retry=RetryPolicy(initial_interval=1, max_interval=1, max_attempts=None))
    def until_fixed() -> str:
        if not state["fixed"]:
            raise ConnectionError("the provider is down")
        return "fixed"

    @app.step
    async def tell(run_id: str, answer: str) -> None:
        await state["env"].app.signal(run_id, "decision", answer)

    @app.workflow
    async def bill() -> str:
        return await charge("customer_id")

    @app.workflow
    async def approval() -> Any:
        return await tether.wait_for_signal("decision")

    @app.workflow
    async def sleeper(run_id: str, seconds: float) -> None:
        await tether.sleep(seconds)
        await tell(run_id, f"after {seconds:g} s")

    @app.workflow
    async def flaky(run_id: str) -> None:
        await tell(run_id, await fails_five_times())

    @app.workflow
    async def patient(run_id: str) -> None:
        await tell(run_id, await until_fixed())

    return app, {"bill": bill, "approval": approval, "sleeper": sleeper, "flaky": flaky,
                 "patient": patient, "state": state}


@pytest.mark.timeout(150)
async def test_a_run_that_only_spins_beside_a_wait_does_not_hold_off_run_stuck(
        store_url: str) -> None:
    """A wait on a run waiting for a signal nothing sends, while another run spins
    beside it (a step retried for ever, always failing, each backoff skipped): the
    spinning run is no progress for the wait, which raises ``RunStuck`` once that run
    has failed ``stuck_attempts`` attempts in a row and the environment has been still
    but for it for ``stuck_after``, naming both. Before, the spinning run's retries
    kept the environment from ever being still: a wait without a timeout hung for
    ever, one with a timeout waited it out."""
    app, wf = _beside_app()
    async with TestEnv(app, store_url=store_url, start_time=0.0, stuck_after=0.3,
                       stuck_attempts=20) as env:
        spinner = await env.app.start(wf["bill"])
        handle = await env.app.start(wf["approval"])
        with pytest.raises(RunStuck, match=(
                rf"^run '{handle.run_id}' \(approval\) can never end: for 0\.3 s of real "
                r"time no run was running or due, no timer, retry or schedule was pending "
                rf"but those of runs that only spin \(run '{spinner.run_id}' \(bill\) "
                r"retrying step 'charge', which failed \d+ attempts in a row; "
                r"TestEnv\(stuck_attempts=\.\.\.\)\) and the test did nothing but wait on "
                r"the environment; .*\(bill\) retries step 'charge'.*; run "
                rf"'{handle.run_id}' \(approval\) waits for signal 'decision', with no "
                r"timeout, and none was sent.*None waits for ever\)$")) as err:
            async with asyncio.timeout(60):  # (a regression hangs: this fails it)
                await handle.result()  # (no timeout of its own)
        assert not isinstance(err.value, RunSpinning)
        # A timed wait the same, before its timeout.
        with pytest.raises(RunStuck, match=r"\(approval\) can never end: .* but those of "
                                           r"runs that only spin .*None waits out the "
                                           r"wait's timeout, 40 s\)$") as timed:
            await env.result(handle.run_id, timeout=40)
        assert not isinstance(timed.value, RunSpinning)
        # The runs are untouched: a signal still ends the wait; the spinner spins on.
        await env.app.signal(handle.run_id, "decision", "yes")
        assert await handle.result() == "yes"
        assert (await env.app.get_run(spinner.run_id)).status != "completed"
        await env.app.cancel(spinner.run_id)
        await env.settle()


@pytest.mark.timeout(150)
async def test_runs_that_move_beside_a_spinning_run_still_end_a_wait(store_url: str) -> None:
    """Beside a run that spins (``stuck_attempts=20`` passed many times over), a wait on
    a run waiting for a signal is not cut short when something can still send it: a run
    that sleeps an hour of virtual time (60 of the spinner's retries) then signals, one
    whose step fails five times then succeeds and signals, one whose step fails until a
    task of the test fixes it once it has failed more than ``stuck_attempts`` times, and
    the test's own task signalling after a real sleep. Without the spinner, a run that
    sleeps a year then signals."""
    app, wf = _beside_app()
    async with TestEnv(app, store_url=store_url, start_time=0.0, stuck_after=0.3,
                       stuck_attempts=20) as env:
        wf["state"]["env"] = env
        waiting = await env.app.start(wf["approval"])
        await env.app.start(wf["sleeper"], waiting.run_id, 365 * DAY)
        assert await waiting.result() == f"after {365 * DAY:g} s"

        spinner = await env.app.start(wf["bill"])
        waiting = await env.app.start(wf["approval"])
        await env.app.start(wf["sleeper"], waiting.run_id, 3600.0)
        assert await waiting.result() == "after 3600 s"

        waiting = await env.app.start(wf["approval"])
        await env.app.start(wf["flaky"], waiting.run_id)
        assert await waiting.result() == "recovered"
        assert wf["state"]["fails"] == 6

        async def fix_later(run_id: str) -> None:
            # (the step fails meanwhile, every virtual second: the test's task, busy
            # with its own sleeps and reads, holds RunSpinning off until it fixes it.
            # Fixed once it failed more than stuck_attempts times, not after a real
            # second: on a loaded machine a second held 11 attempts)
            while not any(e["attempts"] > 20 for e in (await env.app.get_run(run_id)).journal
                          if e["kind"] == "step"):
                await asyncio.sleep(0.05)
            wf["state"]["fixed"] = True

        waiting = await env.app.start(wf["approval"])
        patient = await env.app.start(wf["patient"], waiting.run_id)
        assert await asyncio.gather(waiting.result(), fix_later(patient.run_id)) == [
            "fixed", None]
        [entry, _] = (await env.app.get_run(patient.run_id)).journal
        assert entry["attempts"] > 20  # (it did fail more than stuck_attempts times)

        async def signal_later(run_id: str) -> None:
            await asyncio.sleep(1.0)
            await env.app.signal(run_id, "decision", "from the test")

        waiting = await env.app.start(wf["approval"])
        assert await asyncio.gather(waiting.result(), signal_later(waiting.run_id)) == [
            "from the test", None]
        [bill] = (await env.app.get_run(spinner.run_id)).journal
        assert bill["attempts"] > 20  # (it spun all along)
        await env.app.cancel(spinner.run_id)
        await env.settle()


@pytest.mark.postgres
async def test_environments_open_at_once_on_one_database_keep_to_their_own_runs(
        pg_url: str) -> None:
    """Several ``TestEnv(fresh_schema=True)`` open at the same time on one PostgreSQL
    database, in one process: each runs, signals and advances only its own runs (the
    same workflows, the same virtual start time), none sees or wakes another's, and
    each drops its schema. The guide said one database per process, untested."""
    from tests.testing import shared_db_apps

    count = 3
    barrier = asyncio.Barrier(count)

    async def together() -> None:
        await barrier.wait()

    schemas = await asyncio.gather(*(shared_db_apps.scenario(pg_url, f"env {i}", together)
                                     for i in range(count)))
    assert len(set(schemas)) == count
    assert await shared_db_apps.schemas(pg_url) == 0


async def test_reading_an_ended_runs_result_moves_no_clock(store_url: str) -> None:
    """Awaiting the result of a run that has ended skips nothing, also when the wait
    ends while the skip loop reads the store: the loop then found no wait left, took
    that for a wait not over and jumped the clock to another run's wake-up. On
    PostgreSQL, whose reads gave the race its time, a run waiting a day for a signal
    beside it timed out before the test sent the signal."""
    from tests.testing.shared_db_apps import DAY as ONE_DAY
    from tests.testing.shared_db_apps import app, nap, order

    async with TestEnv(app, store_url=store_url, start_time=0.0) as env:
        waiting = await env.start(order, "x")
        napping = await env.start(nap, 3)
        await env.advance(ONE_DAY)
        for _ in range(5):
            assert await napping.result() == 3 * 3600
            assert env.now() == ONE_DAY
        await env.app.signal(waiting.run_id, "note", "in time")
        assert await waiting.result() == {"tag": "x", "note": "in time", "took": ONE_DAY}


async def test_environments_closed_out_of_order_leave_no_variable_behind(
        tmp_path: Path) -> None:
    """Two environments open at once (each on a store of its own) set the process's
    ``OPENAI_BASE_URL`` and keys in turn; closed in the order they were opened, the
    variables hold the still-open one's server, then what was there before. Each
    restoring what it found put the first one's closed server's URL back for good."""
    from tests.testing.shared_db_apps import app as shared_app

    before = {var: os.environ.get(var) for var in
              ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY")}
    first = TestEnv(shared_app, store_url=f"sqlite:///{tmp_path / 'a.db'}")
    second = TestEnv(shared_app, store_url=f"sqlite:///{tmp_path / 'b.db'}")
    await first.__aenter__()
    try:
        await second.__aenter__()
        try:
            assert os.environ["OPENAI_BASE_URL"] == second.llm.base_url
        finally:
            await first.__aexit__(None, None, None)
        assert os.environ["OPENAI_BASE_URL"] == second.llm.base_url
        assert os.environ["OPENAI_API_KEY"]
    finally:
        await second.__aexit__(None, None, None)
    assert {var: os.environ.get(var) for var in before} == before


async def test_run_refuses_a_start_keyword_that_names_a_parameter_of_the_workflow() -> None:
    """``env.run(lint, "a", check_args=True)`` returned "a False": ``App.start`` took
    the keyword as its own. It is refused naming the parameter; positionally it is the
    workflow's."""
    app = App("sqlite:///never-opened.db")

    @app.workflow
    async def lint(path: str, check_args: bool = False) -> str:
        return f"{path} {check_args}"

    async with TestEnv(app) as env:
        with pytest.raises(tether.WorkflowArgumentError, match="parameter 'check_args'"):
            await env.run(lint, "a", check_args=True)
        with pytest.raises(tether.WorkflowArgumentError, match="parameter 'check_args'"):
            await env.start("lint", "a", check_args=True)
        assert await env.run(lint, "a", True) == "a True"
