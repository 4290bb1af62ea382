"""A start's arguments are checked against its workflow's signature where the function
is known (``App.start``, ``start_many``, a child's start): a misspelt keyword or a
missing argument raises at the call, as calling the function would, and nothing is
written; a run whose journal holds a start made before is replayed as it was."""

from __future__ import annotations

from typing import Any

import pytest

import tether
from tests.engine.helpers import status_is, wait_for
from tether import App, ConfigError, RunFailed, WorkflowArgumentError, ext


def make(app: App) -> Any:
    @app.workflow
    async def greet(name: str, *, greeting: str = "hello") -> str:
        return f"{greeting} {name}"

    return greet


@pytest.mark.parametrize(
    ("args", "kwargs", "problem"),
    [
        ((), {}, "missing a required argument: 'name'"),
        (("ada",), {"greting": "hi"}, "got an unexpected keyword argument 'greting'"),
        (("ada", "bob"), {}, "too many positional arguments"),
        ((), {"name": "ada", "greeting": "hi", "extra": 1}, "unexpected keyword argument 'extra'"),
    ],
)
async def test_start_refuses_arguments_the_function_cannot_take(
    app: App, args: tuple[Any, ...], kwargs: dict[str, Any], problem: str
) -> None:
    greet = make(app)
    for workflow in (greet, "greet"):  # the function, or its name registered here
        with pytest.raises(WorkflowArgumentError, match=problem) as caught:
            await app.start(workflow, *args, run_id="r", **kwargs)
        assert isinstance(caught.value, TypeError)  # as calling greet(...) would raise
        assert isinstance(caught.value, ConfigError)
        assert caught.value.workflow == "greet"
        assert "greet(name, *, greeting='hello')" in str(caught.value)
    assert await app.list_runs() == []  # nothing was written


async def test_arguments_that_fit_start_as_before(app: App) -> None:
    greet = make(app)
    handles = [
        await app.start(greet, "ada"),
        await app.start(greet, name="bob"),
        await app.start("greet", "cy", greeting="hi"),
    ]
    async with app.worker():
        assert [await h.result(timeout=30) for h in handles] == ["hello ada", "hello bob", "hi cy"]


async def test_a_name_not_registered_here_is_not_checked(app: App) -> None:
    """A workflow of another deploy: its signature is not known here, its workers'."""
    handle = await app.start("elsewhere", 1, 2, 3, anything=True)
    assert await handle.status() == tether.RunStatus.QUEUED


async def test_start_many_refuses_an_input_that_does_not_fit_and_starts_nothing(app: App) -> None:
    greet = make(app)
    with pytest.raises(
        WorkflowArgumentError, match=r"inputs\[1\]: greet\(name, \*, greeting='hello'\): missing"
    ):
        await app.start_many(greet, [("ada",), (), ("cy",)])
    with pytest.raises(WorkflowArgumentError, match=r"inputs\[0\]: .*too many"):
        await app.start_many("greet", [("ada", "bob")])
    assert await app.list_runs() == []


async def test_a_child_started_with_arguments_its_function_cannot_take_fails_the_parent(
    app: App,
) -> None:
    """In the workflow's code, at the start: the parent can catch it, and no child run
    is created to fail on a worker."""
    greet = make(app)

    @app.workflow
    async def by_function() -> str:
        handle = await tether.start_child(greet, "ada", greting="hi")
        return handle.run_id

    @app.workflow
    async def by_name() -> str:
        return str(await tether.call("greet"))

    @app.workflow
    async def by_ext() -> str:
        try:
            await ext.start_child(greet, ("ada", "bob"))
        except TypeError as exc:
            return f"caught: {exc}"
        return "started"

    async with app.worker():
        for workflow, problem in (
            (by_function, "unexpected keyword argument 'greting'"),
            (by_name, "missing a required argument: 'name'"),
        ):
            handle = await app.start(workflow)
            with pytest.raises(RunFailed) as failed:
                await handle.result(timeout=30)
            error = failed.value.error or {}
            assert error["type"] == "tether.errors.WorkflowArgumentError"
            assert problem in error["message"]
        caught = await (await app.start(by_ext)).result(timeout=30)
        assert caught.startswith("caught: workflow 'greet' cannot take these arguments")
        assert "too many positional arguments" in caught
    assert sorted(r.workflow for r in await app.list_runs()) == [
        "by_ext",
        "by_function",
        "by_name",
    ]  # no child was created


async def test_a_child_start_the_journal_holds_is_replayed_unchecked(store_url: str) -> None:
    """A run recorded before (here: before the child's signature changed) replays its
    child's start from the journal: the check is for new starts only."""
    old = App(store_url)

    @old.workflow(name="child")
    async def child_v1(a: str, b: str) -> str:
        return a + b

    @old.workflow(name="parent")
    async def parent_v1() -> str:
        handle = await tether.start_child(child_v1, "x", "y")
        await tether.wait_for_signal("go")
        return handle.run_id

    async with old:
        async with old.worker():
            await old.start(parent_v1, run_id="p")
            await wait_for(lambda: status_is(old, "p", "waiting"), 30, what="p waits")
            assert await old.handle("p.0").result(timeout=30) == "xy"

    new = App(store_url)

    @new.workflow(name="child")
    async def child_v2(a: str) -> str:  # one argument now: the start above does not fit
        return a

    @new.workflow(name="parent")
    async def parent_v2() -> str:
        handle = await tether.start_child(child_v2, "x", "y")
        await tether.wait_for_signal("go")
        return handle.run_id

    async with new:
        async with new.worker():
            await new.signal("p", "go")
            assert await new.handle("p").result(timeout=30) == "p.0"
            fresh = await new.start(parent_v2, run_id="q")
            with pytest.raises(RunFailed, match="too many positional arguments"):
                await fresh.result(timeout=30)


async def test_a_schedule_whose_input_does_not_fit_is_refused_where_it_is_declared(
    app: App,
) -> None:
    """Each of its ticks' runs would fail on a worker with a ``TypeError``."""
    greet = make(app)
    with pytest.raises(WorkflowArgumentError, match="missing a required argument: 'name'"):
        app.schedule(greet, cron="0 9 * * *")
    with pytest.raises(WorkflowArgumentError, match="unexpected keyword argument 'greting'"):
        app.schedule(greet, cron="0 9 * * *", input={"args": ["ada"], "kwargs": {"greting": 1}})
    app.schedule(greet, cron="0 9 * * *", input=["ada"])  # (fits)
    assert list(app._schedules) == ["greet"]


async def test_continue_as_new_with_arguments_the_workflow_cannot_take_raises_there(
    app: App,
) -> None:
    """In the generation that calls it (the workflow can catch it), not in the next."""

    @app.workflow
    async def counter(n: int) -> str:
        if n == 0:
            try:
                tether.continue_as_new(1, 2)
            except TypeError as exc:
                return f"caught: {exc}"
        return "next generation"

    async with app.worker():
        caught = await (await app.start(counter, 0)).result(timeout=30)
    assert caught.startswith("caught: workflow 'counter' cannot take these arguments")
    assert "too many positional arguments" in caught


async def test_a_fork_with_an_input_the_workflow_cannot_take_is_refused(app: App) -> None:
    greet = make(app)
    async with app.worker():
        await (await app.start(greet, "ada", run_id="src")).result(timeout=30)
    for value, problem in (
        ([], "missing a required argument: 'name'"),
        ({"args": ["bob"], "kwargs": {"greting": "yo"}}, "unexpected keyword argument"),
    ):
        with pytest.raises(WorkflowArgumentError, match=problem):
            await app.fork("src", at=0, input=value, new_run_id="bad")
    assert [r.run_id for r in await app.list_runs()] == ["src"]  # nothing was written
    fork = await app.fork("src", at=0, input={"args": ["bob"], "kwargs": {"greeting": "yo"}})
    async with app.worker():
        assert await fork.result(timeout=30) == "yo bob"


async def test_check_args_false_starts_what_the_workers_code_takes(app: App,
                                                                   store_url: str) -> None:
    """A client whose ``greet`` is of an older deploy than the workers' (theirs takes a
    second argument): its check refuses the new arguments, and ``check_args=False``
    starts the run, which the workers' code completes. Before, a start by name had no
    way past the local function's signature."""
    make(app)  # (the client's greet takes one positional argument)
    with pytest.raises(WorkflowArgumentError, match="too many positional arguments"):
        await app.start("greet", "ada", "hi", run_id="g-1")
    handle = await app.start("greet", "ada", "hi", run_id="g-1", check_args=False)
    many = await app.start_many("greet", [("bob", "hey")], run_ids=["g-2"],
                                check_args=False)
    workers = App(store_url)

    @workers.workflow(name="greet")
    async def greet_v2(name: str, greeting: str) -> str:
        return f"{greeting} {name}"

    async with workers, workers.worker():
        assert await handle.result(timeout=30) == "hi ada"
        assert await many[0].result(timeout=30) == "hey bob"


async def test_a_start_keyword_naming_an_unfilled_parameter_is_refused(app: App) -> None:
    """A workflow with a parameter named as one of ``App.start``'s own keywords: the
    start took ``check_args=True`` (or ``queue=``, ``run_id=``) as its own and the run
    silently got the parameter's default ("a False"). Now that is refused, naming the
    parameter, and nothing is written; given positionally, the parameter is filled and
    the keyword is the start's."""

    @app.workflow
    async def lint(path: str, check_args: bool = False, queue: str = "q",
                   run_id: str = "-") -> str:
        return f"{path} {check_args} {queue} {run_id}"

    for keyword, value in (("check_args", True), ("queue", "fast"), ("run_id", "l-1")):
        for workflow in (lint, "lint"):
            with pytest.raises(WorkflowArgumentError, match=f"its parameter '{keyword}' "
                               "has the name of a keyword of App.start") as caught:
                await app.start(workflow, "a", **{keyword: value})
            assert caught.value.workflow == "lint"
            assert isinstance(caught.value, ConfigError)
    with pytest.raises(WorkflowArgumentError, match="'check_args'"):  # whatever its value
        await app.start(lint, "a", check_args=False)
    assert await app.list_runs() == []
    handle = await app.start(lint, "a", True, "fast", "in", run_id="l-1", queue="default",
                             check_args=True)
    assert handle.run_id == "l-1"
    async with app.worker():
        assert await handle.result(timeout=30) == "a True fast in"


async def test_start_keywords_of_a_workflow_without_such_parameters_start_as_before(
        app: App) -> None:
    greet = make(app)
    handle = await app.start(greet, "ada", run_id="g-1", queue="default", check_args=True,
                             greeting="hi")
    async with app.worker():
        assert await handle.result(timeout=30) == "hi ada"
