"""Concurrency inside a workflow: operations gathered, raced and cancelled by workflow
code replay as they ran (docs/concepts.md, "Concurrency in a workflow")."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App
from tether._clock import SystemClock
from tether.testing import export_history, replay


async def test_gathered_calls_of_children_replay_whichever_child_ends_first(
        store_url: str) -> None:
    """``tether.call`` is a start and a wait: both positions are taken when it is called.
    Before, the wait took its position when the start returned, so the live run recorded
    a's start, b's start, then the waits, while a replay (which answers a's start at once)
    asked for a's wait at b's start's position: the parent was blocked at its first
    replay, however its children ended."""
    app = App(store_url)

    @app.workflow
    async def held(x: int) -> int:
        await tether.wait_for_signal("go")
        return x * 10

    @app.workflow
    async def quick(x: int) -> int:
        return x * 100

    @app.workflow
    async def parent() -> list[int]:
        return list(await asyncio.gather(tether.call(held, 1), tether.call(quick, 2)))

    async with app.worker():
        handle = await app.start(parent, run_id="p")
        # The second child ends first; the parent is released waiting for the first.
        await wait_for(lambda: status_is(app, "p.0", "waiting"), timeout=30)
        await wait_for(lambda: status_is(app, "p", "waiting"), timeout=30)
        await app.signal("p.0", "go")
        assert await handle.result(timeout=30) == [10, 200]
    info = await app.get_run("p")
    assert [(e["kind"], e["position"]) for e in info.journal] == [
        ("child_start", 0), ("child_result", 1), ("child_start", 2), ("child_result", 3)]
    await app.close()


async def _until_waiting_then_go(app: App, run_id: str) -> None:
    await wait_for(lambda: status_is(app, run_id, "waiting"), timeout=30)
    await app.signal(run_id, "go")


async def test_a_step_the_workflow_cancels_is_journaled_and_not_run_again(
        store_url: str) -> None:
    """The loser of ``asyncio.wait(FIRST_COMPLETED)``, a step under ``asyncio.wait_for``
    that times out and a ``TaskGroup`` member whose sibling failed: each was cancelled by
    the workflow's code. Before, nothing was journaled for them, and every replay (here:
    after the run was released for a signal) ran them again for real."""
    app = App(store_url)
    starts: dict[str, int] = {}

    @app.step
    async def hold(tag: str) -> str:
        starts[tag] = starts.get(tag, 0) + 1
        await asyncio.Event().wait()  # never ends by itself
        return tag

    @app.step
    async def quick() -> str:
        return "quick"

    @app.step(retry=tether.RetryPolicy(max_attempts=1))
    async def fail() -> None:
        raise ValueError("no")

    @app.workflow
    async def race() -> list[str]:
        slow = asyncio.ensure_future(hold("race"))
        fast = asyncio.ensure_future(quick())
        done, pending = await asyncio.wait({slow, fast}, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        outcome = [t.result() for t in done]
        await tether.wait_for_signal("go")
        return outcome

    @app.workflow
    async def timed() -> str:
        try:
            await asyncio.wait_for(hold("timed"), 0.2)
            outcome = "ended"
        except TimeoutError:
            outcome = "timed out"
        await tether.wait_for_signal("go")
        return outcome

    @app.workflow
    async def group() -> list[str]:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(hold("group"))
                tg.create_task(fail())
            outcome = ["none"]
        except* ValueError as eg:
            outcome = [type(e).__name__ for e in eg.exceptions]
        await tether.wait_for_signal("go")
        return outcome

    async with app.worker():
        handles = [await app.start(wf, run_id=wf.__name__) for wf in (race, timed, group)]
        for h in handles:
            await _until_waiting_then_go(app, h.run_id)
        outcomes = [await h.result(timeout=30) for h in handles]
    assert outcomes == [["quick"], "timed out", ["StepError[ValueError]"]]
    assert starts == {"race": 1, "timed": 1, "group": 1}  # not again at the replay
    for run_id in ("race", "timed", "group"):
        first = (await app.get_run(run_id)).journal[0]
        assert (first["kind"], first["name"], first["status"]) == ("step", "hold", "error")
        assert first["error"]["type"] == "asyncio.CancelledError"
    await app.close()


async def test_a_cancelled_error_raised_by_a_steps_own_code_is_a_failed_attempt(
        store_url: str) -> None:
    """A step (async, or a plain def in a thread) whose code raises CancelledError
    though nobody cancelled it fails an attempt like any error. Before, the error ended
    the run's task as if the worker were stopping: the run stayed 'running' under the
    live worker's lease with nothing executing it."""
    app = App(store_url)
    calls: list[str] = []

    @app.step(retry=tether.RetryPolicy(max_attempts=2, initial_interval=0.01))
    async def leaks() -> str:
        calls.append("async")
        raise asyncio.CancelledError()

    @app.step(retry=tether.RetryPolicy(max_attempts=2, initial_interval=0.01))
    def leaks_in_a_thread() -> str:
        calls.append("thread")
        raise asyncio.CancelledError()

    @app.workflow
    async def wf() -> list[str]:
        caught = []
        for step in (leaks, leaks_in_a_thread):
            try:
                await step()
            except tether.StepError as exc:
                caught.append(exc.error_type)
        return caught

    async with app.worker():
        h = await app.start(wf, run_id="own")
        assert await h.result(timeout=30) == ["asyncio.exceptions.CancelledError"] * 2
    assert calls == ["async", "async", "thread", "thread"]
    await app.close()


# -- branches of several operations each ----------------------------------------------------
#
# Live, a branch takes its next position when its previous result arrives; the run's
# results arrive in the order they completed. A replay delivers recorded results in that
# order too (finished_at, position), one at a time, the run's tasks settling between.
# Each test forces the live completion order with events (not sleeps), then replays.


async def test_gathered_branches_of_two_steps_replay_in_their_live_order(
        store_url: str) -> None:
    """Branch 2 finishes both its steps before branch 1's first step ends. Before, the
    replay after the release answered branch 1's second step with branch 2's first
    entry (same step name): the run completed with [2, 10] instead of [10, 20]."""
    app = App(store_url)
    b2_done = asyncio.Event()
    runs: list[int] = []

    @app.step
    async def work(x: int) -> int:
        runs.append(x)
        if x == 1:
            await b2_done.wait()
        if x == 20:
            b2_done.set()
        return x

    async def branch(i: int) -> int:
        a = await work(i)
        return await work(a * 10)

    @app.workflow
    async def wf() -> list[int]:
        out = list(await asyncio.gather(branch(1), branch(2)))
        await tether.wait_for_signal("go")  # released: the rest is a replay
        return out

    async with app.worker():
        h = await app.start(wf, run_id="two")
        await _until_waiting_then_go(app, "two")
        assert await h.result(timeout=30) == [10, 20]
    assert sorted(runs) == [1, 2, 10, 20]  # each step ran once
    info = await app.get_run("two")
    assert [(e["position"], e["args"]) for e in info.journal if e["kind"] == "step"] == [
        (0, [1]), (1, [2]), (2, [20]), (3, [10])]
    await app.close()


class _Baton:
    """Lets steps finish in a fixed order: the step holding ``order[k]`` finishes k-th
    (it waits until the one before it has finished)."""

    def __init__(self, order: list[str]) -> None:
        self.order = order
        self.at = 0
        self.events: dict[str, asyncio.Event] = {}
        self.finished: list[str] = []

    def _event(self, key: str) -> asyncio.Event:
        return self.events.setdefault(key, asyncio.Event())

    async def hold(self, key: str) -> None:
        if self.order[self.at] != key:
            await self._event(key).wait()
        self.finished.append(key)
        self.at += 1
        if self.at < len(self.order):
            self._event(self.order[self.at]).set()


def _interleaved(branches: int, steps: int, seed: int) -> list[str]:
    """Every branch's steps in their own order, the branches interleaved at random."""
    rng = random.Random(seed)
    left = {b: 0 for b in range(branches)}
    out = []
    while left:
        b = rng.choice(sorted(left))
        out.append(f"{b}.{left[b]}")
        left[b] += 1
        if left[b] == steps:
            del left[b]
    return out


def _branch_app(store_url: str, baton: _Baton, steps: int,
                counts: dict[str, int]) -> tuple[App, Any]:
    """A workflow gathering branches of ``steps`` differently named steps each, each
    step's result feeding the next; released for a signal after the gather."""
    app = App(store_url)
    step_fns = []
    for k in range(steps):
        async def body(b: int, prev: str, _k: int = k) -> str:
            key = f"{b}.{_k}"
            counts[key] = counts.get(key, 0) + 1
            await baton.hold(key)
            return f"{prev}>{key}"
        step_fns.append(app.step(name=f"s{k}")(body))

    async def branch(b: int) -> str:
        value = ""
        for fn in step_fns:
            value = await fn(b, value)
        return value

    @app.workflow
    async def wf(n: int) -> list[str]:
        out = list(await asyncio.gather(*(branch(b) for b in range(n))))
        await tether.wait_for_signal("go")
        return out

    return app, wf


def _expected(branches: int, steps: int) -> list[str]:
    return ["".join(f">{b}.{k}" for k in range(steps)) for b in range(branches)]


async def test_gathered_branches_of_three_differently_named_steps_replay(
        store_url: str) -> None:
    """Three branches of three steps named s0, s1, s2, finishing interleaved. Before, the
    replay asked for branch 0's second step (s1) at the position of another branch's
    first (s0): the run was blocked as non-deterministic."""
    order = ["2.0", "2.1", "0.0", "1.0", "2.2", "1.1", "0.1", "1.2", "0.2"]
    counts: dict[str, int] = {}
    app, wf = _branch_app(store_url, _Baton(order), 3, counts)
    async with app.worker():
        h = await app.start(wf, 3, run_id="three")
        await _until_waiting_then_go(app, "three")
        assert await h.result(timeout=30) == _expected(3, 3)
    assert counts == dict.fromkeys(order, 1)
    info = await app.get_run("three")
    assert [e["args"][0] for e in info.journal if e["kind"] == "step"][:3] == [0, 1, 2]
    await app.close()


async def test_a_gather_of_50_branches_of_3_steps_replays(store_url: str) -> None:
    order = _interleaved(50, 3, seed=11)
    counts: dict[str, int] = {}
    app, wf = _branch_app(store_url, _Baton(order), 3, counts)
    async with app.worker():
        h = await app.start(wf, 50, run_id="wide")
        await _until_waiting_then_go(app, "wide")
        assert await h.result(timeout=60) == _expected(50, 3)
    assert counts == dict.fromkeys(order, 1)
    await app.close()


async def test_nested_gathers_a_task_group_and_a_signal_in_a_branch_replay(
        store_url: str) -> None:
    """Nested gathers of multi-step branches; a TaskGroup whose main task performs a
    step of its own while its members run (``tg.create_task(...); await step()``); a
    branch that waits for a signal (the whole run is released) while another goes on.
    Each run is replayed in full after a final release."""
    app = App(store_url)
    baton = _Baton(["n1.a", "n0.a", "n1.b", "n0.b", "n0.c", "n1.c",   # nested
                    "g1.a", "main", "g0.a", "g1.b", "g0.b",            # task group
                    "x.a", "y.a", "y.b"])
    counts: dict[str, int] = {}

    @app.step
    async def s(key: str) -> str:
        counts[key] = counts.get(key, 0) + 1
        await baton.hold(key)
        return key

    @app.step
    async def t(key: str) -> str:  # (another name: a wrong answer blocks the run)
        counts[key] = counts.get(key, 0) + 1
        await baton.hold(key)
        return key

    async def pair(b: str) -> str:
        x, y = await asyncio.gather(s(f"{b}.a"), t(f"{b}.b"))
        return x + y + await s(f"{b}.c")

    @app.workflow
    async def nested() -> list[str]:
        out = list(await asyncio.gather(pair("n0"), pair("n1")))
        await tether.wait_for_signal("go")
        return out

    async def two(b: str) -> str:
        return await s(f"{b}.a") + await t(f"{b}.b")

    @app.workflow
    async def group() -> list[str]:
        async with asyncio.TaskGroup() as tg:
            g0 = tg.create_task(two("g0"))
            g1 = tg.create_task(two("g1"))
            mine = await t("main")
        await tether.wait_for_signal("go")
        return [g0.result(), g1.result(), mine]

    async def waits() -> str:
        a = await s("x.a")
        got = await tether.wait_for_signal("x")
        return a + str(got) + await s("x.c")

    async def goes() -> str:
        return await s("y.a") + await t("y.b")

    @app.workflow
    async def signalled() -> list[str]:
        out = list(await asyncio.gather(waits(), goes()))
        await tether.wait_for_signal("go")
        return out

    async with app.worker():
        h1 = await app.start(nested, run_id="nested")
        await _until_waiting_then_go(app, "nested")
        assert await h1.result(timeout=30) == ["n0.an0.bn0.c", "n1.an1.bn1.c"]
        h2 = await app.start(group, run_id="group")
        await _until_waiting_then_go(app, "group")
        assert await h2.result(timeout=30) == ["g0.ag0.b", "g1.ag1.b", "main"]
        baton.order += ["x.c"]
        h3 = await app.start(signalled, run_id="signalled")
        await wait_for(lambda: status_is(app, "signalled", "waiting"), timeout=30)
        await app.signal("signalled", "x", 7)
        await _until_waiting_then_go(app, "signalled")
        assert await h3.result(timeout=30) == ["x.a7x.c", "y.ay.b"]
    assert all(n == 1 for key, n in counts.items() if not key.startswith("y.")), counts
    await app.close()


async def test_a_race_of_multi_step_branches_replays(store_url: str) -> None:
    """``asyncio.wait(FIRST_COMPLETED)`` of two branches of two steps: the loser is
    cancelled in its second step (journaled as cancelled), and the replay ends the same
    way, its steps not run again."""
    app = App(store_url)
    baton = _Baton(["b.1", "a.1", "a.2"])
    counts: dict[str, int] = {}
    never = asyncio.Event()

    @app.step
    async def s(key: str) -> str:
        counts[key] = counts.get(key, 0) + 1
        if key == "b.2":
            await never.wait()
        await baton.hold(key)
        return key

    async def branch(b: str) -> str:
        return await s(f"{b}.1") + await s(f"{b}.2")

    @app.workflow
    async def race() -> list[str]:
        ta = asyncio.ensure_future(branch("a"))
        tb = asyncio.ensure_future(branch("b"))
        done, pending = await asyncio.wait({ta, tb}, return_when=asyncio.FIRST_COMPLETED)
        for p in pending:
            p.cancel()
        await tether.wait_for_signal("go")
        return [d.result() for d in done]

    async with app.worker():
        h = await app.start(race, run_id="race")
        await _until_waiting_then_go(app, "race")
        assert await h.result(timeout=30) == ["a.1a.2"]
    assert counts == {"a.1": 1, "a.2": 1, "b.1": 1, "b.2": 1}
    info = await app.get_run("race")
    assert [(e["args"][0], e["status"]) for e in info.journal if e["kind"] == "step"] == [
        ("a.1", "ok"), ("b.1", "ok"), ("b.2", "error"), ("a.2", "ok")]
    await app.close()


async def test_many_runs_of_gathered_branches_all_complete(tmp_path: Any) -> None:
    """800 runs of three gathered branches at once, on SQLite, whose writer thread hands
    results to the loop (``call_soon_threadsafe``) while a run's pump looks at the
    loop's ready queue: iterating the queue then raised "deque mutated during
    iteration" in the pump, which never ran again, and the run waited for ever (700 and
    850 runs: some never ended)."""
    app = App(f"sqlite:///{tmp_path / 'many.db'}")

    @app.step
    async def work(i: int) -> int:
        await asyncio.sleep(0.01)
        return i

    async def branch(b: int) -> int:
        return sum([await work(b * 10 + i) for i in range(3)])

    @app.workflow
    async def fan() -> list[int]:
        return list(await asyncio.gather(*(branch(b) for b in range(3))))

    try:
        async with app.worker(concurrency=800):
            handles = await app.start_many(fan, [()] * 800)
            results = await asyncio.gather(*(h.result(timeout=120) for h in handles))
    finally:
        await app.close()
    assert results == [[3, 33, 63]] * 800


async def test_an_error_in_ordered_delivery_does_not_leave_the_run_waiting(
        store_url: str, monkeypatch: Any, caplog: Any) -> None:
    """Whatever goes wrong in the pump that delivers a run's results in order (it reads
    asyncio's private ready queue), the run goes on: the result is delivered as it is,
    with an error in the log, instead of the run waiting for ever."""
    from tether import _replay

    calls = [0]
    real = _replay._Settler.busy

    def flaky(self: Any) -> Any:
        calls[0] += 1
        if calls[0] % 2:
            raise RuntimeError("the ready queue changed")
        return real(self)

    monkeypatch.setattr(_replay._Settler, "busy", flaky)
    app = App(store_url)

    @app.step
    async def work(i: int) -> int:
        return i

    async def branch(b: int) -> int:
        return await work(b) + await work(b * 10)

    @app.workflow
    async def fan() -> list[int]:
        return list(await asyncio.gather(branch(1), branch(2)))

    async with app, app.worker():
        assert await (await app.start(fan)).result(timeout=30) == [11, 22]
    assert calls[0] > 0
    assert any("ordered delivery failed" in r.getMessage() for r in caplog.records)


async def test_ordered_delivery_without_a_readable_ready_queue(
        store_url: str, monkeypatch: Any) -> None:
    """On a loop whose ready queue cannot be read (uvloop), "settled" is a count of the
    loop's passes: gathered branches still get their results, in the right places."""
    from tether import _replay

    looks = [0]

    def blind(self: Any) -> None:
        looks[0] += 1
        return None

    monkeypatch.setattr(_replay._Settler, "busy", blind)
    app = App(store_url)

    @app.step
    async def work(i: int) -> int:
        return i

    async def branch(b: int) -> int:
        return await work(b) + await work(b * 10) + await work(b * 100)

    @app.workflow
    async def fan() -> list[int]:
        return list(await asyncio.gather(*(branch(b) for b in range(1, 5))))

    async with app, app.worker():
        assert await (await app.start(fan)).result(timeout=30) == [111, 222, 333, 444]
    assert looks[0] > 0



class _OffsetClock(SystemClock):
    """The machine's clock, ``offset`` seconds off: a worker whose clock is not the
    others' (a SyncedClock anchored before a step of the store's clock, an SQLite
    machine whose clock was set back)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


def _skew_app(store_url: str, offset: float, ran: list[str]) -> App:
    """Two workflows of two tasks, one waiting for the signal ``go`` while the other
    performs three steps, then both waiting for ``end`` (a replay of all after it):
    ``gathered``, the waiting one a branch (``gathered_same``: its step of the other's
    name); ``main_waits``, the waiting one the main task (its signal taken before any
    branch's position, the run not ordered yet)."""
    app = App(store_url, clock=_OffsetClock(offset))

    @app.step
    async def part(tag: str) -> str:
        ran.append(tag)
        return tag

    @app.step
    async def after(text: str) -> str:  # (another name: a wrong answer blocks the run)
        ran.append("after")
        return f"after {text}"

    async def waits() -> str:
        return await after(str(await tether.wait_for_signal("go")))

    async def waits_same() -> str:  # (a step of the other branch's name)
        return await part(str(await tether.wait_for_signal("go")))

    async def goes_on() -> list[str]:
        return [await part(f"b{i}") for i in range(3)]

    @app.workflow
    async def gathered() -> list[str]:
        a, b = await asyncio.gather(waits(), goes_on())
        await tether.wait_for_signal("end")
        return [a, *b]

    @app.workflow
    async def gathered_same() -> list[str]:
        a, b = await asyncio.gather(waits_same(), goes_on())
        await tether.wait_for_signal("end")
        return [a, *b]

    @app.workflow
    async def main_waits() -> list[str]:
        branch = asyncio.create_task(goes_on())
        a = await waits()
        out = [a, *await branch]
        await tether.wait_for_signal("end")
        return out

    return app


@pytest.mark.parametrize("workflow", ["gathered", "gathered_same", "main_waits"])
async def test_a_run_of_two_tasks_continued_by_a_worker_whose_clock_is_behind(
        store_url: str, workflow: str) -> None:
    """A task waits for a signal while the other performs its steps, on a worker whose
    clock is an hour ahead; the run, released, is continued by a worker an hour behind
    it, which replays the recorded results in the order of their completion times and
    takes the signal live. The signal's completion time must come after every recorded
    one, as it came after them. Before, it was the clock's, behind them: the worker
    delivered it before the other task's recorded steps (``gathered``: the run blocked
    at once, "non-determinism in run 'skew' at position 2: the journal recorded step
    'part', the workflow code now asks for step 'after'"), or the next replay did
    (``main_waits``: blocked at position 2 once ``end`` came, or at the replay of the
    finished run's history). Worse where the step is of the same name
    (``gathered_same``): nothing blocked, the waiting branch was answered the other's
    recorded ``part("b1")``, that one got the next, and ``part("b2")`` ran again:
    ``['b1', 'b0', 'b2', 'b2']``."""
    ran: list[str] = []
    ahead = _skew_app(store_url, 3600.0, ran)
    async with ahead.worker():
        await ahead.start(workflow, run_id="skew")
        await wait_for(lambda: status_is(ahead, "skew", "waiting"), timeout=30)
    recorded = (await ahead.get_run("skew")).journal
    await ahead.close()
    behind = _skew_app(store_url, 0.0, ran)
    async with behind.worker():
        await behind.signal("skew", "go", "now")
        await wait_for(lambda: status_is(behind, "skew", "waiting", "blocked"), timeout=30)
        await behind.signal("skew", "end", None)
        waited = "now" if workflow == "gathered_same" else "after now"
        assert await behind.handle("skew").result(timeout=30) == [waited, "b0", "b1", "b2"]
    journal = (await behind.get_run("skew")).journal
    [check] = await replay(behind, await export_history(behind, "skew"))
    await behind.close()
    assert check.compatible and check.replayed == len(journal), check.message
    assert ran == ["b0", "b1", "b2", "now" if workflow == "gathered_same" else "after"]
    old = {e["position"] for e in recorded}
    latest = max(e["finished_at"] for e in recorded if e["finished_at"] is not None)
    new = [e["finished_at"] for e in journal if e["position"] not in old]
    assert len(new) == 3 and all(t > latest for t in new), (new, latest)


def _lagging_app(store_url: str, offset: float) -> App:
    """A run that waits for ``go``, then does what compares times with the clock: a
    step that fails once (its retry 0.2 s later), a child, a signal with a timeout, a
    timer and a step of 10 ms."""
    app = App(store_url, clock=_OffsetClock(offset))

    @app.step
    async def first() -> int:
        return 1

    @app.step(retry=tether.RetryPolicy(initial_interval=0.2, max_attempts=2))
    async def flaky() -> int:
        if tether.step_attempt() == 1:
            raise TimeoutError("first attempt")
        return 2

    @app.step
    async def brief() -> int:
        await asyncio.sleep(0.01)
        return 3

    @app.workflow
    async def kid() -> str:
        return "kid"

    @app.workflow
    async def lagging() -> list[Any]:
        out: list[Any] = [await first(), await tether.wait_for_signal("go")]
        out.append(await flaky())
        out.append(await (await tether.start_child(kid)).result())
        out.append(await tether.wait_for_signal("late", timeout=600))
        await tether.sleep(0.2)
        out.append(await brief())
        return out

    return app


async def test_a_run_continued_by_a_worker_behind_its_journal_waits_by_that_workers_clock(
        store_url: str) -> None:
    """Continued by a worker an hour behind the journal's times, the run's live results
    are stamped past them (``RunContext.stamp``), but what is compared with the clock
    is on the clock: the retry comes 0.2 s later, the child is claimable at once, the
    600 s signal timeout does not expire, and a step keeps its length.
    Before (since the stamp went past the journal's times), the retry was journaled
    for an hour later ("next attempt at ... (in 3600.9 s)"), and so were the child's
    ``available_at`` and the signal's deadline (it timed out at once); a 10 ms step
    had a duration of 60.0 min in ``tether show``."""
    ahead = _lagging_app(store_url, 3600.0)
    async with ahead.worker():
        await ahead.start("lagging", run_id="lag")
        await wait_for(lambda: status_is(ahead, "lag", "waiting"), timeout=30)
    await ahead.close()
    behind = _lagging_app(store_url, 0.0)
    async with behind.worker():
        await behind.signal("lag", "go", "go")

        async def waits_for_late() -> bool:
            info = await behind.get_run("lag")
            return info.status.is_ended or (info.status.value == "waiting" and any(
                e["kind"] == "signal" and e["name"] == "late" for e in info.journal))

        await wait_for(waits_for_late, timeout=30)
        await behind.signal("lag", "late", "late")
        assert await behind.handle("lag").result(timeout=30) == [1, "go", 2, "kid", "late", 3]
        journal = (await behind.get_run("lag")).journal
    await behind.close()
    # (the length of a timer, and of a step retried in a later execution, is not kept:
    # the start is the clock's, read in an earlier execution, the end the stamp; see
    # reliability.md)
    [brief] = [e for e in journal if e["name"] == "brief"]
    assert 0 <= brief["finished_at"] - brief["started_at"] < 60, brief
