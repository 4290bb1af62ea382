"""Types restored from annotations resolved late; strict workflow input; children
started by name land on the queue their workers registered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

import tether
from tests.engine import fwd_app
from tether import App, RunFailed


async def test_forward_referenced_types_are_restored(store_url: str) -> None:
    app = fwd_app.make_app(store_url)
    async with app.worker():
        handle = await app.start("mirror", fwd_app.Point(3, 4))
        assert await handle.result(timeout=10) == fwd_app.Point(3, 3)
    await app.close()


@dataclass
class Pt:
    x: int
    y: int


async def test_input_that_does_not_fit_its_annotation_fails_clearly(store_url: str) -> None:
    app = App(store_url)

    @app.workflow
    async def add(p: Pt) -> int:
        return p.x + p.y

    async with app.worker():
        handle = await app.start("add", {"x": 1})
        with pytest.raises(RunFailed) as info:
            await handle.result(timeout=10)
    assert "argument 1 of workflow 'add' does not fit Pt" in str(info.value)
    assert "y" in str(info.value)
    await app.close()


async def test_child_started_by_name_goes_to_its_registered_queue(store_url: str) -> None:
    app = App(store_url)

    @app.workflow(queue="tools")
    async def tool(x: int) -> int:
        return x * 10

    @app.workflow(queue="agents")
    async def agent(x: int) -> int:
        return int(await tether.call("tool", x))

    async with app.worker(queues=["agents"]), app.worker(queues=["tools"]):
        assert await (await app.start(agent, 4, run_id="a")).result(timeout=10) == 40
    assert (await app.get_run("a.0")).queue == "tools"
    await app.close()


@dataclass
class _Where:
    city: str
    days: int


def test_misfit_judges_the_types_of_annotated_arguments() -> None:
    """``WorkflowDef.misfit`` (``tether start --app``, ``tether fork --app``, ``serve
    --app``'s start and fork) checked the number of arguments only: ``["abc"]`` for an
    ``int`` started a run that computed with a text. Now a JSON value the annotation
    cannot be is refused with where and why; what the workflow takes (an integer for a
    float, ``3.0`` for an int, anything for an unannotated or unjudged parameter) is not."""
    app = App("sqlite:///:memory:")

    @app.workflow
    async def plan(n: int, ratio: float = 1.0, tags: list[str] | None = None,
                   limits: dict[str, int] | None = None, mode: Literal["a", "b"] = "a",
                   on: bool = False, anything: object = None, free=None,  # type: ignore[no-untyped-def]
                   ) -> None:
        return None

    @app.workflow
    async def trip(where: _Where, *more: int) -> None:
        return None

    plan_def, trip_def = app.workflows()["plan"], app.workflows()["trip"]
    for fits in ([3], [3.0], [3, 2], [3, 2.5, ["a"], {"x": 1}, "b", True, {"k": [1]}, "?"],
                 [3, 1, None, None]):
        assert plan_def.misfit(fits) is None, fits
    head = ("plan(n: int, ratio: float = 1.0, tags: list[str] | None = None, limits: "
            "dict[str, int] | None = None, mode: Literal['a', 'b'] = 'a', on: bool = False, "
            "anything: object = None, free=None): ")
    for values, says in (
            (["abc"], "argument 'n' takes int, not a string: \"abc\""),
            ([3.5], "argument 'n' takes int, not a number: 3.5"),
            ([True], "argument 'n' takes int, not a boolean: true"),
            ([None], "argument 'n' takes int, not null: null"),
            ([1, "2"], "argument 'ratio' takes float, not a string: \"2\""),
            ([1, 2, "x"], "argument 'tags' takes list[str] | None, not a string: \"x\""),
            ([1, 2, ["a", 1]], "argument 'tags' takes list[str] | None; [1] is a number, "
                               "not str: 1"),
            ([1, 2, None, {"k": "v"}], "argument 'limits' takes dict[str, int] | None; "
                                       "[\"k\"] is a string, not int: \"v\""),
            ([1, 2, None, None, "c"], "argument 'mode' takes Literal['a', 'b'], not a "
                                      "string: \"c\""),
            ([1, 2, None, None, "a", 1], "argument 'on' takes bool, not a number: 1")):
        assert plan_def.misfit(values) == head + says, values
    assert trip_def.misfit([{"city": "Oslo", "days": 2}, 1, 2]) is None
    # A dataclass (or pydantic model) is validated as the worker restores it.
    said = trip_def.misfit([{"city": "Oslo", "days": "many"}])
    assert said is not None and said.startswith(
        "trip(where: tests.engine.test_names_and_types._Where, *more: int): argument "
        "'where' does not fit _Where: days"), said
    assert trip_def.misfit([{"city": "Oslo", "days": 2}, 1, "x"]) == (
        "trip(where: tests.engine.test_names_and_types._Where, *more: int): argument "
        "'more' takes int, not a string: \"x\"")
