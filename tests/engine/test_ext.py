"""tether.ext: the extension interface integrations build on."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App, ConfigError, OutsideRun, RetryPolicy, ext


async def test_a_step_built_at_call_time_runs_once_and_replays(app: App) -> None:
    """ext.step journals a closure's outcome under its name; replay (here: a workflow
    re-run after a later step failed its first attempt) does not call it again."""
    calls: list[str] = []
    flaky: list[int] = []

    async def fetch_body(key: str, *, suffix: str) -> str:
        calls.append(key)
        return key + suffix

    @app.step(retry=RetryPolicy(initial_interval=0.01, max_attempts=2))
    async def second() -> int:
        flaky.append(1)
        if len(flaky) == 1:
            raise RuntimeError("first attempt fails")
        return len(flaky)

    @app.workflow
    async def wf() -> list[Any]:
        a = await ext.step("integration:fetch", fetch_body, "k", suffix="!")
        return [a, await second()]

    async with app.worker():
        assert await (await app.start(wf, run_id="s")).result(timeout=10) == ["k!", 2]
    assert calls == ["k"]
    (entry, _) = (await app.get_run("s")).journal
    assert (entry["kind"], entry["name"], entry["args"]) == (
        "step", "integration:fetch", [["k"], {"suffix": "!"}])


async def test_on_replay_metrics_count_once_when_the_result_comes_from_the_journal(
        app: App) -> None:
    """on_replay's metrics are added when a recorded result is returned, not when run."""
    @app.workflow
    async def wf() -> int:
        value = await ext.step("calc", lambda: 21, on_replay=lambda v: {"saved": v})
        await tether.wait_for_signal("go")
        return int(value) * 2

    async with app.worker(sticky_wait=0.0):
        handle = await app.start(wf, run_id="m")
        await wait_for(lambda: status_is(app, "m", "waiting"))
        await app.signal("m", "go")
        assert await handle.result(timeout=10) == 42
    assert (await app.get_run("m")).metrics.get("saved") == 21.0


async def test_run_identity_memory_metrics_and_events(app: App) -> None:
    """current_run() names the run; memory() is per execution; add_metrics persists;
    publish() reaches App.events."""
    seen: dict[str, Any] = {}

    @app.workflow
    async def wf() -> int:
        run = ext.current_run()
        assert run is not None and ext.in_workflow()
        seen["run"] = (run.run_id, run.workflow)
        counter = run.memory("counter", lambda: [0])
        counter[0] += 1
        assert run.memory("counter", lambda: [99]) is counter
        run.add_metrics({"widgets": 3})
        # Events are live only: publish until the test says it has seen one.
        while await run.shared.kv_get(key="ext.seen") is None:
            await run.publish({"type": "hello"})
            await asyncio.sleep(0.01)

        async def body() -> bool:
            inner = ext.current_step()
            return inner is not None and not ext.in_workflow() and inner.key == "e:0"

        return int(await ext.step("inside", body))

    async with app.worker():
        await app.start(wf, run_id="e")
        async for event in app.events("e"):
            assert json.loads(event) == {"type": "hello"}
            break
        await (await ext.shared_state(app)).kv_cas(key="ext.seen", value="1", version=None, now=0.0)
        assert await app.handle("e").result(timeout=10) == 1
    assert seen["run"] == ("e", "wf")
    assert (await app.get_run("e")).metrics["widgets"] == 3.0


async def test_outside_a_run_ext_step_is_a_plain_call_and_identity_is_none() -> None:
    """Outside workflows: ext.step calls the function, current_run() is None, and
    add_metrics says where it belongs."""
    assert ext.current_run() is None and ext.current_step() is None
    assert not ext.in_workflow()
    assert await ext.step("x", lambda a: a + 1, 1) == 2

    async def double(a: int) -> int:
        return a * 2

    assert await ext.step("y", double, 4) == 8
    with pytest.raises(OutsideRun, match="inside a workflow or step"):
        ext.add_metrics({"n": 1})


def test_bad_arguments_to_ext_step_are_config_errors() -> None:
    """An empty name or a non-callable body is refused with a one-line ConfigError."""
    with pytest.raises(ConfigError, match="non-empty operation name"):
        ext.step("", lambda: 1)
    with pytest.raises(ConfigError, match="needs a function"):
        ext.step("n", 42)  # type: ignore[arg-type]


async def test_shared_state_is_shared_through_the_store(app: App) -> None:
    """shared_state(app) is the store's kv: a value set there is seen by a run."""
    shared = await ext.shared_state(app)
    assert await shared.kv_cas(key="ext.test", value="v1", version=None, now=0.0)

    @app.workflow
    async def wf() -> str | None:
        run = ext.current_run()
        assert run is not None
        got = await run.shared.kv_get(key="ext.test")
        return None if got is None else got[0]

    async with app.worker():
        assert await (await app.start(wf)).result(timeout=10) == "v1"


async def test_a_plain_function_returning_a_coroutine_fails_at_once_saying_so(
        app: App) -> None:
    """``ext.step(name, lambda: search(q))``: the lambda is a plain function, run in a
    thread, and returns a coroutine nothing awaits. The step fails at once (not retried)
    with a message that says to pass an ``async def`` (it failed with "value of type
    coroutine is not JSON-serializable", after its retries, with a never-awaited
    coroutine warning)."""
    async def search(q: str) -> str:
        return q

    @app.workflow
    async def wf() -> str:
        return str(await ext.step("integration:search", lambda: search("x"),
                                  retry=RetryPolicy(initial_interval=0.01, max_attempts=3)))

    async with app.worker():
        with pytest.raises(tether.RunFailed) as failed:
            await (await app.start(wf, run_id="c")).result(timeout=10)
    error = failed.value.error or {}
    assert "returned coroutine, which nothing awaits" in str(error.get("message")), error
    info = await app.get_run("c")
    assert [e["attempts"] for e in info.journal] == [1]


async def test_a_metric_that_is_not_a_finite_number_fails_the_step_not_the_worker(
        app: App) -> None:
    """``add_metrics({"cost.usd": nan})`` was accepted, and the store refused the run's
    metrics only when the step's entry was written: that counted as a worker crash, so
    the step's body ran again, 5 times in all, and the run failed with "the worker
    crashed 5 times". Now the call raises ValueError in the step, an ordinary step
    failure (retried by its policy), and the run's metrics stay writable."""
    values: dict[str, object] = {"nan": float("nan"), "inf": float("-inf"), "text": "many",
                                 "bool": True, "fine": 0.25}
    executed: list[str] = []

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def paid(name: str) -> int:
        executed.append(name)
        ext.add_metrics({"tokens.input": 5, "cost.usd": values[name]})  # type: ignore[dict-item]
        return 1

    @app.workflow
    async def wf() -> list[str]:
        outcomes = []
        for name in ("nan", "inf", "text", "bool"):
            try:
                await paid(name)
                outcomes.append("ok")
            except Exception as exc:
                outcomes.append(str(exc))
        await paid("fine")
        return outcomes

    async with app.worker():
        outcomes = await (await app.start(wf, run_id="nan")).result(timeout=20)
    assert all("ValueError: tether.ext.add_metrics(): metric 'cost.usd' must be a finite "
               "number" in o for o in outcomes), outcomes
    assert executed == ["nan", "inf", "text", "bool", "fine"]  # each attempt once
    assert (await app.get_run("nan")).metrics == {"tokens.input": 5.0, "cost.usd": 0.25}


async def test_set_metrics_sets_a_state_that_replay_sets_again(app: App) -> None:
    """``Run.set_metrics`` sets values (``None`` removes one), where ``add_metrics`` adds:
    workflow code that sets them again on every replay (after each release) leaves them
    as the last set, not summed; a key that starts with ``_`` is stored but left out of
    ``App.get_run``'s metrics (how ``tether.ai`` keeps a budget's limits); a value that
    is not a finite number raises ValueError naming ``set_metrics``, setting nothing."""
    @app.workflow
    async def wf() -> str:
        run = ext.current_run()
        assert run is not None
        run.set_metrics({"_limit": 5, "shown": 2, "gone": 1})
        await tether.sleep(0.01)  # (released: the code above runs again on replay)
        run.set_metrics({"_limit": 5, "shown": 2, "gone": None})
        try:
            run.set_metrics({"shown": math.nan})
        except ValueError as exc:
            return str(exc)
        return "ok"

    async with app.worker(poll_interval=0.05):
        outcome = await (await app.start(wf, run_id="set")).result(timeout=20)
    assert outcome == ("tether.ext.Run.set_metrics(): metric 'shown' must be a finite "
                       "number, got nan"), outcome
    assert (await app.get_run("set")).metrics == {"shown": 2.0}
    record = await app.store.run_get("set")
    assert record is not None and record.metrics == {"_limit": 5.0, "shown": 2.0}, \
        record.metrics


async def test_a_metric_name_with_a_nul_character_fails_the_step(app: App) -> None:
    """A metric named with a NUL character was stored: PostgreSQL keeps the run's
    metrics as JSON text, and its json and jsonb casts refuse "\\u0000", so every read
    that sums metrics in the store (a parent's run page, summing its children) failed on
    that run. Now ``add_metrics`` raises ValueError in the step (nothing added) and the
    store refuses such metrics too."""
    from tether.errors import StoreError
    from tether.store._values import check_metrics

    @app.step(retry=RetryPolicy(max_attempts=1))
    async def paid(name: str) -> int:
        ext.add_metrics({"tokens.input": 5, name: 1.0})
        return 1

    @app.workflow
    async def wf() -> str:
        try:
            await paid("cost\x00usd")
        except Exception as exc:
            return str(exc)
        return "ok"

    async with app.worker():
        outcome = await (await app.start(wf, run_id="nul")).result(timeout=20)
    assert "ValueError: tether.ext.add_metrics(): a metric's name must be text without " \
        "NUL characters" in outcome, outcome
    assert (await app.get_run("nul")).metrics == {}
    with pytest.raises(StoreError, match="holds a NUL character"):
        check_metrics("r", '{"a\\u0000b": 1}')


async def test_start_child_hands_down_what_the_child_reads_in_every_execution(
        app: App) -> None:
    """ext.start_child(inherit=) stores the mapping with the child's input: the child's
    ext.Run.inherited gives it in each execution (here: the first, and the replay
    after its signal wait released it), the workflow's arguments never see it, and a
    run started otherwise inherits nothing. The history's replay check gets it too."""
    from tether.testing import export_history, replay

    seen: list[dict[str, Any]] = []

    @app.workflow
    async def child(label: str, *, times: int = 1) -> str:
        run = ext.current_run()
        assert run is not None
        seen.append(dict(run.inherited))
        if run.inherited.get("demo.mode") == "wait":
            await tether.wait_for_signal("go")
        return label * times

    @app.workflow
    async def parent() -> str:
        handle = await ext.start_child(child, ["ab"], {"times": 2},
                                       inherit={"demo.mode": "wait"})
        return str(await handle.result())

    async with app.worker():
        await app.start(parent, run_id="p")
        await wait_for(lambda: status_is(app, "p.0", "waiting"), timeout=10)
        await app.signal("p.0", "go")
        assert await app.handle("p").result(timeout=10) == "abab"
        assert await (await app.start(child, "c", run_id="alone")).result(timeout=10) == "c"
        info = await app.get_run("p.0")
        history = await export_history(app, "p.0")
    assert seen == [{"demo.mode": "wait"}, {"demo.mode": "wait"}, {}]
    assert info.input == {"args": ["ab"], "kwargs": {"times": 2},
                          "ext": {"demo.mode": "wait"}}
    [checked] = await replay(app, history)
    assert checked.compatible and checked.replayed == 1, checked.message


async def test_what_a_run_inherited_is_read_only_all_the_way_down_and_encodes(
        app: App) -> None:
    """ext.Run.inherited is read-only at every depth: its nested objects and arrays
    cannot be changed either (until 2026-12-07 only the outer mapping was read-only,
    and a change to a nested dict or list was seen by every later read of that
    execution). It encodes as JSON as it is: handed down again with start_child's
    ``inherit``, given to a step, returned as a result."""
    refused: list[str] = []
    shared = {"limits": [1, {"deep": [2]}], "opts": {"mode": "wait"}}

    @app.step
    async def echo(value: Any) -> Any:
        return value

    @app.workflow
    async def grandchild() -> Any:
        run = ext.current_run()
        assert run is not None
        return dict(run.inherited)

    @app.workflow
    async def child() -> Any:
        run = ext.current_run()
        assert run is not None
        refused.clear()  # (of this execution: its replay does the same again)
        got = run.inherited["demo"]
        for change in (lambda: got["opts"].__setitem__("mode", "go"),
                       lambda: got["opts"].pop("mode"),
                       lambda: got["limits"].append(3),
                       lambda: got["limits"][1]["deep"].append(3),
                       lambda: got["limits"][1].__setitem__("deep", [])):
            try:
                change()
            except (TypeError, AttributeError) as exc:
                refused.append(type(exc).__name__)
        assert run.inherited["demo"] == got
        echoed = await echo(run.inherited["demo"])
        handle = await ext.start_child(grandchild, inherit=run.inherited)
        return [echoed, await handle.result()]

    @app.workflow
    async def parent() -> Any:
        handle = await ext.start_child(child, inherit={"demo": shared})
        return await handle.result()

    async with app.worker():
        result = await (await app.start(parent, run_id="p")).result(timeout=10)
    assert len(refused) == 5
    assert result == [shared, {"demo": shared}]
    [grand] = await app.store.run_search(parent="p.0")
    assert (await app.get_run(grand.run_id)).input["ext"] == {"demo": shared}


def test_a_workflow_defined_again_by_the_same_def_is_refused_saying_what_to_do() -> None:
    """A workflow defined inside a test function and registered on an App of the module
    is registered again on the test's second run (parametrized, rerun). Until 2026-12-06
    the refusal said only "already registered", nor which definition held the name."""
    app = tether.App("sqlite:///never-opened.db")

    def define() -> None:
        @app.workflow
        async def take_note(text: str) -> str:
            return text

    define()
    with pytest.raises(ConfigError, match=(
            r"'take_note' is already registered, by this same definition \(.*define\."
            r"<locals>\.take_note\) run before.*the `app` fixture")):
        define()

    async def take_note(text: str) -> str:  # another definition of the same name
        return text

    with pytest.raises(ConfigError, match=r"already registered \(.*define\.<locals>\."
                                          r"take_note\); give this one another name"):
        app.workflow(take_note)


async def test_metrics_added_in_workflow_code_count_once_whatever_the_replays() -> None:
    """Workflow code runs again from the top after every release; until 2026-12-06 what
    it added to the run's metrics was added again by each replay (5 tokens counted as 15
    by a run that slept and waited for its child). A step's body still counts each of
    its attempts."""
    from tether.testing import TestEnv

    app = App("sqlite:///never-opened.db")
    attempts: list[int] = []

    @app.step(retry=RetryPolicy(initial_interval=60, max_attempts=3))
    def flaky() -> str:
        attempts.append(1)
        ext.add_metrics({"step.attempts": 1})
        if len(attempts) < 2:
            raise ConnectionError("down")
        return "ok"

    @app.workflow
    async def child() -> str:
        return "child"

    @app.workflow
    async def flow() -> str:
        ext.add_metrics({"tokens": 5})
        await tether.sleep(10)
        ext.current_run().add_metrics({"tokens": 1})  # type: ignore[union-attr]
        handle = await tether.start_child(child)
        await handle.result()
        ext.add_metrics({"tokens": 2})
        return await flaky()

    async with TestEnv(app) as env:
        handle = await env.start(flow)
        assert await handle.result() == "ok"
        metrics = (await env.app.get_run(handle.run_id)).metrics
    assert metrics["tokens"] == 8.0
    assert metrics["step.attempts"] == 2.0


async def test_an_event_over_the_limit_once_encoded_says_both_sizes() -> None:
    """An event is limited to 64 KiB as stored: with a payload hook, once encoded.
    Until 2026-12-06 an event of 60,000 bytes of JSON was refused as "payload of 80,xxx
    bytes", a size its publisher never made. Without a hook: 65,536 bytes pass, one more
    is refused."""
    import os

    from tether.encryption import AesGcm
    from tether.errors import PayloadTooLarge
    from tether.testing import TestEnv

    def events_app(**options: Any) -> tuple[App, Any]:
        app = App("sqlite:///never-opened.db", **options)

        @app.workflow
        async def publish(size: int) -> str:
            async def emit(n: int) -> None:
                run = ext.current_run()
                assert run is not None
                await run.publish({"t": "x" * (n - len(json.dumps({"t": ""})))})

            try:
                await ext.step("emit", emit, size, retry=RetryPolicy(max_attempts=1))
            except PayloadTooLarge as exc:
                return str(exc)
            return "sent"

        return app, publish

    plain, publish = events_app()
    async with TestEnv(plain) as env:
        assert await env.run(publish, 64 * 1024) == "sent"
        refused = await env.run(publish, 64 * 1024 + 1)
        assert "payload of 65537 bytes exceeds the limit of 65536 bytes" in refused
        assert "bytes of JSON" not in refused
    sealed, publish = events_app(payload_hook=AesGcm({"k1": os.urandom(32)}))
    async with TestEnv(sealed) as env:
        refused = await env.run(publish, 60_000)
        assert "(60,000 bytes of JSON, " in refused, refused
        assert "once encoded by the app's payload hook, which the limit counts)" in refused
        assert "exceeds the limit of 65536 bytes" in refused


def test_a_step_of_a_name_another_function_holds_is_refused() -> None:
    """The journal records a step by its name: until 2026-12-06 a second ``@app.step``
    of one name replaced the first silently, and replay returned one's recorded result
    to the other. The same function decorated again, the same ``def`` run again (a step
    made by a function at each call, as tether.ai's tool steps) and a workflow of the
    step's name are still taken."""
    app = tether.App("sqlite:///never-opened.db")

    @app.step
    async def fetch(url: str) -> str:
        return url

    app.step(fetch.__wrapped__)  # type: ignore[attr-defined]

    def made() -> None:
        @app.step(name="made")
        async def body() -> None:
            return None

    made()
    made()

    @app.workflow(name="fetch")
    async def fetch_flow() -> None:
        return None

    async def other(url: str) -> str:
        return url * 2

    with pytest.raises(ConfigError, match=(
            r"a step named 'fetch' is already registered \(.*\.fetch\); give this one "
            r"another name \(@app\.step\(name=\.\.\.\)\)")):
        app.step(name="fetch")(other)
    def fetch_again() -> None:
        @app.step
        def fetch(url: str) -> str:  # a plain def of the same name, elsewhere
            return url

    with pytest.raises(ConfigError, match=r"a step named 'fetch' is already registered"):
        fetch_again()
